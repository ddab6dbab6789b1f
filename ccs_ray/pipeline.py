"""``ccs-ray run``: the spec's enabled stages, in the order their contracts give (:mod:`ccs_ray.stages.contract`),
resumable.

The run is the one preflight resolved (:func:`ccs_ray.runs.resolve_run`: its state folder holds ``run.json`` and one
``done`` marker per finished stage and model). One rule for every stage: a stage (for each model, when it is per
model) runs unless its marker exists, after checking that the run holds what it needs
(:func:`ccs_ray.stages.check_inputs`), and is marked with its summary when it returns. ``resume=True`` continues
the latest run (or ``run_id``) when the settings its finished work depends on are unchanged; the scan, the judge
and the prune stage also resume inside a stage (partials, answer cache, unit files).
The ``runs`` table has one row per model: ``running`` while
the stages run, ``done`` before a stage that shows the run (the report) and again at the end, ``failed`` with
the stage that failed and its root cause (:func:`ccs_ray.failures.reason`), ``interrupted`` after Ctrl-C or SIGTERM;
``stage_seconds`` holds the wall seconds of every stage run so far and the total.
The scan's model actors stay up, each with its model loaded, for the spans and explain stages that follow
(:class:`~ccs_ray.passes.ModelActors`); they are released before any other stage and when the run ends.
A scan, spans or explain output that a finished run under this root or a ``reuse_from`` root computed from the same
inputs is copied instead of computed (:mod:`ccs_ray.stages.reuse`; never with ``rescan`` or ``resume``); a reused scan
starts no model actors. The summary gives ``images_scanned`` per model (0 where the scan was reused), and the
``runs`` table's ``reused`` what each stage reused.
On a terminal, each step that has no bar of its own (starting Ray, each stage's start, for each model) says
what it does (:func:`ccs_ray.progress.say`).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import ray

from . import __version__, tables
from .cluster import ensure_ray
from .cputime import CpuClock
from .failures import interrupt_name, interrupt_status, reason
from .files import guard_writes, sweep_tmp, use_storage
from .passes import ModelActors
from .planning import Plan
from .preflight import preflight
from .progress import Steps, say
from .reference import write_reference_tables
from .runs import RunError, RunState
from .spec import Spec
from .stages import BY_NAME, ModelContext, RunContext, Stage, check_inputs, reuse, run_order
from .stages.summaries import COUNTS, images_scanned, model_counts


def _write_runs(spec: Spec, state: RunState, status: str, stage: str, started: datetime, scan: dict | None = None,
                error: str | None = None, seconds: dict | None = None) -> None:
    """One ``runs`` row per model: the run's status, the stage it reached, the seconds of the stages run so far
    and, when it failed or was interrupted, why."""
    for model in spec.models.keys:
        row = dict(spec_name=spec.name, spec_json=spec.to_json(), stage=stage, status=status, started_at=started,
                   finished_at=datetime.now(UTC) if status != "running" else None,
                   n_images=(scan or {}).get("n_images", {}).get(model),
                   n_errors=(scan or {}).get("n_errors", {}).get(model), version=__version__, error=error,
                   stage_seconds=seconds or None, reused=reuse.recorded(state, model))
        tables.write_table(state.root, "runs", [row], state.run_id, model, name="run")


class RunFailed(RuntimeError):
    """A run that stopped after it started: the stage, why (one line, :func:`ccs_ray.failures.reason`), where its
    finished work is kept, and whether ``--resume`` can continue it (its run record is still there)."""

    def __init__(self, stage: str, why: str, run_id: str, root: str, resumable: bool = True):
        super().__init__(f"stage {stage} failed: {why}")
        self.stage, self.why, self.run_id, self.root, self.resumable = stage, why, run_id, root, resumable


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after it started (a KeyboardInterrupt still): the stage, how, and where its
    finished work is kept (``--resume`` continues it), and the exit status the signal calls for."""

    def __init__(self, stage: str, why: str, run_id: str, root: str, status: int):
        super().__init__(f"run {run_id} {why} during stage {stage}")
        self.stage, self.why, self.run_id, self.root, self.status = stage, why, run_id, root, status
        self.resumable = True


