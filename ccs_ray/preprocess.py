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

import numpy as np
from PIL import Image

from .model_keys import ModelKey

#: open_clip's ``PreprocessCfg()`` defaults (OpenAI CLIP's normalisation).
DEFAULTS = {"size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
            "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
            "fill_color": 0}

#: Folders of open_clip model configs, searched in order: ours (``ccs_ray/model_configs``), then open_clip's.
CONFIG_DIRS = (Path(__file__).parent / "model_configs",
               Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "model_configs")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR}  # open_clip: anything else ("bicubic", "random") is bicubic


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
    ``Pixels(cfg)(image)`` -> uint8 [3, H, W] with (H, W) the model's input size."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.size = _pair(cfg["size"])
        self.resample = _RESAMPLE.get(cfg.get("interpolation"), Image.Resampling.BICUBIC)

    def __call__(self, image: Image.Image) -> np.ndarray:
        mode, (th, tw) = self.cfg.get("resize_mode", "shortest"), self.size
        w, h = image.size
        if mode == "squash":
            image = _resize(image, th, tw, self.resample)
        elif mode == "longest" or th != tw:  # open_clip's ResizeKeepRatio, then a centre crop (or pad)
            longest = mode == "longest"
            ratio = max(h / th, w / tw) if longest else min(h / th, w / tw)
            image = _resize(image, round(h / ratio), round(w / ratio),
                            self.resample if longest else Image.Resampling.BICUBIC)
            image = _crop_or_pad(image, th, tw, self.cfg.get("fill_color", 0) if longest else 0)
        else:  # torchvision's Resize(size): the shorter side to size, the longer one truncated
            short, long = min(w, h), max(w, h)
            new_short, new_long = th, int(th * long / short)
            image = _resize(image, *((new_long, new_short) if w <= h else (new_short, new_long)), self.resample)
            image = _crop_or_pad(image, th, tw, 0)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def _resize(image: Image.Image, h: int, w: int, resample) -> Image.Image:
    """torchvision's ``resize`` of a PIL image: unchanged when already (h, w)."""
    return image if image.size == (w, h) else image.resize((w, h), resample)


def _crop_or_pad(image: Image.Image, h: int, w: int, fill: int) -> Image.Image:
    """torchvision's ``center_crop`` (open_clip's ``center_crop_or_pad`` with ``fill``): pad a side shorter than
    the target with ``fill``, then crop the centre, its offset rounded half to even."""
    iw, ih = image.size
    if w > iw or h > ih:
        left, top = (w - iw) // 2 if w > iw else 0, (h - ih) // 2 if h > ih else 0
        canvas = Image.new(image.mode, (max(w, iw), max(h, ih)), (fill,) * len(image.getbands()))
        canvas.paste(image, (left, top))
        image, (iw, ih) = canvas, canvas.size
        if (iw, ih) == (w, h):
            return image
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return image.crop((left, top, left + w, top + h))


def model_input(pixels, cfg: dict, device="cpu"):
    """The model's input from :class:`Pixels` output: uint8 [n, 3, H, W] (numpy or torch) -> float32
    [n, 3, H, W] on ``device``, (x / 255 - mean) / std as open_clip's ``ToTensor`` and ``Normalize`` compute it."""
    import torch

    x = torch.as_tensor(pixels).to(device).to(torch.float32).div(255)
    mean = torch.as_tensor(cfg["mean"], dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.as_tensor(cfg["std"], dtype=torch.float32, device=device).view(-1, 1, 1)
    return x.sub(mean).div(std)
