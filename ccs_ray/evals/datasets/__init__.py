"""Evaluation datasets: presets (class names, templates, frame counts, bias attributes) and loaders.

Every dataset is a table of ``[evals]`` in the job spec (``classification``, ``video`` or ``bias``) with at
least ``name``; :func:`classification_data`, :func:`video_data` and :func:`bias_data` validate it. A
dataset is cut into shards (:class:`ccs_ray.sources.Shard`), the pruning stage's unit of work.

- Classification sources: anything :mod:`ccs_ray.sources` reads (an ImageFolder directory, whose
  sub-folder names are the labels; WebDataset tars; a CSV/Parquet manifest with a label column; the
  probe set, e.g. ``probe://shapes?n=200&seed=1``) or ``torchvision://<Dataset>`` (e.g.
  ``torchvision://CIFAR10``; downloaded into ``root`` where there is internet), or, for a preset, its
  dataset's folder as the release unpacks it (``cifar-10-batches-py``, ``food-101``, ``imagenet-a``, ...; read
  offline, :mod:`.layouts`). A label is a class name, a preset's alternative key (ImageNet WordNet id,
  Country-211 code), or a class index.
- Video: a folder with one frame folder or one video file (decoded with PyAV) per video, and a
  captions file (CSV/TSV, Parquet, JSON list or JSON lines); the first caption of each video is used.
- Bias: a CSV/Parquet manifest of image URIs with one column per attribute (FairFace:
  ``file, age, gender, race``).

Video and bias sets can also be generated from the probe set (:mod:`ccs_ray.sources.probe`), with no
file at all (the smoke job's): ``probe://TASK?n=..&seed=..&size=..`` as a video source gives ``n``
videos ``v0``..``v<n-1>`` of ``frames`` probe images of one class each, captioned ``"a video of a
<class text>"``; as a bias source it gives ``n`` images whose one attribute, named after the task
(e.g. ``colors``), is the image's class.

Modules: :mod:`.entries` (DatasetError, reading an entry, generated-set sources), :mod:`.presets`,
:mod:`.classification` (with :mod:`.torchvision_data`, the ``torchvision://`` adapter, and :mod:`.layouts`, the
official release layouts), :mod:`.video`,
:mod:`.bias`. This package re-exports their public names, and :mod:`ccs_ray.sources` as ``sources``
(for loading a shard).
"""

from ... import sources
from .bias import BiasData, bias_attributes, bias_data, plan_bias
from .classification import ClassificationData, classification_data, load_classification, plan_classification
from .entries import ENTRIES, DatasetError
from .layouts import CLASSIFICATION_LAYOUTS
from .presets import BIAS_PRESETS, CLASSIFICATION_PRESETS, VIDEO_PRESETS, ClassificationPreset
from .video import VIDEO_EXTENSIONS, VideoData, load_video, plan_videos, video_captions, video_data

#: The kinds of ``[evals]`` dataset lists, in the order they are evaluated.
KINDS = tuple(ENTRIES)


def plan_dataset(kind: str, entry) -> tuple:
    """``(data, shards, inputs)`` of an ``evals.<kind>`` entry: validated, resolved and cut into shards, with what
    its evaluation reads besides the images: ``captions`` ((video id, caption) pairs) of a video set,
    ``attributes`` (image -> attribute groups) of a bias set."""
    if kind == "classification":
        data = classification_data(entry)
        return data, plan_classification(data), {}
    if kind == "video":
        video_set = video_data(entry)
        captions = video_captions(video_set)
        return video_set, plan_videos(video_set, captions), {"captions": captions}
    bias_set = bias_data(entry)
    return bias_set, plan_bias(bias_set), {"attributes": bias_attributes(bias_set)}

__all__ = [
    "BIAS_PRESETS", "CLASSIFICATION_LAYOUTS", "CLASSIFICATION_PRESETS", "KINDS", "VIDEO_EXTENSIONS", "VIDEO_PRESETS",
    "BiasData",
    "ClassificationData", "ClassificationPreset", "DatasetError", "VideoData", "bias_attributes", "bias_data",
    "classification_data", "load_classification", "load_video", "plan_bias", "plan_dataset", "plan_classification",
    "plan_videos", "sources", "video_captions", "video_data",
]
