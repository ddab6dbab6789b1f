"""A pass over a data source's shards on model actors: what the stages ``scan`` and ``explain`` share.

Topology. The source's shards are streamed (:class:`~ccs_ray.shard_plan.ShardPlan`: the driver keeps each shard's
id and fingerprint, and a shard's items only while it waits to be dispatched or saved). Models that share image
preprocessing share decoding: each shard is decoded once by a CPU :class:`Decoder` into uint8 pixels
(:class:`~ccs_ray.preprocess.Pixels`) that go, through the object store, to one :class:`ScanActor` of every model
that still needs the shard (:func:`decode_on_actors`: actors holding a GPU decode the JPEGs themselves, the decoder
only reading them). An actor loads its model once (on its GPU when the cluster has GPUs, else on CPU), turns
the pixels into its model's input (:func:`~ccs_ray.preprocess.model_input`), runs the one-pass decomposition
(:func:`~ccs_ray.decompose.decomposed_forward`) and adds each batch to its *accumulator*: the
:class:`~ccs_ray.moments.HeadMoments` of the scan, the :class:`~ccs_ray.explain.TopImages` of explain.
Accumulators stay in the actor's memory; they never travel through the object store.

A :class:`PassKind` says what a pass accumulates: how an actor starts its accumulator and adds a batch, how
a saved one is read, and where its checkpoints go. Accumulators have ``shards`` (shard id -> record),
``mark_covered``, ``to_bytes`` and ``merge`` (in place; disjoint shards only).

Cores. On a CPU-only cluster with the default layout, the pass first measures what decoding costs next to
each model (:func:`decode_share`: :func:`measure_costs` per model on the first shard, at one thread, in the driver,
while the pass's first decoder starts on the same node); the actors then hold every CPU decoding does not need and
run that many torch threads (:func:`~ccs_ray.cluster.actor_layout`), and decoders, one per CPU left free on each
node, share the rest (:func:`~ccs_ray.cluster.decoder_layout`).

Checkpoints and resume. Every ``scan.checkpoint_s`` seconds (or ``scan.checkpoint_every`` shards) an
actor with new shards writes the records of the shards added since its last checkpoint to its shard log, then
its accumulator (without records, so of constant size) as the next numbered checkpoint of its own folder
(:mod:`ccs_ray.checkpoints`; :func:`~ccs_ray.files.commit_write`: the data file, then a small marker that
commits it, then the older checkpoint is removed). A checkpoint is never half visible, on local
disk or on an object store: readers take each folder's newest committed checkpoint (its *partial*) and
ignore a data file whose marker is missing, torn or records another size. A shard counts as done only once a
committed checkpoint holds it. When an actor dies its unsaved shards are queued again for a fresh actor (in
a new folder); when the driver dies, ``run --resume`` reads the partials and passes only over the shards none
covers (:func:`partial_shards`: a partial's shards, from its shard log). :func:`merge_partials` adds a model's
partials and checks that the covered shards are exactly the planned ones, so every good image counts once; it
then removes every superseded or uncommitted checkpoint, every log part off a partial's chain and every
temporary file of the pass, leaving one committed partial (and its log) per actor that saved any shard.

State under the results root: ``_state/<run_id>/<model>/<kind.folder>/<12 hex>/NNNNNNNN<kind.suffix>``
with its marker ``NNNNNNNN.commit`` and its log part ``shards/NNNNNNNN.jsonl`` (one folder per actor; NNNNNNNN:
the actor's checkpoint number).
"""

from __future__ import annotations

import json
import math
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

import fsspec
import ray
from ray.actor import ActorHandle

from .checkpoints import Checkpointer, read_log, sweep_log
from .cluster import (
    CPU_STEP,
    actor_layout,
    alive_nodes,
    decoder_layout,
    held_device,
    node_cpus,
    node_cycle,
    on_node,
    peak_rss_mb,
    use_held_cpus,
)
from .errors import UserError
from .files import fs_uri, latest_committed, sweep_commits, sweep_tmp
from .preprocess import Pixels, model_input, preprocess_config
from .progress import Progress
from .shard_plan import ShardPlan
from .sources import LoadedShard, Shard, decode_deferred, load_shard
from .spec import ModelsConfig, ScanConfig

