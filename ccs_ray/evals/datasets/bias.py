"""Social-bias datasets (``[[evals.bias]]``): images with one label per attribute, and the occupation prompts.

An entry's ``occupations``, ``templates`` (default: the paper's four) and ``combine`` (default
``"embedding_mean"``, as published; see :mod:`ccs_ray.evals.maxskew`) set the prompts and how an
occupation's templates are combined; both settings are recorded in every ``bias`` row.

A source is a CSV/Parquet manifest (or a folder of them) of image URIs with one column per attribute, or a
generated probe set (``probe://TASK?n=..``) whose one attribute, named after the task, is the image's class.
A preset reads its dataset's official release from the dataset's folder (the source); a missing file,
folder or column, or a label the release does not use, is a DatasetError naming it:

- ``fairface``: the folder holding ``fairface_label_val.csv`` (columns ``file, age, gender, race,
  service_test``; ``file`` is relative to the CSV's folder, e.g. ``val/1.jpg``) and the image folder
  ``val/`` of the release's image archive, or the CSV itself. Attributes ``race`` (the 7 labels, East and
  Southeast Asian merged into ``Asian`` by :data:`~ccs_ray.evals.maxskew.FAIRFACE_RACE_GROUPS`) and
  ``gender`` (``Male``/``Female``).
- ``socialcounterfactuals``: the dataset's folder as published on Hugging Face (``Intel/SocialCounterfactuals``),
  whose ``data/`` holds the parquet shards ``train-000NN-of-00061-<hash>.parquet``, or that ``data/`` folder,
  or one shard. A row is one image: ``image`` (a struct of the JPEG ``bytes`` and its ``path``), the two
  attributes its counterfactual set varies as ``a1_type``/``a1`` and ``a2_type``/``a2`` (types ``race``,
  ``gender``, ``physical``; e.g. ``race``/``Black`` and ``gender``/``female``), ``counterfactual_set`` and
  ``caption`` (e.g. ``A photo of a Black female doctor``). An image has the two attributes its row names;
  MaxSkew of an attribute ranks the images that have it.

:func:`bias_data` validates an entry and applies its preset (:mod:`.presets`); :func:`bias_attributes` maps
each image to its attribute groups; :func:`plan_bias` cuts the images into shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ... import sources
from ...choices import SourceKind
from ...files import PARQUET_EXTENSIONS, resolve_uri
from ...sources.base import list_files
from ...sources.manifest import MANIFEST_EXTENSIONS, iter_rows, read_rows
from ...sources.parquet import NAME_COLUMNS, row_item
from ...spec import DataConfig
from ..maxskew import BIAS_TEMPLATES, OCCUPATIONS
from .entries import DatasetError, probe_of
from .presets import BIAS_PRESETS, Layout, entry_with_preset


@dataclass
class BiasData:
    """One social-bias dataset: the keys of :class:`~ccs_ray.spec.BiasEntry`, resolved."""

    name: str
    source: str  # CSV / Parquet manifest, or a preset's dataset folder
    preset: str | None
    uri_column: str  # the image URIs (a manifest) or image bytes (a parquet layout)
    attributes: list[str]
    groups: dict[str, dict[str, str]]  # attribute -> label -> group
    occupations: list[str] | None  # None: OCCUPATIONS
    templates: list[str] | None  # None: BIAS_TEMPLATES
    combine: str  # how the templates combine: choices.BIAS_COMBINES (ccs_ray.evals.maxskew)
    k: int
    shard_size: int
    limit: int | None
    layout: Layout | None = None  # the preset's official layout


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


def bias_manifest(data: BiasData) -> str:
    """What is read for the images and their labels: the source, or its layout's label file (folder) when the
    source is the dataset's folder."""
    layout = data.layout
    if layout is None or layout.manifest is None or probe_of(data.source, "bias"):
        return data.source
    fs, path = fsspec.core.url_to_fs(data.source)
    if fs.isfile(path):
        return data.source
    if fs.exists(f"{path.rstrip('/')}/{layout.manifest}"):
        return resolve_uri(layout.manifest, data.source)
    if layout.kind == "parquet" and fs.isdir(path) and list_files(data.source, PARQUET_EXTENSIONS):
        return data.source  # the folder of shards itself
    raise DatasetError(f"{data.name}: no {layout.manifest} in {data.source} (expected {layout.release})")


def bias_attributes(data: BiasData) -> dict[str, dict[str, str]]:
    """image URI -> {attribute: group} (labels mapped through ``groups``; missing values left out)."""
    probe = probe_of(data.source, "bias")
    if probe is not None:  # items as the probe reader names them: "<canonical uri>#<index>"
        classes = sources.probe_classes(probe.task)
        return {f"{probe.uri}#{i}": {probe.task: classes[i % len(classes)]}
                for i in range(min(probe.n, data.limit or probe.n))}
    if data.layout and data.layout.kind == "parquet":
        return _typed_attributes(data)
    out: dict[str, dict[str, str]] = {}
    for manifest in _files(data, MANIFEST_EXTENSIONS):
        if data.layout:
            _check_manifest(data, manifest)
        for attribute in data.attributes:
            rows = read_rows(manifest, data.uri_column, attribute)
            if all(label is None for _, label in rows):
                raise DatasetError(f"bias dataset {data.name!r}: {manifest} has no values in column {attribute!r}")
            for uri, label in rows:
                if label is not None:
                    out.setdefault(uri, {})[attribute] = _group(data, manifest, attribute, label)
    return out