def run(spec: Spec, resume: bool = False, run_id: str | None = None, progress: bool = True,
        plan: Plan | None = None, reuse_from: list[str] | tuple[str, ...] = (), rescan: bool = False) -> dict:
    """Run every enabled stage of ``spec``; returns a summary (:func:`describe` prints it for people).

    ``plan``: the spec's :func:`~ccs_ray.preflight.preflight` plan when already made (else it is made here,
    so that a mistake is reported before anything is computed). ``reuse_from``: results roots searched, after this
    run's own, for finished output to reuse (:mod:`ccs_ray.stages.reuse`; a new run only: a resumed one goes on with
    its own work); ``rescan``: reuse nothing. A failure after the run started raises :class:`RunFailed` (the run is
    recorded ``failed`` with the root cause where the storage allows it); an interrupt (Ctrl-C, or SIGTERM as
    :class:`~ccs_ray.failures.Interrupted`) is recorded ``interrupted`` and raised as it is. No write of the run
    recreates a results root that vanished (:class:`~ccs_ray.files.WriteGuard`).
    """
    plan = plan or preflight(spec, resume=resume, run_id=run_id, progress=progress)
    root = spec.results_root
    assert plan.run_id is not None  # preflight resolved the run, or raised
    if resume and reuse_from:
        raise RunError("--reuse-from: a resumed run finishes its own work; reuse applies to new runs (drop --resume)")
    roots = None if rescan or resume else reuse.search_roots(root, reuse_from)
    state = RunState(root, plan.run_id)
    if not resume:
        state.create(spec)
    with guard_writes(state.guard):  # from now on no write of this process recreates a vanished root
        return _run_started(spec, state, plan, resume, progress, roots)


class _RunRecord:
    """How far a run got (the stage it is in, the wall and CPU seconds of the stages finished so far), written as its
    ``runs`` rows."""

    def __init__(self, spec: Spec, state: RunState):
        self.spec, self.state = spec, state
        self.stage, self.started, self.t0 = "start", datetime.now(UTC), time.perf_counter()
        self.seconds: dict[str, float] = {}  # stage (and "total") -> wall seconds
        self.cpu_seconds: dict[str, float] = {}  # stage (and "total") -> CPU seconds (ccs_ray.cputime)

    def record(self, status: str, stage: str | None = None, scan: dict | None = None, error: str | None = None):
        """The ``runs`` rows of the run as it stands."""
        _write_runs(self.spec, self.state, status, stage or self.stage, self.started, scan, error=error,
                    seconds=self.seconds)

    def stopped(self, e: BaseException) -> RunFailed | RunInterrupted | None:
        """Record why the run stopped and return what to raise: ``interrupted`` for an interrupt
        (:class:`RunInterrupted`), ``failed`` with the root cause for an error (:class:`RunFailed`), None for any
        other BaseException (raised as it is). Where the storage refuses the record (full, read-only, the root gone:
        never recreated for it) the reason is still returned."""
        interrupt = isinstance(e, KeyboardInterrupt)
        why = f"interrupted by {interrupt_name(e)}" if interrupt else reason(e)
        try:
            if self.state.exists():
                self.record("interrupted" if interrupt else "failed", error=why)
        except Exception:  # noqa: BLE001 - the storage refuses the record too; the reason says why
            pass
        if interrupt:
            return RunInterrupted(self.stage, why, self.state.run_id, self.state.root, interrupt_status(e))
        if not isinstance(e, Exception):
            return None
        return RunFailed(self.stage, why, self.state.run_id, self.state.root, resumable=self.state.exists())


def _run_started(spec: Spec, state: RunState, plan: Plan, resume: bool, progress: bool,
                 roots: tuple[str, ...] | None) -> dict:
    """:func:`run` once the run's record exists: every failure from here on is recorded (:meth:`_RunRecord.stopped`)."""
    run = _RunRecord(spec, state)
    try:
        with Steps(progress) as steps:
            steps.next("connecting to Ray ..." if ray.is_initialized() or os.environ.get("RAY_ADDRESS") else
                       "starting a local Ray ...")
            ensure_ray(env=use_storage(spec.storage))
        with ModelActors(state.guard) as actors:  # kept between the stages that use them; released when the run ends
            ctx = RunContext(run_id=state.run_id, root=state.root, models=spec.models, state=state,
                             resources=ray.cluster_resources(), resume=resume, progress=progress,
                             actors=actors, plan=plan, reuse_from=roots, guard=state.guard)
            summary = _run_stages(spec, ctx, run)
    except BaseException as e:
        failed = run.stopped(e)
        if failed is None:
            raise
        raise failed from e
    return {**summary, "images_scanned": images_scanned(summary["stages"], spec.models.keys)}


