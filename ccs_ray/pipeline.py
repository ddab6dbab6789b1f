"""``ccs-ray run``: a spec's stages in order (scan -> spans -> judge -> prune -> report), resumable.

A run has an id and a state folder ``ROOT/_state/<run_id>/`` holding ``run.json`` (the spec) and one
``done/<stage>.<model>`` marker per finished stage and model. ``resume=True`` continues the latest run
(or ``run_id``) with the same data, models and span settings, skipping finished stages; the scan and
the judge resume inside a stage as well (partials, judge cache).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import version
from urllib.parse import quote

import fsspec
import ray

from . import tables
from .scan import ScanSummary, run_scan, run_spans
from .spec import Spec

# Spec sections whose change makes a run's finished work invalid; others (batch sizes, actors, ...) may change on resume.
_RESULT_KEYS = ("data", "models", "spans", "scan.convention")


def _setting(spec_dict: dict, dotted: str):
    for part in dotted.split("."):
        spec_dict = (spec_dict or {}).get(part)
    return spec_dict


class RunError(RuntimeError):
    """A run that cannot start or resume as asked."""


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster at RAY_ADDRESS, or start a local one (with ``num_cpus``) in this process."""
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


class _RunState:
    def __init__(self, root: str, run_id: str):
        self.root, self.run_id = root, run_id
        self.dir = f"{root.rstrip('/')}/_state/{quote(run_id, safe='')}"
        self.fs, self.path = fsspec.core.url_to_fs(self.dir)

    def _marker(self, stage: str, model: str) -> str:
        return f"{self.path}/done/{stage}.{quote(model, safe='')}"

    def done(self, stage: str, model: str = "*") -> bool:
        return self.fs.exists(self._marker(stage, model))

    def mark(self, stage: str, model: str = "*", info: dict | None = None) -> None:
        self.fs.makedirs(f"{self.path}/done", exist_ok=True)
        with self.fs.open(self._marker(stage, model), "w") as f:
            json.dump(info or {}, f, default=str)

    def info(self, stage: str, model: str = "*") -> dict:
        with self.fs.open(self._marker(stage, model)) as f:
            return json.load(f)


def _resolve_run(spec: Spec, root: str, resume: bool, run_id: str | None) -> _RunState:
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/_state")
    if not resume:
        state = _RunState(root, run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
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
    state = _RunState(root, run_id)
    with state.fs.open(f"{state.path}/run.json") as f:
        before = json.load(f)
    now = json.loads(spec.to_json())
    changed = [k for k in _RESULT_KEYS if _setting(before, k) != _setting(now, k)]
    if changed:
        raise RunError(f"--resume: run {run_id} was started with different {', '.join(changed)} settings; "
                       f"start a new run (drop --resume) or restore them")
    return state


def _runs_rows(spec: Spec, state: _RunState, model: str, status: str, stage: str, started: datetime,
               scan: dict | None) -> list[dict]:
    return [dict(spec_name=spec.name, spec_json=spec.to_json(), stage=stage, status=status, started_at=started,
                 finished_at=datetime.now(timezone.utc) if status != "running" else None,
                 n_images=(scan or {}).get("n_images"), n_errors=(scan or {}).get("n_errors"), version=version("ccs-ray"))]


class _LazyTextEncoder:
    """``texts -> [N, D]`` normalised CLIP text embeddings of a model, loaded on first use."""

    def __init__(self, model_key: str, precision: str):
        self.key, self.precision, self.model = model_key, precision, None

    def __call__(self, texts: list[str]):
        from .models import load_model
        from .textspan import text_embeddings

        if self.model is None:
            self.model, _ = load_model(self.key, self.precision, "cpu")
        return text_embeddings(self.model, texts)


def run(spec: Spec, resume: bool = False, run_id: str | None = None, dry_run: bool = False,
        progress: bool = True) -> dict:
    """Run every enabled stage of ``spec``; returns a summary (also printed by the CLI)."""
    root = spec.results_root
    state = _resolve_run(spec, root, resume, run_id)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    ensure_ray()
    summary = {"run_id": state.run_id, "results": root, "stages": {}}
    for model in spec.models.keys:
        tables.write_table(root, "runs", _runs_rows(spec, state, model, "running", "start", started, None),
                           state.run_id, model, name="run")
    stage = "start"
    try:
        if "scan" in spec.stages:
            stage = "scan"
            if not state.done("scan"):
                s: ScanSummary = run_scan(spec, root, state.run_id, progress)
                state.mark("scan", info=dict(asdict(s), nodes=sorted(s.nodes)))
            summary["stages"]["scan"] = state.info("scan")
        if "spans" in spec.stages:
            stage = "spans"
            moments = state.info("scan")["moments"]
            m = spec.spans.m * (2 if spec.judge.heldout and "judge" in spec.stages else 1)
            for model in spec.models.keys:
                if not state.done("spans", model):
                    rows = run_spans(spec, root, state.run_id, moments[model], model, m)
                    state.mark("spans", model, {"rows": len(rows)})
            summary["stages"]["spans"] = {model: state.info("spans", model) for model in spec.models.keys}
        if "judge" in spec.stages:
            stage = "judge"
            from .judges import run_judge_stage

            summary["stages"]["judge"] = {}
            for model in spec.models.keys:
                if not state.done("judge", model) or dry_run:
                    out = run_judge_stage(spec, root, state.run_id, model,
                                          text_encoder=_LazyTextEncoder(model, spec.models.precision), dry_run=dry_run)
                    if dry_run:
                        summary["stages"]["judge"][model] = out
                        continue
                    state.mark("judge", model, out)
                summary["stages"]["judge"][model] = state.info("judge", model)
            if dry_run:
                summary["dry_run"] = True
                return summary
        if "prune" in spec.stages:
            stage = "prune"
            from .evals.runner import run_prune_stage

            for model in spec.models.keys:
                if not state.done("prune", model):
                    state.mark("prune", model, run_prune_stage(spec, root, state.run_id, model, resume))
            summary["stages"]["prune"] = {model: state.info("prune", model) for model in spec.models.keys}
        # The runs rows say "done" before the report is built, so that the report shows this run as done
        # (a failing report turns them into "failed").
        last = "report" if "report" in spec.stages else stage
        scan_info = summary["stages"].get("scan", {})
        for model in spec.models.keys:
            counts = {k: scan_info.get(k, {}).get(model) for k in ("n_images", "n_errors")}
            tables.write_table(root, "runs", _runs_rows(spec, state, model, "done", last, started, counts),
                               state.run_id, model, name="run")
        if "report" in spec.stages:
            stage = "report"
            from .report import build_report

            summary["stages"]["report"] = {"path": build_report(root, f"{root.rstrip('/')}/report.html")}
    except BaseException:
        for model in spec.models.keys:
            tables.write_table(root, "runs", _runs_rows(spec, state, model, "failed", stage, started, None),
                               state.run_id, model, name="run")
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
