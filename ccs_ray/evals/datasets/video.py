"""Evaluation datasets: presets (class names, templates, frame counts, bias attributes) and loaders.

Every dataset is a table of ``[evals]`` in the job spec (``classification``, ``video`` or ``bias``) with at
least ``name``; :func:`classification_data`, :func:`video_data` and :func:`bias_data` validate it. A
dataset is cut into shards (:class:`ccs_ray.sources.Shard`), the pruning stage's unit of work.

- Classification sources: anything :mod:`ccs_ray.sources` reads (an ImageFolder directory, whose
  sub-folder names are the labels; WebDataset tars; a CSV/Parquet manifest with a label column; the
  probe set, e.g. ``probe://shapes?n=200&seed=1``) or ``torchvision://<Dataset>`` (e.g.
  ``torchvision://CIFAR10``; downloaded into ``root`` where there is internet). A label is a class
  name, a preset's alternative key (ImageNet WordNet id), or a class index.
- Video: a folder with one frame folder or one video file (decoded with PyAV) per video, and a
  captions file (CSV, JSON list or JSON lines); the first caption of each video is used.
- Bias: a CSV/Parquet manifest of image URIs with one column per attribute (FairFace:
  ``file, age, gender, race``).

Video and bias sets can also be generated from the probe set (:mod:`ccs_ray.sources.probe`), with no
file at all (the smoke job's): ``probe://TASK?n=..&seed=..&size=..`` as a video source gives ``n``
videos ``v0``..``v<n-1>`` of ``frames`` probe images of one class each, captioned ``"a video of a
<class text>"``; as a bias source it gives ``n`` images whose one attribute, named after the task
(e.g. ``colors``), is the image's class.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import posixpath
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import fsspec
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch

from .. import sources
from ..sources.base import IMAGE_EXTENSIONS, fingerprint, list_files
from ..sources.manifest import MANIFEST_EXTENSIONS, read_rows
from ..sources.probe import ProbeSpec, parse_probe_uri, probe_image
from ..spec import DataConfig
from . import classnames as cn
from .bias import BIAS_TEMPLATES, FAIRFACE_RACE_GROUPS, OCCUPATIONS
from .video import sample_frame_indices

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
PROBE_TEMPLATES = ["a photo of a {}.", "an image of a {}."]


class DatasetError(ValueError):
    """An evaluation dataset that cannot be used: the message says what is wrong and what is allowed."""


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


def _preset_of(data, presets: dict, kind: str):
    """The preset named by ``data.preset``, else by ``data.name`` when it names one, else None."""
    keys = {_preset_key(k): k for k in presets}
    name = data.preset or (data.name if _preset_key(data.name) in keys else None)
    if name is None:
        return None
    if _preset_key(name) not in keys:
        raise DatasetError(f"unknown {kind} preset {name!r}; presets: {', '.join(presets)}")
    return presets[keys[_preset_key(name)]]


def _apply_preset(data, entry: dict, presets: dict, kind: str) -> None:
    """Set the preset's keys that the entry does not give itself."""
    for key, value in (_preset_of(data, presets, kind) or {}).items():
        if key not in entry:
            setattr(data, key, value)


def _from_dict(cls, entry: dict, section: str):
    if not isinstance(entry, dict) or "name" not in entry:
        raise DatasetError(f"evals.{section}: each dataset is a table with at least 'name', got {entry!r}")
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise DatasetError(f"evals.{section} {entry['name']!r}: unknown keys {extra}; allowed: {sorted(allowed)}")
    return cls(**entry)


def _relative(uri: str, base: str) -> str:
    return uri if "://" in uri or uri.startswith("/") else posixpath.join(base.rstrip("/"), uri)


def _probe_of(source: str, what: str) -> ProbeSpec | None:
    """The parsed probe URI of a generated video or bias set (one task, not the mixed set); else None."""
    if not source.startswith("probe://"):
        return None
    try:
        spec = parse_probe_uri(source)
    except sources.SourceError as e:
        raise DatasetError(str(e)) from None
    if not spec.task:
        raise DatasetError(f"a generated {what} set needs one probe task (probe://colors?...), got {source!r}")
    return spec


