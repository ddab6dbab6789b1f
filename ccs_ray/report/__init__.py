"""The HTML report: one self-contained page (inline CSS and SVG, no script, no CDN) over a results root.

Every figure comes from a canned query of ``sql/queries`` run through :func:`ccs_ray.analytics.connect`;
the page is rendered by ``report.html.j2`` with autoescaping on, and the SVG plots escape their texts
(:mod:`ccs_ray.report.plots`), so spans, labels and names from the data are shown, never interpreted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import jinja2

from ccs_ray.analytics import canned_rows, canned_subquery, connect, query
from ccs_ray.compare import paper_comparison
from ccs_ray.report import plots

TEMPLATE = "report.html.j2"
STRATEGY_ORDER = ("none", "high", "low", "random")


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(groups)


def _judge_of(rows: list[dict]) -> str:
    """The judge whose CCS the report shows: the majority vote when present, else the first judge by name."""
    judges = {r["judge"] for r in rows}
    return "combined" if "combined" in judges else min(judges)


def _tooltip(r: dict) -> str:
    head = f"{r['head_label']} · CCS {'–' if r['ccs'] is None else r['ccs']}/5 ({r['level'] or 'unscored'})"
    spans = "\n".join(f"{i}. {t}" for i, t in enumerate(r["spans"][:5], 1))
    return f"{head}\nlabel: {r['label'] or '–'}\n{spans}"


def _config_order(config: str) -> tuple:
    return (STRATEGY_ORDER.index(config) if config in STRATEGY_ORDER else len(STRATEGY_ORDER), config)


def _model_sections(conn) -> list[dict]:
    """Per (run, model): heatmap, accuracy bars and the accuracy-bias scatter."""
    heads = _by(canned_rows(conn, "head_details"), "run_id", "model")
    accuracy = _by(canned_rows(conn, "accuracy_drop_vs_random", "is_accuracy(metric)"), "run_id", "model")
    bias = _by(canned_rows(conn, "bias_vs_accuracy", "NOT is_baseline(strategy)"), "run_id", "model")
    configs = sorted({r["config"] for rows in (*accuracy.values(), *bias.values()) for r in rows}, key=_config_order)
    colors = {c: plots.PALETTE[i % len(plots.PALETTE)] for i, c in enumerate(configs)}
    sections = []
    for run_id, model in sorted(set(heads) | set(accuracy) | set(bias), key=lambda k: (k[1], k[0])):
        section = {"run_id": run_id, "model": model, "heatmap": None, "accuracy": None, "tradeoff": None,
                   "heuristic": False}
        if (run_id, model) in heads:
            judge = _judge_of(heads[(run_id, model)])
            cells = [dict(r, tooltip=_tooltip(r)) for r in heads[(run_id, model)] if r["judge"] == judge]
            section["judge"] = judge
            section["heuristic"] = any(c["heuristic"] for c in cells)
            kind = ", offline heuristic judge" if section["heuristic"] else ""
            section["heatmap"] = plots.heatmap(cells, f"CCS per head of {model} ({judge}{kind})")
            section["levels"] = {lvl: sum(c["level"] == lvl for c in cells) for lvl in ("high", "medium", "low")}
        if (run_id, model) in accuracy:
            rows = accuracy[(run_id, model)]
            datasets = sorted({r["dataset"] for r in rows})
            configs = sorted({r["config"] for r in rows}, key=_config_order)
            cell = {(r["config"], r["dataset"]): (r["mean"], r["std"]) for r in rows}
            series = {c: [cell.get((c, d), (None, None)) for d in datasets] for c in configs}
            section["accuracy"] = plots.grouped_bars(datasets, series, f"Zero-shot accuracy of {model} under pruning",
                                                     "top-1 accuracy (%)", colors=colors)
        if (run_id, model) in bias:
            rows = sorted(bias[(run_id, model)], key=lambda r: _config_order(r["config"]))
            points = [dict(x=r["delta_accuracy"], y=r["delta_maxskew_sum"], series=r["config"],
                           tooltip=f"{r['config']} on {r['dataset']} / {r['attribute']}: Δ accuracy "
                                   f"{r['delta_accuracy']:+.3g} pts, Δ MaxSkew (sum) {r['delta_maxskew_sum']:+.3g}")
                      for r in rows
                      if r["delta_accuracy"] is not None and r["delta_maxskew_sum"] is not None]
            if points:
                section["tradeoff"] = plots.scatter(points, f"Accuracy-bias trade-off of {model}",
                                                    "Δ accuracy (points, pruned - unpruned)",
                                                    "Δ MaxSkew@k, summed over occupations", colors=colors)
        sections.append(section)
    return sections


def _ccs_at_k_plot(conn):
    groups = _by(canned_rows(conn, "ccs_at_k"), "run_id", "model")
    runs_per_model = Counter(model for _, model in groups)
    series = {}
    for (run_id, model), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        judge = _judge_of(rows)
        rows = [r for r in rows if r["judge"] == judge]
        at_k = {r["k"]: r["ccs_at_k"] for r in rows}
        name = model if runs_per_model[model] == 1 else f"{model} ({run_id})"
        series[name] = [(at_k.get(k), None) for k in range(6)] + [(rows[0]["unscored"] if rows else None, None)]
    if not series:
        return None
    return plots.grouped_bars([*map(str, range(6)), "unscored"], series, "CCS@K per model",
                              "fraction of all analysed heads", y_max=1.0)


def build_report(root: str, out_path: str) -> str:
    """Render the report of the results under ``root`` to ``out_path`` (any fsspec URI); returns ``out_path``."""
    with connect(root) as conn:
        stability = query(conn, "SELECT model, run_id, fold_a, fold_b, count(*) AS heads, avg(n_shared) AS "
                                "mean_shared_texts, avg(jaccard) AS mean_jaccard, avg(same_top::INTEGER) AS "
                                f"same_top_text FROM {canned_subquery('span_stability')} GROUP BY ALL ORDER BY ALL"
                          ).to_pylist()
        sections = _model_sections(conn)
        context = dict(
            root=str(root),
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            runs=canned_rows(conn, "run_summary"),
            sections=sections,
            heuristic=[s for s in sections if s["heuristic"]],
            ccs_at_k=_ccs_at_k_plot(conn),
            agreement=canned_rows(conn, "judge_agreement"),
            fleiss=canned_rows(conn, "fleiss_kappa"),
            stability=stability,
            cost=canned_rows(conn, "cost_per_model"),
            errors=canned_rows(conn, "errors_by_reason"),
            paper=paper_comparison(conn),
        )
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else v
    html = env.get_template(TEMPLATE).render(**context)
    with fsspec.open(str(out_path), "w", encoding="utf-8") as f:
        f.write(html)
    return str(out_path)