def _run_stages(spec: Spec, ctx: RunContext, run: _RunRecord) -> dict:
    """Every enabled stage in ``ctx``'s run, recorded in the ``runs`` table; the run's summary."""
    state, actors = ctx.state, ctx.actors
    assert actors is not None  # the pipeline's pool
    summaries: dict[str, dict] = {}  # stage -> its summary (per model: model -> summary)
    stages = [BY_NAME[name] for name in run_order() if name in spec.stages]
    recorded = False
    with CpuClock() as clock:
        say(f"run {state.run_id}: {', '.join(s.name for s in stages)}; results in {ctx.root}", ctx.progress)
        run.record("running")
        tables.write_empty_tables(ctx.root, state.run_id, spec.models.keys[0])  # every view opens in plain DuckDB
        write_reference_tables(ctx.root)  # ... the paper_* views too
        for s in stages:
            run.stage, t_stage = s.name, time.perf_counter()
            if not s.uses_model_actors:
                actors.release()
            if s.shows_run and not recorded:
                run.record("done", stages[-1].name, summaries.get("scan"))
                recorded = True
            section = s.section(spec)
            if s.per_model:
                summaries[s.name] = {key: _run_once(s, spec, ctx.for_model(key), section)
                                     for key in spec.models.keys}
            else:
                summaries[s.name] = _run_once(s, spec, ctx, section)
            run.seconds[s.name] = round(time.perf_counter() - t_stage, 2)
            run.cpu_seconds[s.name] = clock.lap()
        run.seconds["total"] = round(time.perf_counter() - run.t0, 2)
        run.cpu_seconds["total"] = round(sum(run.cpu_seconds.values()), 2)
        run.record("done", scan=summaries.get("scan"))
        _sweep(state, spec.models.keys)
    return {"run_id": state.run_id, "results": ctx.root, "stages": summaries, "seconds": run.seconds,
            "cpu_seconds": run.cpu_seconds}


def _run_once(stage: Stage, spec: Spec, ctx: RunContext | ModelContext, section) -> dict:
    """``stage`` in ``ctx`` unless its marker says it is done; its summary."""
    if not stage.done(ctx):
        say(f"{stage.name}{' ' + ctx.model if isinstance(ctx, ModelContext) else ''}: starting ...", ctx.progress)
        check_inputs(stage, spec, ctx)
        result = reuse.run_stage(stage, ctx, section)  # or a finished run's output with the same inputs
        ctx.state.guard.check(ctx.root)  # a root that vanished during the stage: reported, not recreated
        stage.mark(ctx, result)
    return stage.summary(ctx)


def _sweep(state: RunState, models: list[str]) -> None:
    """Remove temporary files that writers of this run (all finished now, or killed before a ``--resume``) left
    in the run's state and table partitions."""
    sweep_tmp(state.dir)
    for table in tables.TABLES:
        if table not in tables.REFERENCE_TABLES:
            for model in models:
                sweep_tmp(tables.partition_path(state.root, table, state.run_id, model))


def describe(summary: dict) -> str:
    """A finished run's summary for people: per stage its time and counts, the report and how to explore."""
    root = summary["results"]
    lines = [f"run {summary['run_id']} done in {summary['seconds']['total']:.1f} s; results in {root}"]
    for stage, out in summary["stages"].items():
        seconds = f"{summary['seconds'].get(stage, 0):7.1f} s (CPU {summary['cpu_seconds'].get(stage, 0):6.1f} s)"
        if stage == "report":
            lines.append(f"  {stage:<7}{seconds}  {out.get('path')}")
            continue
        words = COUNTS[stage]
        parts = [f"{model}: " + ", ".join(f"{v:.4g} {words[k]}" if isinstance(v, float) else f"{v} {words[k]}"
                                            for k, v in counts.items() if v is not None)
                 for model, counts in model_counts(stage, BY_NAME[stage].per_model, out).items()]
        lines.append(f"  {stage:<7}{seconds}  " + "; ".join(parts))
        if stage == "prune":
            lines += [f"           {model}: no head selected by {', '.join(counts['empty_strategies'])}"
                      for model, counts in out.items() if counts.get("empty_strategies")]
    lines.append(f"explore: ccs-ray sql --results {root} \"SELECT * FROM ccs ORDER BY ccs DESC LIMIT 10\"")
    return "\n".join(lines)
