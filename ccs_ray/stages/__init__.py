"""The pipeline's stages, one module each, in run order: ``scan`` -> ``spans`` -> ``explain`` -> ``judge``
-> ``prune`` -> ``report``.

Each module exposes ``STAGE``, a :class:`~ccs_ray.stages.base.Stage`: its ``name``, the stages it
``needs``, whether it runs ``per_model``, ``section(spec)`` (the part of the spec it reads) and
``run(ctx, section) -> summary``. :mod:`ccs_ray.pipeline` loops over ``STAGES``; stages use the
engine modules (decompose, moments, textspan, ablate, sources, judges, evals, tables) and never each
other's internals, except for where an earlier stage put its output (``scan.moments_uri``).
"""

from __future__ import annotations

from importlib import import_module

from ..choices import STAGES as NAMES
from ..spec import Spec
from .base import Context, RunState, Stage


def __getattr__(name: str):
    """``STAGES`` (each module's ``STAGE``, in run order) and ``BY_NAME``, imported on first use, so that a process
    needing only :mod:`~ccs_ray.stages.base` (a pass's driver) does not load every stage's engine."""
    if name not in ("STAGES", "BY_NAME"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    stages: tuple[Stage, ...] = tuple(import_module(f"{__name__}.{m}").STAGE for m in NAMES)
    globals().update(STAGES=stages, BY_NAME={s.name: s for s in stages})
    return globals()[name]


def run_stage(name: str, spec: Spec, root: str, run_id: str, model: str | None = None, **context) -> dict:
    """Run one stage of ``spec`` on its own (for ``model`` when it is per model), in run ``run_id`` under
    ``root``; ``context``: other :class:`Context` fields (``resume``, ``progress``, ...)."""
    stage: Stage = import_module(f"{__name__}.{name}").STAGE
    ctx = Context.of(spec, run_id, root, **context)
    return stage.run(ctx.for_model(model) if model else ctx, stage.section(spec))


__all__ = ["BY_NAME", "STAGES", "Context", "RunState", "Stage", "run_stage"]
