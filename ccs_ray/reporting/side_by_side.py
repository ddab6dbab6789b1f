"""The report's cross-model view, "Models side by side": the models of the results lined up on one page.

From the canned queries ``model_comparison`` (one row per run and model) and ``model_layers`` (one row per run,
model and analysed layer), over the CCS of the combined judge (the majority vote):

- a table with one column per model: heads analysed, CCS@0..5 and unscored (percent of the analysed heads), the
  share of high (CCS 5), medium (2..4) and low (<= 1) heads (high and low with their 95% bootstrap interval over
  heads), and what pruning the high and the low heads changes against the unpruned model: top-1 accuracy in
  points (mean over the classification datasets) and MaxSkew@k summed over occupations (mean over the bias
  datasets and attributes); "–" where a strategy was not evaluated;
- per model a small multiple (:func:`ccs_ray.reporting.plots.layer_panel`): per analysed layer the share of its heads
  with high and with low CCS, on one scale for every model, and its heads' label families stacked;
- a table of the label families per layer (one row per model, its layers in order, the deepest right-aligned so
  that models of different depths line up at their last layers);
- the pruning effect, high against low, per model (:func:`ccs_ray.reporting.plots.diverging_bars`).

A model is named by its key, with its run where the results hold several runs of it. The view is shown when the
results hold more than one model (:func:`side_by_side` is None otherwise). Every text is escaped by the template
(autoescape) or by the SVG writer.
"""

from __future__ import annotations

from collections import Counter

from ccs_ray.analytics import canned_rows
from ccs_ray.reporting import plots
from ccs_ray.reporting.cards import group_by
from ccs_ray.scores import CONCEPT_FAMILIES

OTHER = "other"  # the label family of a label in no concept family (canned query model_layers)
#: colour of each label family in the panels, in stacking order (bottom first); other: grey
FAMILY_COLORS = {**{f: plots.PALETTE[4 + i] for i, f in enumerate(CONCEPT_FAMILIES)}, OTHER: "#bab0ac"}
EFFECT_WIDTH = 520  # SVG units of a pruning-effect chart


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def _with_interval(share: float | None, low: float | None, high: float | None) -> str:
    """A share in percent with its 95% interval, e.g. ``8.3 % (0.0–25.0)``."""
    if share is None or low is None or high is None:
        return _percent(share)
    return f"{_percent(share)} ({100 * low:.1f}–{100 * high:.1f})"


def _signed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def model_names(rows: list[dict]) -> dict[tuple[str, str], str]:
    """(run_id, model) -> its name in the view: the model key, with ``(run <id>)`` where several runs have it."""
    runs = Counter(r["model"] for r in rows)
    return {(r["run_id"], r["model"]): r["model"] if runs[r["model"]] == 1 else f"{r['model']} (run {r['run_id']})"
            for r in rows}


def _table(rows: list[dict]) -> list[dict]:
    """The comparison table: one dict per line (``label`` and one ``cells`` string per model, in ``rows``' order)."""
    def line(label: str, cell) -> dict:
        return dict(label=label, cells=[cell(r) for r in rows])

    return [
        line("judge", lambda r: "combined (offline heuristic judge)" if r["heuristic"] else "combined"),
        line("heads analysed", lambda r: str(r["n_heads"])),
        *[line(f"CCS@{k}", lambda r, k=k: _percent(r[f"ccs_at_{k}"])) for k in range(6)],
        line("unscored", lambda r: _percent(r["unscored"])),
        line("high (CCS 5)", lambda r: _with_interval(r["share_high"], r["share_high_low"], r["share_high_high"])),
        line("medium (CCS 2..4)", lambda r: _percent(r["share_medium"])),
        line("low (CCS ≤ 1)", lambda r: _with_interval(r["share_low"], r["share_low_low"], r["share_low_high"])),
        line("Δ top-1, high pruned (points)", lambda r: _signed(r["delta_top1_high"], 2)),
        line("Δ top-1, low pruned (points)", lambda r: _signed(r["delta_top1_low"], 2)),
        line("Δ MaxSkew@k (sum), high pruned", lambda r: _signed(r["delta_maxskew_high"], 3)),
        line("Δ MaxSkew@k (sum), low pruned", lambda r: _signed(r["delta_maxskew_low"], 3)),
    ]


def _family_text(layer: dict) -> str:
    """``L11: location 3, other 9``: a layer's heads per label family, most first."""
    return f"L{layer['layer']}: " + ", ".join(f"{f['family']} {f['n_heads']}" for f in layer["families"])


def side_by_side(conn, colors: dict[str, str]) -> dict | None:
    """The view's context for the template, or None when the results hold fewer than two models. ``colors``:
    strategy -> colour (high, low), as in the report's other plots."""
    rows = canned_rows(conn, "model_comparison")
    if len({r["model"] for r in rows}) < 2:
        return None
    names = model_names(rows)
    layers = group_by(canned_rows(conn, "model_layers"), "run_id", "model")
    depth = max((len(v) for v in layers.values()), default=0)
    panels, families = [], []
    for r in rows:
        key, name = (r["run_id"], r["model"]), names[(r["run_id"], r["model"])]
        mine = layers.get(key, [])
        if mine:
            panels.append(dict(name=name, svg=plots.layer_panel(mine, f"High and low CCS heads and label families "
                                                                      f"per layer: {name}", colors, FAMILY_COLORS)))
        families.append(dict(name=name, cells=[None] * (depth - len(mine)) + [_family_text(l) for l in mine]))
    effects = []
    for metric, label, digits in (("top1", "Δ top-1 accuracy (points, pruned - unpruned)", 2),
                                  ("maxskew", "Δ MaxSkew@k summed over occupations (pruned - unpruned)", 3)):
        series = {s: [r[f"delta_{metric}_{s}"] for r in rows] for s in ("high", "low")}
        if any(v is not None for values in series.values() for v in values):
            effects.append(plots.diverging_bars([names[(r["run_id"], r["model"])] for r in rows], series,
                                                f"Pruning high against low CCS heads: {label}", label,
                                                width=EFFECT_WIDTH, colors=colors, fmt=f"+.{digits}f"))
    return dict(models=[names[(r["run_id"], r["model"])] for r in rows], runs=sorted({r["run_id"] for r in rows}),
                table=_table(rows), panels=panels, families=families, depth=depth, effects=effects,
                legend=[("high CCS", colors["high"]), ("low CCS", colors["low"])]
                + [(f"family {f}", c) for f, c in FAMILY_COLORS.items()])
