"""Streamed plans: the shards a source streams equal the ones planned from the whole source read at once, and
the shards table written in parts reads as one row per shard."""

import os
from dataclasses import replace

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from ccs_ray import shard_plan
from ccs_ray.analytics import connect
from ccs_ray.files import read_table_file, resolve_uri
from ccs_ray.shard_plan import ShardPlan, unpack_items
from ccs_ray.sources import manifest, plan_shards
from ccs_ray.sources.base import file_version, fingerprint, list_files, walk_files
from ccs_ray.spec import DataConfig
from ccs_ray.tables import write_table

# Names whose order by full path differs from a naive walk (files before sub-folders): 'b' < 'b-c' < 'b.jpg'
# < 'b/' < 'b0', and case.
NAMES = ["a.jpg", "b-c.jpg", "b.jpg", "b/x.jpg", "b/a/z.png", "b0.jpg", "b0/y.JPG", "B.jpg", "c/d/e/f.webp",
         "c/note.txt", "c d.jpg"]


def _tree(root) -> None:
    for name in NAMES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def test_walked_folder_lists_files_in_the_order_of_the_whole_listing(tmp_path):
    _tree(tmp_path)
    exts = (".jpg", ".png", ".webp")
    walked = list(walk_files(str(tmp_path), exts))
    whole = list_files(str(tmp_path), exts)  # fs.find of the whole tree, sorted
    assert [u for u, _ in walked] == list(whole) and len(walked) == 10
    assert [file_version(i) for _, i in walked] == [file_version(i) for i in whole.values()]