if TYPE_CHECKING:
    from .decompose import Decomposition


class PassError(UserError, RuntimeError):
    """A pass cannot produce exact results (data changed under a resumed run, actors keep dying...)."""


class PassKind:
    """What a pass accumulates (module docstring); subclasses set ``name``, ``folder``, ``suffix`` and
    ``keep_z_sum`` and implement the four methods."""

    name: str  # the stage's name, in progress lines and errors
    folder: str  # the checkpoint folders' parent, under each model's state folder
    suffix: str  # the checkpoint files' suffix
    keep_z_sum: bool = False  # ask the decomposition for the batch sum of attention outputs

    def start(self, model_key: str, model, layers: list[int], device: str):
        """A fresh, empty accumulator for a model's actor."""
        raise NotImplementedError

    def add(self, acc, d: Decomposition, loaded: LoadedShard, batch: slice, fold: int) -> None:
        """Add one batch (images ``batch`` of ``loaded``, decomposed into ``d``) to ``acc``."""
        raise NotImplementedError

    def read_shards(self, uri: str) -> dict[str, dict]:
        """The shard records a saved accumulator holds in its own file, without reading the rest of it: a partial of
        an earlier version (checkpoints now keep them in their shard log, :func:`partial_shards`)."""
        raise NotImplementedError

    def load(self, uri: str):
        """A saved accumulator."""
        raise NotImplementedError


@ray.remote(num_cpus=1)
def decode_task(shard: Shard, preprocess: dict, defer_jpeg: bool = False):
    """Read and decode one shard on a CPU worker: its images as uint8 pixels (:class:`~ccs_ray.preprocess.Pixels`
    of the settings ``preprocess``); ``defer_jpeg``: JPEGs left for the actor's device
    (:func:`~ccs_ray.sources.load_shard`)."""
    return load_shard(shard, Pixels(preprocess), defer_jpeg)


def decode_on_actors(cfg: ScanConfig, gpus_per_actor: float) -> bool:
    """Whether a pass leaves JPEGs for its actors to decode on their device (``scan.decode``: ``"actors"``, or
    ``"auto"`` with actors that hold a GPU), the decoders only reading them and checking their headers."""
    return cfg.decode == "actors" or (cfg.decode == "auto" and gpus_per_actor > 0)


@ray.remote(max_restarts=-1, max_task_retries=3)
class Decoder:
    """A long-lived decode worker of a pass: :func:`decode_task`'s work in one process that stays up (Ray would
    otherwise start and stop task workers beside actors that hold fractional CPUs); restarted and the call retried
    when its process dies. Decoding needs neither torch nor open_clip (:mod:`ccs_ray.preprocess`), so a decoder
    starts fast. The pass's first decoder starts on the driver's node before anything else, so that it starts while
    the driver measures what decoding and each model cost (:func:`decode_share`)."""

    def decode(self, shard: Shard, preprocess: dict, defer_jpeg: bool = False):
        return load_shard(shard, Pixels(preprocess), defer_jpeg)


COST_IMAGES = 8  # images of the first shard one model's pass is timed on


def measure_costs(shard: Shard, preprocess: dict, model_key: str, models: ModelsConfig, convention: str,
                  keep_z_sum: bool) -> dict:
    """CPU seconds per image, at one thread, of decoding ``shard`` and of one model's decomposed forward on up to
    :data:`COST_IMAGES` of its images (after a one-image warm-up): ``{"decode_s", "model_s"}``. Runs in the
    calling process (the pass's driver), which loads the model on its CPU for it and restores its torch threads."""
    import numpy as np
    import torch

    from .decompose import decomposed_forward, select_layers
    from .models import load_model

    pixels = Pixels(preprocess)
    loaded = load_shard(shard, pixels)
    assert isinstance(loaded.images, np.ndarray)  # Pixels decode to uint8 numpy
    decode_s = loaded.seconds / max(1, len(loaded.images) + loaded.n_failed)
    model, _ = load_model(model_key, models.precision, "cpu")
    layers = select_layers(model, models.layers, models.last_layers)
    blank = np.zeros((COST_IMAGES, 3, *pixels.size), np.uint8)
    images = model_input(loaded.images[:COST_IMAGES] if len(loaded.images) else blank, preprocess)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        forward = partial(decomposed_forward, model, layers=layers, convention=convention, keep_z_sum=keep_z_sum)
        forward(images[:1])
        t0 = time.perf_counter()
        forward(images)
        model_s = (time.perf_counter() - t0) / len(images)
    finally:
        torch.set_num_threads(threads)
    return {"decode_s": decode_s, "model_s": model_s}


