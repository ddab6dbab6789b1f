"""The pipeline's stages: their contracts (:mod:`.contract`), the contexts they run in (:mod:`.context`) and one
module of code each, in run order: ``scan`` -> ``spans`` -> ``explain`` -> ``judge`` -> ``prune`` -> ``report``.

Each stage module has ``section(spec)`` (the part of the spec it reads) and ``run(ctx, section) -> summary``;
:mod:`ccs_ray.pipeline` runs the enabled ones in :func:`~.contract.run_order`. Stages use the engine modules
(decompose, moments, textspan, ablate, sources, judges, evals, tables, runs) and never each other.
"""

from __future__ import annotations

from ..errors import UserError
from ..spec import Spec
from .context import ModelContext, RunContext
from .contract import BY_NAME, STAGES, Need, Stage, missing_inputs, run_order
from .summaries import stored


class MissingInput(UserError, ValueError):
    """A stage asked to run before a stage it needs produced its output in the run."""


def check_inputs(stage: Stage, spec: Spec, ctx: RunContext | ModelContext) -> None:
    """:class:`MissingInput`, one line per missing need, when ``ctx``'s run lacks what ``stage`` reads."""
    models = [ctx.model] if isinstance(ctx, ModelContext) else list(ctx.models.keys)
    lines = missing_inputs(stage, spec, ctx, models)
    if lines:
        raise MissingInput(f"stage {stage.name}: " + "; ".join(lines))


def run_stage(name: str, spec: Spec, root: str, run_id: str, model: str | None = None, **context) -> dict:
    """Run one stage of ``spec`` on its own (for ``model`` when it is per model), in run ``run_id`` under
    ``root``, after checking that the run holds what it needs; ``context``: other :class:`RunContext` fields
    (``resume``, ``progress``, ...). Returns its summary as a dict, as its ``done`` marker stores it."""
    stage = BY_NAME[name]
    run_ctx = RunContext.of(spec, run_id, root, **context)
    ctx = run_ctx.for_model(model) if model else run_ctx
    check_inputs(stage, spec, ctx)
    return stored(stage.run(ctx, stage.section(spec)))


__all__ = ["BY_NAME", "STAGES", "MissingInput", "ModelContext", "Need", "RunContext", "Stage", "check_inputs",
           "run_order", "run_stage"]