# --- classification ---------------------------------------------------------------------------------------


@dataclass
class ClassificationData:
    """One zero-shot classification dataset (a ``[[evals.classification]]`` table)."""

    name: str
    source: str = ""
    preset: str | None = None  # default: the name, when it names a preset
    kind: str = "auto"
    classnames: list[str] | None = None
    templates: list[str] | None = None
    subset: list[str] | None = None
    uri_column: str = "uri"
    label_column: str = "label"
    image_column: str = "image"
    shard_size: int = 256
    limit: int | None = None
    root: str | None = None  # torchvision: download folder (default $CCS_RAY_CACHE/datasets)
    options: dict = field(default_factory=dict)  # torchvision: extra constructor arguments
    # filled by classification_data()
    class_texts: list[str] = field(default_factory=list)
    label_index: dict[str, int] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)  # labels of classes left out by ``subset``


def classification_data(entry: dict) -> ClassificationData:
    """Validate an ``evals.classification`` entry and resolve class names, templates and label keys."""
    data = _from_dict(ClassificationData, entry, "classification")
    preset = _preset_of(data, CLASSIFICATION_PRESETS, "classification")
    if not data.source:
        if preset is None or preset.torchvision is None:
            raise DatasetError(f"classification dataset {data.name!r} has no source (an ImageFolder, tars, a "
                               f"manifest, probe://TASK or torchvision://NAME)")
        data.source = f"torchvision://{preset.torchvision}"
    keys, texts = data.classnames, data.classnames
    alt = None
    if data.source.startswith("probe://"):
        task = urlparse(data.source).netloc
        keys, texts = sources.probe_classes(task), sources.probe_class_texts(task)
    elif preset is not None:
        keys = texts = data.classnames or preset.classnames
        alt = preset.label_keys
    if not keys:
        raise DatasetError(f"classification dataset {data.name!r}: no class names (give 'classnames' or a 'preset': "
                           f"{', '.join(CLASSIFICATION_PRESETS)})")
    data.templates = data.templates or (preset.templates if preset else PROBE_TEMPLATES)
    data.subset = data.subset or (preset.subset if preset else None)
    index = {str(i): i for i in range(len(keys))}  # class indices first: class names win over them
    for i, key in enumerate(keys):
        index[key] = index[texts[i]] = i
        if alt:
            index[alt[i]] = i
    if data.subset:
        missing = [c for c in data.subset if c not in index]
        if missing:
            raise DatasetError(f"classification dataset {data.name!r}: subset classes {missing} are not among its classes")
        keep = [index[c] for c in data.subset]
        data.excluded = {k for k, v in index.items() if v not in keep}
        index = {k: keep.index(v) for k, v in index.items() if v in keep}
        keys, texts = [keys[i] for i in keep], [texts[i] for i in keep]
    data.classnames, data.class_texts, data.label_index = list(keys), list(texts), index
    return data


def _data_config(source: str, kind: str, shard_size: int, limit: int | None, **columns) -> DataConfig:
    return DataConfig(source=source, kind=kind, shard_size=shard_size, limit=limit, **columns)


def plan_classification(data: ClassificationData) -> list[sources.Shard]:
    """The dataset's shards (torchvision datasets: index ranges of ``shard_size``)."""
    if data.source.startswith("torchvision://"):
        n = len(_torchvision_dataset(data.source, data.root, json.dumps(data.options, sort_keys=True)))
        n = min(n, data.limit or n)
        return [sources.Shard(f"s{i:06d}", i, "torchvision", data.source, (start, min(n, start + data.shard_size)),
                              fingerprint(data.source, data.options, start, n))
                for i, start in enumerate(range(0, n, data.shard_size))]
    return sources.plan_shards(_data_config(data.source, data.kind, data.shard_size, data.limit,
                                            image_column=data.image_column, uri_column=data.uri_column,
                                            label_column=data.label_column))


