"""Human ratings: a CSV of span judgments -> judgments and ccs rows (judge ``human:<rater>``), and Cohen's kappa
of every judge of the run against each rater.

CSV columns: ``model, head_label, span_rank, aligned`` (0/1); optional ``rater`` (default ``human``),
``variant`` (``paper`` or ``heldout``, default ``paper``) and ``label`` (the label the rater judged against).
The ratings go into a run started under the results root (:func:`ccs_ray.runs.run_ids`); a CSV that does not
parse, or a run that is not there, is a one-line error and nothing is written.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

import fsspec

from .. import scores
from ..errors import UserError
from ..heads import parse_head_name
from ..runs import RunError, run_ids
from ..tables import read_table, write_table
from .headspans import VARIANTS, file_safe, judged_spans

REQUIRED = ("model", "head_label", "span_rank", "aligned")
OPTIONAL = ("rater", "variant", "label")


class RatingsError(UserError, ValueError):
    """A ratings CSV that cannot be read as ratings: the file, the line, the column and what is allowed."""


def read_ratings(csv_uri: str) -> list[dict]:
    """Validated rows of a ratings CSV; a :class:`RatingsError` names the line, the column and what is allowed."""
    with fsspec.open(csv_uri, "rb") as f:
        reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8-sig"))
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise RatingsError(f"{csv_uri}: missing column(s) {missing}; required {list(REQUIRED)}, "
                               f"optional {list(OPTIONAL)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{csv_uri} line {line}"
            try:
                layer, head = parse_head_name(raw["head_label"])
            except ValueError as e:
                raise RatingsError(f"{where}: {e}") from None
            if raw["aligned"] not in ("0", "1"):
                raise RatingsError(f"{where}: aligned must be 0 or 1, got {raw['aligned']!r}")
            if not raw["span_rank"].isdigit() or int(raw["span_rank"]) < 1:
                raise RatingsError(f"{where}: span_rank must be an integer >= 1, got {raw['span_rank']!r}")
            variant = raw.get("variant") or "paper"
            if variant not in VARIANTS:
                raise RatingsError(f"{where}: variant must be one of {list(VARIANTS)}, got {variant!r}")
            rows.append({"model": raw["model"], "layer": layer, "head": head, "head_label": raw["head_label"],
                         "span_rank": int(raw["span_rank"]), "aligned": int(raw["aligned"]), "variant": variant,
                         "rater": raw.get("rater") or "human", "label": raw.get("label") or None})
    return rows


def import_human_ratings(csv_uri: str, root: str, run_id: str, m: int = 5) -> dict:
    """Write each rater's judgments and CCS (``judge = "human:<rater>"``) into run ``run_id`` and return
    ``{"rows", "raters", "kappa": {model: {rater: {judge: Cohen's kappa or None}}}}`` against every other judge
    of the run, over the spans both rated. Re-importing a rater replaces that rater's rows. A RunError when no run
    ``run_id`` was started under ``root``."""
    ratings = read_ratings(csv_uri)
    runs = run_ids(root)
    if run_id not in runs:
        raise RunError(f"ratings: no run {run_id!r} under {root}; runs: {', '.join(runs) or 'none'}")
    by_model_rater: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in ratings:
        by_model_rater[(r["model"], r["rater"])].append(r)
    kappa: dict[str, dict[str, dict]] = defaultdict(dict)
    for (model, rater), rows in sorted(by_model_rater.items()):
        judge = f"human:{rater}"
        texts = {(s["head_label"], s["rank"]): s["text"]
                 for s in judged_spans(read_table(root, "spans", run_id=run_id, model=model)).to_pylist()
                 if s["subset"] == "all"}
        judgments = [{"layer": r["layer"], "head": r["head"], "head_label": r["head_label"], "judge": judge,
                      "variant": r["variant"], "span_rank": r["span_rank"], "label": r["label"],
                      "aligned": r["aligned"], "heuristic": False,
                      "text": texts.get((r["head_label"], r["span_rank"]))} for r in rows]
        write_table(root, "judgments", judgments, run_id, model, name=f"human-{file_safe(rater)}")
        write_table(root, "ccs", _ccs_rows(judgments, m), run_id, model, name=f"human-{file_safe(rater)}")
        kappa[model][rater] = _kappas(root, run_id, model, judgments)
    return {"rows": len(ratings), "raters": sorted({r["rater"] for r in ratings}), "kappa": dict(kappa)}


def _ccs_rows(judgments: list[dict], m: int) -> list[dict]:
    heads: dict[tuple, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    labels: dict[tuple, str | None] = {}
    for j in judgments:
        key = (j["layer"], j["head"], j["head_label"], j["judge"])
        heads[key][j["variant"]][j["span_rank"]] = j["aligned"]
        labels.setdefault(key, j["label"])
    out = []
    for (layer, head, head_label, judge), variants in sorted(heads.items()):
        ranks = {"paper": range(1, m + 1), "heldout": range(m + 1, 2 * m + 1)}
        score = {v: scores.ccs([variants[v].get(r) for r in ranks[v]], m) if v in variants else None for v in VARIANTS}
        out.append({"layer": layer, "head": head, "head_label": head_label, "judge": judge,
                    "label": labels[(layer, head, head_label, judge)], "ccs": score["paper"],
                    "ccs_heldout": score["heldout"], "level": scores.level(score["paper"], m), "heuristic": False})
    return out


def _kappas(root: str, run_id: str, model: str, human: list[dict]) -> dict[str, float | None]:
    """Cohen's kappa of every non-human judge of (run, model) against these human judgments."""
    theirs: dict[str, dict[tuple, int | None]] = defaultdict(dict)
    for j in read_table(root, "judgments", run_id=run_id, model=model).to_pylist():
        if not j["judge"].startswith("human:"):
            theirs[j["judge"]][(j["head_label"], j["variant"], j["span_rank"])] = j["aligned"]
    mine = {(j["head_label"], j["variant"], j["span_rank"]): j["aligned"] for j in human}
    out = {}
    for judge, votes in sorted(theirs.items()):
        common = [k for k in mine if k in votes]
        out[judge] = scores.cohen_kappa([mine[k] for k in common], [votes[k] for k in common])
    return out