def decode_share(ctx, kind: PassKind, cfg: ScanConfig, plan: ShardPlan, models: list[str]) -> float:
    """The share of CPU time decoding needs next to the models' passes: sum over preprocessing groups of decode
    seconds per image / (that + the sum over models of model seconds per image), measured once per run and model
    (:func:`measure_costs` on the first shard, in the driver, whose node also runs the pass's first decoder; kept as
    ``_state/<run>/<model>/costs.json`` for later passes)."""
    costs, first = {}, None
    for key in models:
        uri = f"{ctx.state.model_dir(key)}/costs.json"
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.exists(path):
            costs[key] = json.loads(fs.cat_file(path))
            continue
        first = first or plan.first()  # read from the source only when a cost is still to measure
        costs[key] = measure_costs(first, preprocess_config(key), key, ctx.models, cfg.convention, kind.keep_z_sum)
        with fsspec.open(uri, "w") as f:
            json.dump(costs[key], f)
    decode = {repr(sorted(preprocess_config(k).items())): costs[k]["decode_s"] for k in models}
    total_decode = sum(decode.values())
    return total_decode / (total_decode + sum(costs[k]["model_s"] for k in models))


@ray.remote
class ScanActor:
    """Holds one model and the accumulator of the shards it has passed over since its pass began. A run keeps it
    between its passes and lends it to the spans stage (:class:`ModelActors`), so the model is loaded once."""

    def __init__(self, model_key: str, models: ModelsConfig, scan: ScanConfig, kind: PassKind, folder: str):
        from .decompose import select_layers
        from .models import load_model

        self.model_key, self.models = model_key, models
        self.device = held_device()
        self.threads = use_held_cpus()
        self.model, _ = load_model(model_key, models.precision, self.device)
        self.layers = select_layers(self.model, models.layers, models.last_layers)
        self.pixels = Pixels(preprocess_config(model_key))  # its settings; for JPEGs left to it (scan.decode)
        actor_id = ray.get_runtime_context().get_actor_id()
        assert actor_id is not None  # this runs in an actor
        self.worker = f"{socket.gethostname()}:{actor_id[:8]}"
        self.node = ray.get_runtime_context().get_node_id()
        self.begin(scan, kind, folder)

    def begin(self, scan: ScanConfig, kind: PassKind, folder: str) -> None:
        """Start a pass: a fresh accumulator of ``kind``, its checkpoints in ``folder`` (its commit folder and shard
        log)."""
        from .decompose import decomposed_forward

        self.forward = partial(decomposed_forward, self.model, layers=self.layers, convention=scan.convention,
                               keep_z_sum=kind.keep_z_sum)  # [B, 3, H, W] float32 -> Decomposition
        self.batch_size, self.kind = scan.batch_size, kind
        self.acc = kind.start(self.model_key, self.model, self.layers, self.device)
        self.checkpointer: Checkpointer | None = Checkpointer(folder, kind.suffix)

    def end(self) -> None:
        """The pass is saved: drop its accumulator (the actor waits, model loaded, for the next pass)."""
        self.acc = self.checkpointer = None

    def call(self, fn: Callable, *args):
        """Yields what ``fn(model, device, *args)`` yields, on this actor's model and device: a later stage's work
        that needs the model (the spans stage's :func:`~ccs_ray.stages.spans.spans_of`)."""
        yield from fn(self.model, self.device, *args)

    def process(self, shard: Shard, loaded: LoadedShard, fold: int) -> dict:
        """Add every good image of a decoded shard to the accumulator; returns the shard's record."""
        import numpy as np
        import torch

        from .decompose import Decomposition

        assert self.checkpointer is not None  # between begin and end
        t0 = time.perf_counter()
        if loaded.encoded:
            loaded = decode_deferred(loaded, self.pixels, self.device)
        images = loaded.images
        assert isinstance(images, (np.ndarray, torch.Tensor))  # Pixels' uint8 numpy, or a tensor on the device
        for i in range(0, len(images), self.batch_size):
            batch = slice(i, i + self.batch_size)
            d = self.forward(model_input(images[batch], self.pixels.cfg, self.device))
            assert isinstance(d, Decomposition)  # no stop_at: the decomposition, not a residual stream
            self.kind.add(self.acc, d, loaded, batch, fold)
        record = {
            "shard_id": shard.shard_id, "source": shard.uri, "fingerprint": shard.fingerprint, "fold": fold,
            "n_images": len(images), "n_errors": loaded.n_failed, "n_converted": loaded.n_converted,
            "seconds": loaded.seconds + time.perf_counter() - t0, "node": self.node, "worker": self.worker,
            "finished_at": datetime.now(UTC).isoformat(),
            "max_rss_mb": peak_rss_mb(), "threads": self.threads,
            "errors": _to_json(loaded.errors), "conversions": _to_json(loaded.conversions),
        }
        self.acc.mark_covered(shard.shard_id)  # the record goes to the shard log, not into the accumulator
        self.checkpointer.add(record)
        return {k: record[k] for k in ("shard_id", "n_images", "n_errors", "node", "threads")}

    def checkpoint(self) -> list[dict]:
        """Commit the accumulator so far as this actor's next checkpoint, the records of the shards added since the
        last one in its shard log (:mod:`ccs_ray.checkpoints`); returns those records without their error and
        conversion lists."""
        assert self.checkpointer is not None  # between begin and end
        saved = [{k: v for k, v in r.items() if k not in ("errors", "conversions")}
                 for r in self.checkpointer.pending.values()]
        if saved:
            self.checkpointer.commit(self.acc.to_bytes(shards=False))
        return saved