def load_classification(data: ClassificationData, shard: sources.Shard, preprocess):
    """(images [n, 3, S, S], labels [n] class indices, error rows) of one shard.

    Images outside ``subset`` are dropped silently; an unknown label is an error row (reason ``label``).
    """
    if shard.kind == "torchvision":
        ds = _torchvision_dataset(data.source, data.root, json.dumps(data.options, sort_keys=True))
        records = [(f"{data.source}#{i}", ds[i][0].convert("RGB"), str(int(ds[i][1]))) for i in range(*shard.items)]
        images = [preprocess(img) for _, img, _ in records]
        items, labels, errors = [r[0] for r in records], [r[2] for r in records], []
    else:
        loaded = sources.load_shard(shard, preprocess)
        images, items, labels, errors = list(loaded.images), loaded.items, loaded.labels, loaded.errors
    keep, idx = [], []
    for i, label in enumerate(labels):
        if label in data.label_index:
            keep.append(i)
            idx.append(data.label_index[label])
        elif label not in data.excluded:
            errors.append(dict(stage="prune", source=shard.uri, item=items[i], reason="label",
                               detail=f"label {label!r} is not a class of {data.name!r} (e.g. {data.classnames[:3]})"))
    stacked = torch.stack([images[i] for i in keep]) if keep else torch.zeros(0)
    return stacked, torch.tensor(idx, dtype=torch.long), errors


@functools.lru_cache(maxsize=4)
def _torchvision_dataset(source: str, root: str | None, options_json: str):
    import torchvision.datasets as tvd

    url = urlparse(source)
    name = url.netloc or url.path.strip("/")
    cls = getattr(tvd, name, None)
    if not inspect.isclass(cls):
        names = sorted(n for n in dir(tvd) if inspect.isclass(getattr(tvd, n)) and n[0].isupper())
        raise DatasetError(f"torchvision has no dataset {name!r}; e.g. {', '.join(names[:30])}")
    params = inspect.signature(cls).parameters
    kwargs = dict(parse_qsl(url.query))
    root = root or str(Path(os.environ.get("CCS_RAY_CACHE", Path.home() / ".cache" / "ccs-ray")) / "datasets")
    defaults = {"root": root, "download": True, "train": False, "split": "test"}
    kwargs = {**{k: v for k, v in defaults.items() if k in params}, **kwargs, **json.loads(options_json)}
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - network, integrity or argument errors all need the same advice
        raise DatasetError(f"torchvision dataset {name} could not be loaded with {kwargs}: {type(e).__name__}: {e}. "
                           f"Without internet, download it elsewhere into 'root', or use an ImageFolder/manifest "
                           f"source") from e


# --- video ------------------------------------------------------------------------------------------------


@dataclass
class VideoData:
    """One text-to-video retrieval dataset (a ``[[evals.video]]`` table)."""

    name: str
    source: str = ""  # folder of videos or frame folders
    preset: str | None = None
    captions: str | None = None  # CSV / JSON / JSONL, relative to source unless a URI
    frames: int | None = None
    video_column: str = "video"
    caption_column: str = "caption"
    shard_size: int = 16  # videos per shard
    limit: int | None = None


def video_data(entry: dict) -> VideoData:
    """Validate an ``evals.video`` entry and apply its preset (default: the name, when it names one)."""
    data = _from_dict(VideoData, entry, "video")
    if not data.source:
        raise DatasetError(f"video dataset {data.name!r} has no source folder")
    _apply_preset(data, entry, VIDEO_PRESETS, "video")
    data.frames = data.frames or 12
    if not data.captions and _probe_of(data.source, "video") is None:
        raise DatasetError(f"video dataset {data.name!r}: no captions file (give 'captions' or a preset: "
                           f"{', '.join(VIDEO_PRESETS)})")
    return data


