"""The HTML report: one self-contained page (inline CSS, SVG and thumbnails, no CDN) over a results root.

Every figure comes from a canned query of ``sql/queries`` run through :func:`ccs_ray.analytics.connect`;
the page is rendered by ``report.html.j2`` with autoescaping on, and the SVG plots escape their texts
(:mod:`ccs_ray.reporting.plots`), so spans, labels, image URIs and names from the data are shown, never
interpreted. Per model: the CCS heatmap (each cell links to the head's card) with the count of high, medium,
low and unscored heads and why the unscored ones have no CCS (their judge's errors), accuracy per strategy, the
sweep curves (accuracy against heads removed: high, low, random), video retrieval (R@1/5/10, MedR), MaxSkew@k,
CCS against accuracy drop per pruned head group, the accuracy-bias trade-off, the strategies that selected no
head and why, the head explorer (a table of every head) and one card per head (:mod:`ccs_ray.reporting.cards`;
id ``L11.H5`` on a page of one model, ``<model>.L11.H5`` on a page of several, :func:`~ccs_ray.reporting.cards.anchor`),
where each span's top images sit beside its bottom images. Each distinct thumbnail is stored once in the page,
shown small and enlarged on click. With several models, a section lines them up side by side
(:mod:`ccs_ray.reporting.side_by_side`). Banners flag random-init models (``/none``), the offline heuristic judge
and failed runs. No number or word breaks inside a table cell; plots have round ticks and a unit on every axis.
In print (A4), a head card never splits across pages and several share one. One small inline script sorts and
filters the head tables; the page is complete without it, and in print.

:func:`build_report` writes the report (optionally of chosen heads only), :func:`build_card` one head's card
page (:func:`card_page` renders it from an open connection), :func:`show_head` is ``ccs-ray head``.
"""

from __future__ import annotations

import re
import webbrowser
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import fsspec
import jinja2

from ccs_ray.analytics import canned_rows, canned_subquery, connect, query
from ccs_ray.compare import paper_comparison
from ccs_ray.reporting import plots
from ccs_ray.reporting.cards import (
    VERDICT_MARKS,
    VERDICT_WORDS,
    card_images,
    card_order,
    find_card,
    format_card,
    group_by,
    head_cards,
    judge_of,
    thumb_styles,
    where,
)
from ccs_ray.reporting.side_by_side import side_by_side
from ccs_ray.scores import LEVELS, UNSCORED

TEMPLATES = Path(__file__).parent
STRATEGY_ORDER = ("none", "high", "low", "random")
VIDEO_RECALLS = ("R@1", "R@5", "R@10")
SWEEP_SERIES = {"sweep": "high", "sweep-low": "low", "sweep-random": "random"}  # strategy -> curve
SINGLE = "single"  # the strategy that ablates each analysed head alone (ccs_ray.ablate)
PLOT_WIDTH = 520  # SVG units of a model's plots: two side by side on a wide page


def _tooltip(r: dict) -> str:
    head = f"{r['head_label']} · CCS {'–' if r['ccs'] is None else r['ccs']}/5 ({r['level']})"
    if r["unscored_reason"]:
        head += f"\nno CCS: {r['unscored_reason']}"
    spans = "\n".join(f"{i}. {t}" for i, t in enumerate(r["spans"][:5], 1))
    return f"{head}\nlabel: {r['label'] or '–'}\n{spans}"


def _config_order(config: str) -> tuple:
    return (STRATEGY_ORDER.index(config) if config in STRATEGY_ORDER else len(STRATEGY_ORDER), config)


def _href(anchor: str) -> str:
    """The link to an element id (a card's anchor) within the page."""
    return "#" + quote(anchor, safe="/")


def _is_sweep(config: str) -> bool:
    return config.startswith("sweep")


def _seeds_note(rows: list[dict]) -> str:
    """Which configurations' bars carry error bars (several seeds) and which are one seed each."""
    seeds = {r["config"]: r["n_seeds"] for r in rows}
    several = [f"{c} ({n} seeds)" for c, n in sorted(seeds.items(), key=lambda kv: _config_order(kv[0])) if n > 1]
    single = [c for c in sorted(seeds, key=_config_order) if seeds[c] == 1]
    return " ".join(filter(None, [
        f"Error bars: ± sample std over the seeds of {', '.join(several)}." if several else "",
        f"1 seed (no error bar): {', '.join(single)}." if single else ""]))