def _eager_manifest_shards(uri, cfg):
    """Shards planned from the manifest read whole (files.read_table_file), the way earlier versions planned it."""
    table = read_table_file(uri)
    base = os.path.dirname(uri)
    rows = [(resolve_uri(str(u), base), None if lab is None else str(lab))
            for u, lab in zip(table.column("uri").to_pylist(), table.column("label").to_pylist(), strict=True) if u]
    rows = rows[:cfg.limit]
    info = list_files(uri, None)[uri]
    return [(uri, tuple(rows[i:i + cfg.shard_size]), fingerprint(uri, rows[i:i + cfg.shard_size], file_version(info)))
            for i in range(0, len(rows), cfg.shard_size)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("limit", [None, 23])
def test_streamed_manifest_equals_the_manifest_read_whole(tmp_path, monkeypatch, fmt, limit):
    monkeypatch.setattr(manifest, "BATCH_ROWS", 7)  # many batches, none aligned with the shards
    n = 40
    # relative, absolute, to normalize, another protocol, empty; characters JSON escapes in URIs and labels
    forms = ["img/{}.jpg", "/abs/{}.jpg", "./img/{}.jpg", "../up/{}.jpg", "a//b/{}.jpg", "s3://b/{}.jpg", "",
             'caf\u00e9 "{}".jpg', "tab\t\\{}.jpg"]
    uris = [None if i % 11 == 4 else forms[i % len(forms)].format(i) for i in range(n)]
    labels = [None if i % 5 == 0 else ("\u00e9t\u00e9" if i % 7 == 0 else f"c{i % 3}") for i in range(n)]
    table = pa.table({"uri": pa.array(uris, pa.string()), "label": pa.array(labels, pa.string()),
                      "extra": list(range(n))})
    uri = str(tmp_path / f"m.{fmt}")
    pq.write_table(table, uri) if fmt == "parquet" else pcsv.write_csv(table, uri)
    cfg = DataConfig(source=uri, kind="manifest", shard_size=5, limit=limit)
    shards = plan_shards(cfg)
    assert [(s.uri, s.items, s.fingerprint) for s in shards] == _eager_manifest_shards(uri, cfg)
    assert [s.shard_id for s in shards] == [f"s{i:06d}" for i in range(len(shards))]
    assert sum(len(s.items) for s in shards) == (limit or sum(bool(u) for u in uris))


def test_indexed_plan_streams_the_eager_plan_and_lists_the_source_once(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_plan, "PART_SHARDS", 3)
    monkeypatch.setattr(shard_plan, "CHUNK_BYTES", 100)  # chunks of one or two shards, not aligned with the parts
    _tree(tmp_path / "src")
    cfg = DataConfig(source=str(tmp_path / "src"), shard_size=2)
    eager = plan_shards(cfg)
    listings = []
    real = shard_plan.iter_shards
    monkeypatch.setattr(shard_plan, "iter_shards", lambda data: listings.append(data.source) or real(data))
    parts = []
    plan = ShardPlan(cfg).index(lambda shards, part: parts.append((part, shards)))
    assert list(plan) == eager and len(plan) == len(eager) == 5
    assert [(part, [s.shard_id for s in shards]) for part, shards in parts] == [
        (0, ["s000000", "s000001", "s000002"]), (1, ["s000003", "s000004"])]
    # a part handed to the callback holds each shard's id, place and fingerprint, not its items
    assert [s for _, shards in parts for s in shards] == [replace(s, items=()) for s in eager]
    assert plan.first() == eager[0] and plan.ids() == {s.shard_id for s in eager}
    assert [[s.shard_id for s in part] for part in plan.parts()] == [[s.shard_id for s in p] for _, p in parts]
    assert [s for part in plan.parts() for s in part] == [replace(s, items=()) for s in eager]
    assert len(plan._starts) > len(parts)  # spooled in more chunks than parts
    # packed: the shards without items and their items as bytes; read back by shard, in any order
    assert [(s, unpack_items(p)) for s, p in plan.packed()] == [(replace(s, items=()), s.items) for s in eager]
    wanted = [replace(eager[i], items=()) for i in (4, 0, 3)]
    assert [unpack_items(p) for p in plan.packed_items(wanted)] == [eager[i].items for i in (4, 0, 3)]
    (tmp_path / "src" / "b0.jpg").unlink()  # the plan is what was listed, however often it is read
    assert list(plan) == eager and listings == [cfg.source]
    spool = plan._spool
    assert spool is not None and spool.is_dir()
    del plan
    assert not spool.exists()  # the spool goes with the plan


def test_shards_view_keeps_each_shards_newest_row(tmp_path):
    root = str(tmp_path)
    planned = [dict(shard_id=f"s{i:06d}", source="x", fingerprint=f"{i}", fold=0, status="planned") for i in range(4)]
    write_table(root, "shards", planned, "r1", "m", name="planned-000000")
    done = [dict(p, status="done", n_images=3, seconds=1.0) for p in planned[1:3]]
    write_table(root, "shards", done, "r1", "m", name="done-a")
    rows = connect(root).execute("SELECT shard_id, status FROM shards ORDER BY shard_id").fetchall()
    assert rows == [("s000000", "planned"), ("s000001", "done"), ("s000002", "done"), ("s000003", "planned")]


def test_bench_plan_dispatches_a_streamed_manifest_exactly_once(ray_cluster):
    from ccs_ray.bench import plan as bench_plan

    f = bench_plan.run(small=2, large=4, checkpoint_every=2, images=20_000, shard_size=500)
    assert f["shards"] == 40 and f["covered_exactly_once"] is True
    assert f["planning_s"] > 0 and f["shards_per_s_dispatched"] > 0
    # Every shard holds 500 images; shards/s is rounded to 0.1, images/s to 0.1.
    assert abs(f["images_per_s_dispatched"] / 500 - f["shards_per_s_dispatched"]) <= 0.05 + 0.1 / 500
    assert f["driver_peak_rss_mb"] >= f["driver_rss_at_start_mb"] > 0


def test_peak_rss_is_the_processs_own_not_its_parents():
    """A driver started by a large parent reports its own peak memory (``ru_maxrss`` would give the parent's)."""
    import subprocess
    import sys

    held = bytearray(512 * 2**20)
    held[::4096] = b"x" * len(held[::4096])  # resident, not only reserved
    out = subprocess.run([sys.executable, "-c", "from ccs_ray.cluster import peak_rss_mb; print(peak_rss_mb())"],
                         capture_output=True, text=True, check=True)
    assert 0 < float(out.stdout) < 400 and len(held) == 512 * 2**20

