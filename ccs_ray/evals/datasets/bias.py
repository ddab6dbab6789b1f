"""Social-bias datasets (``[[evals.bias]]``): images with one label per attribute, and the occupation prompts.

An entry's ``occupations``, ``templates`` (default: the paper's four) and ``combine`` (default
``"embedding_mean"``, as published; see :mod:`ccs_ray.evals.maxskew`) set the prompts and how an
occupation's templates are combined; both settings are recorded in every ``bias`` row.

A source is a CSV/Parquet manifest (or a folder of them) of image URIs with one column per attribute
(FairFace: ``file, age, gender, race``), or a generated probe set (``probe://TASK?n=..``) whose one
attribute, named after the task, is the image's class. :func:`bias_data` validates an entry and applies
its preset (:mod:`.presets`); :func:`bias_attributes` maps each image to its attribute groups;
:func:`plan_bias` cuts the images into shards.
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import sources
from ...choices import SourceKind
from ...sources.base import list_files
from ...sources.manifest import MANIFEST_EXTENSIONS, read_rows
from ...spec import DataConfig
from ..maxskew import BIAS_TEMPLATES, OCCUPATIONS
from .entries import DatasetError, probe_of
from .presets import BIAS_PRESETS, entry_with_preset


@dataclass
class BiasData:
    """One social-bias dataset: the keys of :class:`~ccs_ray.spec.BiasEntry`, resolved."""

    name: str
    source: str  # CSV / Parquet manifest
    preset: str | None
    uri_column: str
    attributes: list[str]
    groups: dict[str, dict[str, str]]  # attribute -> label -> group
    occupations: list[str] | None  # None: OCCUPATIONS
    templates: list[str] | None  # None: BIAS_TEMPLATES
    combine: str  # how the templates combine: choices.BIAS_COMBINES (ccs_ray.evals.maxskew)
    k: int
    shard_size: int
    limit: int | None


def bias_data(entry) -> BiasData:
    """Validate an ``evals.bias`` entry (typed or a dict) and apply its preset (default: the name, when it names
    one)."""
    data, given = entry_with_preset(BiasData, entry, "bias", BIAS_PRESETS,
                                    "manifest (CSV/Parquet of images and attributes)")
    data.occupations = list(OCCUPATIONS) if data.occupations is None else data.occupations
    data.templates = list(BIAS_TEMPLATES) if data.templates is None else data.templates
    probe = probe_of(data.source, "bias")
    if probe is not None:
        if "attributes" in given and data.attributes != [probe.task]:
            raise DatasetError(f"bias dataset {data.name!r}: a generated set has the one attribute "
                               f"{probe.task!r} (its probe task), not {data.attributes}")
        data.attributes = [probe.task]
    bad = [t for t in data.templates if t.count("{}") != 1]
    if bad or not data.templates or not data.occupations:
        raise DatasetError(f"bias dataset {data.name!r}: need occupations and templates with one '{{}}' ({bad})")
    return data


def bias_attributes(data: BiasData) -> dict[str, dict[str, str]]:
    """image URI -> {attribute: group} (labels mapped through ``groups``; missing values left out)."""
    probe = probe_of(data.source, "bias")
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
    kind: SourceKind = "probe" if probe_of(data.source, "bias") else "manifest"
    return sources.plan_shards(DataConfig(source=data.source, kind=kind, shard_size=data.shard_size, limit=data.limit,
                                          uri_column=data.uri_column, label_column=data.attributes[0]))