def _bars(rows: list[dict], category: str, value: str, err: str, title: str, y_label: str, colors: dict,
          categories: Sequence[str] | None = None) -> dict:
    """A figure of grouped bars (one per configuration, sweeps left out) per ``category`` from canned query rows
    with ``config``, ``n_seeds`` and the ``value`` and ``err`` columns; its caption names the seeds."""
    rows = [r for r in rows if not _is_sweep(r["config"])]
    categories = list(categories or dict.fromkeys(r[category] for r in rows))
    configs = sorted({r["config"] for r in rows}, key=_config_order)
    cell = {(r["config"], r[category]): (r[value], r[err]) for r in rows}
    series = {c: [cell.get((c, k), (None, None)) for k in categories] for c in configs}
    return dict(svg=plots.grouped_bars(categories, series, title, y_label, width=PLOT_WIDTH, colors=colors),
                note=_seeds_note(rows))


def _sweep(rows: list[dict], dataset: str, model: str, colors: dict) -> dict | None:
    """Accuracy on ``dataset`` against the number of heads removed: the sweep's high, low and random series,
    each starting at sweep:k0 (random: mean ± std over seeds)."""
    by_strategy = group_by([r for r in rows if r["dataset"] == dataset], "strategy")
    start = [(0, r["mean"], None) for r in by_strategy.get(("sweep",), []) if r["n_heads"] == 0]
    series = {}
    for strategy, name in SWEEP_SERIES.items():
        points = sorted((r["n_heads"], r["mean"], r["std"])
                        for r in by_strategy.get((strategy,), []) if r["n_heads"] > 0)
        if points:
            series[name] = start + points
    if not series:
        return None
    seeds = max((r["n_seeds"] for r in by_strategy.get(("sweep-random",), [])), default=0)
    return dict(svg=plots.lines(series, f"Sweep on {dataset}: accuracy of {model} against heads removed",
                                "heads removed (k)", "top-1 accuracy (%)", width=PLOT_WIDTH, colors=colors),
                note="high: the top-k heads by CCS; low: the bottom k; random: k random heads"
                     + (f", mean ± sample std over {seeds} seeds." if seeds > 1 else ", 1 seed (no error bar)."))


def _colors(names) -> dict[str, str]:
    """One palette colour per name, in configuration order after none, high, low and random, which keep the
    same colours in every plot and report."""
    return {c: plots.PALETTE[i % len(plots.PALETTE)]
            for i, c in enumerate(sorted({*STRATEGY_ORDER, *names}, key=_config_order))}


