"""The ``prune`` stage's units of work: one (dataset shard) each, run on long-lived :class:`EvalWorker` actors.

A unit (:class:`EvalUnit`) is one shard of a planned dataset (:class:`~ccs_ray.evals.kinds.DatasetPlan`) with
the ablation configurations' ids and fingerprints and the part of its kind's text side it needs (the classifier
weights). A worker loads the model once (GPU when the cluster has GPUs, else CPU) with every configuration's
head ablation, encodes the shard's images under all configurations at once with
:func:`ccs_ray.ablate.encode_ablations` (shared prefixes run once; the kind says how,
:meth:`~ccs_ray.evals.kinds.EvalKind.encode`) and writes the unit file
``ROOT/_units/prune/run_id=<run>/model=<model>/<kind>/<dataset>/<shard id>-<shard fingerprint>.npz``: the
kind's payload (classification: top-5 predictions; video and bias: embeddings) with the configurations' ids
(``ablations``) and fingerprints (``configs``, :func:`config_fingerprints`). A planned unit whose file holds
exactly the current fingerprints is skipped on resume (:func:`plan_units`).

:func:`run_units` runs units through :func:`ccs_ray.evals.dispatch.dispatch`: at most two at each worker, the
next to the least busy worker, a dead worker's units again on a fresh worker (:mod:`ccs_ray.retry`). A unit
that raises fails alone: its error row (reason ``unit_failed``) replaces the rows it would have made, and the
others go on. Every worker is killed at the end.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import fsspec
import numpy as np
import ray
import torch
from ray.actor import ActorHandle

from ..ablate import Ablation, encode_ablations, head_ablation
from ..cluster import actor_layout, node_cpus, use_held_cpus
from ..failures import reason
from ..files import WriteGuard, atomic_write, keep_guard
from ..heads import parse_head_name
from ..models import load_model
from ..progress import Progress
from ..sources import Shard
from ..sources.base import fingerprint
from ..spec import EvalsConfig
from .dispatch import dispatch
from .kinds import DatasetPlan, EvalKind


@dataclass(frozen=True)
class EvalUnit:
    """One shard of a dataset to encode under every configuration, and where its result goes."""

    kind: EvalKind
    data: Any  # the dataset, as its kind resolves it
    shard: Shard
    uri: str  # the unit file
    ablation_ids: tuple[str, ...]
    configs: tuple[str, ...]  # config_fingerprints, in ablation_ids order
    text: torch.Tensor | None  # EvalKind.unit_text of the dataset's text side

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, dataset, shard id)."""
        return self.kind.name, self.data.name, self.shard.shard_id

    @property
    def error_file(self) -> str:
        """The file name of the unit's error rows: stable across runs, so a re-run replaces them."""
        return f"prune-{self.kind.name}-{quote(self.data.name, safe='')}-{self.shard.shard_id}"


def units_dir(root: str, run_id: str, model_key: str) -> str:
    """The folder of a model's unit files in a run."""
    return f"{root.rstrip('/')}/_units/prune/run_id={quote(run_id, safe='')}/model={quote(model_key, safe='')}"


def _unit_uri(folder: str, plan: DatasetPlan, shard: Shard) -> str:
    return f"{folder}/{plan.kind.name}/{quote(plan.data.name, safe='')}/{shard.shard_id}-{shard.fingerprint}.npz"


def _digest(tensor: torch.Tensor) -> str:
    """sha256 (16 hex) of a tensor's values and shape."""
    t = tensor.detach().cpu().contiguous()
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]


def config_fingerprints(ablations: list[Ablation], mode: str, mean_z, precision: str,
                        weights: torch.Tensor | None = None) -> list[str]:
    """One fingerprint per configuration of a unit: what its saved result depends on besides the shard.

    Covers the ablation id, its heads, its mode (its own ``Ablation.mode``, else ``mode``, the stage's
    ``prune.mode``), for mean ablation the mean head outputs (``mean_z``) of the layers it touches, the
    model precision and ``weights``, the kind's :meth:`~ccs_ray.evals.kinds.EvalKind.unit_text` (for
    classification, the classifier weights).
    """
    common = (precision, _digest(weights) if weights is not None else None)
    layer_digest = {l: _digest(z) for l, z in (mean_z or {}).items()}
    out = []
    for a in ablations:
        own = a.mode or mode
        layers = sorted({parse_head_name(h)[0] for h in a.heads})
        means = [layer_digest.get(l) for l in layers] if own == "mean" else None
        out.append(fingerprint(a.ablation_id, a.heads, own if a.heads else None, means, common))
    return out


def _save_npz(uri: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(uri, buf.getvalue())


def _load_npz(uri: str) -> dict:
    with fsspec.open(uri, "rb") as f:
        return dict(np.load(io.BytesIO(f.read()), allow_pickle=False))


def _done(uri: str, configs: tuple[str, ...]) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path) and tuple(_load_npz(uri).get("configs", [])) == configs


