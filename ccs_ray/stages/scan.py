"""Stage ``scan``: shards -> CPU decode tasks -> model actors that accumulate HeadMoments -> one merge.

Section: ``[data]`` and ``[scan]`` (:class:`ScanSection`); per run (all models at once, so that models
with the same preprocessing share each decoded shard). Writes ``shards``, ``moments``, ``errors`` (images not
scanned) and ``conversions`` (images scanned after a conversion to RGB).

Topology. The source is planned into shards (``sources.plan_shards``). Models that share image
preprocessing share decoding: each shard is decoded once by a CPU task (``decode_task``) and its images go,
through the object store, to one :class:`ScanActor` of every model that still needs the shard. An actor
loads its model once (on its GPU when the cluster has GPUs, else on CPU), runs the one-pass decomposition
and keeps the moments in its own memory; moments never travel through the object store.

Checkpoints and resume. Every ``scan.checkpoint_s`` seconds (or ``scan.checkpoint_every`` shards) an
actor with new shards writes its cumulative moments, with the records of the shards they cover, as the
next numbered checkpoint of its own folder (:func:`~ccs_ray.files.commit_write`: the data file, then a
small marker that commits it, then the older checkpoint is removed). A checkpoint is never half visible,
on local disk or on an object store: readers take each folder's newest committed checkpoint (its
*partial*) and ignore a data file whose marker is missing, torn or records another size. A shard counts as
done only once a committed checkpoint holds it. When an actor dies its unsaved shards are queued again for
a fresh actor (in a new folder); when the driver dies, ``run --resume`` reads the partials and scans only
the shards none covers. The final merge adds the partials of a model and checks that the covered shards
are exactly the planned ones, so every good image counts once; it then removes every superseded or
uncommitted checkpoint and every temporary file of the model's state, so a finished scan leaves one
committed partial per actor that saved any shard.

State under the results root: ``_state/<run_id>/<model>/partials/<12 hex>/NNNNNNNN.safetensors`` with
its marker ``NNNNNNNN.commit`` (one folder per actor, NNNNNNNN: the actor's checkpoint number) and the
merged ``_state/<run_id>/<model>/moments.safetensors`` (listed in the ``moments`` table).
"""

from __future__ import annotations

import resource
import socket
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import fsspec
import ray

from .. import tables
from ..cluster import actor_layout, node_cycle
from ..decompose import decomposed_forward, select_layers
from ..errors import UserError
from ..files import commit_write, fs_uri, latest_committed, sweep_commits, sweep_tmp
from ..models import load_model, preprocess_config
from ..progress import Progress
from ..moments import HeadMoments
from ..sources import Shard, load_shard, plan_shards
from ..spec import DataConfig, ModelsConfig, ScanConfig, Spec
from .base import Context, RunState, Stage


PARTIAL_SUFFIX = ".safetensors"


class ScanError(UserError, RuntimeError):
    """The scan cannot produce exact moments (data changed under a resumed run, actors keep dying...)."""


@dataclass(frozen=True)
class ScanSection:
    """The scan's part of a spec: the images (``[data]``) and how to scan them (``[scan]``)."""

    data: DataConfig
    scan: ScanConfig


def section(spec: Spec) -> ScanSection:
    return ScanSection(spec.data, spec.scan)