def _model_sections(conn, condition: str) -> list[dict]:
    """Per (run, model): its plots, the strategies that selected no head, and its head cards (those meeting
    ``condition``, :func:`ccs_ray.reporting.cards.where`)."""
    heads = group_by(canned_rows(conn, "head_details"), "run_id", "model")
    # heads ablated alone (strategy single) have their own plot (_importance), not one bar each
    grouped = f"strategy IS DISTINCT FROM '{SINGLE}'"
    metrics = group_by(canned_rows(conn, "accuracy_drop_vs_random", grouped), "run_id", "model")
    skew = group_by(canned_rows(conn, "maxskew_by_strategy", grouped), "run_id", "model")
    bias = group_by(canned_rows(conn, "bias_vs_accuracy", f"NOT is_baseline(strategy) AND {grouped}"),
                    "run_id", "model")
    groups = group_by(canned_rows(conn, "head_groups", grouped), "run_id", "model")
    importance = group_by(canned_rows(conn, "ccs_vs_importance"), "run_id", "model")
    differences = group_by(canned_rows(conn, "strategy_differences", f"{grouped} AND metric IN ('top1', 'R@1')"),
                           "run_id", "model")
    effects = group_by(query(conn, "SELECT * FROM head_importance WHERE ccs IS NOT NULL").to_pylist(),
                       "run_id", "model", "dataset", "metric", "mode", "judge")
    empty = group_by(canned_rows(conn, "strategies_without_heads"), "run_id", "model")
    spans = {(r["run_id"], r["model"])
             for r in query(conn, "SELECT DISTINCT run_id, model FROM judged_spans").to_pylist()}
    keys = {*heads, *metrics, *skew, *bias, *empty, *spans}
    runs_per_model = Counter(model for _, model in keys)
    several = len(runs_per_model) > 1  # models: card ids name the model too (and the run, for several runs of one)
    cards = head_cards(conn, condition, {k: (k[1] if several or runs_per_model[k[1]] > 1 else None,
                                             k[0] if runs_per_model[k[1]] > 1 else None) for k in keys})
    colors = _colors({r["config"] for rows in (*metrics.values(), *skew.values()) for r in rows
                      if not _is_sweep(r["config"])})  # configurations: bars, sweep curves, trade-off points
    strategy_colors = _colors({r["strategy"] for rows in groups.values() for r in rows})  # CCS against drop
    sections = []
    for run_id, model in sorted(keys, key=lambda k: (k[1], k[0])):
        key = (run_id, model)
        mine = cards.get(key, [])
        section = {"run_id": run_id, "model": model, "random_init": model.endswith("/none"), "heuristic": False,
                   "judge": None, "heatmap": None, "figures": [], "empty": empty.get(key, []), "heads": mine,
                   "cards": card_order(mine), "judges": mine[0]["judges"] if mine else [],
                   "differences": differences.get(key, []),
                   "top_images": any(c["images"] or any(sp["images"] for sp in c["spans"]) for c in mine)}
        if key in heads:
            judge = judge_of(heads[key])
            linked = {c["head_label"]: _href(c["anchor"]) for c in mine}
            cells = [dict(r, tooltip=_tooltip(r), href=linked.get(r["head_label"])) for r in heads[key]
                     if r["judge"] == judge]
            section["judge"] = judge
            section["heuristic"] = any(c["heuristic"] for c in cells)
            kind = ", offline heuristic judge" if section["heuristic"] else ""
            section["heatmap"] = plots.heatmap(cells, f"CCS per head of {model} ({judge}{kind})")
            section["levels"] = {lvl: sum(c["level"] == lvl for c in cells) for lvl in LEVELS}
            section["unscored_reasons"] = Counter(c["unscored_reason"] for c in cells if c["level"] == UNSCORED)
        figures = section["figures"]
        rows = metrics.get(key, [])
        accuracy = [r for r in rows if r["metric"] == "top1"]
        if accuracy:
            figures.append(dict(_bars(accuracy, "dataset", "mean", "std",
                                      f"Zero-shot accuracy of {model} under pruning", "top-1 accuracy (%)", colors),
                                kind="accuracy",
                                caption="Zero-shot top-1 accuracy, unpruned (none) and under each pruning strategy."))
        for dataset in dict.fromkeys(r["dataset"] for r in accuracy):
            sweep = _sweep(accuracy, dataset, model, colors)
            if sweep:
                figures.append(dict(sweep, kind="sweep", caption="Accuracy as more heads are removed."))
        recalls = [r for r in rows if r["metric"] in VIDEO_RECALLS]
        for dataset in dict.fromkeys(r["dataset"] for r in recalls):
            mine = [r for r in recalls if r["dataset"] == dataset]
            figures.append(dict(_bars(mine, "metric", "mean", "std", f"Text-to-video retrieval on {dataset}: {model}",
                                      "recall (%)", colors,
                                      [m for m in VIDEO_RECALLS if m in {r["metric"] for r in mine}]),
                                kind="video",
                                caption=f"Recall at 1, 5 and 10 on {dataset}: the share of captions whose video "
                                        "ranks in the top 1, 5, 10."))
        medr = [r for r in rows if r["metric"] == "MedR"]
        if medr:
            figures.append(dict(_bars(medr, "dataset", "mean", "std", f"Median rank of the right video: {model}",
                                      "median rank (lower is better)", colors), kind="video",
                                caption="Median rank (MedR) of each caption's video among all videos."))
        if skew.get(key):
            figures.append(dict(_bars([dict(r, category=f"{r['dataset']} / {r['attribute']}") for r in skew[key]],
                                      "category", "maxskew_sum", "maxskew_sum_std", f"MaxSkew@k of {model}",
                                      "MaxSkew@k summed over occupations (log ratio)", colors), kind="maxskew",
                                caption="Social bias per strategy: MaxSkew@k summed over occupations (the paper's "
                                        "figure), per bias dataset and attribute; lower is fairer."))
        points = [dict(x=g["mean_ccs"], y=-g["delta_accuracy"], series=g["strategy"], label=g["config"],
                       tooltip=f"{g['config']}: {g['n_heads']} heads, mean CCS {g['mean_ccs']:.2f}, accuracy drop "
                               f"{-g['delta_accuracy']:+.3g} pts")
                  for g in groups.get(key, []) if g["mean_ccs"] is not None and g["delta_accuracy"] is not None]
        if points:
            figures.append(dict(svg=plots.scatter(points, f"CCS against accuracy drop per head group of {model}",
                                                  "mean CCS of the pruned heads (aligned spans of 5)",
                                                  "top-1 accuracy drop (points)",
                                                  width=PLOT_WIDTH, colors=strategy_colors), kind="ccs-drop", note="",
                                caption="Each point: one pruned configuration (seeds pooled). Right = the removed "
                                        "heads encode clearer concepts; up = removing them costs more accuracy."))
        figures += _importance(importance.get(key, []), effects, model)
        tradeoff = [dict(x=r["delta_accuracy"], y=r["delta_maxskew_sum"], series=r["config"], label=r["config"],
                         tooltip=f"{r['config']} on {r['dataset']} / {r['attribute']}: Δ accuracy "
                                 f"{r['delta_accuracy']:+.3g} pts, Δ MaxSkew (sum) {r['delta_maxskew_sum']:+.3g}")
                    for r in sorted(bias.get(key, []), key=lambda r: _config_order(r["config"]))
                    if not _is_sweep(r["config"]) and r["delta_accuracy"] is not None
                    and r["delta_maxskew_sum"] is not None]
        if tradeoff:
            figures.append(dict(svg=plots.scatter(tradeoff, f"Accuracy-bias trade-off of {model}",
                                                  "Δ accuracy (points, pruned - unpruned)",
                                                  "Δ MaxSkew@k summed over occupations (log ratio)",
                                                  width=PLOT_WIDTH,
                                                  colors=colors), kind="tradeoff", note="",
                                caption="Each point: one strategy on one bias dataset and attribute. Right = accuracy "
                                        "gained, up = bias increased, both against the unpruned model. Bias is "
                                        "MaxSkew@k summed over occupations, as the paper reports it."))
        sections.append(section)
    return sections


