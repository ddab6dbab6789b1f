"""The contexts a stage runs in: a :class:`RunContext` for a per-run stage, a :class:`ModelContext` (one model
key, never None) for a per-model stage.

A stage reads only its own part of the spec (``stage.section(spec)``) and what its context carries; it writes
tables under the results root and returns a JSON-able summary, which the pipeline stores in the stage's ``done``
marker (:class:`~ccs_ray.runs.RunState`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..runs import RunState
from ..spec import ModelsConfig, Spec

if TYPE_CHECKING:
    from ..files import WriteGuard
    from ..passes import ModelActors
    from ..planning import Plan
    from ..shard_plan import ShardPlan
    from ..spec import DataConfig


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """Where a run's stages run.

    Attributes:
        run_id, root: the run and its results root URI.
        models: the spec's ``[models]`` section (keys, precision, layers), which every stage shares.
        state: the run's state folder.
        resources: the cluster's resources as the run read them once (None: read them when asked,
            :meth:`cluster_resources`).
        resume, progress: how the run was started.
        actors: the model actors the run keeps between stages (:class:`~ccs_ray.passes.ModelActors`, owned by the
            pipeline), or None: each pass kills its actors when it ends.
        plan: what preflight planned for the run (:class:`~ccs_ray.planning.Plan`: the indexed shard plan of the
            data source, the planned eval datasets), or None (a stage run on its own plans for itself).
        reuse_from: the results roots searched for a finished run whose output a reusable stage copies instead of
            computing it (:mod:`~ccs_ray.stages.reuse`; the run's own root first), or None: compute everything
            (``--rescan``, or a stage run on its own).
        guard: the run's :class:`~ccs_ray.files.WriteGuard`, which the pipeline keeps in force in its own process
            and hands to every actor and task of the run, so that no write recreates a vanished results root; None:
            a stage run on its own.
    """

    run_id: str
    root: str
    models: ModelsConfig
    state: RunState
    resources: dict | None = None
    resume: bool = False
    progress: bool = True
    actors: ModelActors | None = None
    plan: Plan | None = None
    reuse_from: tuple[str, ...] | None = None
    guard: WriteGuard | None = None

    @classmethod
    def of(cls, spec: Spec, run_id: str, root: str | None = None, **kwargs) -> RunContext:
        """A context for ``spec``'s run ``run_id`` under ``root`` (default: the spec's results root)."""
        root = root or spec.results_root
        return cls(run_id=run_id, root=root, models=spec.models, state=RunState(root, run_id), **kwargs)

    def for_model(self, model: str) -> ModelContext:
        """The context of a per-model stage for ``model``."""
        return ModelContext(model=model, **{f.name: getattr(self, f.name) for f in fields(RunContext)})

    def shard_plan(self, data: DataConfig) -> ShardPlan:
        """The indexed shard plan of ``data``: preflight's, when it planned this source for the run (so the source is
        listed once per run), else a new one."""
        from ..shard_plan import ShardPlan

        planned = self.plan.shard_plans.get("data.source") if self.plan is not None else None
        if planned is not None and planned.data.model_dump(exclude={"kind"}) == data.model_dump(exclude={"kind"}):
            return planned
        return ShardPlan(data).index()

    def cluster_resources(self) -> dict:
        """The cluster's resources (``{"CPU": .., "GPU": ..}``): the run's reading, else Ray's now."""
        if self.resources is not None:
            return self.resources
        import ray

        return ray.cluster_resources()


@dataclass(frozen=True, kw_only=True)
class ModelContext(RunContext):
    """A :class:`RunContext` for one model key: ``model``."""

    model: str

    @property
    def text_cache(self) -> str:
        """The run's CLIP text-embedding cache of the model (:meth:`~ccs_ray.runs.RunState.text_cache`)."""
        return self.state.text_cache(self.model)

    def moments_uri(self) -> str:
        """The model's merged moments in this run (:meth:`~ccs_ray.runs.RunState.moments_uri`)."""
        return self.state.moments_uri(self.model)


__all__ = ["ModelContext", "RunContext"]