def _to_json(rows: list[dict]) -> list[dict]:
    """Error or conversion rows as JSON for a shard record (``at`` in ISO format)."""
    return [{**row, "at": row["at"].isoformat()} for row in rows]


@dataclass
class _Worker:
    model: str
    actor: ActorHandle
    folder: str  # the actor's commit folder
    inflight: int = 0
    assigned: int = 0
    unsaved: dict = field(default_factory=dict)  # shard id -> Shard, passed over but not yet in a checkpoint
    saved_early: set = field(default_factory=set)  # shard ids a checkpoint listed before their own result came
    saved_at: float = field(default_factory=time.monotonic)  # when its last checkpoint was asked for

    def passed(self, shard: Shard) -> None:
        """The actor's result for ``shard`` came: it is unsaved unless a checkpoint already listed it."""
        self.inflight -= 1
        if shard.shard_id in self.saved_early:
            self.saved_early.remove(shard.shard_id)
        else:
            self.unsaved[shard.shard_id] = shard

    def saved(self, shard_ids) -> None:
        """A checkpoint holds ``shard_ids``. An actor runs its calls in order, but their results reach the driver in
        any order: a checkpoint may list a shard whose own result has not come yet."""
        for shard_id in shard_ids:
            if self.unsaved.pop(shard_id, None) is None:
                self.saved_early.add(shard_id)


@dataclass
class PassStats:
    """What a pass did: decode tasks finished (once per shard and preprocessing, not per model), shards
    passed over and shards skipped because saved partials held them (both counted per model), images added,
    seconds."""

    shards_decoded: int = 0
    shards_scanned: int = 0
    shards_skipped: int = 0
    images: int = 0
    seconds: float = 0.0
    decode_share: float | None = None  # measured share of CPU time decoding needs (CPU-only default layouts)
    cpus_per_actor: float = 0.0  # CPUs (and torch threads, rounded) each actor held
    decode_on_actors: bool = False  # JPEGs decoded on the actors' device (decode_on_actors)