def _importance(stats: list[dict], effects: dict, model: str) -> list[dict]:
    """Per dataset, metric, mode and judge of the heads ablated alone: CCS against the accuracy each head costs,
    with Spearman's rho and its 95% bootstrap interval over heads (canned query ccs_vs_importance)."""
    figures = []
    judge = judge_of(stats) if stats else None
    for s in [s for s in stats if s["judge"] == judge]:
        rows = effects.get((s["run_id"], s["model"], s["dataset"], s["metric"], s["mode"], s["judge"]), [])
        points = [dict(x=float(r["ccs"]), y=-r["change"], series=r["level"],
                       tooltip=f"{r['head_label']}: CCS {r['ccs']}, label {r['label'] or '–'}, {s['metric']} "
                               f"{r['change']:+.3g} when removed alone") for r in rows]
        if not points:
            continue
        rho = "–" if s["rho"] is None else f"{s['rho']:+.2f}"
        interval = (f"95% bootstrap interval over heads [{s['low']:+.2f}, {s['high']:+.2f}]"
                    if s["low"] is not None else "too few heads for an interval")
        figures.append(dict(
            svg=plots.scatter(points, f"Does CCS predict importance? {model} on {s['dataset']} ({s['mode']} ablation)",
                              f"CCS (aligned spans of 5, judge {s['judge']})",
                              f"{s['metric']} lost when removed alone (points)",
                              width=PLOT_WIDTH), kind="importance", note="",
            caption=f"Each point: one head ablated alone. Spearman's rho = {rho} over {s['n_heads']} heads, "
                    f"{interval}; positive: heads with a higher CCS cost more when removed."))
    return figures


def _ccs_at_k_intervals(conn) -> list[dict]:
    """CCS@K rows of each (run, model) for the report's judge, with their bootstrap intervals over heads."""
    groups = group_by(canned_rows(conn, "ccs_at_k"), "run_id", "model")
    return [r for rows in groups.values() for r in rows if r["judge"] == judge_of(rows)]


def _ccs_at_k_plot(conn):
    groups = group_by(canned_rows(conn, "ccs_at_k"), "run_id", "model")
    runs_per_model = Counter(model for _, model in groups)
    series = {}
    for (run_id, model), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        judge = judge_of(rows)
        rows = [r for r in rows if r["judge"] == judge]
        at_k = {r["k"]: r["ccs_at_k"] for r in rows}
        name = model if runs_per_model[model] == 1 else f"{model} ({run_id})"
        series[name] = [(at_k.get(k), None) for k in range(6)] + [(rows[0]["unscored"] if rows else None, None)]
    if not series:
        return None
    return plots.grouped_bars([*map(str, range(6)), "unscored"], series, "CCS@K per model",
                              "fraction of all analysed heads", y_max=1.0, x_label="K: CCS (aligned spans of 5)")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else v
    env.filters["href"] = _href
    env.globals.update(verdict_words=VERDICT_WORDS, verdict_marks=VERDICT_MARKS)
    return env


