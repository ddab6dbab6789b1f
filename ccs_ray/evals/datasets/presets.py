"""Presets: the layouts of known datasets, so that an entry can be little more than a name.

An entry's preset is the one its ``preset`` key names, else the one its ``name`` names, else none;
names match ignoring case, ``-``, ``_`` and spaces. A ``preset`` that names none is a DatasetError.

- :data:`CLASSIFICATION_PRESETS`: :class:`ClassificationPreset` (class names, prompt templates, the
  torchvision dataset of the same data, alternative label keys, a class subset) per dataset.
- :data:`VIDEO_PRESETS`, :data:`BIAS_PRESETS`: entry keys and values per dataset; :func:`entry_with_preset`
  reads an entry and sets the keys of its preset that it does not give itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import classnames as cn
from ..maxskew import FAIRFACE_RACE_GROUPS
from .entries import DatasetError, from_entry


@dataclass(frozen=True)
class ClassificationPreset:
    classnames: list[str]
    templates: list[str]
    torchvision: str | None = None  # torchvision.datasets class of the same data
    label_keys: list[str] | None = None  # alternative labels, e.g. ImageNet WordNet ids (folder names)
    subset: list[str] | None = None  # keep only these classes


CLASSIFICATION_PRESETS = {
    "cifar10": ClassificationPreset(cn.CIFAR10, cn.CIFAR_TEMPLATES, "CIFAR10"),
    "cifar100": ClassificationPreset(cn.CIFAR100, cn.CIFAR_TEMPLATES, "CIFAR100"),
    "food101": ClassificationPreset(cn.FOOD101, cn.FOOD101_TEMPLATES, "Food101"),
    "country211": ClassificationPreset(cn.COUNTRY211, cn.COUNTRY211_TEMPLATES, "Country211"),
    "oxford_pets": ClassificationPreset(cn.OXFORD_PETS, cn.OXFORD_PETS_TEMPLATES, "OxfordIIITPet"),
    "imagenet_a": ClassificationPreset(cn.IMAGENET_A, cn.IMAGENET_TEMPLATES, label_keys=cn.IMAGENET_A_WNIDS),
    "imagenet_r": ClassificationPreset(cn.IMAGENET_R, cn.IMAGENET_TEMPLATES, label_keys=cn.IMAGENET_R_WNIDS),
    "cifar10_objects": ClassificationPreset(cn.CIFAR10, cn.CIFAR_TEMPLATES, "CIFAR10",
                                            subset=["airplane", "automobile", "ship", "truck"]),
}

#: Video layouts: frames sampled per video, captions file (relative to the source) and its columns.
VIDEO_PRESETS = {
    "msrvtt": dict(frames=12, captions="MSRVTT_JSFUSION_test.csv", video_column="video_id", caption_column="sentence"),
    "msvd": dict(frames=12, captions="test_captions.csv", video_column="video", caption_column="caption"),
    "didemo": dict(frames=32, captions="test_data.json", video_column="video", caption_column="description"),
}

#: Bias layouts: URI column, attributes and label -> group maps.
BIAS_PRESETS = {
    "fairface": dict(uri_column="file", attributes=["race", "gender"], groups={"race": FAIRFACE_RACE_GROUPS}),
    "socialcounterfactuals": dict(uri_column="image", attributes=["race", "gender", "physical"], groups={}),
}


def _preset_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def preset_of(data, presets: dict, kind: str):
    """The preset named by ``data.preset``, else by ``data.name`` when it names one, else None."""
    keys = {_preset_key(k): k for k in presets}
    name = data.preset or (data.name if _preset_key(data.name) in keys else None)
    if name is None:
        return None
    if _preset_key(name) not in keys:
        raise DatasetError(f"unknown {kind} preset {name!r}; presets: {', '.join(presets)}")
    return presets[keys[_preset_key(name)]]


def entry_with_preset(cls, entry, kind: str, presets: dict, source: str) -> tuple:
    """``(data, keys set)``: an ``evals.<kind>`` entry as ``cls`` (:func:`from_entry`) that has a source (``source``
    says what it is), with the keys of its preset (``preset``, else its name when that names one) that it does not
    set."""
    data, given = from_entry(cls, entry, kind)
    if not data.source:
        raise DatasetError(f"{kind} dataset {data.name!r} has no source {source}")
    for key, value in (preset_of(data, presets, kind) or {}).items():
        if key not in given:
            setattr(data, key, value)
    return data, given
