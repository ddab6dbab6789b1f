"""The decoders' preprocessing against open_clip's own: settings from configs and pixels then model input, bit for
bit; JPEGs decoded and resized on a model's device against the decoders; and the processes that plan and decode
run without torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from PIL import Image

from ccs_ray.model_keys import ModelKey
from ccs_ray.preprocess import DEFAULTS, DEVICE_TOLERANCE, Pixels, model_input, preprocess_config
from ccs_ray.sources import decode_deferred, load_shard, plan_shards
from ccs_ray.spec import DataConfig

SIZES = [(64, 64), (97, 41), (41, 97), (300, 200), (200, 301), (17, 23), (23, 17), (10, 10), (224, 224), (225, 224)]


def _image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    g = np.random.default_rng(seed)
    smooth = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
    rgb = np.clip(smooth + g.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [32, (32, 48), (40, 24)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_pixels_then_model_input_equal_open_clips_transform_bit_for_bit(resize_mode, size, interpolation):
    cfg = {**DEFAULTS, "size": size, "resize_mode": resize_mode, "interpolation": interpolation, "fill_color": 7,
           "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.25)}
    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    pixels = Pixels(cfg)
    for i, (w, h) in enumerate(SIZES):
        for mode in ("RGB", "L") if i < 3 else ("RGB",):
            image = _image(w, h, i, mode)
            mine = pixels(image)
            assert mine.dtype == np.uint8 and mine.shape == (3, *pixels.size)
            expected = theirs(image)
            got = model_input(mine[None], cfg)[0]
            assert got.dtype == torch.float32 and torch.equal(got, expected), (resize_mode, size, (w, h), mode)


def test_model_input_takes_numpy_or_torch_batches():
    cfg = preprocess_config("ccs-tiny/none")
    batch = np.random.default_rng(0).integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    assert torch.equal(model_input(batch, cfg), model_input(torch.from_numpy(batch), cfg))


def _open_clip_preprocess_config(key: str) -> dict:
    """The settings as open_clip computes them (its PreprocessCfg, model config and pretrained config)."""
    parsed = ModelKey.parse(key)
    cfg = asdict(PreprocessCfg())
    model_cfg = open_clip.get_model_config(parsed.name) or {}
    cfg = merge_preprocess_dict(cfg, model_cfg.get("preprocess_cfg", {}))
    if parsed.weights and not parsed.checkpoint:
        cfg = merge_preprocess_dict(cfg, open_clip.get_pretrained_cfg(parsed.name, parsed.weights))
    if "vision_cfg" in model_cfg:
        cfg["size"] = model_cfg["vision_cfg"]["image_size"]
    return cfg


def test_defaults_are_open_clips():
    assert DEFAULTS == asdict(PreprocessCfg())


def test_preprocess_config_reads_every_model_as_open_clip_does(tmp_path):
    importlib.import_module("ccs_ray.models")  # registers our configs (ccs-tiny) with open_clip

    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": 48}, '
                                                    '"preprocess_cfg": {"mean": [0.5, 0.5, 0.5]}}}')
    keys = [f"{name}/none" for name in open_clip.list_models()]
    keys += [f"{name}/{tag}" for name, tag in open_clip.list_pretrained()]
    keys += ["ViT-B-16@/tmp/some.pt", f"local-dir:{tmp_path}", "b16-laion"]
    assert len(keys) > 200
    for key in keys:
        assert preprocess_config(key) == _open_clip_preprocess_config(key), key
    assert preprocess_config("ccs-tiny/none")["size"] == 32
    assert preprocess_config(f"local-dir:{tmp_path}")["size"] == 48


LEAN = """
import sys
from ccs_ray.bench.plan import drive
from ccs_ray.passes import Decoder, run_pass
from ccs_ray.preprocess import Pixels, preprocess_config
from ccs_ray.shard_plan import ShardPlan
from ccs_ray.sources import load_shard
from ccs_ray.spec import load_spec
from ccs_ray.stages import RunContext

spec = load_spec({"name": "lean", "models": {"keys": ["ccs-tiny/none", "ViT-B-32@/nowhere.pt"]},
                  "data": {"source": sys.argv[1], "shard_size": 2}})
