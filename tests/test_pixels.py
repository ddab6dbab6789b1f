"""Pixels as open_clip sees them: an image of any mode the decoder accepts, decoded by ccs-ray, gives the model
input (and embedding) of open_clip's ``preprocess(Image.open(f))``; ``data.alpha`` composites transparency over a
colour instead, the ``conversions`` table records which, and the scan's reuse key follows it."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from ccs_ray import tables
from ccs_ray.preprocess import Pixels, model_input, preprocess_config
from ccs_ray.sources import load_shard, plan_shards
from ccs_ray.sources.decode import decode_image
from ccs_ray.spec import DataConfig, SpecError, load_spec
from ccs_ray.stages import BY_NAME, RunContext, reuse

MODEL = "ccs-tiny/none"
SMOKE = str(Path(__file__).resolve().parents[1] / "ccs_ray" / "jobs" / "smoke.toml")
RNG = np.random.default_rng(0)
RGBA = RNG.integers(0, 256, (37, 53, 4), dtype=np.uint8)
RGBA[:12, :, 3] = 0  # a fully transparent band
RGBA[12:20, :, 3] = 128  # and a half transparent one


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(RGBA[..., :3]).quantize(16)
    if transparent:
        image.info["transparency"] = 3
    return image


#: name -> (image, format, mode Pillow opens the file in, whether it has transparency)
CASES = {
    "rgba-png": (Image.fromarray(RGBA, "RGBA"), "PNG", "RGBA", True),
    "la-png": (Image.fromarray(RGBA[..., [0, 3]], "LA"), "PNG", "LA", True),
    "p-transparent-png": (_palette(True), "PNG", "P", True),
    "p-png": (_palette(False), "PNG", "P", False),
    "l-png": (Image.fromarray(RGBA[..., 0]), "PNG", "L", False),
    "i16-png": (Image.fromarray(RGBA[..., 0].astype(np.uint16) * 257), "PNG", "I;16", False),
    "i16-small-tiff": (Image.fromarray(RGBA[..., 0].astype(np.uint16)), "TIFF", "I;16", False),
    "i32-tiff": (Image.fromarray(RGBA[..., 0].astype(np.int32) * 2), "TIFF", "I", False),
    "cmyk-jpeg": (Image.fromarray(RGBA, "CMYK"), "JPEG", "CMYK", False),
    "cmyk-tiff": (Image.fromarray(RGBA, "CMYK"), "TIFF", "CMYK", False),
    "rgb-png": (Image.fromarray(RGBA[..., :3]), "PNG", "RGB", False),
}


def _bytes(name: str) -> bytes:
    image, fmt, _, _ = CASES[name]
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _open_clip(cfg: dict):
    """open_clip's eval transform for the settings ``cfg``."""
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every case as a file of its format, in a folder source."""
    root = tmp_path_factory.mktemp("modes")
    for name, (_, fmt, _, _) in CASES.items():
        (root / f"{name}.{fmt.lower()}").write_bytes(_bytes(name))
    return root


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("name", list(CASES))
def test_scan_pixels_equal_open_clip_for_every_mode(name, resize_mode):
    cfg = dict(preprocess_config(MODEL), size=24, resize_mode=resize_mode)
    data = _bytes(name)
    expected = _open_clip(cfg)(Image.open(io.BytesIO(data)))
    image, conversion = decode_image(data)
    got = model_input(Pixels(cfg)(image)[None], cfg)[0]
    assert torch.equal(got, expected)
    _, _, mode, transparent = CASES[name]
    assert image.mode == mode  # resized in its own mode, converted last, as open_clip
    assert conversion == (None if mode == "RGB" else {"from_mode": mode, "alpha": "dropped" if transparent else None})


def test_load_shard_equals_open_clip_and_records_conversions(folder, tiny_model):
    model, preprocess = tiny_model
    files = sorted(folder.iterdir())
    expected = torch.stack([preprocess(Image.open(f)) for f in files])
    (shard,) = plan_shards(DataConfig(source=str(folder), shard_size=100))
    with_open_clip = load_shard(shard, preprocess)
    assert [Path(i).name for i in with_open_clip.items] == [f.name for f in files] and not with_open_clip.errors
    assert torch.equal(with_open_clip.images, expected)

    cfg = preprocess_config(MODEL)
    scanned = load_shard(shard, Pixels(cfg))
    x = model_input(scanned.images, cfg)
    assert torch.equal(x, expected)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), model.encode_image(expected))

    rows = {Path(r["item"]).stem: (r["from_mode"], r["alpha"]) for r in scanned.conversions}
    assert rows == {n: (mode, "dropped" if t else None) for n, (_, _, mode, t) in CASES.items() if mode != "RGB"}


def _over(rgb: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """``rgb`` composited over ``colour`` with opacity ``alpha`` (0..255), in floats."""
    a = alpha[..., None] / 255.0
    return rgb * a + np.asarray(colour, float) * (1 - a)


@pytest.mark.parametrize("alpha, colour", [("white", (255, 255, 255)), ("#2040A0", (0x20, 0x40, 0xA0))])
def test_alpha_composites_over_a_colour(alpha, colour):
    image, conversion = decode_image(_bytes("rgba-png"), alpha)
    assert image.mode == "RGB" and conversion == {"from_mode": "RGBA", "alpha": f"over #{bytes(colour).hex()}"}
    assert np.abs(np.asarray(image, float) - _over(RGBA[..., :3], RGBA[..., 3], colour)).max() <= 1
    assert (np.asarray(image)[:12] == colour).all()  # fully transparent: the colour alone

    palette = _palette(True)
    image, conversion = decode_image(_bytes("p-transparent-png"), alpha)
    index = np.asarray(palette)
    expected = np.asarray(palette.convert("RGB")).copy()
    expected[index == 3] = colour
    assert conversion == {"from_mode": "P", "alpha": f"over #{bytes(colour).hex()}"}
    assert (np.asarray(image) == expected).all()

    image, conversion = decode_image(_bytes("l-png"), alpha)  # no transparency: as open_clip
    assert image.mode == "L" and conversion == {"from_mode": "L", "alpha": None}


def test_load_shard_with_alpha(folder):
    (shard,) = plan_shards(DataConfig(source=str(folder), shard_size=100))
    cfg = preprocess_config(MODEL)
    loaded = load_shard(shard, Pixels(cfg), alpha="white")
    i = [Path(n).stem for n in loaded.items].index("rgba-png")
    composite = Image.fromarray(np.round(_over(RGBA[..., :3], RGBA[..., 3], (255,) * 3)).astype(np.uint8))
    assert np.abs(loaded.images[i].astype(int) - Pixels(cfg)(composite).astype(int)).max() <= 1
    rows = {Path(r["item"]).stem: r["alpha"] for r in loaded.conversions}
    assert rows["rgba-png"] == rows["la-png"] == rows["p-transparent-png"] == "over #ffffff"
    assert rows["cmyk-jpeg"] is None


def test_conversions_table_alpha_column_and_older_files(tmp_path):
    root = str(tmp_path)
    rows = [dict(source="s", item="a.png", from_mode="RGBA", alpha="dropped", logged_at=None)]
    tables.write_table(root, "conversions", rows, "new", MODEL)
    old = pa.table({"run_id": ["old"], "model": [MODEL], "source": ["s"], "item": ["b.png"], "from_mode": ["P"]})
    folder = Path(tables.partition_path(root, "conversions", "old", MODEL))
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-old.parquet")  # written before the alpha column
    got = {r["item"]: r["alpha"] for r in tables.read_table(root, "conversions").to_pylist()}
    assert got == {"a.png": "dropped", "b.png": None}


def _scan_key(tmp_path, *overrides) -> str:
    spec = load_spec(SMOKE, [f"results.root={json.dumps(str(tmp_path))}", 'data.source="probe://?n=8&seed=3&size=48"',
                             *overrides])
    ctx = RunContext.of(spec, "keys", str(tmp_path))
    return reuse.stage_keys(BY_NAME["scan"], ctx, BY_NAME["scan"].section(spec), [MODEL])[MODEL]


def test_alpha_is_part_of_the_scan_reuse_key(tmp_path):
    base = _scan_key(tmp_path)
    white = _scan_key(tmp_path, 'data.alpha="white"')
    assert white != base and _scan_key(tmp_path, 'data.alpha="black"') not in (base, white)
    assert _scan_key(tmp_path, 'data.alpha="#FFFFFF"') == white  # the same colour, the same pixels
    assert _scan_key(tmp_path, 'data.alpha="drop"') == base


@pytest.mark.parametrize("bad", ["red", "#fff", "#12345g", ""])
def test_alpha_is_validated(tmp_path, bad):
    with pytest.raises(SpecError, match="alpha"):
        load_spec(SMOKE, [f"results.root={json.dumps(str(tmp_path))}", f"data.alpha={json.dumps(bad)}"])