class ModelActors:
    """The :class:`ScanActor` s a run keeps between the stages that use them (scan, spans, explain: see
    :attr:`ccs_ray.stages.Stage.uses_model_actors`), idle, by model and the resources they hold, so that each keeps
    its model loaded instead of a new process importing and loading it again. The pipeline releases them (kills
    them) before a stage that uses none and when the run ends."""

    def __init__(self):
        self.idle: dict[str, list[tuple[float, float, ActorHandle]]] = {}  # model -> (GPUs, CPUs, actor)

    def keep(self, model: str, gpus: float, cpus: float, actor) -> None:
        self.idle.setdefault(model, []).append((gpus, cpus, actor))

    def take(self, model: str, gpus: float, cpus: float) -> list:
        """The idle actors of ``model`` that hold ``gpus`` and ``cpus``, no longer kept."""
        mine = self.idle.get(model, [])
        self.idle[model] = [x for x in mine if (x[0], x[1]) != (gpus, cpus)]
        return [a for g, c, a in mine if (g, c) == (gpus, cpus)]

    def one(self, model: str):
        """An idle actor of ``model``, still kept (stages run one at a time), or None."""
        return self.idle[model][0][2] if self.idle.get(model) else None

    def release(self) -> None:
        """Kill every idle actor (their CPUs and GPUs go back to the cluster)."""
        for actor in (a for kept in self.idle.values() for _, _, a in kept):
            ray.kill(actor)
        self.idle.clear()


def worker_folders(state, kind: PassKind, model: str) -> list[str]:
    """URIs of the commit folders of a model's actors in a run (every actor that ever checkpointed)."""
    fs, path = fsspec.core.url_to_fs(f"{state.model_dir(model)}/{kind.folder}")
    fs.invalidate_cache(path)
    return [fs_uri(fs, p) for p in sorted(fs.glob(f"{path}/*/"))]


def partials(state, kind: PassKind, model: str) -> list[str]:
    """URIs of a model's partials in a run: the newest committed checkpoint of each actor's folder."""
    return [uri for uri in (latest_committed(f, kind.suffix) for f in worker_folders(state, kind, model)) if uri]


def partial_shards(kind: PassKind, uri: str) -> dict[str, dict]:
    """Shard id -> record of every shard the partial ``uri`` covers: from its shard log, or from the file itself
    for a partial written by an earlier version."""
    records = read_log(uri)
    return kind.read_shards(uri) if records is None else records


def covered_shards(ctx, kind: PassKind, model: str, plan: ShardPlan) -> dict[str, dict]:
    """Shards already held by saved partials of this run, checked against the current (indexed) plan."""
    covered = {}
    for uri in partials(ctx.state, kind, model):
        for shard_id, record in partial_shards(kind, uri).items():
            if plan.fingerprints.get(shard_id) != record.get("fingerprint"):
                raise PassError(f"run {ctx.run_id}: shard {shard_id} in {uri} no longer matches the data source "
                                f"(the data changed since the run started); start a new run instead of --resume")
            covered[shard_id] = record
    return covered


def merge_partials(ctx, kind: PassKind, model: str, plan: ShardPlan):
    """A model's partials merged into one accumulator, checked to partition ``plan``; then the model's
    superseded or uncommitted checkpoints and the pass's temporary files are removed."""
    merged = None
    for uri in partials(ctx.state, kind, model):
        part = kind.load(uri)
        part.shards = partial_shards(kind, uri)
        try:
            merged = part if merged is None else merged.merge(part)
        except ValueError as e:
            raise PassError(f"{model}: partial {uri} does not merge with the others: {e}") from e
    covered = set(merged.shards) if merged else set()
    planned = plan.ids()
    if covered != planned:
        missing, extra = sorted(planned - covered), sorted(covered - planned)
        raise PassError(f"{model}: {kind.name} partials do not partition the shard plan (missing {missing[:5]}, "
                        f"unknown {extra[:5]})")
    for folder in worker_folders(ctx.state, kind, model):
        sweep_commits(folder)
        newest = latest_committed(folder, kind.suffix)
        if newest:
            sweep_log(newest)
    sweep_tmp(f"{ctx.state.model_dir(model)}/{kind.folder}")
    return merged


