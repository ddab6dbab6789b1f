"""Presets: the layouts of known datasets, so that an entry can be little more than a name.

An entry's preset is the one its ``preset`` key names, else the one its ``name`` names, else none;
names match ignoring case, ``-``, ``_`` and spaces. A ``preset`` that names none is a DatasetError.

- :data:`CLASSIFICATION_PRESETS`: :class:`ClassificationPreset` (class names, prompt templates, the
  torchvision dataset of the same data, alternative label keys, a class subset, the official layout of its
  release, :mod:`.layouts`) per dataset.
- :data:`VIDEO_PRESETS`, :data:`BIAS_PRESETS`: entry keys and values per dataset, with the :class:`Layout` of
  its official release (where the annotations and the media are in the dataset's folder); :func:`entry_with_preset`
  reads an entry and sets the keys of its preset that it does not give itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import classnames as cn
from ..maxskew import FAIRFACE_LABELS, FAIRFACE_RACE_GROUPS, SOCIALCOUNTERFACTUALS_LABELS
from .entries import DatasetError, from_entry


@dataclass(frozen=True)
class ClassificationPreset:
    classnames: list[str]
    templates: list[str]
    torchvision: str | None = None  # torchvision.datasets class of the same data
    label_keys: list[str] | None = None  # alternative labels, e.g. ImageNet WordNet ids (folder names)
    subset: list[str] | None = None  # keep only these classes
    layout: str | None = None  # its release's layout, read from a source folder (.layouts.CLASSIFICATION_LAYOUTS)


CLASSIFICATION_PRESETS = {
    "cifar10": ClassificationPreset(cn.CIFAR10, cn.CIFAR_TEMPLATES, "CIFAR10", layout="cifar10"),
    "cifar100": ClassificationPreset(cn.CIFAR100, cn.CIFAR_TEMPLATES, "CIFAR100", layout="cifar100"),
    "food101": ClassificationPreset(cn.FOOD101, cn.FOOD101_TEMPLATES, "Food101", layout="food101"),
    "country211": ClassificationPreset(cn.COUNTRY211, cn.COUNTRY211_TEMPLATES, "Country211",
                                       label_keys=cn.COUNTRY211_CODES, layout="country211"),
    "oxford_pets": ClassificationPreset(cn.OXFORD_PETS, cn.OXFORD_PETS_TEMPLATES, "OxfordIIITPet",
                                        layout="oxford_pets"),
    "imagenet": ClassificationPreset(cn.IMAGENET, cn.IMAGENET_TEMPLATES, label_keys=cn.IMAGENET_WNIDS,
                                     layout="imagenet"),
    "imagenet_a": ClassificationPreset(cn.IMAGENET_A, cn.IMAGENET_TEMPLATES, label_keys=cn.IMAGENET_A_WNIDS,
                                       layout="imagenet_a"),
    "imagenet_r": ClassificationPreset(cn.IMAGENET_R, cn.IMAGENET_TEMPLATES, label_keys=cn.IMAGENET_R_WNIDS,
                                       layout="imagenet_r"),
    "cifar10_objects": ClassificationPreset(cn.CIFAR10, cn.CIFAR_TEMPLATES, "CIFAR10",
                                            subset=["airplane", "automobile", "ship", "truck"], layout="cifar10"),
}


@dataclass(frozen=True)
class Layout:
    """Where an official release keeps its files, relative to the dataset's folder (the entry's ``source``)."""

    release: str  # what the folder holds, in words (for errors naming a missing file or folder)
    manifest: str | None = None  # bias: the label file, or the folder of label files, in the dataset's folder
    kind: str = "manifest"  # bias: "manifest" (image paths) or "parquet" (image bytes in the table)
    typed_columns: tuple[tuple[str, str], ...] = ()  # bias: (attribute-name column, value column) pairs
    labels: dict[str, list[str]] = field(default_factory=dict)  # bias: attribute -> the release's values
    videos: tuple[str, ...] = ()  # video: the video folder, the first of these that exists
    split: str | None = None  # video: the file listing the split's video ids, one per line


#: Video presets: frames sampled per video, the annotation file (relative to the dataset's folder), its columns,
#: and the release's layout (:mod:`.video`).
VIDEO_PRESETS = {
    "msrvtt": dict(frames=12, captions="MSRVTT_JSFUSION_test.csv", video_column="video_id", caption_column="sentence",
                   layout=Layout("MSR-VTT: MSRVTT_JSFUSION_test.csv (the 1k-A test split) and the videos in "
                                 "videos/all/ or MSRVTT_Videos/", videos=("videos/all", "MSRVTT_Videos"))),
    "msvd": dict(frames=12, captions="raw-captions.pkl",
                 layout=Layout("MSVD: raw-captions.pkl and test_list.txt (CLIP4Clip's annotations) and the videos in "
                               "YouTubeClips/", videos=("YouTubeClips",), split="test_list.txt")),
    "didemo": dict(frames=32, captions="test_data.json", video_column="video", caption_column="description",
                   layout=Layout("DiDeMo: test_data.json and the videos, named as its 'video' field, in videos/ or "
                                 "DiDeMo_Videos/", videos=("videos", "DiDeMo_Videos"))),
}

#: Bias presets: image column, attributes, label -> group maps, and the release's layout (:mod:`.bias`).
BIAS_PRESETS = {
    "fairface": dict(uri_column="file", attributes=["race", "gender"], groups={"race": FAIRFACE_RACE_GROUPS},
                     layout=Layout("FairFace: the label CSV fairface_label_val.csv beside the image folder val/",
                                   manifest="fairface_label_val.csv", labels=FAIRFACE_LABELS)),
    "socialcounterfactuals": dict(
        uri_column="image", attributes=["race", "gender", "physical"], groups={},
        layout=Layout("SocialCounterfactuals as published on Hugging Face (Intel/SocialCounterfactuals): the parquet "
                      "shards data/train-*.parquet", manifest="data", kind="parquet",
                      typed_columns=(("a1_type", "a1"), ("a2_type", "a2")),
                      labels=SOCIALCOUNTERFACTUALS_LABELS)),
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