@ray.remote(num_cpus=1)
def decode_task(shard: Shard, preprocess: dict):
    """Read, decode and preprocess one shard on a CPU worker."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return load_shard(shard, image_transform_v2(PreprocessCfg(**preprocess), is_train=False))


@ray.remote
class ScanActor:
    """Holds one model and the moments of the shards it has scanned since it started."""

    def __init__(self, model_key: str, models: ModelsConfig, section: ScanSection, folder: str):
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.model, _ = load_model(model_key, models.precision, device)
        self.layers = select_layers(self.model, models.layers, models.last_layers)
        self.batch_size, self.convention = section.scan.batch_size, section.scan.convention
        self.moments = HeadMoments.for_model(model_key, self.model, self.layers, folds=section.data.folds,
                                             convention=self.convention, device=device)
        self.folder, self.checkpoints = folder, 0  # its commit folder; checkpoints written to it
        self.worker = f"{socket.gethostname()}:{ray.get_runtime_context().get_actor_id()[:8]}"
        self.node = ray.get_runtime_context().get_node_id()

    def process(self, shard: Shard, loaded, fold: int) -> dict:
        """Add every good image of a decoded shard to the moments; returns the shard's record."""
        t0 = time.perf_counter()
        images = loaded.images
        for i in range(0, len(images), self.batch_size):
            d = decomposed_forward(self.model, images[i:i + self.batch_size], layers=self.layers,
                                   convention=self.convention, keep_z_sum=True)
            self.moments.update(d.contributions, fold, d.z_sum)
        record = {
            "shard_id": shard.shard_id, "source": shard.uri, "fingerprint": shard.fingerprint, "fold": fold,
            "n_images": len(images), "n_errors": loaded.n_failed, "n_converted": loaded.n_converted,
            "seconds": loaded.seconds + time.perf_counter() - t0, "node": self.node, "worker": self.worker,
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "errors": _to_json(loaded.errors), "conversions": _to_json(loaded.conversions),
        }
        self.moments.mark_covered(shard.shard_id, record)
        return {k: record[k] for k in ("shard_id", "n_images", "n_errors", "node")}

    def checkpoint(self) -> list[str]:
        """Commit all moments so far as this actor's next checkpoint; returns the shards it covers."""
        if self.moments.shards:
            self.checkpoints += 1  # counted first: a failed write's number is never used again
            commit_write(self.folder, self.checkpoints, self.moments.to_bytes(), PARTIAL_SUFFIX)
        return list(self.moments.shards)


@dataclass
class _Worker:
    model: str
    actor: object
    folder: str  # the actor's commit folder
    inflight: int = 0
    assigned: int = 0
    unsaved: set = field(default_factory=set)
    saved_at: float = field(default_factory=time.monotonic)  # when its last checkpoint was asked for

    def saved_shards(self) -> set[str]:
        """Shards in this worker's committed partial (a checkpoint may land just before the actor dies)."""
        uri = latest_committed(self.folder, PARTIAL_SUFFIX)
        return set(HeadMoments.read_meta(uri)["shards"]) if uri else set()


@dataclass
class ScanSummary:
    """What a scan did: per model the moments URI, image and error counts."""

    moments: dict = field(default_factory=dict)
    n_images: dict = field(default_factory=dict)
    n_errors: dict = field(default_factory=dict)
    n_converted: dict = field(default_factory=dict)
    shards_decoded: int = 0  # decode tasks finished: once per shard and preprocessing, not per model
    shards_scanned: int = 0
    shards_skipped: int = 0
    nodes: set = field(default_factory=set)
    seconds: float = 0.0


def _to_json(rows: list[dict]) -> list[dict]:
    """Error or conversion rows as JSON for a shard record (``at`` in ISO format)."""
    return [{**row, "at": row["at"].isoformat()} for row in rows]


def _worker_folders(state: RunState, model: str) -> list[str]:
    """URIs of the commit folders of a model's actors in a run (every actor that ever checkpointed)."""
    fs, path = fsspec.core.url_to_fs(f"{state.model_dir(model)}/partials")
    fs.invalidate_cache(path)
    return [fs_uri(fs, p) for p in sorted(fs.glob(f"{path}/*/"))]


def _partials(state: RunState, model: str) -> list[str]:
    """URIs of a model's partials in a run: the newest committed checkpoint of each actor's folder."""
    return [uri for uri in (latest_committed(f, PARTIAL_SUFFIX) for f in _worker_folders(state, model)) if uri]


def _covered(ctx: Context, model: str, plan: dict[str, Shard]) -> dict[str, dict]:
    """Shards already held by saved partials of this run, checked against the current plan."""
    covered = {}
    for uri in _partials(ctx.state, model):
        for shard_id, record in HeadMoments.read_meta(uri)["shards"].items():
            shard = plan.get(shard_id)
            if shard is None or shard.fingerprint != record.get("fingerprint"):
                raise ScanError(f"run {ctx.run_id}: shard {shard_id} in {uri} no longer matches the data source "
                                f"(the data changed since the run started); start a new run instead of --resume")
            covered[shard_id] = record
    return covered


