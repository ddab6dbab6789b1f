"""The Ray actors of a pass and the pool of model actors a run keeps.

- :class:`Decoder`: a CPU actor that reads and decodes batches of shards into uint8 pixels (:func:`decode_shard`),
  torch-free.
- :class:`ModelActor`: holds one model on its device (a GPU when it holds one, else its CPUs as torch threads) and
  serves the passes (``begin``, ``process_batch``, ``checkpoint``, ``end``: the scan and explain accumulators) and
  any later stage's generator function on the loaded model (``call``: the spans stage).
- :class:`ModelActors`: the run's idle model actors, kept between the stages that use them, and the one place
  that decides where work on a model runs (:meth:`ModelActors.stream`: a kept actor, else a task of its own).

The driver imports neither torch nor open_clip from here: the actors import them in their methods.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import ray
from ray.actor import ActorHandle

from ..checkpoints import Checkpointer
from ..cluster import held_device, node_cpus, peak_rss_mb, use_held_cpus
from ..files import WriteGuard, guard_writes, keep_guard
from ..preprocess import Pixels, model_input, preprocess_config
from ..shard_plan import unpack_items
from ..sources import LoadedShard, Shard, decode_deferred, load_shard
from ..spec import ModelsConfig, ScanConfig
from .kinds import PassKind

T = TypeVar("T")


def decode_shard(shard: Shard, preprocess: dict, defer_jpeg: bool = False, alpha: str = "drop") -> LoadedShard:
    """Read and decode one shard: its images as uint8 pixels (:class:`~ccs_ray.preprocess.Pixels` of the settings
    ``preprocess``, [N, 3, H, W]); ``defer_jpeg``: JPEGs left for the actor's device; ``alpha``: how transparency
    is converted (``data.alpha``; :func:`~ccs_ray.sources.load_shard`)."""
    return load_shard(shard, Pixels(preprocess), defer_jpeg, alpha)


decode_task = ray.remote(num_cpus=1)(decode_shard)  # one shard in a task of its own (ccs-ray bench scan)


@ray.remote(max_restarts=-1, max_task_retries=3)
class Decoder:
    """A long-lived decode worker of a pass: :func:`decode_shard` in one process that stays up (Ray would otherwise
    start and stop task workers beside actors that hold fractional CPUs); restarted and the call retried when its
    process dies. Decoding needs neither torch nor open_clip (:mod:`ccs_ray.preprocess`), so a decoder starts fast.
    The pass's first decoder starts on the driver's node before anything else, so that it starts while the driver
    measures what decoding and each model cost (:func:`~ccs_ray.passes.costs.decode_share`)."""

    def decode_batch(self, shards: list[Shard], packed: list[bytes], preprocess: list[dict],
                     defer_jpeg: bool = False, alpha: str = "drop") -> Iterator[LoadedShard | float]:
        """Yields each shard decoded (``shards[i]`` without its items, ``packed[i]`` its items packed by
        :func:`~ccs_ray.shard_plan.pack_items`, ``preprocess[i]`` its settings; ``defer_jpeg`` and ``alpha``:
        :func:`decode_shard`), then the seconds it took; called
        with ``num_returns=len(shards) + 1``, so that each decoded shard is an object of its own, stored as it is
        yielded."""
        t0 = time.perf_counter()
        for shard, items, settings in zip(shards, packed, preprocess, strict=True):
            yield decode_shard(replace(shard, items=unpack_items(items)), settings, defer_jpeg, alpha)
        yield time.perf_counter() - t0


@ray.remote
class ModelActor:
    """Holds one model (loaded once) and, during a pass, the accumulator of the shards it has passed over since the
    pass began. A run keeps it between its passes and lends it to the spans stage (:class:`ModelActors`)."""

    def __init__(self, model_key: str, models: ModelsConfig, scan: ScanConfig, kind: PassKind, folder: str,
                 guard: WriteGuard | None = None):
        from ..decompose import select_layers
        from ..models import load_model

        if guard is not None:  # the actor lives and dies with its run: none of its writes recreates a vanished root
            keep_guard(guard)
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
        from ..decompose import decomposed_forward

        self.batch_size, self.kind = scan.batch_size, kind
        self.acc = kind.start(self.model_key, self.model, self.layers, self.device)
        self.forward = partial(decomposed_forward, self.model, layers=self.layers, convention=scan.convention,
                               keep_z_sum=kind.keep_z_sum, coefficients=kind.coefficients,
                               **kind.forward_options(self.acc))  # -> Decomposition
        self.checkpointer: Checkpointer | None = Checkpointer(folder, kind.suffix)

    def end(self) -> None:
        """The pass is saved: drop its accumulator (the actor waits, model loaded, for the next pass)."""
        self.acc = self.checkpointer = None

    def call(self, fn: Callable, *args):
        """Yields what ``fn(model, device, *args)`` yields, on this actor's model and device: a later stage's work
        that needs the model (:func:`~ccs_ray.span_rows.span_rows`)."""
        yield from fn(self.model, self.device, *args)

    def process(self, shard: Shard, loaded: LoadedShard, fold: int) -> dict:
        """Add every good image of a decoded shard to the accumulator; returns the shard's record."""
        import numpy as np
        import torch

        from ..decompose import Decomposition

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

    def process_batch(self, shards: list[Shard], decoded: list[ray.ObjectRef], folds: int) -> tuple[list[dict], float]:
        """:meth:`process` each shard with its decoded shard (``decoded``: refs of :meth:`Decoder.decode_batch`'s
        objects, fetched one at a time) in fold ``shard.fold(folds)``; (the shards' records, in order, seconds)."""
        t0 = time.perf_counter()
        records = [self.process(s, ray.get(ref), s.fold(folds)) for s, ref in zip(shards, decoded, strict=True)]
        return records, time.perf_counter() - t0

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
    """Error or conversion rows as JSON for a shard record (``logged_at`` in ISO format)."""
    return [{**row, "logged_at": row["logged_at"].isoformat()} for row in rows]


