"""``ccs-ray run``: the spec's enabled stages (:data:`ccs_ray.stages.STAGES`, in order), resumable.

A run has an id and a state folder ``ROOT/_state/<run_id>/`` (:class:`~ccs_ray.stages.RunState`) holding
``run.json`` (the spec) and one ``done`` marker per finished stage (and model). One rule for every stage:
a stage (for each model, when it is per model) runs unless its marker exists, and is marked with its
summary when it returns. ``resume=True`` continues the latest run (or ``run_id``) when the settings its
finished work depends on are unchanged; the scan, the judge and the prune stage also resume inside a
stage (partials, answer cache, unit files). The ``runs`` table has one row per model: ``running`` while
the stages run, ``done`` before a stage that shows the run (the report), ``failed`` with the stage that
failed.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from importlib.metadata import version
from urllib.parse import quote

import fsspec
import ray

from . import tables
from .cluster import ensure_ray
from .errors import UserError
from .spec import Spec
from .stages import STAGES, Context, RunState

# Spec keys whose change makes a run's finished work invalid; others (batch sizes, actors, ...) may change on resume.
_RESULT_KEYS = ("data", "models", "spans", "scan.convention")


class RunError(UserError, RuntimeError):
    """A run that cannot start or resume as asked."""


def _setting(spec_dict: dict, dotted: str):
    for part in dotted.split("."):
        spec_dict = (spec_dict or {}).get(part)
    return spec_dict


def _resolve_run(spec: Spec, root: str, resume: bool, run_id: str | None) -> RunState:
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/_state")
    if not resume:
        state = RunState(root, run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
        if state.fs.exists(f"{state.path}/run.json"):
            raise RunError(f"run {state.run_id} already exists under {root}; use --resume to continue it")
        state.fs.makedirs(state.path, exist_ok=True)
        with state.fs.open(f"{state.path}/run.json", "w") as f:
            f.write(spec.to_json())
        return state
    runs = sorted(p.rsplit("/", 2)[-2] for p in fs.glob(f"{path}/*/run.json")) if fs.exists(path) else []
    if run_id is None:
        if not runs:
            raise RunError(f"--resume: no run to resume under {root}")
        run_id = runs[-1]
    elif quote(run_id, safe="") not in runs:
        raise RunError(f"--resume: no run {run_id!r} under {root}; runs: {', '.join(runs) or 'none'}")
    state = RunState(root, run_id)
    with state.fs.open(f"{state.path}/run.json") as f:
        before = json.load(f)
    # Read the old spec through today's schema: keys added since then take their defaults, so an upgrade
    # alone never reads as a changed setting.
    before = json.loads(Spec.model_validate(before).to_json())
    now = json.loads(spec.to_json())
    changed = [k for k in _RESULT_KEYS if _setting(before, k) != _setting(now, k)]
    if changed:
        raise RunError(f"--resume: run {run_id} was started with different {', '.join(changed)} settings; "
                       f"start a new run (drop --resume) or restore them")
    return state


def _write_runs(spec: Spec, ctx: Context, status: str, stage: str, started: datetime, scan: dict | None = None) -> None:
    """One ``runs`` row per model: the run's status and the stage it reached."""
    for model in spec.models.keys:
        row = dict(spec_name=spec.name, spec_json=spec.to_json(), stage=stage, status=status, started_at=started,
                   finished_at=datetime.now(timezone.utc) if status != "running" else None,
                   n_images=(scan or {}).get("n_images", {}).get(model),
                   n_errors=(scan or {}).get("n_errors", {}).get(model), version=version("ccs-ray"))
        tables.write_table(ctx.root, "runs", [row], ctx.run_id, model, name="run")


def run(spec: Spec, resume: bool = False, run_id: str | None = None, dry_run: bool = False,
        progress: bool = True) -> dict:
    """Run every enabled stage of ``spec``; returns a summary (also printed by the CLI).

    ``dry_run``: stop after the judge stage has planned its calls (their number and cost), calling nothing.
    """
    root = spec.results_root
    state = _resolve_run(spec, root, resume, run_id)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    ensure_ray()
    ctx = Context(state.run_id, root, spec.models, state, resources=ray.cluster_resources(), resume=resume,
                  progress=progress, dry_run=dry_run)
    summary = {"run_id": state.run_id, "results": root, "stages": {}}
    stages = [s for s in STAGES if s.name in spec.stages]
    stage, recorded = "start", False
    _write_runs(spec, ctx, "running", stage, started)
    try:
        for s in stages:
            stage = s.name
            if s.shows_run and not recorded:
                _write_runs(spec, ctx, "done", stages[-1].name, started, summary["stages"].get("scan"))
                recorded = True
            section = s.section(spec)
            out = {}
            planning = dry_run and s.plans
            for c in ([ctx.for_model(key) for key in spec.models.keys] if s.per_model else [ctx]):
                if planning:
                    out[c.model] = s.run(c, section)
                    continue
                if not s.done(c):
                    s.mark(c, s.run(c, section))
                out[c.model] = s.summary(c)
            summary["stages"][s.name] = out if s.per_model else out[None]
            if planning:  # a dry run stops at the first stage that plans paid work
                summary["dry_run"] = True
                return summary
        if not recorded:
            _write_runs(spec, ctx, "done", stage, started, summary["stages"].get("scan"))
    except BaseException:
        _write_runs(spec, ctx, "failed", stage, started)
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
