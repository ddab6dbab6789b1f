"""A model's image preprocessing, split where images cross the object store: the settings from configs alone, the
pixels on the decoders (PIL and numpy, no torch), the model's input on its actor.

open_clip's eval transform (``image_transform_v2(cfg, is_train=False)``) is resize, crop (or pad), RGB, then
``ToTensor`` (x / 255 in float32) and ``Normalize`` ((x - mean) / std). :class:`Pixels` does the first three on a
decoder and gives uint8 [3, H, W], a quarter of float32's bytes in the object store and to the GPU;
:func:`model_input` does the last two in torch on the model's device. Together they equal open_clip's transform
bit for bit, for every resize mode and interpolation (``tests/test_preprocess.py``).

:func:`preprocess_config` reads the settings the way open_clip does (its defaults, the model config's
``preprocess_cfg``, a pretrained tag's settings, the vision tower's image size), importing open_clip only where
its code holds them (a pretrained tag, an ``hf-hub:`` or ``local-dir:`` model): a process that plans and decodes
for ``NAME/none`` or checkpoint keys does not load torch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .model_keys import ModelKey

if TYPE_CHECKING:
    import torch

#: open_clip's ``PreprocessCfg()`` defaults (OpenAI CLIP's normalisation).
DEFAULTS = {"size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
            "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
            "fill_color": 0}


def _package_dir(name: str) -> Path:
    """The folder of installed package ``name``, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(spec.submodule_search_locations[0])


#: Folders of open_clip model configs, searched in order: ours (``ccs_ray/model_configs``), then open_clip's.
CONFIG_DIRS = (Path(__file__).parent / "model_configs", _package_dir("open_clip") / "model_configs")

def model_config(name: str) -> dict:
    """The open_clip model config ``name`` (``{}`` for a name without one, as ``open_clip.get_model_config``)."""
    for folder in CONFIG_DIRS:
        path = folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def _merge(cfg: dict, overlay: dict) -> dict:
    """``overlay``'s preprocessing keys that are not None over ``cfg`` (open_clip's ``merge_preprocess_dict``)."""
    return {**cfg, **{k: v for k, v in overlay.items() if k in DEFAULTS and v is not None}}


def preprocess_config(key: str) -> dict:
    """open_clip's image preprocessing settings for a model key (size, mode, mean, std, interpolation, resize
    mode, fill colour), from configs alone (no weights): models with equal settings can share decoded images.
    Imports open_clip only for a pretrained tag's settings or an ``hf-hub:`` or ``local-dir:`` model's config."""
    parsed = ModelKey.parse(key)
    schemed = parsed.name.startswith(("hf-hub:", "local-dir:"))
    found = (_open_clip().get_model_config(parsed.name) or {}) if schemed else model_config(parsed.name)
    cfg = _merge(dict(DEFAULTS), found.get("preprocess_cfg", {}))
    if parsed.weights and not parsed.checkpoint:
        cfg = _merge(cfg, _open_clip().get_pretrained_cfg(parsed.name, parsed.weights))
    if "vision_cfg" in found:
        cfg["size"] = found["vision_cfg"]["image_size"]
    return cfg


def _open_clip():
    import open_clip

    return open_clip


def _pair(size) -> tuple[int, int]:
    """(height, width) of an open_clip size (an int or a pair)."""
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


