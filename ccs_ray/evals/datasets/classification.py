"""Zero-shot classification datasets (``[[evals.classification]]``): class names, templates, shards, images.

:func:`classification_data` validates an entry and resolves its classes: from the probe task
(``probe://TASK``), else from ``classnames`` or the preset (:mod:`.presets`; a preset with a torchvision
dataset also gives the default source). Labels are looked up as a class name, a class's text, a preset's
alternative key (ImageNet WordNet id, Country-211 country code) or a class index; ``subset`` keeps some
classes, renumbered in its order. :func:`plan_classification` cuts the source into shards: ``torchvision://``
sources by :mod:`.torchvision_data`; a folder in the official layout of its preset's release (e.g.
``cifar-10-batches-py``, ``food-101``) by :mod:`.layouts`, offline; anything else by :mod:`ccs_ray.sources`.
:func:`load_classification` loads one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

import torch

from ... import sources
from ...choices import SourceKind
from ...spec import DataConfig
from . import layouts, torchvision_data
from .entries import DatasetError, from_entry
from .presets import CLASSIFICATION_PRESETS, preset_of

PROBE_TEMPLATES = ["a photo of a {}.", "an image of a {}."]


@dataclass
class ClassificationData:
    """One zero-shot classification dataset: the keys of :class:`~ccs_ray.spec.ClassificationEntry`, resolved."""

    name: str
    source: str
    preset: str | None
    kind: Literal["auto", SourceKind]
    classnames: list[str] | None
    templates: list[str] | None
    subset: list[str] | None
    uri_column: str
    label_column: str
    image_column: str
    shard_size: int
    limit: int | None
    root: str | None
    options: dict
    # filled by classification_data()
    class_texts: list[str] = field(default_factory=list)
    label_index: dict[str, int] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)  # labels of classes left out by ``subset``
    layout: str | None = None  # the preset's official release layout (.layouts.CLASSIFICATION_LAYOUTS)


def classification_data(entry) -> ClassificationData:
    """Validate an ``evals.classification`` entry (typed or a dict) and resolve class names, templates and labels."""
    data, _ = from_entry(ClassificationData, entry, "classification")
    preset = preset_of(data, CLASSIFICATION_PRESETS, "classification")
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
        data.layout = preset.layout
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
            raise DatasetError(f"classification dataset {data.name!r}: subset classes {missing} are not among its "
                               "classes")
        keep = [index[c] for c in data.subset]
        data.excluded = {k for k, v in index.items() if v not in keep}
        index = {k: keep.index(v) for k, v in index.items() if v in keep}
        keys, texts = [keys[i] for i in keep], [texts[i] for i in keep]
    data.classnames, data.class_texts, data.label_index = list(keys), list(texts), index
    return data


def plan_classification(data: ClassificationData) -> list[sources.Shard]:
    """The dataset's shards (torchvision datasets and pickled arrays: index ranges of ``shard_size``)."""
    if data.source.startswith("torchvision://"):
        return torchvision_data.plan(data.source, data.root, data.options, data.shard_size, data.limit)
    if data.layout and data.kind == "auto":
        root = layouts.find_root(data.layout, data.source)
        if root is not None:
            return layouts.plan(data.layout, root, data.name, data.shard_size, data.limit)
    return sources.plan_shards(DataConfig(source=data.source, kind=data.kind, shard_size=data.shard_size,
                                          limit=data.limit, image_column=data.image_column,
                                          uri_column=data.uri_column, label_column=data.label_column))


def load_classification(data: ClassificationData, shard: sources.Shard, preprocess):
    """(images [n, 3, S, S], labels [n] class indices, error rows) of one shard.

    Images outside ``subset`` are dropped silently; an unknown label is an error row (reason ``label``).
    """
    labels: Sequence[str | None]
    if shard.kind in ("torchvision", layouts.ARRAY_KIND):
        items, images, labels = (torchvision_data.load(data.source, data.root, data.options, shard.items)
                                 if shard.kind == "torchvision" else layouts.load(shard))
        images, errors = [preprocess(img) for img in images], []
    else:
        loaded = sources.load_shard(shard, preprocess)
        assert isinstance(loaded.images, torch.Tensor)  # open_clip's preprocess gives tensors
        images, items, labels, errors = list(loaded.images), loaded.items, loaded.labels, loaded.errors
    keep, idx = [], []
    for i, label in enumerate(labels):
        if label in data.label_index:
            keep.append(i)
            idx.append(data.label_index[label])
        elif label not in data.excluded:
            assert data.classnames is not None  # resolved by classification_data
            errors.append(dict(stage="prune", source=shard.uri, item=items[i], reason="label",
                               detail=f"label {label!r} is not a class of {data.name!r} (e.g. {data.classnames[:3]})"))
    stacked = torch.stack([images[i] for i in keep]) if keep else torch.zeros(0)
    return stacked, torch.tensor(idx, dtype=torch.long), errors
