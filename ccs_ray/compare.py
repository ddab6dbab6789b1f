"""Against the paper: a results root beside the paper's published figures and head sets.

:func:`paper_comparison` gathers, over a DuckDB connection of :func:`ccs_ray.analytics.connect`, the canned
queries ``vs_paper_summary`` (per run and model: figures matched, the share within tolerance), ``vs_paper``
(the matched figures, ours beside theirs) and ``paper_agreement`` (our head sets against the published
ones), and says in words which runs cannot be compared and why: random-init weights, the offline heuristic
judge, no reference data for the model, or none of the paper's datasets. The report's "Against the paper"
section and ``ccs-ray compare-paper`` show the same :class:`PaperComparison`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa

from . import jsonout
from .analytics import canned_rows, connect, query
from .reference import paper_reference
from .sqlshell import format_table

#: Columns shown per matched figure and per head set (the views have more).
FIGURE_COLUMNS = ("our_model", "run_id", "dataset", "metric", "strategy", "heads_from", "n_seeds", "theirs", "ours",
                  "difference", "tolerance", "within_tolerance", "comparable", "caveat")
AGREEMENT_COLUMNS = ("model", "run_id", "reference_model", "judge", "head_set", "n_ours", "n_published", "n_shared",
                     "jaccard", "precision", "recall", "mean_our_ccs", "spearman_rho", "heuristic")


@dataclass
class PaperComparison:
    """What :func:`paper_comparison` found: rows of ``vs_paper_summary``, of ``vs_paper`` with ours, of
    ``paper_agreement``, and one note per run and model that cannot be compared (fully or in part)."""

    summary: list[dict]
    figures: list[dict]
    agreement: list[dict]
    notes: list[str]


def _notes(conn) -> list[str]:
    """Why each run and model (of the ccs and ablations tables) cannot be compared with the paper, or only in part."""
    published = set(paper_reference().heads)
    runs = query(conn, """
        WITH heuristic AS (SELECT run_id, model, bool_or(heuristic) AS heuristic FROM heuristic_judges() GROUP BY ALL),
             datasets AS (SELECT run_id, model, list(DISTINCT dataset ORDER BY dataset) AS datasets
                          FROM (SELECT run_id, model, dataset FROM evals UNION SELECT run_id, model, dataset FROM bias)
                          GROUP BY ALL),
             matched AS (SELECT run_id, our_model AS model, count(*) AS figures FROM vs_paper
                         WHERE ours IS NOT NULL GROUP BY ALL)
        SELECT m.run_id, m.model, m.reference_model, h.heuristic, d.datasets, coalesce(x.figures, 0) AS figures
        FROM reference_models() m LEFT JOIN heuristic h USING (run_id, model)
        LEFT JOIN datasets d USING (run_id, model) LEFT JOIN matched x USING (run_id, model)
        ORDER BY m.model, m.run_id""").to_pylist()
    notes = []
    for r in runs:
        who = f"{r['model']} (run {r['run_id']})"
        if r["reference_model"] not in published:
            notes.append(f"{who}: the paper published nothing for {r['reference_model']}; to compare a checkpoint of "
                         f"a paper model, set prune.reference_model to it ({', '.join(sorted(published))})")
            continue
        if r["model"].endswith("/none"):
            notes.append(f"{who}: random-init weights, compared with {r['reference_model']}: its figures and head sets "
                         f"cannot match the paper's (a test of the pipeline, not a reproduction)")
        if r["heuristic"]:
            notes.append(f"{who}: CCS from the offline heuristic judge, not LLM judges: its head sets (and the "
                         f"figures of heads chosen by CCS) are not the paper's method")
        if r["datasets"] and not r["figures"]:
            notes.append(f"{who}: none of its evaluations ({', '.join(r['datasets'])}) is one the paper published "
                         f"for {r['reference_model']} (datasets by name, as in jobs/paper-pruning.toml)")
    return notes


def paper_comparison(conn) -> PaperComparison:
    """The comparison of the results behind ``conn`` with the paper."""
    return PaperComparison(summary=canned_rows(conn, "vs_paper_summary"),
                           figures=canned_rows(conn, "vs_paper", "ours IS NOT NULL"),
                           agreement=canned_rows(conn, "paper_agreement"), notes=_notes(conn))


def _text(rows: list[dict], columns: tuple[str, ...], empty: str) -> str:
    if not rows:
        return f"  ({empty})\n"
    return format_table(pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows]))


def compare_paper(root: str, as_json: bool = False) -> str:
    """``ccs-ray compare-paper``: the comparison of the results under ``root`` with the paper, as text or JSON."""
    with connect(root) as conn:
        result = paper_comparison(conn)
    if as_json:
        return jsonout.dumps(asdict(result))
    summary_columns = tuple(result.summary[0]) if result.summary else ()
    notes = result.notes or ([] if result.summary or result.agreement else ["no results to compare yet"])
    parts = [f"Against the paper (Madasu et al., arXiv 2503.11103): {root}", *(f"note: {n}" for n in notes),
             "", "Figures matched, per run (tolerance: 1 point for table values, 2 for chart readings):",
             _text(result.summary, summary_columns, "no run matches a published figure"),
             "Figures, ours beside the paper's:", _text(result.figures, FIGURE_COLUMNS, "none"),
             "Head sets, ours against the published ones:",
             _text(result.agreement, AGREEMENT_COLUMNS, "no CCS to compare")]
    return "\n".join(parts)