class Pixels:
    """The decoder's half of open_clip's eval transform for settings ``cfg`` (:func:`preprocess_config`):
    ``Pixels(cfg)(image)`` -> uint8 [3, H, W] with (H, W) the model's input size, for a PIL image in any mode: as
    open_clip, it is resized and cropped in its own mode and converted to RGB last (PIL resizes a palette image by
    nearest neighbour, an image with alpha premultiplied). :meth:`on_device` does the same to images decoded on a
    model's device, in torch."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.size = _pair(cfg["size"])
        self.bilinear = cfg.get("interpolation") == "bilinear"  # open_clip: anything else is bicubic

    def resize_of(self, w: int, h: int) -> tuple[int, int, bool, int]:
        """For an image w x h: the size it is resized to (h, w), whether bilinearly (else bicubic), and the fill of
        the padding when that size is smaller than the model's (the centre crop that follows,
        :func:`_crop_box`)."""
        mode, (th, tw) = self.cfg.get("resize_mode", "shortest"), self.size
        if mode == "squash":
            return th, tw, self.bilinear, 0
        if mode == "longest" or th != tw:  # open_clip's ResizeKeepRatio (bicubic for "shortest"), then crop or pad
            longest = mode == "longest"
            ratio = max(h / th, w / tw) if longest else min(h / th, w / tw)
            return round(h / ratio), round(w / ratio), self.bilinear and longest, \
                self.cfg.get("fill_color", 0) if longest else 0
        new_short, new_long = th, int(th * max(w, h) / min(w, h))  # torchvision's Resize(size): the longer truncated
        return (new_long, new_short, self.bilinear, 0) if w <= h else (new_short, new_long, self.bilinear, 0)

    def __call__(self, image: Image.Image) -> np.ndarray:
        h, w, bilinear, fill = self.resize_of(*image.size)
        if image.size != (w, h):  # torchvision leaves an image of the target size as it is
            image = image.resize((w, h), Image.Resampling.BILINEAR if bilinear else Image.Resampling.BICUBIC)
        pad_left, pad_top, canvas, top, left = _crop_box(h, w, *self.size)
        if canvas:
            padded = Image.new(image.mode, canvas, (fill,) * len(image.getbands()))
            if image.mode == "P":  # torchvision pads a palette image's indices and keeps its palette
                padded.putpalette(image.getpalette() or [])
            padded.paste(image, (pad_left, pad_top))
            image = padded
        image = image.crop((left, top, left + self.size[1], top + self.size[0]))
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))

    def on_device(self, images: list) -> torch.Tensor:
        """:meth:`__call__` of RGB images decoded on a device (uint8 [3, h, w] tensors), each resized there, then
        stacked: uint8 [n, 3, H, W] on their device. Resizing is torch's antialiased bicubic (or bilinear), PIL's
        filters within a few levels (:data:`DEVICE_TOLERANCE`), not bit for bit."""
        import torch
        import torch.nn.functional as F

        th, tw = self.size
        out = []
        for x in images:
            h, w, bilinear, fill = self.resize_of(x.shape[2], x.shape[1])
            if x.shape[1:] != (h, w):
                x = F.interpolate(x[None].float(), size=(h, w), mode="bilinear" if bilinear else "bicubic",
                                  antialias=True, align_corners=False)[0].round_().clamp_(0, 255).to(torch.uint8)
            pad_left, pad_top, canvas, top, left = _crop_box(h, w, th, tw)
            if canvas:
                padded = torch.full((3, canvas[1], canvas[0]), fill, dtype=torch.uint8, device=x.device)
                padded[:, pad_top:pad_top + h, pad_left:pad_left + w] = x
                x = padded
            out.append(x[:, top:top + th, left:left + tw])
        return torch.stack(out) if out else torch.zeros((0, 3, th, tw), dtype=torch.uint8)


#: How far the device path (:meth:`Pixels.on_device`, after decoding on the device) may be from the decoders' (PIL):
#: the mean and the largest absolute difference of a pixel value (0..255).
DEVICE_TOLERANCE = {"mean": 1.0, "max": 24}


def _crop_box(h: int, w: int, th: int, tw: int) -> tuple[int, int, tuple[int, int] | None, int, int]:
    """torchvision's ``center_crop`` (open_clip's ``center_crop_or_pad``) of an h x w image to th x tw: where it is
    placed on a padded canvas (left, top, canvas (w, h); canvas None: no padding) and the crop's (top, left) on
    it, rounded half to even."""
    pad_left, pad_top, canvas = 0, 0, None
    if tw > w or th > h:
        pad_left, pad_top = (tw - w) // 2 if tw > w else 0, (th - h) // 2 if th > h else 0
        w, h = max(tw, w), max(th, h)
        canvas = (w, h)
    return pad_left, pad_top, canvas, int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))


def model_input(pixels, cfg: dict, device="cpu"):
    """The model's input from :class:`Pixels` output: uint8 [n, 3, H, W] (numpy or torch) -> float32
    [n, 3, H, W] on ``device``, (x / 255 - mean) / std as open_clip's ``ToTensor`` and ``Normalize`` compute it."""
    import torch

    x = torch.as_tensor(pixels).to(device).to(torch.float32).div(255)
    mean = torch.as_tensor(cfg["mean"], dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.as_tensor(cfg["std"], dtype=torch.float32, device=device).view(-1, 1, 1)
    return x.sub(mean).div(std)
