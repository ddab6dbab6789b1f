"""``ccs-ray bench plan``: what a pass's bookkeeping costs as the shards it covers grow, and what planning and
dispatching a large source costs the driver.

Checkpoints: one actor's accumulator (the moments of ``model``) checkpointed every ``checkpoint_every`` shards,
the way a scan actor writes them (:class:`ccs_ray.checkpoints.Checkpointer`: data file without records, then the
shard log's part), once over ``small`` shards and once over ``large``. The bytes of the last checkpoint (data file,
marker and log part) are compared, next to what one checkpoint with every record in its data file (as earlier
versions wrote them) weighs at ``large`` shards; reading the large chain back (:func:`ccs_ray.checkpoints.read_log`,
what resume and the partition check do) is timed.

Streaming (``images``): a generated Parquet manifest of ``images`` rows is planned in ``shard_size`` shards and
dispatched to no-op actors by the scan's own driver loop (:func:`ccs_ray.passes.run_pass`, in batches, with decoders
that unpack each shard's items but read no image and actors that only write their shard logs and checkpoints), in a
fresh driver process on the connected cluster: planning seconds (:meth:`~ccs_ray.shard_plan.ShardPlan.index`),
shards dispatched per second and the driver's peak RSS. The shard logs are read back to check that every shard was
covered exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import ray

from ..checkpoints import Checkpointer, read_log
from ..cluster import ensure_ray
from ..files import keep_guard, latest_committed
from ..jsonout import dumps
from ..shard_plan import unpack_items


def _record(i: int) -> dict:
    """A shard record as a scan actor writes it (one decode error, so that the error lists count too)."""
    now = datetime.now(UTC).isoformat()
    return {"shard_id": f"s{i:09d}", "source": f"s3://bucket/images/part-{i:09d}.tar", "fingerprint": f"{i:016x}",
            "fold": i % 2, "n_images": 1000, "n_errors": 1, "n_converted": 0, "seconds": 12.5, "node": "0" * 56,
            "worker": "host:0123abcd", "finished_at": now, "max_rss_mb": 2048.0, "threads": 8,
            "errors": [{"item": f"{i}/bad.jpg", "reason": "truncated", "detail": "image file is truncated",
                        "logged_at": now}],
            "conversions": []}


def _checkpoints(folder: str, acc, shards: int, every: int) -> tuple[int, str]:
    """Cover ``shards`` shards, checkpointing every ``every``; (bytes of the last checkpoint, its data file URI)."""
    writer = Checkpointer(folder, ".safetensors")
    for i in range(shards):
        acc.mark_covered(f"s{i:09d}")
        writer.add(_record(i))
        if (i + 1) % every == 0 or i + 1 == shards:
            writer.commit(acc.to_bytes(shards=False))
    uri = latest_committed(folder, ".safetensors")
    assert uri is not None  # committed above
    seq = os.path.basename(uri)[:8]
    return sum(os.path.getsize(f"{folder}/{name}") for name in (f"{seq}.safetensors", f"{seq}.commit",
                                                                  f"shards/{seq}.jsonl")), uri


def run(model: str = "ccs-tiny/none", small: int = 10, large: int = 10_000, checkpoint_every: int = 10,
        images: int | None = None, shard_size: int = 1000) -> dict:
    """Checkpoint bytes at ``small`` and ``large`` shards (and their ratio), the bytes one checkpoint with every
    record inside would take at ``large``, and the seconds to read the large log back; with ``images``, the
    streaming figures (module docstring)."""
    from ..decompose import select_layers  # here, not at the top: the streaming driver (drive) runs without torch
    from ..models import load_model
    from ..moments import HeadMoments

    net, _ = load_model(model, "fp32", "cpu")
    layers = select_layers(net, None, 4)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shards in (small, large):
            acc = HeadMoments.for_model(model, net, layers)
            sizes[shards], uri = _checkpoints(f"{tmp}/{shards}", acc, shards, checkpoint_every)
        t0 = time.perf_counter()
        records = read_log(uri)
        read_s = time.perf_counter() - t0
        assert records is not None  # the checkpoints above wrote their shard log
        inside = HeadMoments.for_model(model, net, layers)  # every record in the data file
        for shard_id, record in records.items():
            inside.mark_covered(shard_id, record)
        legacy = len(inside.to_bytes())
        out = {
            "bench": "plan", "model": model, "checkpoint_every": checkpoint_every,
            f"checkpoint_bytes_{small}_shards": sizes[small], f"checkpoint_bytes_{large}_shards": sizes[large],
            f"ratio_checkpoint_bytes_{large}_vs_{small}": round(sizes[large] / sizes[small], 4),
            f"records_in_file_checkpoint_bytes_{large}_shards": legacy,
            f"log_read_{large}_shards_s": round(read_s, 3), "log_records_read": len(records),
        }
        if images:
            out.update(_streaming(tmp, images, shard_size))
    return out


def _streaming(tmp: str, images: int, shard_size: int) -> dict:
    """The streaming figures, from a driver process of their own (its peak RSS is the driver's alone) on the cluster
    this process is connected to, or a local one it starts first: up before the driver starts, as a job's cluster
    is, so that the cluster's own start does not share the cores with planning."""
    ensure_ray()
    manifest = f"{tmp}/manifest.parquet"
    t0 = time.perf_counter()
    write_manifest(manifest, images)
    made_s = time.perf_counter() - t0
    out = f"{tmp}/streaming.json"
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    subprocess.run([sys.executable, "-c", f"from ccs_ray.bench.plan import drive; drive({manifest!r}, {shard_size}, "
                    f"{tmp + '/results'!r}, {out!r})"], check=True, env=env)
    with open(out) as f:
        return {"images": images, "shard_size": shard_size, "manifest_write_s": round(made_s, 2), **json.load(f)}


MANIFEST_ROWS = 1 << 20  # rows per row group of the generated manifest


def write_manifest(uri: str, images: int) -> None:
    """A Parquet manifest of ``images`` rows (``uri``: ``img/<class>/<n>.jpg``, ``label``), a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("uri", pa.string()), ("label", pa.string())])
    with pq.ParquetWriter(uri, schema) as writer:
        for start in range(0, images, MANIFEST_ROWS):
            n = range(start, min(images, start + MANIFEST_ROWS))
            writer.write_table(pa.table({"uri": [f"img/c{i % 1000:03d}/{i:09d}.jpg" for i in n],
                                         "label": [f"c{i % 1000:03d}" for i in n]}, schema))


@ray.remote
class NoopDecoder:
    """A decoder that reads no image: each shard's image count (its items unpacked) stands for its decoded images."""

    def decode_batch(self, shards, packed, preprocess, defer_jpeg=False, alpha="drop"):
        t0 = time.perf_counter()
        for items in packed:
            yield len(unpack_items(items))
        yield time.perf_counter() - t0


@ray.remote
class NoopActor:
    """A scan actor without a model: it records each shard and checkpoints like :class:`~ccs_ray.passes.ModelActor`."""

    def __init__(self, model_key, models, scan, kind, folder, guard=None):
        if guard is not None:
            keep_guard(guard)
        self.checkpointer = Checkpointer(folder, kind.suffix)
        self.node = ray.get_runtime_context().get_node_id()

    def process_batch(self, shards, decoded, folds):
        t0 = time.perf_counter()
        out = []
        for shard, n_images in zip(shards, ray.get(decoded), strict=True):
            now = datetime.now(UTC).isoformat()
            self.checkpointer.add({"shard_id": shard.shard_id, "source": shard.uri, "fingerprint": shard.fingerprint,
                                   "fold": shard.fold(folds), "n_images": n_images, "n_errors": 0, "n_converted": 0,
                                   "seconds": 0.0, "node": self.node, "worker": "noop", "finished_at": now,
                                   "threads": 1, "errors": [], "conversions": []})
            out.append({"shard_id": shard.shard_id, "n_images": n_images, "n_errors": 0, "node": self.node,
                        "threads": 1})
        return out, time.perf_counter() - t0

    def checkpoint(self):
        saved = list(self.checkpointer.pending.values())
        if saved:
            self.checkpointer.commit(b"noop")
        return saved


def drive(manifest: str, shard_size: int, root: str, out: str) -> None:
    """Plan ``manifest`` and dispatch it to no-op actors with the scan's driver loop; write the figures to ``out``."""
    from ..cluster import peak_rss_mb
    from ..passes import PassKind, partial_shards, partials, run_pass
    from ..shard_plan import ShardPlan
    from ..spec import load_spec
    from ..stages import RunContext

    class NoopPass(PassKind):
        name, folder, suffix = "bench-plan", "partials", ".bin"

    ensure_ray()
    rss_start = peak_rss_mb()
    spec = load_spec({"name": "bench-plan", "models": {"keys": ["ccs-tiny/none"]},
                      "data": {"source": manifest, "kind": "manifest", "shard_size": shard_size},
                      "scan": {"cpus_per_actor": 0.25, "checkpoint_s": 2.0}})
    t0 = time.perf_counter()
    plan = ShardPlan(spec.data).index()
    planning_s = time.perf_counter() - t0
    ctx = RunContext.of(spec, "bench", root, progress=False)
    kind = NoopPass()
    stats = run_pass(ctx, kind, spec.scan, plan, {"ccs-tiny/none": plan.ids()}, spec.data.folds,
                     actor_class=NoopActor, decoder_class=NoopDecoder)
    covered: list[str] = []
    for uri in partials(ctx.state, kind, "ccs-tiny/none"):
        covered += list(partial_shards(kind, uri))
    figures = {
        "shards": len(plan), "planning_s": round(planning_s, 2), "dispatch_s": round(stats.seconds, 2),
        "shards_per_s_dispatched": round(stats.shards_scanned / stats.seconds, 1),
        "images_per_s_dispatched": round(stats.images / stats.seconds, 1),
        "covered_exactly_once": sorted(covered) == sorted(plan.ids()),
        "driver_rss_at_start_mb": round(rss_start, 1),
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
    }
    with open(out, "w") as f:
        f.write(dumps(figures))