def _write(template: str, context: dict, out_path: str) -> str:
    return _save(_environment().get_template(template).render(**context), out_path)


def _save(html: str, out_path: str) -> str:
    with fsspec.open(str(out_path), "w", encoding="utf-8") as f:
        f.write(html)
    return str(out_path)


def _banners(sections: list[dict], runs: list[dict]) -> dict:
    return dict(heuristic=[s for s in sections if s["heuristic"]],
                random_init=[s for s in sections if s["random_init"]],
                failed=[r for r in runs if r["status"] == "failed"])


def build_report(root: str, out_path: str, heads: Sequence[str] | None = None) -> str:
    """Render the report of the results under ``root`` to ``out_path`` (any fsspec URI); returns ``out_path``.
    ``heads`` (``["L11.H5", ...]``): the head explorer and cards show only these heads of every model."""
    with connect(root) as conn:
        stability = query(conn, "SELECT model, run_id, fold_a, fold_b, count(*) AS heads, avg(n_shared) AS "
                                "mean_shared_texts, avg(jaccard) AS mean_jaccard, avg(same_top::INTEGER) AS "
                                f"same_top_text FROM {canned_subquery('span_stability')} GROUP BY ALL ORDER BY ALL"
                          ).to_pylist()
        sections = _model_sections(conn, where(heads))
        runs = canned_rows(conn, "run_summary")
        context = dict(
            root=str(root),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            chosen_heads=list(heads) if heads else None,
            runs=runs,
            nodes=canned_rows(conn, "node_throughput"),
            sections=sections,
            thumb_css=thumb_styles(card_images(c for s in sections for c in s["cards"])),
            **_banners(sections, runs),
            ccs_at_k=_ccs_at_k_plot(conn),
            ccs_at_k_rows=_ccs_at_k_intervals(conn),
            side_by_side=side_by_side(conn, _colors(())),
            agreement=canned_rows(conn, "judge_agreement"),
            fleiss=canned_rows(conn, "fleiss_kappa"),
            stability=stability,
            cost=canned_rows(conn, "cost_per_model"),
            errors=canned_rows(conn, "errors_by_reason"),
            paper=paper_comparison(conn),
        )
    return _write("report.html.j2", context, out_path)


def build_card(root: str, model: str, head: str, out_path: str, run_id: str | None = None) -> str:
    """Render the card of ``head`` of ``model`` (run ``run_id``, default the latest) as a page of its own, with
    the banners that apply to it, to ``out_path``; returns ``out_path``."""
    with connect(root) as conn:
        return _save(card_page(conn, root, find_card(conn, model, head, run_id)), out_path)


def card_page(conn, root: str, card: dict) -> str:
    """The HTML page of ``card`` (:func:`~ccs_ray.reporting.cards.find_card` on ``conn``, a connection to the
    results under ``root``), with the banners that apply to it."""
    runs = canned_rows(conn, "run_summary", where(model=card["model"], run_id=card["run_id"]))
    section = dict(model=card["model"], run_id=card["run_id"], heuristic=card["heuristic"],
                   random_init=card["model"].endswith("/none"))
    return _environment().get_template("card.html.j2").render(
        root=str(root), card=card, thumb_css=thumb_styles(card_images([card])), **_banners([section], runs))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def show_head(root: str, model: str, head: str, run_id: str | None = None, open_: bool = False,
              out: str | None = None) -> str:
    """``ccs-ray head``: the card of ``head`` of ``model`` as text; with ``open_``, also write its HTML card
    (to ``out``, default ``ccs-head-<model>-<head>.html`` in the working folder), open it in the browser and
    name the file."""
    with connect(root) as conn:
        card = find_card(conn, model, head, run_id)
        text = format_card(card)
        if not open_:
            return text
        path = Path(out or f"ccs-head-{_slug(card['model'])}-{card['head_label']}.html").resolve()
        _save(card_page(conn, root, card), str(path))
    webbrowser.open(path.as_uri())
    return text + f"\nHTML card: {path}"
