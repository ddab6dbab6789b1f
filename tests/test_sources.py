"""Readers and sharding: the same images through every source kind, on local disk and memory://."""

import io
import tarfile
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ccs_ray.sources import SourceError, detect_kind, load_shard, plan_shards, read_shard
from ccs_ray.spec import DataConfig, SpecError, load_spec

N = 7
LABELS = ["cat", "dog", "cat", "owl", "dog", "cat", "owl"]


def png(i: int, size=(24, 20)) -> bytes:
    """A distinct RGB PNG per ``i``."""
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def names():
    return [f"img{i:02d}" for i in range(N)]


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    """A writable folder URI: a local tmp path or a fresh memory:// folder."""
    if request.param == "local":
        yield str(tmp_path)
    else:
        uri = f"memory://t-{uuid.uuid4().hex}"
        yield uri
        fsspec.filesystem("memory").rm(fsspec.core.url_to_fs(uri)[1], recursive=True)


def put(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def write_tar(uri: str, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    put(uri, buf.getvalue())


def write_parquet(uri: str, table: pa.Table, row_group_size: int) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    put(uri, buf.getvalue())


def make_sources(root: str) -> dict[str, str]:
    """The same N labelled images as a class folder, a tar, a parquet file and a CSV manifest."""
    for i, n in enumerate(names()):
        put(f"{root}/folder/{LABELS[i]}/{n}.png", png(i))
        put(f"{root}/flat/{n}.png", png(i))
    write_tar(f"{root}/tars/part-000.tar",
              [(n, {"png": png(i), "cls": LABELS[i].encode()}) for i, n in enumerate(names())])
    write_parquet(f"{root}/pq/data.parquet",
                  pa.table({"image": [png(i) for i in range(N)], "label": LABELS}), row_group_size=3)
    csv = "uri,label\n" + "".join(f"../flat/{n}.png,{LABELS[i]}\n" for i, n in enumerate(names()))
    put(f"{root}/man/manifest.csv", csv.encode())
    return {"folder": f"{root}/folder", "tar": f"{root}/tars", "parquet": f"{root}/pq/data.parquet",
            "manifest": f"{root}/man/manifest.csv"}


def load_all(cfg: DataConfig, preprocess):
    loaded = [load_shard(s, preprocess) for s in plan_shards(cfg)]
    return (torch.cat([x.images for x in loaded]), [lab for x in loaded for lab in x.labels],
            [e for x in loaded for e in x.errors])


def test_every_reader_gives_the_same_tensors(root, tiny_model):
    _, preprocess = tiny_model
    sources = make_sources(root)
    expected = torch.stack([preprocess(Image.open(io.BytesIO(png(i)))) for i in range(N)])
    # The folder reader sorts by path: cat/, dog/, owl/ -> reorder the reference the same way.
    folder_order = sorted(range(N), key=lambda i: (LABELS[i], names()[i]))
    for kind, uri in sources.items():
        assert detect_kind(uri) == kind
        images, labels, errors = load_all(DataConfig(source=uri, shard_size=3), preprocess)
        order = folder_order if kind == "folder" else list(range(N))
        assert errors == [], kind
        assert labels == [LABELS[i] for i in order], kind
        torch.testing.assert_close(images, expected[order], rtol=0, atol=0, msg=kind)


def test_shards_chunk_limit_and_are_deterministic(root):
    sources = make_sources(root)
    for kind in ("folder", "parquet", "manifest"):
        shards = plan_shards(DataConfig(source=sources[kind], shard_size=3))
        assert [len(list(read_shard(s))) for s in shards] == [3, 3, 1], kind
        assert [s.shard_id for s in shards] == ["s000000", "s000001", "s000002"]
        assert [s.kind for s in shards] == [kind] * 3
        assert len({s.fingerprint for s in shards}) == 3
        assert plan_shards(DataConfig(source=sources[kind], shard_size=3)) == shards
        limited = plan_shards(DataConfig(source=sources[kind], shard_size=3, limit=4))
        assert sum(len(list(read_shard(s))) for s in limited) == 4, kind
    write_tar(f"{root}/tars/part-001.tar", [("x", {"png": png(9)})])
    tars = plan_shards(DataConfig(source=sources["tar"]))
    assert [s.uri.rsplit("/", 1)[-1] for s in tars] == ["part-000.tar", "part-001.tar"]
    assert [len(list(read_shard(s))) for s in tars] == [N, 1]
    limited = plan_shards(DataConfig(source=sources["tar"], limit=3))
    assert len(limited) == 1 and [r.item.rsplit("#")[-1] for r in read_shard(limited[0])] == names()[:3]


def test_parquet_shards_cross_row_groups(root, tiny_model):
    """Row groups of 3 rows, shards of 4: shard 1 spans rows 4..7 across two row groups."""
    sources = make_sources(root)
    shards = plan_shards(DataConfig(source=sources["parquet"], shard_size=4))
    recs = [list(read_shard(s)) for s in shards]
    assert [[r.item.rsplit("#")[-1] for r in rs] for rs in recs] == [["0", "1", "2", "3"], ["4", "5", "6"]]
    assert [r.data for rs in recs for r in rs] == [png(i) for i in range(N)]


def test_fingerprint_changes_with_the_data(tmp_path):
    for i in range(4):
        put(f"{tmp_path}/{i}.png", png(i))
    cfg = DataConfig(source=str(tmp_path), shard_size=2)
    before = plan_shards(cfg)
    put(f"{tmp_path}/3.png", png(3, size=(30, 30)))  # new size
    after = plan_shards(cfg)
    assert before[0].fingerprint == after[0].fingerprint
    assert before[1].fingerprint != after[1].fingerprint


def test_glob_and_unlabelled_folder(root):
    make_sources(root)
    shards = plan_shards(DataConfig(source=f"{root}/flat/img0[0-2].png"))
    recs = [r for s in shards for r in read_shard(s)]
    assert [r.data for r in recs] == [png(i) for i in range(3)]
    assert {r.label for r in recs} == {None}


def test_parquet_hf_struct_column_and_manifest_parquet(root):
    table = pa.table({"img": pa.array([{"bytes": png(i), "path": None} for i in range(3)]), "y": [0, 1, 2]})
    write_parquet(f"{root}/hf/train.parquet", table, row_group_size=2)
    cfg = DataConfig(source=f"{root}/hf", image_column="img", label_column="y")
    recs = [r for s in plan_shards(cfg) for r in read_shard(s)]
    assert [(r.data, r.label) for r in recs] == [(png(i), str(i)) for i in range(3)]
    put(f"{root}/flat/a.png", png(0))
    write_parquet(f"{root}/m/list.parquet", pa.table({"uri": [f"{root}/flat/a.png"]}), row_group_size=1)
    assert detect_kind(f"{root}/m/list.parquet") == "manifest"
    assert [r.data for s in plan_shards(DataConfig(source=f"{root}/m/list.parquet")) for r in read_shard(s)] == [png(0)]


def test_clear_errors_for_bad_sources(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        plan_shards(DataConfig(source=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="cannot tell"):
        plan_shards(DataConfig(source=str(tmp_path / "empty")))
    with pytest.raises(SourceError, match="no image files"):
        plan_shards(DataConfig(source=str(tmp_path / "empty"), kind="folder"))
    write_parquet(str(tmp_path / "x.parquet"), pa.table({"pixels": [b"x"]}), 1)
    with pytest.raises(SourceError, match="neither an image column 'image' nor a URI column"):
        plan_shards(DataConfig(source=str(tmp_path / "x.parquet")))
    with pytest.raises(SourceError, match="no image column 'image'"):
        plan_shards(DataConfig(source=str(tmp_path / "x.parquet"), kind="parquet"))
    with pytest.raises(SpecError, match="data.kind"):
        load_spec({"name": "x", "data": {"kind": "zip"}})


def test_load_shard_in_a_ray_task(ray_cluster, tiny_model, tmp_path):
    """Shards travel to Ray workers and load there exactly as in the driver."""
    _, preprocess = tiny_model
    sources = make_sources(str(tmp_path))
    shards = plan_shards(DataConfig(source=sources["tar"]))
    remote = ray_cluster.remote(num_cpus=1)(load_shard)
    loaded = ray_cluster.get([remote.remote(s, preprocess) for s in shards])
    local = [load_shard(s, preprocess) for s in shards]
    assert [x.items for x in loaded] == [x.items for x in local]
    for a, b in zip(loaded, local, strict=True):
        torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
