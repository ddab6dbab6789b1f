"""The driver of a pass: :func:`run_pass` and its :class:`Dispatcher`.

Contract: every shard of ``todo[model]`` is decoded once per preprocessing group, passed over by exactly one
model actor of each model that needs it and saved in a committed checkpoint of that actor before the pass returns;
a shard an actor held unsaved when it died is passed over again by a fresh actor (:mod:`ccs_ray.retry`: at most
:data:`~ccs_ray.retry.RESTARTS_PER_ACTOR` replacements per actor). The driver keeps only ids, counts, the refs in
flight and the packed items of the shards waiting to be decoded; the accumulators stay in the actors. Torch-free.

Batches. The driver's cost is per Ray call, not per shard: a decoder is given a batch of shards per call
(:meth:`~ccs_ray.passes.Decoder.decode_batch`, one object per decoded shard) and an actor a batch of decoded shards
(:meth:`~ccs_ray.passes.ModelActor.process_batch`). A batch holds the shards its callee passes over in about
:data:`BATCH_S` seconds, as measured on the pass's last batches (one shard until measured; at most
:data:`MAX_BATCH`), so that cheap shards cost the driver little per shard and expensive ones keep their latency.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import ray
from ray.actor import ActorHandle

from ..cluster import CPU_STEP, actor_layout, alive_nodes, decoder_layout, node_cpus, node_cycle, on_node
from ..files import latest_committed
from ..preprocess import preprocess_config
from ..progress import Progress
from ..retry import Restarts
from ..shard_plan import ShardPlan
from ..sources import Shard
from ..spec import ScanConfig
from .actors import Decoder, ModelActor
from .costs import decode_on_actors, decode_share
from .kinds import PassKind, PassStats
from .partials import partial_shards

Need = tuple[str, ...]  # the models of one preprocessing group that still need a shard
Todo = tuple[Shard, bytes, Need]  # a shard to decode (without its items), its packed items, the models that need it
OnSaved = Callable[[str, list[dict]], None]

BATCH_S = 0.25  # seconds of a callee's work per batch of shards
MAX_BATCH = 64  # shards per batch, at most


def batch_size(shard_s: float | None) -> int:
    """Shards per batch for a callee that takes ``shard_s`` seconds per shard (None: not measured yet, one)."""
    return 1 if shard_s is None else max(1, min(MAX_BATCH, int(BATCH_S / max(shard_s, 1e-9))))


@dataclass
class _Worker:
    """One model actor of a pass, as the driver sees it."""

    model: str
    actor: ActorHandle
    folder: str  # the actor's commit folder
    inflight: int = 0  # shards sent and not yet returned
    batches: int = 0  # process_batch calls in flight
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


def run_pass(ctx, kind: PassKind, cfg: ScanConfig, plan: ShardPlan, todo: dict[str, set[str]], folds: int,
             on_saved: OnSaved | None = None, actor_class=None, decoder_class=None) -> PassStats:
    """Pass every model of ``todo`` over its shards (``todo[model]``: ids of the indexed ``plan``'s shards, the rest
    being held by saved partials) on the connected Ray cluster, saving each actor's accumulator as committed
    checkpoints (:mod:`ccs_ray.passes`). ``on_saved(model, records)`` is told of each checkpoint's shards
    (:meth:`ModelActor.checkpoint`'s records). ``actor_class`` and ``decoder_class`` replace :class:`ModelActor` and
    :class:`Decoder` (``ccs-ray bench plan`` times the driver with no-op ones). The decoders convert images with
    transparency as the plan's ``data.alpha`` says (:mod:`ccs_ray.sources.decode`)."""
    return Dispatcher(ctx, kind, cfg, plan, todo, folds, on_saved, actor_class or ModelActor,
                      decoder_class or Decoder).run()


class Dispatcher:
    """One pass's driver. Shards stream from the plan, their items packed (:meth:`ShardPlan.packed`), into a queue
    (shards an actor died with go first); batches of them are decoded on the least-queued decoder; each decoded shard
    then waits, for every model that needs it, until the least busy actor of the model has fewer than two batches in
    flight and takes a batch of the waiting shards. An actor checkpoints every ``scan.checkpoint_s`` seconds or
    ``scan.checkpoint_every`` shards, and once more at the end. The shards decoded or decoding that wait for an actor
    stay under two batches per actor, so neither the driver's memory nor the object store's grows with the plan."""

    def __init__(self, ctx, kind: PassKind, cfg: ScanConfig, plan: ShardPlan, todo: dict[str, set[str]],
                 folds: int, on_saved: OnSaved | None, actor_class, decoder_class):
        self.t0 = time.perf_counter()
        self.ctx, self.kind, self.cfg, self.plan, self.todo, self.folds = ctx, kind, cfg, plan, todo, folds
        self.on_saved, self.actor_class, self.decoder_class = on_saved, actor_class, decoder_class
        self.stats = PassStats(shards_skipped=sum(len(plan) - len(t) for t in todo.values()))
        self.models = [key for key in ctx.models.keys if key in todo]
        resources = ctx.cluster_resources()
        here = ray.get_runtime_context().get_node_id()
        first_decoder = decoder_class.options(num_cpus=CPU_STEP, scheduling_strategy=on_node(here)).remote()
        self.stats.decode_share = self._decode_share(resources)  # while the first decoder starts
        self.gpus_per_actor, self.stats.cpus_per_actor, n_actors = actor_layout(
            cfg, len(self.models), resources, self.stats.decode_share, "scan", node_cpus())
        self.defer_jpeg = self.stats.decode_on_actors = decode_on_actors(cfg, self.gpus_per_actor)
        self.placements = node_cycle(self.gpus_per_actor, self.stats.cpus_per_actor)  # actors over the nodes in turn
        self.kept: dict[str, list[ActorHandle]] = {}  # model -> the run's kept actors of this layout, not yet used
        if ctx.actors is not None:
            self.kept = {key: ctx.actors.take(key, self.gpus_per_actor, self.stats.cpus_per_actor)
                         for key in self.models}
            ctx.actors.release()  # kept actors of another layout would hold the CPUs the new ones need
        self.workers = {key: [self._new_worker(key) for _ in range(n_actors)] for key in self.models if todo[key]}
        self.n_workers = max(1, sum(len(ws) for ws in self.workers.values()))
        self.preprocess = {key: preprocess_config(key) for key in self.models}
        self.fresh = self._pending()
        self.queue: deque[Todo] = deque(islice(self.fresh, 1))  # requeued shards, then the next one
        self.restarts = Restarts(kind.name, sum(len(ws) for ws in self.workers.values()))
        # a decode call's last ref (its seconds) -> (its shards, the refs of the decoded shards, the decoder)
        self.decodes: dict[ray.ObjectRef, tuple[list[Todo], list[ray.ObjectRef], ActorHandle]] = {}
        self.decoding = 0  # shards in the decode calls in flight
        self.ready: dict[str, deque[tuple[Shard, ray.ObjectRef]]] = {key: deque() for key in self.workers}
        # an actor call's ref -> (its worker, the shards of a process_batch call; None: a checkpoint)
        self.calls: dict[ray.ObjectRef, tuple[_Worker, list[Shard] | None]] = {}
        self.decode_s: float | None = None  # a decoder's seconds per shard, on the last decoded batch
        self.actor_s: dict[str, float | None] = {key: None for key in self.workers}  # the same for each model's actors
        self.bar = Progress(kind.name, sum(len(t) for t in todo.values()), "shards", ctx.progress)
        # Decodes in flight: enough to keep every actor fed, and every CPU the actors leave free busy.
        self.decode_limit = max(2, math.ceil(resources.get("CPU", 0) - self.stats.cpus_per_actor * self.n_workers),
                                cfg.decode_workers * self.n_workers)
        self.decoders = self._start_decoders(first_decoder, here)  # decoder -> decode calls queued on it

    def _decode_share(self, resources: dict) -> float | None:
        """The measured decode share (:func:`~ccs_ray.passes.costs.decode_share`) on a CPU-only cluster with the
        default layout and shards to pass over, else None."""
        cfg = self.cfg
        measure = (not resources.get("GPU") and cfg.gpus_per_actor is None and cfg.cpus_per_actor is None
                   and any(self.todo.values()))
        return decode_share(self.ctx, self.kind, cfg, self.plan, self.models) if measure else None

    def _start_decoders(self, first: ActorHandle, here: str) -> dict[ActorHandle, int]:
        """The pass's decoders, none busy: ``first`` and one per CPU the actors leave free on each node (decoding is
        single-threaded; :func:`~ccs_ray.cluster.decoder_layout`)."""
        more = decoder_layout(alive_nodes(), self.gpus_per_actor, self.stats.cpus_per_actor, self.n_workers, here)
        return {d: 0 for d in [first] + [self.decoder_class.options(num_cpus=cpus, scheduling_strategy=on_node(node))
                                         .remote() for node, cpus in more]}

    def _new_worker(self, model: str) -> _Worker:
        """A worker of ``model`` in a fresh commit folder: a kept actor when one is left, else a new actor."""
        folder = f"{self.ctx.state.model_dir(model)}/{self.kind.folder}/{uuid.uuid4().hex[:12]}"
        if self.kept.get(model):  # a kept actor: its calls run in order, so the pass begins before any shard comes
            actor = self.kept[model].pop()
            actor.begin.remote(self.cfg, self.kind, folder)
        else:
            actor = self.actor_class.options(
                num_gpus=self.gpus_per_actor, num_cpus=self.stats.cpus_per_actor,
                scheduling_strategy=next(self.placements)).remote(model, self.ctx.models, self.cfg, self.kind, folder,
                                                                   self.ctx.guard)
        return _Worker(model, actor, folder)

    def _pending(self) -> Iterator[Todo]:
        """(shard, its packed items, models of one preprocessing group that still need it), streamed from the plan."""
        groups: dict[str, list[str]] = {}
        for key in self.models:
            groups.setdefault(repr(sorted(self.preprocess[key].items())), []).append(key)
        for s, packed in self.plan.packed() if any(self.todo.values()) else ():
            for group in groups.values():
                need = tuple(key for key in group if s.shard_id in self.todo[key])
                if need:
                    yield s, packed, need

    def _all_workers(self) -> Iterator[_Worker]:
        return (w for ws in self.workers.values() for w in ws)

    def run(self) -> PassStats:
        """Pass over every shard, save everything, then keep (or kill) the actors; the pass's stats."""
        while not self._finished():
            self._feed()
            ready, _ = ray.wait(list(self.decodes) + list(self.calls), num_returns=1)
            self._handle(ready[0])
        self._finish()
        return self.stats

    def _finished(self) -> bool:
        """Whether nothing is left to do; once nothing is queued or in flight, asks every worker with unsaved
        shards for a checkpoint (and waits for it)."""
        if self.queue or self.decodes or self.calls or any(self.ready.values()):
            return False
        for w in self._all_workers():
            if w.unsaved:
                self._checkpoint(w)
        return not self.calls

    def _feed(self) -> None:
        """Decode batches of queued shards while decode calls in flight stay under ``decode_limit`` and the shards
        decoding or decoded that wait for an actor under two batches per actor; then give each model's waiting
        shards, a batch at a time, to its least busy actor while one has fewer than two batches in flight."""
        limit = 2 * sum(self._actor_batch(w.model) for w in self._all_workers())
        while (self.queue and len(self.decodes) < self.decode_limit
               and self.decoding + max(map(len, self.ready.values()), default=0) < limit):
            self._decode(self._take(batch_size(self.decode_s)))
        for model, ready in self.ready.items():
            while ready:
                w = min(self.workers[model], key=lambda w: (w.batches, w.inflight, w.assigned))
                if w.batches >= 2:
                    break
                self._dispatch(w, [ready.popleft() for _ in range(min(len(ready), self._actor_batch(model)))])

    def _actor_batch(self, model: str) -> int:
        """Shards per batch for an actor of ``model``; with ``scan.checkpoint_every`` set, a tenth of it at most (at
        least one), so that an actor's death still costs about that many shards."""
        n, every = batch_size(self.actor_s[model]), self.cfg.checkpoint_every
        return n if every is None else max(1, min(n, every // 10))

    def _take(self, n: int) -> list[Todo]:
        """Up to ``n`` queued shards, the queue refilled from the plan so that it is empty only once the plan is."""
        if len(self.queue) <= n:
            self.queue.extend(islice(self.fresh, n + 1 - len(self.queue)))
        return [self.queue.popleft() for _ in range(min(n, len(self.queue)))]

    def _decode(self, batch: list[Todo]) -> None:
        """Decode ``batch`` on the decoder with the fewest calls queued: one object per decoded shard."""
        d = min(self.decoders, key=self.decoders.__getitem__)
        self.decoders[d] += 1
        self.decoding += len(batch)
        refs: list[ray.ObjectRef] = d.decode_batch.options(num_returns=len(batch) + 1).remote(
            [s for s, _, _ in batch], [packed for _, packed, _ in batch],
            [self.preprocess[need[0]] for _, _, need in batch], self.defer_jpeg, self.plan.data.alpha)
        self.decodes[refs[-1]] = (batch, refs[:-1], d)  # the last: the decoder's seconds

    def _dispatch(self, w: _Worker, batch: list[tuple[Shard, ray.ObjectRef]]) -> None:
        """Send decoded shards (shard, ref of the decoded shard) to the worker ``w`` in one call."""
        shards = [s for s, _ in batch]
        w.inflight += len(shards)
        w.assigned += len(shards)
        w.batches += 1
        self.calls[w.actor.process_batch.remote(shards, [ref for _, ref in batch], self.folds)] = (w, shards)

    def _checkpoint(self, w: _Worker) -> None:
        w.saved_at = time.monotonic()
        self.calls[w.actor.checkpoint.remote()] = (w, None)

    def _handle(self, ref: ray.ObjectRef) -> None:
        """A ready ref: a decoded batch, or an actor's result."""
        if ref in self.decodes:
            self._decoded(ref)
        else:
            self._returned(ref)

    def _decoded(self, ref: ray.ObjectRef) -> None:
        """A decoded batch: each shard waits for an actor of each model that needs it."""
        batch, refs, d = self.decodes.pop(ref)
        self.decoders[d] -= 1
        self.decoding -= len(batch)
        self.decode_s = ray.get(ref) / len(batch)
        self.stats.shards_decoded += len(batch)
        for (shard, _, need), decoded in zip(batch, refs, strict=True):
            for model in need:
                self.ready[model].append((shard, decoded))

    def _returned(self, ref: ray.ObjectRef) -> None:
        """An actor's result: a batch passed over, a checkpoint, or the actor's death."""
        w, shards = self.calls.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            if e.actor_init_failed:  # its __init__ raised (storage, weights): a new actor would raise the same
                raise
            self._replace(w, e, {s.shard_id: s for s in shards or ()})
            return
        if shards is None:
            self._saved(w, result)
        else:
            self._passed(w, shards, *result)

    def _saved(self, w: _Worker, records: list[dict]) -> None:
        """A checkpoint's records: what it lists is now safe."""
        w.saved(record["shard_id"] for record in records)
        if self.on_saved is not None and records:
            self.on_saved(w.model, records)

    def _passed(self, w: _Worker, shards: list[Shard], results: list[dict], seconds: float) -> None:
        """A batch's results (``seconds``: the actor's time on it); the worker checkpoints when due and no
        checkpoint of its own is in flight."""
        w.batches -= 1
        for shard in shards:
            w.passed(shard)
        self.actor_s[w.model] = seconds / len(shards)
        self.stats.images += sum(r["n_images"] for r in results)
        self.stats.shards_scanned += len(shards)
        self.bar.update(len(shards),
                        images_per_s=round(self.stats.images / max(1e-9, time.perf_counter() - self.t0), 1))
        every = self.cfg.checkpoint_every
        due = time.monotonic() - w.saved_at >= self.cfg.checkpoint_s or (every and len(w.unsaved) >= every)
        if due and not any(x is w and s is None for x, s in self.calls.values()):
            self._checkpoint(w)

    def _replace(self, dead: _Worker, error: Exception, failed: dict[str, Shard]) -> None:
        """Queue again, first and in shard order, what a dead actor held but never saved (``failed``: the shards of
        its call that raised), their items read back from the plan's spool, and start a fresh worker in its place."""
        self.restarts.replaced(error)
        for ref, (w, shards) in list(self.calls.items()):
            if w is dead:
                del self.calls[ref]
                failed.update((s.shard_id, s) for s in shards or ())
        uri = latest_committed(dead.folder, self.kind.suffix)  # a checkpoint may land just before the actor dies
        saved = set(partial_shards(self.kind, uri)) if uri else set()
        lost = sorted((s for shard_id, s in {**dead.unsaved, **failed}.items() if shard_id not in saved),
                      key=lambda s: s.index)
        for shard, packed in reversed(list(zip(lost, self.plan.packed_items(lost), strict=True))):
            self.queue.appendleft((shard, packed, (dead.model,)))
        workers = self.workers[dead.model]
        workers[workers.index(dead)] = self._new_worker(dead.model)
        self.bar.update(-len(set(dead.unsaved) - saved))

    def _finish(self) -> None:
        """Keep the actors, model loaded, for the run's next pass or its spans (kill them without a pool), and the
        kept actors this pass did not need; kill the decoders."""
        self.bar.close()
        pool, layout = self.ctx.actors, (self.gpus_per_actor, self.stats.cpus_per_actor)
        if pool is None:
            for w in self._all_workers():
                ray.kill(w.actor)
        else:
            for w in self._all_workers():
                w.actor.end.remote()
                pool.keep(w.model, *layout, w.actor)
            for model, left in self.kept.items():  # their model had no shard to pass over
                for actor in left:
                    pool.keep(model, *layout, actor)
        for actor in self.decoders:
            ray.kill(actor)
        self.stats.seconds = time.perf_counter() - self.t0
