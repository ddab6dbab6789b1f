"""Sources as users have them (img2dataset output, a Hugging Face parquet export, a CSV manifest of relative paths)
read to the same images as a folder of the same files, and their error rows naming each file's own key."""

import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from miniature_sources import (
    img2dataset_keys,
    write_csv_manifest,
    write_folder,
    write_hf_parquet,
    write_img2dataset,
)
from PIL import Image

from ccs_ray import HeadMoments
from ccs_ray.sources import detect_kind, load_shard, plan_shards
from ccs_ray.spec import DataConfig, load_spec
from ccs_ray.stages import RunContext
from ccs_ray.stages.scan import run_scan, section

REPO = Path(__file__).resolve().parents[1]
N = 12


def encoded(i: int, fmt: str = "JPEG") -> bytes:
    """A distinct 24x24 RGB image per ``i``, encoded."""
    rng = np.random.default_rng(100 + i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


IMAGES = [encoded(i) for i in range(N)]


def load(source, preprocess, **cfg):
    """Every shard of ``source`` loaded: (images [n, 3, S, S], items, labels, error rows)."""
    loaded = [load_shard(s, preprocess) for s in plan_shards(DataConfig(source=str(source), **cfg))]
    return (torch.cat([x.images for x in loaded]), [i for x in loaded for i in x.items],
            [lab for x in loaded for lab in x.labels], [e for x in loaded for e in x.errors])


def contents(images: torch.Tensor) -> list[bytes]:
    """The preprocessed images as a sorted list of their bytes: equal for the same images in any order."""
    return sorted(x.numpy().tobytes() for x in images)


def as_folder(tmp_path: Path, preprocess, images: list[bytes]) -> list[bytes]:
    """:func:`contents` of ``images`` read as a folder source of files, each preprocessed by hand beside it."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path, prefix="as-folder-"))
    for i, data in enumerate(images):
        (folder / f"{i:03d}.{Image.open(io.BytesIO(data)).format.lower()}").write_bytes(data)
    loaded, _, _, errors = load(folder, preprocess, shard_size=5)
    by_hand = torch.stack([preprocess(Image.open(io.BytesIO(data))) for data in images])
    assert errors == [] and contents(loaded) == contents(by_hand)
    return contents(loaded)


def test_img2dataset_webdataset_folder_reads_its_tars(tmp_path, tiny_model):
    _, preprocess = tiny_model
    tars = write_img2dataset(tmp_path / "out", IMAGES, samples_per_shard=5, failed=frozenset({6}))
    keys = img2dataset_keys(N, 5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{s:05d}{ext}" for s in range(3) for ext in (".parquet", ".tar", "_stats.json")]
    assert detect_kind(str(tmp_path / "out")) == "tar"
    shards = plan_shards(DataConfig(source=str(tmp_path / "out")))
    assert [s.uri for s in shards] == [str(t) for t in tars]
    images, items, labels, errors = load(tmp_path / "out", preprocess)
    kept = [i for i in range(N) if i != 6]
    assert errors == []  # the .json and .txt members are metadata and caption, not images
    assert items == [f"{tars[i // 5]}#{keys[i]}.jpg" for i in kept]
    assert labels == [f"a photo numbered {int(keys[i])}" for i in kept]  # the caption
    folder = write_folder(tmp_path / "folder", [IMAGES[i] for i in kept], [keys[i] for i in kept])
    folder_images, folder_items, _, _ = load(tmp_path / "folder", preprocess, shard_size=5)
    assert folder_items == [str(f) for f in folder]
    torch.testing.assert_close(images, folder_images, rtol=0, atol=0)
    assert contents(images) == as_folder(tmp_path, preprocess, [IMAGES[i] for i in kept])


def test_img2dataset_parquet_output_reads_its_jpg_column(tmp_path, tiny_model):
    _, preprocess = tiny_model
    files = write_img2dataset(tmp_path / "out", IMAGES, samples_per_shard=8, output_format="parquet",
                              failed=frozenset({3}))
    keys = img2dataset_keys(N, 8)
    assert detect_kind(str(tmp_path / "out")) == "parquet"
    shards = plan_shards(DataConfig(source=str(tmp_path / "out"), shard_size=4))
    assert {s.items[2] for s in shards} == {"jpg"}
    images, items, _, errors = load(tmp_path / "out", preprocess, shard_size=4)
    kept = [i for i in range(N) if i != 3]
    assert items == [f"{files[i // 8]}#{keys[i]}" for i in kept]  # named by their key column
    assert [(e["item"], e["reason"]) for e in errors] == [(f"{files[0]}#{keys[3]}", "unreadable")]
    assert "failed_to_download: HTTP Error 404" in errors[0]["detail"]
    assert contents(images) == as_folder(tmp_path, preprocess, [IMAGES[i] for i in kept])
    with pytest.raises(ValueError, match="neither an image column 'pixels'"):  # only the default falls back
        plan_shards(DataConfig(source=str(tmp_path / "out"), image_column="pixels"))
    with pytest.raises(ValueError, match="00000.parquet: no image column 'pixels'"):
        plan_shards(DataConfig(source=str(tmp_path / "out"), kind="parquet", image_column="pixels"))


def test_hf_parquet_struct_column_embedded_or_by_path(tmp_path, tiny_model):
    _, preprocess = tiny_model
    pngs = [encoded(i, "PNG") for i in range(4)]
    embedded = write_hf_parquet(tmp_path / "emb" / "train-00000-of-00001.parquet", pngs, labels=[0, 1, 2, 0])
    assert detect_kind(str(embedded)) == "parquet"
    images, items, labels, errors = load(embedded, preprocess, shard_size=3)
    assert errors == [] and labels == ["0", "1", "2", "0"]
    assert items == [f"{embedded}#img_{i}.png" for i in range(4)]  # the struct's path
    assert contents(images) == as_folder(tmp_path, preprocess, pngs)

    by_path = write_hf_parquet(tmp_path / "ref" / "data" / "test.parquet", pngs, embed=False)
    assert pq.read_table(by_path).column("image").to_pylist()[0] == {"bytes": None, "path": "images/img_0.png"}
    images, items, _, errors = load(by_path, preprocess)
    assert errors == [] and items == [f"{by_path}#images/img_{i}.png" for i in range(4)]
    assert contents(images) == as_folder(tmp_path, preprocess, pngs)
    (by_path.parent / "images" / "img_2.png").unlink()
    _, _, _, errors = load(by_path, preprocess)
    assert [(e["item"], e["reason"]) for e in errors] == [(f"{by_path}#images/img_2.png", "unreadable")]
    assert "img_2.png" in errors[0]["detail"]

    # Without a path, a row is named by its id column, else by its number.
    unnamed = [None, None, None]
    with_ids = write_hf_parquet(tmp_path / "ids.parquet", [pngs[0], None, b"not an image"], names=unnamed,
                                ids=["a-1", "b-2", "c-3"])
    _, items, _, errors = load(with_ids, preprocess)
    assert items == [f"{with_ids}#a-1"]
    assert [(e["item"], e["reason"]) for e in errors] == [(f"{with_ids}#b-2", "unreadable"),
                                                          (f"{with_ids}#c-3", "not_an_image")]
    plain = write_hf_parquet(tmp_path / "rows.parquet", [pngs[0], b"not an image"], names=[None, None])
    _, items, _, errors = load(plain, preprocess)
    assert items == [f"{plain}#0"] and [e["item"] for e in errors] == [f"{plain}#1"]


def test_csv_manifest_paths_are_relative_to_its_folder(tmp_path, tiny_model, monkeypatch):
    _, preprocess = tiny_model
    files = write_folder(tmp_path / "data" / "images", IMAGES[:4], [f"im{i}" for i in range(4)])
    files += write_folder(tmp_path / "data" / "lists" / "more", IMAGES[4:6], ["im4", "im5"])
    manifest = write_csv_manifest(tmp_path / "data" / "lists" / "m.csv", files, labels=list("abcabc"))
    assert manifest.read_text().splitlines()[1:3] == ["../images/im0.jpg,a", "../images/im1.jpg,b"]
    monkeypatch.chdir(tmp_path / "data")  # the manifest named relative to the working directory
    assert detect_kind("lists/m.csv") == "manifest"
    images, items, labels, errors = load("lists/m.csv", preprocess, shard_size=4)
    assert errors == [] and labels == list("abcabc")
    assert items == [str(f) for f in files]  # absolute: any worker reads them whatever its directory
    assert contents(images) == as_folder(tmp_path, preprocess, IMAGES[:6])


def test_error_rows_name_the_key_with_its_extension(tmp_path, tiny_model):
    _, preprocess = tiny_model
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("010011_rgb.jpg", IMAGES[0]), ("010011_rgb.json", b"{}"),
                           ("010012_multipage_rgb.png", b"\x89PNG\r\n\x1a\n broken"), ("010012_multipage_rgb.txt",
                                                                                     b"caption")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar = tmp_path / "tars" / "shard-00001.tar"
    tar.parent.mkdir()
    tar.write_bytes(buf.getvalue())
    _, items, _, errors = load(tar, preprocess)
    assert items == [f"{tar}#010011_rgb.jpg"]
    assert [(e["item"], e["reason"]) for e in errors] == [(f"{tar}#010012_multipage_rgb.png", "corrupt")]

    part = tmp_path / "pq" / "part-0.parquet"
    part.parent.mkdir()
    pq.write_table(pa.table({"key": ["k0", "k1", "k2"], "image": [IMAGES[0], b"junk", IMAGES[1]]}), part)
    _, items, _, errors = load(part, preprocess)
    assert items == [f"{part}#k0", f"{part}#k2"]
    assert [(e["item"], e["reason"]) for e in errors] == [(f"{part}#k1", "not_an_image")]


def _moments(tmp_path: Path, source: Path, run_id: str) -> HeadMoments:
    root = tmp_path / run_id
    spec = load_spec(REPO / "jobs" / "smoke.toml", [
        f'results.root="{root}"', f'data.source="{source}"', "data.shard_size=4", "scan.batch_size=3"])
    summary = run_scan(RunContext.of(spec, run_id, str(root), progress=False), section(spec))
    return HeadMoments.load(summary.moments[spec.models.keys[0]])


@pytest.mark.slow
def test_img2dataset_scans_to_the_moments_of_a_folder(ray_cluster, tmp_path):
    """The real scan of img2dataset output and of a folder of its images: the same moments, fold by fold."""
    write_img2dataset(tmp_path / "i2d", IMAGES, samples_per_shard=4)
    write_folder(tmp_path / "folder", IMAGES, img2dataset_keys(N, 4))
    for stats in sorted((tmp_path / "i2d").glob("*_stats.json")):
        assert json.loads(stats.read_text())["successes"] == 4
    a, b = _moments(tmp_path, tmp_path / "i2d", "tars"), _moments(tmp_path, tmp_path / "folder", "folder")
    assert torch.equal(a.n, b.n) and a.n.tolist() == [8, 4]
    for name in ("total", "outer"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0)