def read_table_file(uri: str):
    """A CSV/TSV, Parquet, JSON (a list of objects) or JSON-lines file as a list of dicts."""
    low = uri.lower()
    with fsspec.open(uri, "rb") as f:
        if low.endswith((".parquet", ".pq")):
            return pq.read_table(f).to_pylist()
        if low.endswith((".csv", ".tsv")):
            opts = pcsv.ParseOptions(delimiter="\t" if low.endswith(".tsv") else ",")
            return pcsv.read_csv(f, parse_options=opts).to_pylist()
        if low.endswith(".json"):
            return json.load(f)
        if low.endswith(".jsonl"):
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    raise DatasetError(f"{uri}: unsupported table file (use .csv, .tsv, .parquet, .json or .jsonl)")


def video_captions(data: VideoData) -> list[tuple[str, str]]:
    """(video id, first caption) per video, in captions-file order, at most ``limit``."""
    probe = _probe_of(data.source, "video")
    if probe is not None:
        texts = sources.probe_class_texts(probe.task)
        return [(f"v{i}", f"a video of a {texts[i % len(texts)]}") for i in range(min(probe.n, data.limit or probe.n))]
    uri = _relative(data.captions, data.source)
    rows = read_table_file(uri)
    first: dict[str, str] = {}
    for row in rows:
        if data.video_column not in row or data.caption_column not in row:
            raise DatasetError(f"{uri}: rows need columns {data.video_column!r} and {data.caption_column!r}; "
                               f"got {sorted(row)}")
        caption = row[data.caption_column]
        caption = caption[0] if isinstance(caption, list) else caption
        first.setdefault(str(row[data.video_column]), str(caption))
    pairs = list(first.items())[: data.limit]
    if not pairs:
        raise DatasetError(f"{uri}: no captions")
    return pairs


def plan_videos(data: VideoData, captions: list[tuple[str, str]]) -> list[sources.Shard]:
    """Shards of ``shard_size`` videos; items are video ids."""
    ids = [v for v, _ in captions]
    return [sources.Shard(f"s{i:06d}", i, "video", data.source, tuple(ids[s:s + data.shard_size]),
                          fingerprint(data.source, ids[s:s + data.shard_size], data.frames))
            for i, s in enumerate(range(0, len(ids), data.shard_size))]


