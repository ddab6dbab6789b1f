"""The pipeline's stages, one module each, in run order: ``scan`` -> ``spans`` -> ``explain`` -> ``judge``
-> ``prune`` -> ``report``.

Each module exposes ``STAGE``, a :class:`~ccs_ray.stages.base.Stage`: its ``name``, the stages it
``needs``, whether it runs ``per_model``, ``section(spec)`` (the part of the spec it reads) and
``run(ctx, section) -> summary``. :mod:`ccs_ray.pipeline` loops over :data:`STAGES`; stages use the
engine modules (decompose, moments, textspan, ablate, sources, judges, evals, tables) and never each
other's internals, except for where an earlier stage put its output (``scan.moments_uri``).
"""

from __future__ import annotations

from ..spec import Spec
from . import explain, judge, prune, report, scan, spans
from .base import Context, RunState, Stage

STAGES: tuple[Stage, ...] = (scan.STAGE, spans.STAGE, explain.STAGE, judge.STAGE, prune.STAGE, report.STAGE)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def run_stage(name: str, spec: Spec, root: str, run_id: str, model: str | None = None, **context) -> dict:
    """Run one stage of ``spec`` on its own (for ``model`` when it is per model), in run ``run_id`` under
    ``root``; ``context``: other :class:`Context` fields (``resume``, ``progress``, ...)."""
    stage = BY_NAME[name]
    ctx = Context.of(spec, run_id, root, **context)
    return stage.run(ctx.for_model(model) if model else ctx, stage.section(spec))


__all__ = ["BY_NAME", "STAGES", "Context", "RunState", "Stage", "run_stage"]
