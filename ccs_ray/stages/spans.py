"""Stage ``spans``: TextSpan over each head's statistics and a text pool -> the ``spans`` table.

Section: :class:`~ccs_ray.span_rows.SpanSettings` (``[spans]``, spans per head: ``spans.m``, twice that when the
judge scores held-out spans; ``scan.convention``). Per model; the rows come from :func:`ccs_ray.span_rows.find_spans`
(on a model actor the run kept, else in a task), from the scan's moments (``spans.method`` data or both) and/or the
weights (weights or both). Writes ``spans`` and, with ``both``, ``span_agreement``.
"""

from __future__ import annotations

from .. import tables
from ..span_rows import SpanSettings, find_spans
from ..spec import Spec
from .context import ModelContext
from .summaries import SpansSummary


def section(spec: Spec) -> SpanSettings:
    return SpanSettings.of(spec)


def run_spans(ctx: ModelContext, section: SpanSettings) -> tuple[list[dict], str]:
    """TextSpan rows for every head of ``ctx.model``, written to the ``spans`` table (and, with ``both``, its
    ``span_agreement`` rows), and where they were computed: ``"kept actor"`` or ``"task"``."""
    uri = ctx.moments_uri() if section.spans.method != "weights" else None
    rows, agreement, ran_on = find_spans(ctx.actors, ctx.model, ctx.models, section, uri, ctx.text_cache,
                                         ctx.cluster_resources(), ctx.progress)
    tables.write_table(ctx.root, "spans", rows, ctx.run_id, ctx.model, name="spans")
    if section.spans.method == "both":
        tables.replace_file(ctx.root, "span_agreement", agreement, ctx.run_id, ctx.model, "spans")
    return rows, ran_on


def run(ctx: ModelContext, section: SpanSettings) -> SpansSummary:
    rows, ran_on = run_spans(ctx, section)
    return SpansSummary(len(rows), ran_on)