def _write_shards(ctx: Context, model: str, plan: dict[str, Shard], records: dict[str, dict], folds: int) -> None:
    """The shards table of a model: the whole plan, ``done`` rows from the scan records, ``planned`` for the rest."""
    done_keys = ("n_images", "n_errors", "node", "worker", "seconds")
    rows = []
    for shard_id, shard in plan.items():
        r = records.get(shard_id)
        row = dict(shard_id=shard_id, source=shard.uri, fingerprint=shard.fingerprint, fold=shard.fold(folds))
        if r is None:
            rows.append(dict(row, status="planned"))
        else:
            rows.append(dict(row, **{k: r[k] for k in done_keys}, status="done",
                             finished_at=datetime.fromisoformat(r["finished_at"])))
    tables.write_table(ctx.root, "shards", rows, ctx.run_id, model, name="scan")


def run_scan(ctx: Context, section: ScanSection) -> ScanSummary:
    """Scan every model of ``ctx.models`` over the section's data on the connected Ray cluster; resumes
    from the run's partials."""
    t0 = time.perf_counter()
    data, cfg = section.data, section.scan
    shards = plan_shards(data)
    plan = {s.shard_id: s for s in shards}
    models = list(ctx.models.keys)
    covered = {key: _covered(ctx, key, plan) for key in models}
    todo = {key: set(plan) - set(covered[key]) for key in models}
    for key in models:  # the manifest first, so that an interrupted run still shows its plan
        _write_shards(ctx, key, plan, covered[key], data.folds)
    summary = ScanSummary(shards_skipped=sum(len(shards) - len(t) for t in todo.values()))
    resources = ctx.cluster_resources()
    per_actor, cpus_per_actor, n_actors = actor_layout(cfg, len(models), resources, keep_cpus=1, key="scan")
    placements = node_cycle(per_actor, cpus_per_actor)  # actors over the nodes in turn

    def new_worker(model: str) -> _Worker:
        folder = f"{ctx.state.model_dir(model)}/partials/{uuid.uuid4().hex[:12]}"
        actor = ScanActor.options(num_gpus=per_actor, num_cpus=cpus_per_actor,
                                  scheduling_strategy=next(placements)).remote(model, ctx.models, section, folder)
        return _Worker(model, actor, folder)

    groups: dict[str, list[str]] = {}
    for key in models:
        groups.setdefault(repr(sorted(preprocess_config(key).items())), []).append(key)
    workers = {key: [new_worker(key) for _ in range(n_actors)] for key in models if todo[key]}
    # Queue of (shard, models that still need it), grouped by preprocessing.
    queue = deque()
    for group in groups.values():
        for s in shards:
            need = tuple(key for key in group if s.shard_id in todo[key])
            if need:
                queue.append((s, need))
    restarts, max_restarts = 0, 3 * max(1, sum(len(w) for w in workers.values()))
    decodes, calls = {}, {}  # ref -> (shard, models) ; ref -> (worker, shard or None for checkpoints)
    bar = Progress("scan", sum(len(t) for t in todo.values()), "shards", ctx.progress)
    images_done = 0

    def dispatch(shard, need, ref):
        for model in need:
            w = min(workers[model], key=lambda w: (w.inflight, w.assigned))  # least busy, then least used
            w.inflight += 1
            w.assigned += 1
            calls[w.actor.process.remote(shard, ref, shard.fold(data.folds))] = (w, shard)

    def checkpoint(w):
        w.saved_at = time.monotonic()
        calls[w.actor.checkpoint.remote()] = (w, None)

    def replace(dead: _Worker, error: Exception, failed: set[str]):
        """Queue again what a dead actor held but never saved, and start a fresh actor in its place."""
        nonlocal restarts
        restarts += 1
        if restarts > max_restarts:
            raise ScanError(f"scan actors died {restarts} times; last error: {error}") from error
        for ref, (w, shard) in list(calls.items()):
            if w is dead:
                del calls[ref]
                if shard is not None:
                    failed.add(shard.shard_id)
        saved = dead.saved_shards()
        for shard_id in sorted((dead.unsaved | failed) - saved):
            queue.appendleft((plan[shard_id], (dead.model,)))
        workers[dead.model][workers[dead.model].index(dead)] = new_worker(dead.model)
        bar.update(-len(dead.unsaved - saved))

    # Decodes in flight: enough to keep every actor fed, and every CPU the actors leave free busy.
    n_workers = max(1, sum(len(w) for w in workers.values()))
    free_cpus = int(resources.get("CPU", 0) - cpus_per_actor * n_workers)
    limit = max(2, free_cpus, cfg.decode_workers * n_workers)
    while True:
        if not (queue or decodes or calls):  # all scanned: save what is unsaved, then stop
            for w in (w for ws in workers.values() for w in ws if w.unsaved):
                checkpoint(w)
            if not calls:
                break
        # Decoded shards waiting at the actors stay at two per actor, so memory does not grow with the queue.
        while queue and len(decodes) < limit and sum(w.inflight for ws in workers.values() for w in ws) < 2 * n_workers:
            shard, need = queue.popleft()
            decodes[decode_task.remote(shard, preprocess_config(need[0]))] = (shard, need)
        ready, _ = ray.wait(list(decodes) + list(calls), num_returns=1)
        ref = ready[0]
        if ref in decodes:
            summary.shards_decoded += 1
            dispatch(*decodes.pop(ref), ref)
            continue
        w, shard = calls.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            replace(w, e, {shard.shard_id} if shard is not None else set())
            continue
        if shard is None:  # a checkpoint: what it lists is now safe
            w.unsaved -= set(result)
            continue
        w.inflight -= 1
        w.unsaved.add(shard.shard_id)
        images_done += result["n_images"]
        summary.shards_scanned += 1
        bar.update(1, images_per_s=round(images_done / max(1e-9, time.perf_counter() - t0), 1))
        every = cfg.checkpoint_every
        due = time.monotonic() - w.saved_at >= cfg.checkpoint_s or (every and len(w.unsaved) >= every)
        if due and not any(v == (w, None) for v in calls.values()):
            checkpoint(w)
    bar.close()
    for ws in workers.values():
        for w in ws:
            ray.kill(w.actor)
    for key in models:
        _finish_model(ctx, key, plan, data.folds, summary)
    summary.seconds = time.perf_counter() - t0
    return summary