def _files(data: BiasData, extensions: tuple[str, ...]) -> list[str]:
    """The label files of the set, or a DatasetError naming where they were expected."""
    manifest = bias_manifest(data)
    try:
        files = list(list_files(manifest, extensions))
    except sources.SourceError as e:
        raise DatasetError(f"{data.name}: {e}") from None
    if not files:
        where = f" (expected {data.layout.release})" if data.layout else ""
        raise DatasetError(f"{data.name}: no {', '.join(extensions)} files in {manifest}{where}")
    return files


def _group(data: BiasData, where: str, attribute: str, label: str) -> str:
    """The group of one label: a label the layout's release does not use is an error."""
    known = data.layout.labels.get(attribute) if data.layout else None
    if known and label not in known:
        raise DatasetError(f"{data.name}: {where}: {attribute} {label!r} is not one of the release's labels "
                           f"({', '.join(known)})")
    return data.groups.get(attribute, {}).get(label, label)


def _check_manifest(data: BiasData, manifest: str) -> None:
    """A layout's label file has the image and attribute columns, and its first image is where it says."""
    assert data.layout
    with fsspec.open(manifest, "rb") as f:
        if manifest.lower().endswith(PARQUET_EXTENSIONS):
            columns = pq.ParquetFile(f).schema_arrow.names
        else:
            delimiter = "\t" if manifest.lower().endswith(".tsv") else ","
            columns = pcsv.open_csv(f, parse_options=pcsv.ParseOptions(delimiter=delimiter)).schema.names
    for column in (data.uri_column, *data.attributes):
        if column not in columns:
            raise DatasetError(f"{data.name}: {manifest} has no column {column!r} (columns: {', '.join(columns)}; "
                               f"expected {data.layout.release})")
    first = next(iter_rows(manifest, data.uri_column, data.attributes[0]), None)
    if first is not None:
        fs, path = fsspec.core.url_to_fs(first[0])
        if not fs.exists(path):
            raise DatasetError(f"{data.name}: no image {first[0]} (the first of {manifest}; expected "
                               f"{data.layout.release})")


def _typed_attributes(data: BiasData) -> dict[str, dict[str, str]]:
    """image -> {attribute: group} of parquet shards whose rows name their attributes in (type, value) column
    pairs; items as :mod:`ccs_ray.sources.parquet` names them (``<shard uri>#<image path, key or row number>``)."""
    assert data.layout
    pairs = data.layout.typed_columns
    needed = [data.uri_column, *(c for pair in pairs for c in pair)]
    out: dict[str, dict[str, str]] = {}
    left = data.limit
    for uri in _files(data, PARQUET_EXTENSIONS):
        with fsspec.open(uri, "rb") as f:
            shard = pq.ParquetFile(f)
            missing = [c for c in needed if c not in shard.schema_arrow.names]
            if missing:
                raise DatasetError(f"{data.name}: {uri} has no column {missing[0]!r} (columns: "
                                   f"{', '.join(shard.schema_arrow.names)}; expected {data.layout.release})")
            names = [c for c in NAME_COLUMNS if c in shard.schema_arrow.names][:1]
            image_path = [f"{data.uri_column}.path"] if pa.types.is_struct(
                shard.schema_arrow.field(data.uri_column).type) else []
            rows = shard.read(columns=[c for pair in pairs for c in pair] + names + image_path).to_pylist()
        for i, row in enumerate(rows[:left]):
            labels = {row[kind]: row[value] for kind, value in pairs
                      if row[kind] is not None and row[value] is not None}
            groups = {a: _group(data, uri, a, labels[a]) for a in data.attributes if a in labels}
            if groups:  # the row's name as the parquet reader gives it: the image's path, its key, or its number
                path = (row[data.uri_column] or {}).get("path") if image_path else None
                out[row_item(uri, i, path, row[names[0]] if names else None)] = groups
        if left is not None:
            left -= min(left, len(rows))
            if left == 0:
                break
    return out


def plan_bias(data: BiasData) -> list[sources.Shard]:
    """The set's shards of ``shard_size`` images (a manifest's rows, a parquet layout's rows, or generated)."""
    probe = probe_of(data.source, "bias")
    parquet = data.layout is not None and data.layout.kind == "parquet"
    kind: SourceKind = "probe" if probe else ("parquet" if parquet else "manifest")
    source = data.source if probe else bias_manifest(data)
    return sources.plan_shards(DataConfig(source=source, kind=kind, shard_size=data.shard_size, limit=data.limit,
                                          uri_column=data.uri_column, image_column=data.uri_column,
                                          label_column=data.attributes[0]))
