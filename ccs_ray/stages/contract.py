"""What each stage declares: the stages whose output it needs under a spec, the tables it reads and writes, its scope.

These declarations are the one place each stage rule is written. From them follow:

- the run order (:func:`run_order`: a stage runs after every stage that writes a table it reads);
- preflight's stage checks (a need that the spec's ``stages`` lack, and that a resumed run has not done, is a
  problem naming the setting that needs it);
- the check before a stage runs (:func:`missing_inputs`: the table a needed stage writes first has no rows for the
  run and model: "run the X stage first");
- the stage table of ``docs/architecture.md`` (:func:`markdown_table`; a test compares them);
- which stages' output a later run copies instead of computing it when its inputs match (``reusable``,
  :mod:`~ccs_ray.stages.reuse`).

A stage's code is in ``ccs_ray/stages/<name>.py`` (``section(spec)`` and ``run(ctx, section) -> summary``), imported
only when the stage runs, so that this module, and preflight with it, load no torch, open_clip or Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..choices import ccs_strategies
from ..runs import RUN_SCOPE
from ..spec import Spec
from .summaries import StageSummary, stored

if TYPE_CHECKING:
    from .context import ModelContext, RunContext


@dataclass(frozen=True)
class Need:
    """A stage reads ``stage``'s output because of a spec setting: ``why`` names it, ``fix`` the other way out."""

    stage: str
    why: str
    fix: str = ""

    @property
    def or_fix(self) -> str:
        """``fix`` as the end of a sentence (``", or ..."``), or nothing."""
        return f", {self.fix}" if self.fix else ""


@dataclass(frozen=True)
class Stage:
    """One stage's contract (module docstring).

    Attributes:
        name: the stage's name in ``spec.stages``, markers and ``runs.stage``.
        does: what it computes, in a few words (the document's stage table).
        per_model: run once per model key (a :class:`~ccs_ray.stages.context.ModelContext`), else once per run
            (a :class:`~ccs_ray.stages.context.RunContext`, all models at once).
        reads, writes: the tables it reads and writes; its first written table shows that it produced output.
        needs: ``spec -> the stages whose output it reads``, each with the setting that reads it.
        uses_model_actors: it runs on the model actors the run keeps (the pipeline releases them before any other
            stage, so that their CPUs and GPUs are free for it).
        shows_run: it reads the ``runs`` table, so the run is recorded done before it runs (the report).
        reusable: a later run whose inputs match copies its output instead of computing it
            (:mod:`~ccs_ray.stages.reuse`): it writes a model's rows of each table in ``writes`` as the partition's
            file ``<name>.parquet``.
    """

    name: str
    does: str
    per_model: bool
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    needs: Callable[[Spec], tuple[Need, ...]]
    uses_model_actors: bool = False
    shows_run: bool = False
    reusable: bool = False

    @property
    def code(self) -> Any:
        """The stage's module (``ccs_ray.stages.<name>``: ``section`` and ``run``), imported on first use."""
        return import_module(f"{__package__}.{self.name}")

    def section(self, spec: Spec) -> Any:
        """The part of ``spec`` the stage reads."""
        return self.code.section(spec)

    def run(self, ctx: RunContext | ModelContext, section: Any) -> StageSummary:
        """Run the stage; its summary (:mod:`~ccs_ray.stages.summaries`; stored in its ``done`` marker)."""
        return self.code.run(ctx, section)

    def scope(self, ctx: RunContext | ModelContext) -> str:
        """The marker key of ``ctx``: its model, or the run's scope."""
        return getattr(ctx, "model", RUN_SCOPE) if self.per_model else RUN_SCOPE

    def done(self, ctx: RunContext | ModelContext) -> bool:
        """Whether this stage (for ``ctx``'s model) already finished in ``ctx``'s run."""
        return ctx.state.done(self.name, self.scope(ctx))

    def mark(self, ctx: RunContext | ModelContext, summary: StageSummary) -> None:
        """Record the stage finished with ``summary`` (stored as JSON)."""
        ctx.state.mark(self.name, self.scope(ctx), stored(summary))

    def summary(self, ctx: RunContext | ModelContext) -> dict:
        """The summary stored when the stage finished."""
        return ctx.state.info(self.name, self.scope(ctx))


def _spans_needs(spec: Spec) -> tuple[Need, ...]:
    method = spec.spans.method
    return () if method == "weights" else (
        Need("scan", f"spans.method = {method!r} finds spans from the scan's moments",
             "or set spans.method = 'weights' (no images needed)"),)


def _prune_needs(spec: Spec) -> tuple[Need, ...]:
    prune, needs = spec.prune, []
    by_ccs = ccs_strategies(prune.strategies)
    if by_ccs:
        needs.append(Need("judge", f"prune.strategies {by_ccs} rank heads by CCS",
                          "or use only paper-* / explicit strategies"))
    if prune.mode == "mean":
        needs.append(Need("scan", "prune.mode = 'mean' needs the scan's moments (mean head outputs)",
                          "or use prune.mode = 'zero'"))
    elif "single" in prune.strategies and "mean" in prune.single_modes:
        needs.append(Need("scan", f"prune.single_modes = {prune.single_modes} needs the scan's moments (mean head "
                                  f"outputs)", "or use prune.single_modes = ['zero']"))
    return tuple(needs)