plan = ShardPlan(spec.data).index()
settings = [preprocess_config(k) for k in spec.models.keys]
loaded = load_shard(plan.first(), Pixels(settings[0]))
assert loaded.images.shape == (2, 3, 32, 32) and loaded.images.dtype == "uint8", loaded.images.shape
heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
print("heavy:", heavy)
"""


def test_planning_and_decoding_run_without_torch(tmp_path):
    """A pass's driver (plan, settings, the bench's streaming driver) and its decoders import no torch, torchvision
    or open_clip: the driver's memory is the plan's, and a decoder starts fast."""
    for i in range(4):
        _image(40, 30, i).save(tmp_path / f"{i}.jpg")
    out = subprocess.run([sys.executable, "-c", LEAN, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("heavy: []"), out.stdout


def _jpeg(image: Image.Image, **options) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


@pytest.mark.parametrize("resize_mode", ["shortest", "longest"])
def test_jpegs_decoded_on_the_device_match_the_decoders(tmp_path, resize_mode):
    """A shard decoded with its JPEGs left to the device (here the CPU, as on a GPU without one) keeps the same images,
    errors and conversions as the decoders' path, each image within DEVICE_TOLERANCE of its pixels."""
    for i, (w, h) in enumerate([(80, 60), (33, 97), (224, 160), (31, 31), (500, 375)]):
        _image(w, h, i).save(tmp_path / f"rgb{i}.jpg", quality=85 + i)
    (tmp_path / "gray.jpg").write_bytes(_jpeg(_image(64, 48, 7, "L")))
    (tmp_path / "cmyk.jpg").write_bytes(_jpeg(_image(64, 48, 8, "CMYK")))
    _image(50, 40, 9).save(tmp_path / "plain.png")
    good = (tmp_path / "rgb0.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) * 2 // 3])
    corrupt = bytearray(good)
    corrupt[len(good) // 2:len(good) // 2 + 200] = b"\xff\xc4" * 100  # markers inside the entropy-coded data
    (tmp_path / "corrupt.jpg").write_bytes(bytes(corrupt))
    (tmp_path / "empty.jpg").write_bytes(b"")
    cfg = {**DEFAULTS, "size": 40, "resize_mode": resize_mode}
    pixels = Pixels(cfg)
    (shard,) = plan_shards(DataConfig(source=str(tmp_path), shard_size=100))
    cpu = load_shard(shard, pixels)
    deferred = load_shard(shard, pixels, defer_jpeg=True)
    assert sorted(e[0].rsplit("/", 1)[-1] for e in deferred.encoded) == ["corrupt.jpg", "gray.jpg"] + [
        f"rgb{i}.jpg" for i in range(5)]  # complete RGB or grayscale JPEGs only
    device = decode_deferred(deferred, pixels, "cpu")
    assert device.encoded == [] and isinstance(device.images, torch.Tensor) and device.images.dtype == torch.uint8

    def rows(loaded, key):
        return sorted((r["item"], r[key]) for r in getattr(loaded, "errors" if key == "reason" else "conversions"))

    assert rows(device, "reason") == rows(cpu, "reason")  # the corrupt JPEG failed on the device, then on CPU
    assert {item.rsplit("/", 1)[-1]: reason for item, reason in rows(cpu, "reason")} == {
        "truncated.jpg": "truncated", "corrupt.jpg": "corrupt", "empty.jpg": "empty"}
    assert rows(device, "from_mode") == rows(cpu, "from_mode") and len(rows(cpu, "from_mode")) == 2  # L, CMYK
    assert sorted(device.items) == sorted(cpu.items) and len(cpu.items) == 8
    assert dict(zip(device.items, device.labels, strict=True)) == dict(zip(cpu.items, cpu.labels, strict=True))
    mine = dict(zip(device.items, device.images.numpy().astype(int), strict=True))
    for item, expected in zip(cpu.items, cpu.images.astype(int), strict=True):
        diff = np.abs(mine[item] - expected)
        assert diff.mean() <= DEVICE_TOLERANCE["mean"] and diff.max() <= DEVICE_TOLERANCE["max"], item