@ray.remote(num_returns="streaming")
def _model_task(model_key: str, models: ModelsConfig, guard: WriteGuard | None, fn: Callable, *args):
    """What ``fn(model, device, *args)`` yields, in a task of its own that loads the model on the device it holds
    (its writes checked against the run's ``guard``)."""
    from ..models import load_model

    device = held_device()
    use_held_cpus()
    model, _ = load_model(model_key, models.precision, device)
    with guard_writes(guard) if guard is not None else contextlib.nullcontext():
        yield from fn(model, device, *args)


class ModelActors:
    """The :class:`ModelActor` s a run keeps between the stages that use them (scan, spans, explain: see
    :attr:`ccs_ray.stages.Stage.uses_model_actors`), idle, by model and the resources they hold, so that each keeps
    its model loaded instead of a new process importing and loading it again. The pipeline owns one pool for the
    run (``with ModelActors() as actors:``) and releases it (kills the actors) before a stage that uses none and
    when the run ends. ``guard``: the run's :class:`~ccs_ray.files.WriteGuard`, which its actors and tasks write
    under."""

    def __init__(self, guard: WriteGuard | None = None):
        self.guard = guard
        self.idle: dict[str, list[tuple[float, float, ActorHandle]]] = {}  # model -> (GPUs, CPUs, actor)

    def __enter__(self) -> ModelActors:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

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

    def stream(self, model: str, fn: Callable, *args, models: ModelsConfig, resources: dict,
               read: Callable[[Iterator[ray.ObjectRef]], T]) -> tuple[T, str]:
        """``read`` the refs of what the generator function ``fn(loaded model, device, *args)`` yields for ``model``
        (a key of ``models``) and return what it returns, with where ``fn`` ran: ``"kept actor"`` (a kept actor of
        ``model``, its model loaded) or ``"task"``. With no kept actor, or when it dies before ``read`` ends
        (:class:`ray.exceptions.RayActorError`), every kept actor is released (the task may need a whole node) and
        ``fn`` runs from the start in a task of its own that loads the model: on one GPU when ``resources`` (the
        cluster's) has any, else holding a whole node's CPUs as torch threads."""
        actor = self.one(model)
        if actor is not None:
            try:
                return read(actor.call.options(num_returns="streaming").remote(fn, *args)), "kept actor"
            except ray.exceptions.RayActorError:  # it died: a task instead
                pass
        self.release()
        gpus = 1 if resources.get("GPU", 0) else 0
        cpus = 1 if gpus else max(node_cpus())  # without a GPU: one whole node's cores, as torch threads
        task = _model_task.options(num_gpus=gpus, num_cpus=cpus)
        return read(task.remote(model, models, self.guard, fn, *args)), "task"
