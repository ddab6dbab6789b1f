"""Stage ``report``: the self-contained HTML report of the results root, ``<root>/report.html``.

No section of its own; per run, last. It reads every table through DuckDB (:mod:`ccs_ray.report`), the
``runs`` table included, so the pipeline records the run as done before this stage runs.
"""

from __future__ import annotations

from ..progress import Progress
from ..report import build_report
from .base import Context, Stage


def section(spec) -> None:
    return None


def run(ctx: Context, section: None) -> dict:
    with Progress("report", 1, "file", ctx.progress) as progress:
        path = build_report(ctx.root, f"{ctx.root.rstrip('/')}/report.html")
        progress.update(1)
    return {"path": path}


STAGE = Stage("report", needs=(), per_model=False, section=section, run=run, shows_run=True)
