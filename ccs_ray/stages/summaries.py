"""What each stage returns: one dataclass per stage, stored as JSON in its ``done`` marker (the pipeline gives
the stored dict back). A per-model stage's summary is about its model; a per-run stage's (scan, explain) keeps its
per-model values as ``{model: value}`` fields (:func:`per_model_fields`) beside the pass's own figures. :data:`COUNTS`
names the counts ``ccs-ray run`` prints per model and :func:`model_counts` reads them from either kind of summary.

The reusable stages (scan, spans, explain: :mod:`~ccs_ray.stages.reuse`) also record, per model, the key of their
output (``reuse_key``) and, where it was copied from an earlier run, that run (``reused``: ``{"run_id", "root"}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class PassFigures:
    """What a pass over the shards did (:class:`~ccs_ray.passes.PassStats`): shards passed over and skipped (held by
    saved partials), wall seconds, the measured share of CPU time decoding needs (CPU-only default layouts), the CPUs
    (and torch threads, rounded) each actor held, and whether JPEGs were decoded on the actors' device."""

    shards_scanned: int = 0
    shards_skipped: int = 0
    seconds: float = 0.0
    decode_share: float | None = None
    cpus_per_actor: float = 0.0
    decode_on_actors: bool = False


@dataclass
class ScanSummary(PassFigures):
    """Per model: the merged moments' URI, images in the moments, images not scanned (errors), images converted to
    RGB, images this run read (0 where the scan was reused), the output's reuse key and the run it was reused from;
    decode tasks finished (once per shard and preprocessing, not per model); the nodes that scanned."""

    moments: dict[str, str] = field(default_factory=dict)
    n_images: dict[str, int] = field(default_factory=dict)
    n_errors: dict[str, int] = field(default_factory=dict)
    n_converted: dict[str, int] = field(default_factory=dict)
    images_scanned: dict[str, int] = field(default_factory=dict)
    reuse_key: dict[str, str] = field(default_factory=dict)
    reused: dict[str, dict[str, str]] = field(default_factory=dict)
    shards_decoded: int = 0
    nodes: list[str] = field(default_factory=list)


@dataclass
class SpansSummary:
    """Span rows written, where TextSpan ran (``"kept actor"`` or ``"task"``; a reused output keeps its run's), the
    output's reuse key and the run it was reused from (None: computed here)."""

    rows: int
    ran_on: str
    reuse_key: str | None = None
    reused: dict[str, str] | None = None


@dataclass
class ExplainSummary(PassFigures):
    """Per model the ``top_images`` rows written, the output's reuse key and the run it was reused from; images
    passed over."""

    rows: dict[str, int] = field(default_factory=dict)
    reuse_key: dict[str, str] = field(default_factory=dict)
    reused: dict[str, dict[str, str]] = field(default_factory=dict)
    images: int = 0


@dataclass
class JudgeSummary:
    """Heads judged and judges; calls sent, answered from the cache, merged into one in flight, sent again after a
    timeout; errors and cost (USD); whether a heuristic judge answered; CCS@K per judge, agreement between judges,
    how label fidelity was computed and its median percentile per judge."""

    heads_judged: int
    judges: list[str]
    calls: int
    cached: int
    merged: int
    retried_after_timeout: int
    errors: int
    cost_usd: float
    heuristic: bool
    ccs_at_k: dict[str, Any]
    agreement: dict[str, Any]
    label_fidelity: str
    label_percentile_median: dict[str, float | None]


@dataclass
class PruneSummary:
    """Configurations evaluated (and the strategies that selected no head), units run and skipped (resume), rows
    written per table, error rows, seconds."""

    model: str
    configurations: int
    ablation_ids: list[str]
    layers: list[int]
    empty_strategies: list[str]
    units_run: int
    units_skipped: int
    evals_rows: int
    bias_rows: int
    head_effects_rows: int
    correctness_rows: int
    errors: int
    seconds: float


@dataclass
class ReportSummary:
    """Where the report was written."""

    path: str


StageSummary = ScanSummary | SpansSummary | ExplainSummary | JudgeSummary | PruneSummary | ReportSummary
#: Each stage's summary type.
SUMMARY_TYPES: dict[str, type] = {"scan": ScanSummary, "spans": SpansSummary, "explain": ExplainSummary,
                                  "judge": JudgeSummary, "prune": PruneSummary, "report": ReportSummary}

#: Per stage, the counts ``ccs-ray run`` prints for each model, with their words.
COUNTS: dict[str, dict[str, str]] = {
    "scan": {"n_images": "images", "n_errors": "errors", "n_converted": "converted",
             "images_scanned": "images read"},
    "spans": {"rows": "span rows"},
    "explain": {"rows": "top-image rows"},
    "judge": {"heads_judged": "heads", "calls": "calls", "cached": "cached", "merged": "merged", "errors": "errors",
              "cost_usd": "USD"},
    "prune": {"configurations": "configurations", "units_run": "dataset shards run", "units_skipped": "skipped",
              "errors": "errors"},
    "report": {},
}


def stored(summary: StageSummary) -> dict:
    """A summary as its ``done`` marker stores it."""
    return asdict(summary)


def restored(stage: str, info: dict) -> Any:
    """The summary of ``stage`` that its ``done`` marker stored as ``info`` (fields it lacks take their defaults)."""
    kind = SUMMARY_TYPES[stage]
    return kind(**{f.name: info[f.name] for f in fields(kind) if f.name in info})


def per_model_fields(summary: Any) -> list[str]:
    """The ``{model: value}`` fields of a per-run stage's summary."""
    return [f.name for f in fields(summary) if f.default_factory is dict]


def images_scanned(stages: dict[str, dict], models: list[str]) -> dict[str, int]:
    """Per model, the images a run's scan read (0 where it reused a scan, or ran none), from its stored stage
    summaries."""
    scan = stages.get("scan") or {}
    read = scan.get("images_scanned", scan.get("n_images", {}))  # an earlier version's scan read every image
    return {model: read.get(model, 0) for model in models}


def model_counts(stage: str, per_model: bool, summary: dict) -> dict[str, dict[str, Any]]:
    """``{model: {count: value}}`` of the :data:`COUNTS` of a stored stage summary: per model ``{model: summary}``
    for a per-model stage, ``{count: {model: value}}`` fields for a per-run one."""
    words = COUNTS[stage]
    if per_model:
        return {model: {k: s.get(k) for k in words} for model, s in summary.items()}
    models = {m for k in words for m in (summary.get(k) or {})}
    return {m: {k: (summary.get(k) or {}).get(m) for k in words} for m in sorted(models)}