def run_pass(ctx, kind: PassKind, cfg: ScanConfig, plan: ShardPlan, todo: dict[str, set[str]], folds: int,
             on_saved: Callable[[str, list[dict]], None] | None = None, actor_class=None, decoder_class=None
             ) -> PassStats:
    """Pass every model of ``todo`` over its shards (``todo[model]``: ids of the indexed ``plan``'s shards, the rest
    being held by saved partials) on the connected Ray cluster, saving each actor's accumulator as committed
    checkpoints (module docstring). ``on_saved(model, records)`` is told of each checkpoint's shards
    (:meth:`ScanActor.checkpoint`'s records). ``actor_class`` and ``decoder_class`` replace :class:`ScanActor` and
    :class:`Decoder` (``ccs-ray bench plan`` times the driver with no-op ones)."""
    t0 = time.perf_counter()
    actor_class, decoder_class = actor_class or ScanActor, decoder_class or Decoder
    stats = PassStats(shards_skipped=sum(len(plan) - len(t) for t in todo.values()))
    models = [key for key in ctx.models.keys if key in todo]
    resources = ctx.cluster_resources()
    here = ray.get_runtime_context().get_node_id()
    first_decoder = decoder_class.options(num_cpus=CPU_STEP, scheduling_strategy=on_node(here)).remote()  # starts now
    measure = (not resources.get("GPU") and cfg.gpus_per_actor is None and cfg.cpus_per_actor is None
               and any(todo.values()))
    stats.decode_share = decode_share(ctx, kind, cfg, plan, models) if measure else None
    per_actor, cpus_per_actor, n_actors = actor_layout(cfg, len(models), resources, stats.decode_share, "scan",
                                                       node_cpus())
    stats.cpus_per_actor = cpus_per_actor
    defer_jpeg = stats.decode_on_actors = decode_on_actors(cfg, per_actor)
    placements = node_cycle(per_actor, cpus_per_actor)  # actors over the nodes in turn

    kept = {key: ctx.actors.take(key, per_actor, cpus_per_actor) for key in models} if ctx.actors is not None else {}
    if ctx.actors is not None:
        ctx.actors.release()  # kept actors of another layout would hold the CPUs the new ones need

    def new_worker(model: str) -> _Worker:
        folder = f"{ctx.state.model_dir(model)}/{kind.folder}/{uuid.uuid4().hex[:12]}"
        if kept.get(model):  # a kept actor: its calls run in order, so the pass begins before any shard comes
            actor = kept[model].pop()
            actor.begin.remote(cfg, kind, folder)
        else:
            actor = actor_class.options(num_gpus=per_actor, num_cpus=cpus_per_actor,
                                        scheduling_strategy=next(placements)).remote(model, ctx.models, cfg, kind,
                                                                                     folder)
        return _Worker(model, actor, folder)

    groups: dict[str, list[str]] = {}
    for key in models:
        groups.setdefault(repr(sorted(preprocess_config(key).items())), []).append(key)
    workers = {key: [new_worker(key) for _ in range(n_actors)] for key in models if todo[key]}

    def pending():
        """(shard, models of one preprocessing group that still need it), streamed from the plan."""
        for s in plan if any(todo.values()) else ():
            for group in groups.values():
                need = tuple(key for key in group if s.shard_id in todo[key])
                if need:
                    yield s, need

    fresh = pending()
    queue = deque(islice(fresh, 1))  # shards queued again after an actor died, then the next one of the stream
    restarts, max_restarts = 0, 3 * max(1, sum(len(w) for w in workers.values()))
    # ref -> (shard, models, decoder) ; ref -> (worker, shard or None for checkpoints)
    decodes: dict[ray.ObjectRef, tuple[Shard, tuple[str, ...], ActorHandle]] = {}
    calls: dict[ray.ObjectRef, tuple[_Worker, Shard | None]] = {}
    bar = Progress(kind.name, sum(len(t) for t in todo.values()), "shards", ctx.progress)

    def dispatch(shard, need, ref):
        for model in need:
            w = min(workers[model], key=lambda w: (w.inflight, w.assigned))  # least busy, then least used
            w.inflight += 1
            w.assigned += 1
            calls[w.actor.process.remote(shard, ref, shard.fold(folds))] = (w, shard)

    def checkpoint(w):
        w.saved_at = time.monotonic()
        calls[w.actor.checkpoint.remote()] = (w, None)

    def replace(dead: _Worker, error: Exception, failed: dict[str, Shard]):
        """Queue again what a dead actor held but never saved, and start a fresh actor in its place."""
        nonlocal restarts
        restarts += 1
        if restarts > max_restarts:
            raise PassError(f"{kind.name} actors died {restarts} times; last error: {error}") from error
        for ref, (w, shard) in list(calls.items()):
            if w is dead:
                del calls[ref]
                if shard is not None:
                    failed[shard.shard_id] = shard
        uri = latest_committed(dead.folder, kind.suffix)  # a checkpoint may land just before the actor dies
        saved = set(partial_shards(kind, uri)) if uri else set()
        lost = {**dead.unsaved, **failed}
        for shard_id in sorted(set(lost) - saved, reverse=True):
            queue.appendleft((lost[shard_id], (dead.model,)))
        workers[dead.model][workers[dead.model].index(dead)] = new_worker(dead.model)
        bar.update(-len(set(dead.unsaved) - saved))

    # Decodes in flight: enough to keep every actor fed, and every CPU the actors leave free busy, on one decoder
    # per free CPU of each node (decoding is single-threaded; cluster.decoder_layout) beside the first one.
    n_workers = max(1, sum(len(w) for w in workers.values()))
    limit = max(2, math.ceil(resources.get("CPU", 0) - cpus_per_actor * n_workers), cfg.decode_workers * n_workers)
    more = decoder_layout(alive_nodes(), per_actor, cpus_per_actor, n_workers, here)
    decoders = {d: 0 for d in [first_decoder] + [decoder_class.options(num_cpus=cpus, scheduling_strategy=on_node(node)
                                                                       ).remote() for node, cpus in more]}

    def decode(shard, need):
        d = min(decoders, key=lambda x: decoders[x])  # the decoder with the fewest shards queued
        decoders[d] += 1
        ref = d.decode.remote(shard, preprocess_config(need[0]), defer_jpeg)
        decodes[ref] = (shard, need, d)

    while True:
        if not (queue or decodes or calls):  # all done: save what is unsaved, then stop
            for w in (w for ws in workers.values() for w in ws if w.unsaved):
                checkpoint(w)
            if not calls:
                break
        # Decoded shards waiting at the actors stay at two per actor, so memory does not grow with the queue.
        while (queue and len(decodes) < limit
               and sum(w.inflight for ws in workers.values() for w in ws) < 2 * n_workers):
            decode(*queue.popleft())
            if not queue:
                queue.extend(islice(fresh, 1))
        ready, _ = ray.wait(list(decodes) + list(calls), num_returns=1)
        ref = ready[0]
        if ref in decodes:
            stats.shards_decoded += 1
            decoded, need, d = decodes.pop(ref)
            decoders[d] -= 1
            dispatch(decoded, need, ref)
            continue
        w, shard = calls.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            replace(w, e, {shard.shard_id: shard} if shard is not None else {})
            continue
        if shard is None:  # a checkpoint: what it lists is now safe
            w.saved(record["shard_id"] for record in result)
            if on_saved is not None and result:
                on_saved(w.model, result)
            continue
        w.passed(shard)
        stats.images += result["n_images"]
        stats.shards_scanned += 1
        bar.update(1, images_per_s=round(stats.images / max(1e-9, time.perf_counter() - t0), 1))
        every = cfg.checkpoint_every
        due = time.monotonic() - w.saved_at >= cfg.checkpoint_s or (every and len(w.unsaved) >= every)
        if due and not any(v == (w, None) for v in calls.values()):
            checkpoint(w)
    bar.close()
    for w in (w for ws in workers.values() for w in ws):
        if ctx.actors is not None:  # kept, model loaded, for the run's next pass or its spans
            w.actor.end.remote()
            ctx.actors.keep(w.model, per_actor, cpus_per_actor, w.actor)
        else:
            ray.kill(w.actor)
    for model, left in kept.items():  # kept actors this pass did not need (their model had no shard to pass over)
        for actor in left:
            ctx.actors.keep(model, per_actor, cpus_per_actor, actor)
    for actor in decoders:
        ray.kill(actor)
    stats.seconds = time.perf_counter() - t0
    return stats
