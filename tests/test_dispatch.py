"""A pass's driver on a real local Ray cluster with actors that load no model: shards go out in batches, every
shard is covered exactly once by the committed checkpoints, and the shards an actor held unsaved when it died are
redone, their items read back from the plan's spool."""

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from ccs_ray.bench.plan import NoopActor, NoopDecoder
from ccs_ray.passes import PassKind, partial_shards, partials, run_pass
from ccs_ray.passes.dispatch import MAX_BATCH, batch_size
from ccs_ray.shard_plan import ShardPlan
from ccs_ray.spec import load_spec
from ccs_ray.stages import RunContext

MODEL = "ccs-tiny/none"


def _dying_actor():
    """A no-op actor that writes each batch's size to ``<log>/<pid>-<n>.json`` (``<log>``: ``batches`` in its
    model's state folder) and, the first time any of them has passed over 40 shards, exits in the middle of a batch
    (marker ``<log>/died``). Made in a function, so that Ray ships the class by value to workers that cannot import
    this test module."""

    @ray.remote
    class DyingActor(NoopActor.__ray_actor_class__):  # type: ignore[name-defined]
        def __init__(self, model_key, models, scan, kind, folder, guard=None):
            super().__init__(model_key, models, scan, kind, folder, guard)
            self.log, self.passed = f"{folder.rsplit('/', 2)[0]}/batches", 0
            os.makedirs(self.log, exist_ok=True)

        def process_batch(self, shards, decoded, folds):
            out = super().process_batch(shards, decoded, folds)
            with open(f"{self.log}/{os.getpid()}-{self.passed}.json", "w") as f:
                json.dump(len(shards), f)
            self.passed += len(shards)
            if self.passed >= 40 and not os.path.exists(f"{self.log}/died"):
                open(f"{self.log}/died", "w").close()
                os._exit(1)
            return out

    return DyingActor


def _manifest(path, rows: int) -> str:
    pq.write_table(pa.table({"uri": [f"img/{i}.jpg" for i in range(rows)],
                             "label": [f"c{i % 7}" for i in range(rows)]}), path)
    return str(path)


def test_batch_size_follows_the_measured_seconds_per_shard():
    assert batch_size(None) == 1  # not measured yet: one shard, as expensive shards need
    assert batch_size(10.0) == 1 and batch_size(0.05) == 5 and batch_size(1e-6) == MAX_BATCH


def test_batches_cover_every_shard_once_and_a_dead_actors_unsaved_shards_are_redone(ray_cluster, tmp_path):
    spec = load_spec({"name": "dispatch", "models": {"keys": [MODEL]},
                      "data": {"source": _manifest(tmp_path / "m.parquet", 3000), "kind": "manifest",
                               "shard_size": 10},
                      "scan": {"actors": 2, "cpus_per_actor": 0.25, "checkpoint_s": 0.2}})
    plan = ShardPlan(spec.data).index()
    ctx = RunContext.of(spec, "r1", str(tmp_path / "results"), progress=False)
    class NoopPass(PassKind):  # in the test, so that Ray ships it by value
        name, folder, suffix = "dispatch-test", "partials", ".bin"

    kind = NoopPass()
    stats = run_pass(ctx, kind, spec.scan, plan, {MODEL: plan.ids()}, spec.data.folds, actor_class=_dying_actor(),
                     decoder_class=NoopDecoder)

    log = Path(ctx.state.model_dir(MODEL)) / "batches"
    assert (log / "died").exists()  # one actor died in the middle of a batch and a fresh one took its place
    records = [r for uri in partials(ctx.state, kind, MODEL) for r in partial_shards(kind, uri).values()]
    counts = Counter(r["shard_id"] for r in records)
    assert set(counts) == plan.ids() and set(counts.values()) == {1}  # every shard in exactly one partial
    # each shard's items reached its decoder whole, also when read back from the spool for a redone shard
    assert all(r["n_images"] == 10 for r in records)
    assert all(r["fingerprint"] == plan.fingerprints[r["shard_id"]] for r in records)
    assert stats.shards_decoded > len(plan) and stats.shards_scanned >= len(plan)  # redone shards count again
    sizes = [json.loads(p.read_text()) for p in log.glob("*.json")]
    assert max(sizes) > 1 and len(sizes) < len(plan)  # cheap shards go out in batches, not one call each
