"""Stage ``report``: the self-contained HTML report of the results root, ``<root>/report.html``.

No section of its own; per run, last. It reads every table through DuckDB (:mod:`ccs_ray.reporting`), the
``runs`` table included, so the pipeline records the run as done before this stage runs.
"""

from __future__ import annotations

from ..progress import Progress
from ..reporting import build_report
from .context import RunContext
from .summaries import ReportSummary


def section(spec) -> None:
    return None


def run(ctx: RunContext, section: None) -> ReportSummary:
    with Progress("report", 1, "file", ctx.progress) as progress:
        path = build_report(ctx.root, f"{ctx.root.rstrip('/')}/report.html")
        progress.update(1)
    return ReportSummary(path)

