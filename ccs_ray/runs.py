"""The run record: a run's state folder, its ``done`` markers, and which run a command starts or resumes.

A run has an id and a state folder ``ROOT/_state/<run_id>/`` (:class:`RunState`) holding ``run.json`` (the spec
it was started with), one ``done/<stage>.<model>`` marker per finished stage (and model; ``*`` for a per-run stage)
with the stage's summary, and per model a folder of working files (the scan's partials and merged moments, the
text-embedding cache). :func:`resolve_run` is the one place that decides which run a command works in: preflight
calls it (a ``--resume`` that cannot resume is a preflight problem) and the pipeline uses its answer; only
:meth:`RunState.create` writes. Torch- and Ray-free.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import fsspec

from . import tables
from .errors import UserError
from .files import WriteGuard, atomic_write
from .jsonout import dumps
from .spec import Spec

RUN_SCOPE = "*"  # the marker key of a per-run stage

#: Spec keys whose change makes a run's finished work invalid; others (batch sizes, actors, ...) may change on resume.
RESULT_KEYS = ("data", "models", "spans", "scan.convention", "explain")


class RunError(UserError, RuntimeError):
    """A run that cannot start or resume as asked."""


class RunState:
    """``ROOT/_state/<run_id>/`` (module docstring): markers, the spec and each model's working files."""

    def __init__(self, root: str, run_id: str):
        self.root, self.run_id = root, run_id
        self.dir = f"{root.rstrip('/')}/_state/{quote(run_id, safe='')}"
        self.fs, self.path = fsspec.core.url_to_fs(self.dir)

    @property
    def spec_path(self) -> str:
        """The run's ``run.json`` (the spec it was started with), as a path of :attr:`fs`."""
        return f"{self.path}/run.json"

    @property
    def guard(self) -> WriteGuard:
        """What every writer of this run checks before it writes under the root (:class:`~ccs_ray.files.WriteGuard`):
        that the run's ``run.json`` is still there."""
        return WriteGuard(self.root, f"{self.dir}/run.json")

    def exists(self) -> bool:
        """Whether the run was started here (its ``run.json`` is present: a deleted root has none)."""
        return self.fs.exists(self.spec_path)

    def check_new(self) -> None:
        """A RunError when a run of this id exists here."""
        if self.exists():
            raise RunError(f"run {self.run_id} already exists under {self.root}; use --resume to continue it")

    def create(self, spec: Spec) -> None:
        """Start the run: its folder and ``run.json``; a RunError when a run of this id exists."""
        self.check_new()
        self.fs.makedirs(self.path, exist_ok=True)
        with self.fs.open(self.spec_path, "w") as f:
            f.write(spec.to_json())

    def model_dir(self, model: str) -> str:
        """Folder of a model's working files in this run."""
        return f"{self.dir}/{quote(model, safe='')}"

    def text_cache(self, model: str) -> str:
        """The run's CLIP text-embedding cache of ``model`` (:class:`ccs_ray.texts.TextEncoder`), which the spans,
        judge and prune stages share: ``ROOT/_state/<run_id>/<model>/texts``."""
        return f"{self.model_dir(model)}/texts"

    def moments_uri(self, model: str) -> str:
        """The merged moments of ``model``, from the ``moments`` table. A URI inside this run's state folder is read
        under the results root as it is now, so that a moved or copied root still finds its moments; any other URI
        is used as it is. A ValueError when the run has none."""
        rows = tables.read_table(self.root, "moments", self.run_id, model).to_pylist()
        if not rows:
            raise ValueError(f"no moments of {model} in run {self.run_id} under {self.root}")
        uri, state = rows[-1]["uri"], self.dir[len(self.root.rstrip("/")):] + "/"  # state: "/_state/<run>/"
        return f"{self.dir}/{uri.split(state, 1)[1]}" if state in uri else uri

    def _marker(self, stage: str, model: str) -> str:
        return f"{self.path}/done/{stage}.{quote(model, safe='')}"

    def done(self, stage: str, model: str = RUN_SCOPE) -> bool:
        """Whether ``stage`` (for ``model``, or the whole run) finished in this run."""
        return self.fs.exists(self._marker(stage, model))

    def mark(self, stage: str, model: str = RUN_SCOPE, info: dict | None = None) -> None:
        """Record ``stage`` (for ``model``) as finished, with its summary ``info``."""
        atomic_write(f"{self.dir}/done/{stage}.{quote(model, safe='')}", dumps(info or {}).encode())

    def info(self, stage: str, model: str = RUN_SCOPE) -> dict:
        """The summary stored when ``stage`` (for ``model``) finished."""
        with self.fs.open(self._marker(stage, model)) as f:
            return json.load(f)


def _setting(spec_dict: dict, dotted: str):
    value: object = spec_dict
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run_ids(root: str) -> list[str]:
    """The ids of the runs started under ``root`` (those whose ``run.json`` is there), sorted."""
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/_state")
    return sorted(unquote(p.rsplit("/", 2)[-2]) for p in fs.glob(f"{path}/*/run.json")) if fs.exists(path) else []


def resumable_run(spec: Spec, root: str, run_id: str | None) -> str:
    """The id of the run ``--resume`` continues: ``run_id``, else the latest under ``root``; a RunError when
    there is none or its result settings (:data:`RESULT_KEYS`) differ from ``spec``'s."""
    runs = run_ids(root)
    if run_id is None:
        if not runs:
            raise RunError(f"--resume: no run to resume under {root}")
        run_id = runs[-1]
    elif run_id not in runs:
        raise RunError(f"--resume: no run {run_id!r} under {root}; runs: {', '.join(runs) or 'none'}")
    state = RunState(root, run_id)
    with state.fs.open(state.spec_path) as f:
        before = json.load(f)
    # Read the old spec through today's schema: keys added since then take their defaults, so an upgrade
    # alone never reads as a changed setting.
    before = json.loads(Spec.model_validate(before).to_json())
    now = json.loads(spec.to_json())
    changed = [k for k in RESULT_KEYS if _setting(before, k) != _setting(now, k)]
    if changed:
        raise RunError(f"--resume: run {run_id} was started with different {', '.join(changed)} settings; "
                       f"start a new run (drop --resume) or restore them")
    return run_id


def resolve_run(spec: Spec, resume: bool = False, run_id: str | None = None) -> RunState:
    """The run a command works in, under ``spec.results_root``: with ``resume`` the run :func:`resumable_run`
    finds, else a new one (``run_id`` or a fresh time-stamped id; :meth:`RunState.create` starts it). Writes
    nothing."""
    root = spec.results_root
    if resume:
        return RunState(root, resumable_run(spec, root, run_id))
    state = RunState(root, run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    state.check_new()
    return state