def load_video(data: VideoData, video_id: str, preprocess) -> torch.Tensor:
    """[frames, 3, S, S]: ``data.frames`` frames sampled uniformly from a frame folder or a video file
    (a generated video: its ``data.frames`` probe images)."""
    probe = _probe_of(data.source, "video")
    if probe is not None:
        return torch.stack([preprocess(frame) for frame in _probe_video(probe, video_id, data.frames)])
    fs, root = fsspec.core.url_to_fs(data.source)
    base = f"{root.rstrip('/')}/{video_id}"
    if fs.isdir(base):
        files = sorted(p for p in fs.ls(base, detail=False) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DatasetError(f"frame folder {base} has no images")
        picked = [files[i] for i in sample_frame_indices(len(files), data.frames)]
        frames = [sources.decode_image(fs.cat_file(p))[0] for p in picked]
    else:
        candidates = [base] + [base + ext for ext in VIDEO_EXTENSIONS]
        path = next((p for p in candidates if fs.isfile(p)), None)
        if path is None:
            raise DatasetError(f"video {video_id!r}: no frame folder or video file ({', '.join(VIDEO_EXTENSIONS)}) "
                               f"under {data.source}")
        with fs.open(path, "rb") as f:
            frames = _decode_video(f, data.frames)
    return torch.stack([preprocess(frame) for frame in frames])


def _probe_video(probe: ProbeSpec, video_id: str, frames: int) -> list:
    """Frames of generated video ``v<i>``: probe images i + j * stride (j < frames), all of class i."""
    n_classes = len(sources.probe_classes(probe.task))
    i = int(video_id[1:])
    stride = n_classes * -(-probe.n // n_classes)  # a multiple of the class count above every video index
    return [probe_image(probe.task, i + j * stride, probe.seed, probe.size)[0] for j in range(frames)]


def _decode_video(file, k: int) -> list:
    """``k`` uniformly sampled frames (PIL RGB) of a seekable video file, decoded with PyAV.

    Only the sampled frames are converted to images, so memory does not grow with the video's length.
    The indices come from the stream's frame count; when that is missing (e.g. WebM) or wrong, a first
    pass counts the decodable frames and a second one picks them.
    """
    import av

    with av.open(file) as container:
        expected = container.streams.video[0].frames
    if expected > 0:
        frames, n = _pick_frames(file, sample_frame_indices(expected, k))
        if n == expected:
            return frames
    n = _pick_frames(file, [])[1]
    if n == 0:
        raise DatasetError("video has no decodable frames")
    return _pick_frames(file, sample_frame_indices(n, k))[0]


def _pick_frames(file, indices: list[int]) -> tuple[list, int]:
    """(the frames at ``indices`` as PIL RGB images, in ``indices`` order; the number of frames decoded)."""
    import av

    file.seek(0)
    wanted, picked, n = set(indices), {}, 0
    with av.open(file) as container:
        for n, frame in enumerate(container.decode(video=0), 1):
            if n - 1 in wanted:
                picked[n - 1] = frame.to_image().convert("RGB")
    return ([picked[i] for i in indices] if set(picked) == wanted else []), n


# --- bias -------------------------------------------------------------------------------------------------


@dataclass
class BiasData:
    """One social-bias dataset (a ``[[evals.bias]]`` table)."""

    name: str
    source: str = ""  # CSV / Parquet manifest
    preset: str | None = None
    uri_column: str = "uri"
    attributes: list[str] = field(default_factory=lambda: ["race", "gender"])
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # attribute -> label -> group
    occupations: list[str] = field(default_factory=lambda: list(OCCUPATIONS))
    templates: list[str] = field(default_factory=lambda: list(BIAS_TEMPLATES))
    k: int = 10
    shard_size: int = 256
    limit: int | None = None


def bias_data(entry: dict) -> BiasData:
    """Validate an ``evals.bias`` entry and apply its preset (default: the name, when it names one)."""
    data = _from_dict(BiasData, entry, "bias")
    if not data.source:
        raise DatasetError(f"bias dataset {data.name!r} has no source manifest (CSV/Parquet of images and attributes)")
    _apply_preset(data, entry, BIAS_PRESETS, "bias")
    probe = _probe_of(data.source, "bias")
    if probe is not None:
        if "attributes" in entry and data.attributes != [probe.task]:
            raise DatasetError(f"bias dataset {data.name!r}: a generated set has the one attribute "
                               f"{probe.task!r} (its probe task), not {data.attributes}")
        data.attributes = [probe.task]
    bad = [t for t in data.templates if t.count("{}") != 1]
    if bad or not data.occupations or data.k < 1:
        raise DatasetError(f"bias dataset {data.name!r}: need occupations, k >= 1 and templates with one '{{}}' ({bad})")
    return data


def bias_attributes(data: BiasData) -> dict[str, dict[str, str]]:
    """image URI -> {attribute: group} (labels mapped through ``groups``; missing values left out)."""
    probe = _probe_of(data.source, "bias")
    if probe is not None:  # items as the probe reader names them: "<canonical uri>#<index>"
        classes = sources.probe_classes(probe.task)
        return {f"{probe.uri}#{i}": {probe.task: classes[i % len(classes)]}
                for i in range(min(probe.n, data.limit or probe.n))}
    out: dict[str, dict[str, str]] = {}
    for manifest in list_files(data.source, MANIFEST_EXTENSIONS):
        for attribute in data.attributes:
            rows = read_rows(manifest, data.uri_column, attribute)
            if all(label is None for _, label in rows):
                raise DatasetError(f"bias dataset {data.name!r}: {manifest} has no values in column {attribute!r}")
            mapping = data.groups.get(attribute, {})
            for uri, label in rows:
                if label is not None:
                    out.setdefault(uri, {})[attribute] = mapping.get(label, label)
    return out


def plan_bias(data: BiasData) -> list[sources.Shard]:
    """The manifest's (or the generated set's) shards of ``shard_size`` images."""
    kind = "probe" if _probe_of(data.source, "bias") else "manifest"
    return sources.plan_shards(_data_config(data.source, kind, data.shard_size, data.limit,
                                            uri_column=data.uri_column, label_column=data.attributes[0]))