def plan_units(plan: DatasetPlan, folder: str, ablation_ids: list[str], configs: list[str],
               resume: bool) -> tuple[list[EvalUnit], int]:
    """(units to run, units skipped) of a dataset whose unit files go under ``folder`` (:func:`units_dir`): with
    ``resume``, a shard whose unit file holds exactly ``configs`` is skipped."""
    units, skipped = [], 0
    for shard in plan.shards:
        uri = _unit_uri(folder, plan, shard)
        if resume and _done(uri, tuple(configs)):
            skipped += 1
            continue
        units.append(EvalUnit(plan.kind, plan.data, shard, uri, tuple(ablation_ids), tuple(configs),
                              plan.kind.unit_text(plan.text)))
    return units, skipped


def load_results(plan: DatasetPlan, folder: str) -> list[dict]:
    """The payloads of a dataset's unit files, in shard order."""
    return [_load_npz(_unit_uri(folder, plan, shard)) for shard in plan.shards]


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a model holds: the model, each configuration's (heads, mode), the scan's mean head
    outputs (for mean ablation), the batch size, and the run's write guard (None: a stage run on its own)."""

    model_key: str
    precision: str
    ablations: tuple[tuple[tuple[str, ...], str], ...]
    mean_z: Any
    batch_size: int
    guard: WriteGuard | None = None


class EvalWorker:
    """Holds one model and the ablation configurations; runs units (a dataset shard each)."""

    def __init__(self, setup: WorkerSetup):
        if setup.guard is not None:  # the worker lives and dies with its run: no write recreates a vanished root
            keep_guard(setup.guard)
        use_held_cpus()
        self.model, self.preprocess = load_model(setup.model_key, setup.precision)
        self.ablations = [head_ablation(self.model, list(heads), mode, setup.mean_z) if heads else None
                          for heads, mode in setup.ablations]
        self.batch_size = setup.batch_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[C, N, D] float32 embeddings of ``images`` under every configuration, in batches."""
        device = self.model.visual.proj.device
        parts = [encode_ablations(self.model, images[i:i + self.batch_size].to(device), self.ablations).float().cpu()
                 for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(parts, 1) if parts else torch.zeros(len(self.ablations), 0, self.model.visual.proj.shape[1])

    def run(self, unit: EvalUnit) -> dict:
        """Compute one unit and write its result file; returns its error rows and seconds."""
        t0 = time.perf_counter()
        payload, errors = unit.kind.encode(unit.data, unit.shard, unit.text, self.preprocess, self.embed)
        _save_npz(unit.uri, ablations=np.array(unit.ablation_ids, dtype=str), configs=np.array(unit.configs, dtype=str),
                  **payload)
        now = datetime.now(UTC)
        return {"errors": [{**e, "stage": "prune", "logged_at": e.get("logged_at", now)} for e in errors],
                "seconds": time.perf_counter() - t0}


@dataclass
class UnitOutcome:
    """What running units gave: each unit's error rows (in the units' order) and the failed units' reasons."""

    errors: list[list[dict]]
    failed: dict[tuple[str, str, str], str]  # EvalUnit.key -> why, in one line (ccs_ray.failures.reason)


def run_units(units: list[EvalUnit], setup: WorkerSetup, evals: EvalsConfig, resources: Callable[[], dict],
              show_progress: bool) -> UnitOutcome:
    """Run ``units`` on workers laid out by ``evals`` (:func:`~ccs_ray.cluster.actor_layout` over the cluster's
    ``resources()``), showing their progress when ``show_progress``."""
    out = UnitOutcome([[] for _ in units], {})
    if not units:
        return out
    layout = actor_layout(evals, 1, resources(), decode_share=0.0, key="evals", nodes=node_cpus())
    worker = ray.remote(num_cpus=layout.cpus_per_actor, num_gpus=layout.gpus_per_actor)(EvalWorker)
    with Progress(f"prune {setup.model_key} ({len(setup.ablations)} configurations)", len(units), "dataset shards",
                  show_progress) as progress:

        def done(i: int, result) -> None:
            unit = units[i]
            if isinstance(result, Exception):
                why = out.failed[unit.key] = reason(result)
                out.errors[i] = [dict(stage="prune", source=unit.shard.uri, item=unit.shard.shard_id,
                                      reason="unit_failed", detail=why[:2000], logged_at=datetime.now(UTC))]
            else:
                out.errors[i] = result["errors"]
            progress.update(1, failed=len(out.failed))

        # ray types worker.remote() as ActorHandle | type[EvalWorker], whose methods lack .remote
        replaced = dispatch(units, lambda: cast(ActorHandle, worker.remote(setup)),
                            lambda actor, unit: actor.run.remote(unit), done, layout.actors, "prune")
        if replaced:
            progress.update(0, replaced=replaced)
    return out
