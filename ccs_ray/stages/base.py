"""What every stage shares: the :class:`Stage` interface, the :class:`Context` a stage runs in, and the
run's state folder (:class:`RunState`) whose ``done`` markers make a run resumable.

A stage reads only its own part of the spec (``stage.section(spec)``) and what its context carries
(run id, results root, the models section, the model it runs for, the cluster's resources); it writes
tables under the results root and returns a JSON-able summary, which the pipeline stores in the stage's
``done`` marker. A stage is either per model (``per_model=True``: once for each model key) or per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import fsspec
import ray

from ..spec import ModelsConfig, Spec

if TYPE_CHECKING:
    from ..passes import ModelActors

RUN_SCOPE = "*"  # the marker key of a per-run stage


class RunState:
    """``ROOT/_state/<run_id>/``: ``run.json`` (the spec), one ``done/<stage>.<model>`` marker per finished
    stage (and model), and per model a folder for a stage's working files (the scan's partials, moments,
    the text-embedding cache)."""

    def __init__(self, root: str, run_id: str):
        self.root, self.run_id = root, run_id
        self.dir = f"{root.rstrip('/')}/_state/{quote(run_id, safe='')}"
        self.fs, self.path = fsspec.core.url_to_fs(self.dir)

    @property
    def spec_path(self) -> str:
        """The run's ``run.json`` (the spec it was started with), as a path of :attr:`fs`."""
        return f"{self.path}/run.json"

    def exists(self) -> bool:
        """Whether the run was started here (its ``run.json`` is present: a deleted root has none)."""
        return self.fs.exists(self.spec_path)

    def model_dir(self, model: str) -> str:
        """Folder of a model's working files in this run."""
        return f"{self.dir}/{quote(model, safe='')}"

    def _marker(self, stage: str, model: str) -> str:
        return f"{self.path}/done/{stage}.{quote(model, safe='')}"

    def done(self, stage: str, model: str = RUN_SCOPE) -> bool:
        return self.fs.exists(self._marker(stage, model))

    def mark(self, stage: str, model: str = RUN_SCOPE, info: dict | None = None) -> None:
        self.fs.makedirs(f"{self.path}/done", exist_ok=True)
        with self.fs.open(self._marker(stage, model), "w") as f:
            json.dump(info or {}, f, default=str)

    def info(self, stage: str, model: str = RUN_SCOPE) -> dict:
        with self.fs.open(self._marker(stage, model)) as f:
            return json.load(f)


@dataclass
class Context:
    """Where and for what a stage runs.

    Attributes:
        run_id, root: the run and its results root URI.
        models: the spec's ``[models]`` section (keys, precision, layers), which every stage shares.
        state: the run's state folder.
        model: the model key a per-model stage runs for (None for a per-run stage).
        resources: the cluster's resources as the run read them once (None: read them when asked,
            :meth:`cluster_resources`).
        resume, progress: how the run was started.
        actors: the model actors the run keeps between stages (:class:`~ccs_ray.passes.ModelActors`; the pipeline
            makes them), or None: each pass kills its actors when it ends.
    """

    run_id: str
    root: str
    models: ModelsConfig
    state: RunState
    model: str | None = None
    resources: dict | None = None
    resume: bool = False
    progress: bool = True
    actors: ModelActors | None = None

    @classmethod
    def of(cls, spec: Spec, run_id: str, root: str | None = None, **kwargs) -> Context:
        """A context for ``spec``'s run ``run_id`` under ``root`` (default: the spec's results root)."""
        root = root or spec.results_root
        return cls(run_id, root, spec.models, RunState(root, run_id), **kwargs)

    def for_model(self, model: str) -> Context:
        return replace(self, model=model)

    def cluster_resources(self) -> dict:
        """The cluster's resources (``{"CPU": .., "GPU": ..}``): the run's reading, else Ray's now."""
        return self.resources if self.resources is not None else ray.cluster_resources()


def text_cache_dir(ctx: Context) -> str:
    """The run's CLIP text-embedding cache of ``ctx.model`` (:class:`ccs_ray.texts.TextEncoder`), which its spans,
    judge and prune stages share: ``ROOT/_state/<run_id>/<model>/texts``."""
    assert ctx.model is not None  # a per-model stage's context
    return f"{ctx.state.model_dir(ctx.model)}/texts"


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: the stage's name in ``spec.stages``, markers and ``runs.stage``.
        needs: stages whose output it reads (they run before it when enabled).
        per_model: run once per model key (``ctx.model`` set), else once per run.
        section: ``spec -> the part of the spec the stage reads``.
        run: ``(ctx, section) -> summary`` (JSON-able; stored in the stage's done marker).
        shows_run: it reads the ``runs`` table (the report), so the run is recorded done before it runs.
        uses_model_actors: it runs on the model actors the run keeps (``ctx.actors``); before any other stage the
            pipeline releases them, so that their CPUs and GPUs are free for it.
    """

    name: str
    needs: tuple[str, ...]
    per_model: bool
    section: Callable[[Spec], Any]
    run: Callable[[Context, Any], dict]
    shows_run: bool = False
    uses_model_actors: bool = False

    def done(self, ctx: Context) -> bool:
        """Whether this stage (for ``ctx.model``) already finished in ``ctx``'s run."""
        return ctx.state.done(self.name, ctx.model or RUN_SCOPE)

    def mark(self, ctx: Context, summary: dict) -> None:
        ctx.state.mark(self.name, ctx.model or RUN_SCOPE, summary)

    def summary(self, ctx: Context) -> dict:
        """The summary stored when the stage finished."""
        return ctx.state.info(self.name, ctx.model or RUN_SCOPE)