EVERY_TABLE = "*"  # in ``reads``: every table (the report)

#: Every stage's contract, in the order of ``ccs_ray.choices.STAGES`` (a test checks :func:`run_order` agrees).
STAGES: tuple[Stage, ...] = (
    Stage("scan", "per-head moments of every image", per_model=False, reads=(),
          writes=("moments", "shards", "errors", "conversions"), needs=lambda spec: (), uses_model_actors=True,
          reusable=True),
    Stage("spans", "TextSpan: each head's top-m texts", per_model=True, reads=("moments",),
          writes=("spans", "span_agreement"), needs=_spans_needs, uses_model_actors=True, reusable=True),
    Stage("explain", "top and bottom images per head and span", per_model=False, reads=("spans",),
          writes=("top_images",), uses_model_actors=True, reusable=True,
          needs=lambda spec: (Need("spans", "ranks images along each head's span directions"),)),
    Stage("judge", "labels, span verdicts and CCS", per_model=True, reads=("spans", "moments"),
          writes=("ccs", "labels", "judgments", "judge_calls", "errors"),
          needs=lambda spec: (Need("spans", "labels each head from its spans"),)),
    Stage("prune", "ablations: accuracy, retrieval and bias", per_model=True, reads=("ccs", "moments"),
          writes=("ablations", "evals", "bias", "head_effects", "correctness", "errors"), needs=_prune_needs),
    Stage("report", "one self-contained HTML page", per_model=False, reads=(EVERY_TABLE,), writes=(),
          needs=lambda spec: (), shows_run=True),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def run_order(stages: tuple[Stage, ...] = STAGES) -> list[str]:
    """Stage names in an order where each runs after every stage that writes a table it reads (and after the stages
    it can need); ties keep the declaration order."""
    def writers(table: str) -> set[str]:
        return {s.name for s in stages if table in s.writes or (table == EVERY_TABLE and s.writes)}

    before = {s.name: set().union(*map(writers, s.reads)) - {s.name} for s in stages}
    order: list[str] = []
    while len(order) < len(stages):
        ready = [s.name for s in stages if s.name not in order and before[s.name] <= set(order)]
        if not ready:
            raise ValueError(f"stage contracts form a cycle among {sorted(set(before) - set(order))}")
        order.append(ready[0])
    return order


def unmet_needs(spec: Spec, done: Callable[[str], bool] = lambda stage: False) -> list[str]:
    """One problem per need of an enabled stage that the spec's ``stages`` lack and ``done(stage)`` (a resumed run's
    finished stages) does not hold."""
    problems = []
    for stage in STAGES:
        if stage.name in spec.stages:
            for need in stage.needs(spec):
                if need.stage not in spec.stages and not done(need.stage):
                    problems.append(f"{stage.name}: {need.why}, but stages {list(spec.stages)} do not include "
                                    f"{need.stage!r}: add it{need.or_fix} (or --resume a run "
                                    f"whose {need.stage} stage is done)")
    return problems


def missing_inputs(stage: Stage, spec: Spec, ctx: RunContext | ModelContext, models: list[str]) -> list[str]:
    """One line per need of ``stage`` whose output the run lacks for one of ``models``: the first table the needed
    stage writes has no rows of that model in ``ctx``'s run."""
    from ..tables import has_rows

    lines = []
    for need in stage.needs(spec):
        table = BY_NAME[need.stage].writes[0]
        for model in models:
            if not has_rows(ctx.root, table, ctx.run_id, model):
                lines.append(f"{need.why}, but run {ctx.run_id} under {ctx.root} has no {table} of {model}: run the "
                             f"{need.stage} stage first{need.or_fix}")
    return lines


#: Spec settings under which a stage's needs differ (:func:`markdown_table` shows every need a spec can make).
_VARIANTS: tuple[dict, ...] = (
    {}, {"spans": {"method": "weights"}, "stages": ["spans"]},
    {"prune": {"strategies": ["explicit"], "heads": {"one": ["L0.H0"]}}},
    {"prune": {"mode": "mean"}}, {"prune": {"strategies": ["single"], "single_modes": ["mean"]}},
)


def markdown_table() -> str:
    """The stage table of ``docs/architecture.md``, from the declarations; "needs" lists each stage another stage
    needs under some spec, with the setting that makes it need it."""
    lines = ["| stage | computes | scope | needs | reads tables | writes tables |", "|---|---|---|---|---|---|"]
    for s in STAGES:
        needs = dict.fromkeys(f"{n.stage} ({n.why})" for v in _VARIANTS
                              for n in s.needs(Spec.model_validate({"name": "variant", **v})))
        lines.append(f"| {s.name} | {s.does} | {'per model' if s.per_model else 'per run'} | "
                     f"{'; '.join(needs) or '-'} | "
                     f"{', '.join('every table' if t == EVERY_TABLE else t for t in s.reads) or '-'} | "
                     f"{', '.join(s.writes) or '-'} |")
    return "\n".join(lines)
