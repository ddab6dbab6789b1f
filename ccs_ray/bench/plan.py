"""``ccs-ray bench plan``: what a pass's bookkeeping costs as the shards it covers grow.

Checkpoints: one actor's accumulator (the moments of ``model``) checkpointed every ``checkpoint_every`` shards,
the way a scan actor writes them (:class:`ccs_ray.checkpoints.Checkpointer`: data file without records, then the
shard log's part), once over ``small`` shards and once over ``large``. The bytes of the last checkpoint (data file,
marker and log part) are compared, next to what one checkpoint with every record in its data file (as earlier
versions wrote them) weighs at ``large`` shards; reading the large chain back (:func:`ccs_ray.checkpoints.read_log`,
what resume and the partition check do) is timed.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone

from ..checkpoints import Checkpointer, read_log
from ..decompose import select_layers
from ..files import latest_committed
from ..models import load_model
from ..moments import HeadMoments


def _record(i: int) -> dict:
    """A shard record as a scan actor writes it (one decode error, so that the error lists count too)."""
    now = datetime.now(timezone.utc).isoformat()
    return {"shard_id": f"s{i:09d}", "source": f"s3://bucket/images/part-{i:09d}.tar", "fingerprint": f"{i:016x}",
            "fold": i % 2, "n_images": 1000, "n_errors": 1, "n_converted": 0, "seconds": 12.5, "node": "0" * 56,
            "worker": "host:0123abcd", "finished_at": now, "max_rss_mb": 2048.0, "threads": 8,
            "errors": [{"item": f"{i}/bad.jpg", "reason": "truncated", "detail": "image file is truncated", "at": now}],
            "conversions": []}


def _checkpoints(folder: str, acc: HeadMoments, shards: int, every: int) -> tuple[int, str]:
    """Cover ``shards`` shards, checkpointing every ``every``; (bytes of the last checkpoint, its data file URI)."""
    writer = Checkpointer(folder, ".safetensors")
    for i in range(shards):
        acc.mark_covered(f"s{i:09d}")
        writer.add(_record(i))
        if (i + 1) % every == 0 or i + 1 == shards:
            writer.commit(acc.to_bytes(shards=False))
    uri = latest_committed(folder, ".safetensors")
    seq = os.path.basename(uri)[:8]
    return sum(os.path.getsize(f"{folder}/{name}") for name in (f"{seq}.safetensors", f"{seq}.commit",
                                                                  f"shards/{seq}.jsonl")), uri


def run(model: str = "ccs-tiny/none", small: int = 10, large: int = 10_000, checkpoint_every: int = 10) -> dict:
    """Checkpoint bytes at ``small`` and ``large`` shards (and their ratio), the bytes one checkpoint with every
    record inside would take at ``large``, and the seconds to read the large log back."""
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
        inside = HeadMoments.for_model(model, net, layers)  # every record in the data file
        for shard_id, record in records.items():
            inside.mark_covered(shard_id, record)
        legacy = len(inside.to_bytes())
    return {
        "bench": "plan", "model": model, "checkpoint_every": checkpoint_every,
        f"checkpoint_bytes_{small}_shards": sizes[small], f"checkpoint_bytes_{large}_shards": sizes[large],
        f"ratio_checkpoint_bytes_{large}_vs_{small}": round(sizes[large] / sizes[small], 4),
        f"records_in_file_checkpoint_bytes_{large}_shards": legacy,
        f"log_read_{large}_shards_s": round(read_s, 3), "log_records_read": len(records),
    }