def _finish_model(ctx: Context, model: str, plan: dict[str, Shard], folds: int, summary: ScanSummary) -> None:
    """Merge a model's partials, check that they partition the plan, write moments/shards/errors/conversions
    tables, then remove the model's superseded or uncommitted checkpoints and temporary files."""
    merged = None
    for uri in _partials(ctx.state, model):
        part = HeadMoments.load(uri)
        try:
            merged = part if merged is None else merged.merge(part)
        except ValueError as e:
            raise ScanError(f"{model}: partial {uri} does not merge with the others: {e}") from e
    covered = set(merged.shards) if merged else set()
    if covered != set(plan):
        missing, extra = sorted(set(plan) - covered), sorted(covered - set(plan))
        raise ScanError(f"{model}: partials do not partition the shard plan (missing {missing[:5]}, unknown {extra[:5]})")
    uri = f"{ctx.state.model_dir(model)}/moments.safetensors"
    merged.save(uri)
    for folder in _worker_folders(ctx.state, model):
        sweep_commits(folder)
    sweep_tmp(ctx.state.model_dir(model))
    records = [merged.shards[s] for s in sorted(merged.shards)]
    n_images = int(merged.n.sum())
    tables.write_table(ctx.root, "moments", [dict(
        uri=uri, convention=merged.convention, n_images=n_images, n_heads=len(merged.heads),
        embed_dim=merged.embed_dim, folds=merged.folds, n_shards=len(records))], ctx.run_id, model, name="scan")
    _write_shards(ctx, model, plan, merged.shards, folds)
    for table in ("errors", "conversions"):  # records of an earlier version hold no conversions
        rows = [dict(row, at=datetime.fromisoformat(row["at"])) for r in records for row in r.get(table, ())]
        tables.write_table(ctx.root, table, rows, ctx.run_id, model, name="scan")
    summary.moments[model] = uri
    summary.n_images[model] = n_images
    summary.n_errors[model] = sum(r["n_errors"] for r in records)
    summary.n_converted[model] = sum(r["n_converted"] for r in records)
    summary.nodes |= {r["node"] for r in records}


def moments_uri(ctx: Context, model: str) -> str:
    """The merged moments of ``model`` in ``ctx``'s run, from the ``moments`` table."""
    rows = tables.read_table(ctx.root, "moments", ctx.run_id, model).to_pylist()
    if not rows:
        raise ValueError(f"no moments of {model} in run {ctx.run_id} under {ctx.root}: run the scan stage first")
    return rows[-1]["uri"]



def run(ctx: Context, section: ScanSection) -> dict:
    summary = run_scan(ctx, section)
    return dict(asdict(summary), nodes=sorted(summary.nodes))


STAGE = Stage("scan", needs=(), per_model=False, section=section, run=run)
