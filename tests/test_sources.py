"""Readers and sharding: the same images through every source kind, on local disk and memory://."""

import io
import struct
import tarfile
import uuid
import zlib

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ccs_ray.sources import SourceError, detect_kind, load_shard, plan_shards, read_shard
from ccs_ray.sources.decode import REASONS, DecodeError, decode_image
from ccs_ray.spec import DataConfig, SpecError, load_spec
from ccs_ray.tables import read_table, write_table

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
    assert len(limited) == 1 and [r.item.rsplit("#")[-1] for r in read_shard(limited[0])] == [
        f"{n}.png" for n in names()[:3]]


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


def planar_tiff(dtype: str = "<f8", compression: int = 1, size=(6, 4)) -> bytes:
    """A well-formed little-endian RGB TIFF stored plane by plane (PlanarConfiguration 2), one strip per plane.

    ``"<f8"``: float64 samples (SampleFormat 3), a layout Pillow has no mode for; ``"u1"``: 8-bit ones it reads.
    """
    width, height = size
    sample = np.dtype(dtype)
    values = (0.25, 0.5, 0.75) if sample.kind == "f" else (10, 20, 30)
    planes = [np.full((height, width), v, dtype).tobytes() for v in values]
    arrays_at = 8 + 2 + 12 * 11 + 4  # header, then an IFD of 11 entries, then the tag arrays, then the planes
    data_at = arrays_at + 6 + 6 + 12 + 12
    short, long_ = 3, 4
    tags = [  # (tag, type, count, value or offset), in tag order
        (256, short, 1, width), (257, short, 1, height), (258, short, 3, arrays_at), (259, short, 1, compression),
        (262, short, 1, 2), (273, long_, 3, arrays_at + 12), (277, short, 1, 3), (278, short, 1, height),
        (279, long_, 3, arrays_at + 24), (284, short, 1, 2), (339, short, 3, arrays_at + 6)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    arrays = (struct.pack("<3H", *[8 * sample.itemsize] * 3) + struct.pack("<3H", *[3 if sample.kind == "f" else 1] * 3)
              + struct.pack("<3I", *[data_at + i * len(planes[0]) for i in range(3)])
              + struct.pack("<3I", *[len(planes[0])] * 3))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + arrays + b"".join(planes)


def png_chunks(ihdr: bytes, raw: bytes, ihdr_crc_xor: int = 0) -> bytes:
    """A PNG of one IHDR and one IDAT (``raw`` scanlines, compressed), its IHDR checksum XORed by ``ihdr_crc_xor``."""
    def chunk(kind: bytes, data: bytes, xor: int = 0) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) ^ xor)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr, ihdr_crc_xor) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def bmp_with_compression(method: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    struct.pack_into("<I", data, 30, method)  # biCompression of the BITMAPINFOHEADER
    return bytes(data)


RGB_8x8 = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)


def test_planar_tiff_is_well_formed():
    """The TIFF writer of the tests is sound: with 8-bit samples Pillow reads back the three planes."""
    image, converted = decode_image(planar_tiff("u1"))
    assert converted is None and image.size == (6, 4) and image.getpixel((5, 3)) == (10, 20, 30)


@pytest.mark.parametrize("data, reason, pillow_says", [
    # Well-formed files Pillow cannot decode.
    pytest.param(planar_tiff("<f8"), "unsupported", "unknown pixel mode", id="float64-tiff"),
    pytest.param(planar_tiff("u1", compression=34712), "unsupported", "34712", id="jpeg2000-in-tiff"),
    pytest.param(bmp_with_compression(7), "unsupported", "Unsupported BMP compression (7)", id="bmp-compression"),
    # Broken files that fail at the same places, with similar errors (truncated ones: test_sources_faults.py).
    # from a KeyError; Pillow says "Invalid dimensions" before 12, "Missing dimensions" since
    pytest.param(b"II*\x00" + b"\x01" * 100, "corrupt", "dimensions", id="tiff-no-size",
                 marks=pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")),
    pytest.param(png_chunks(RGB_8x8, b"\x00" * 25 * 8, ihdr_crc_xor=1), "corrupt", "bad header checksum",
                 id="png-bad-checksum"),
    pytest.param(png_chunks(RGB_8x8, b"\x07" + b"\x00" * (25 * 8 - 1)), "corrupt", "unrecognized data stream contents",
                 id="png-bad-filter"),
])
def test_unsupported_is_told_from_corrupt(data, reason, pillow_says):
    with pytest.raises(DecodeError) as e:
        decode_image(data)
    assert (e.value.reason, reason in REASONS) == (reason, True) and pillow_says in e.value.detail


def test_conversions_are_rows_of_their_own(tmp_path, tiny_model):
    """A grayscale image is scanned and has a conversion row; an unsupported one is an error row only."""
    _, preprocess = tiny_model
    Image.new("L", (20, 20), 90).save(tmp_path / "gray.png")
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "rgb.png")
    (tmp_path / "float.tif").write_bytes(planar_tiff())
    (shard,) = plan_shards(DataConfig(source=str(tmp_path), shard_size=10))
    loaded = load_shard(shard, preprocess)
    assert sorted(i.rsplit("/", 1)[-1] for i in loaded.items) == ["gray.png", "rgb.png"]
    assert [(e["item"].rsplit("/", 1)[-1], e["reason"]) for e in loaded.errors] == [("float.tif", "unsupported")]
    assert (loaded.n_failed, loaded.n_converted) == (1, 1)
    write_table(str(tmp_path / "out"), "conversions", loaded.conversions, "r1", "ccs-tiny/none")
    (row,) = read_table(str(tmp_path / "out"), "conversions").to_pylist()
    assert (row["run_id"], row["model"], row["source"], row["from_mode"]) == ("r1", "ccs-tiny/none", str(tmp_path), "L")
    assert row["item"].endswith("gray.png") and row["logged_at"] is not None


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
