"""Parquet files with one image per row and an optional label column. Each file is cut into row ranges of
``shard_size`` rows.

The image column (``data.image_column``) holds the encoded image: binary, or a struct ``{bytes, path}`` as Hugging
Face ``datasets`` write an ``Image`` feature, whose bytes are read when set and else the file at ``path`` (an
absolute path or URI, or a path relative to the parquet file's folder). img2dataset's ``parquet`` output keeps its
images in a binary column named after its encode format (``jpg``, ``png`` or ``webp``): where the default image
column ``image`` is absent, that column is read.

A row is named ``<file uri>#<name>``: the struct's ``path`` when set, else the row's ``key`` (or ``id``) column where
the file has one, else the row's number in the file. A row without an image is an error row; its detail carries
img2dataset's ``status`` and ``error_message`` of the row where the file has them (a failed download)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import PARQUET_EXTENSIONS, resolve_uri
from .base import Record, Shard, SourceError, file_version, fingerprint, read_bytes, row_ranges, source_files

DEFAULT_IMAGE_COLUMN = "image"  # DataConfig.image_column's default
IMG2DATASET_COLUMNS = ("jpg", "png", "webp")  # img2dataset's image column, named by its --encode_format
NAME_COLUMNS = ("key", "id")  # a row's own name, where the file has one of these columns (the first found)
_STATUS_COLUMNS = ("status", "error_message")  # img2dataset: why a row has no image


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(file uri, (start, stop, image column, label column or None), fingerprint) per shard."""
    left = cfg.limit
    for uri, info in source_files(cfg.source, PARQUET_EXTENSIONS, "parquet files").items():
        meta = read_metadata(uri)
        schema = meta.schema.to_arrow_schema()
        image = image_column(schema, cfg.image_column)
        if image is None:
            raise SourceError(f"{uri}: no image column {cfg.image_column!r} (set data.image_column); "
                              f"columns: {schema.names}")
        _check_image_type(uri, schema.field(image).type)
        label = cfg.label_column if cfg.label_column in schema.names else None
        rows = meta.num_rows if left is None else min(meta.num_rows, left)
        for start, stop in row_ranges(rows, cfg.shard_size):
            items = (start, stop, image, label)
            yield uri, items, fingerprint(uri, items, file_version(info))
        if left is not None:
            left -= rows
            if left == 0:
                return


def image_column(schema: pa.Schema, configured: str) -> str | None:
    """The column of images in a file of ``schema``: ``configured`` where present, else (for the default name)
    img2dataset's binary image column; None when neither is there."""
    if configured in schema.names:
        return configured
    if configured == DEFAULT_IMAGE_COLUMN:
        return next((c for c in IMG2DATASET_COLUMNS if c in schema.names and _is_binary(schema.field(c).type)), None)
    return None


def read(shard: Shard) -> Iterator[Record]:
    """The shard's rows: image bytes (a row without them gives a Record with an error) and the label as text."""
    start, stop, image_col, label_col = shard.items
    with fsspec.open(shard.uri, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        name_col = next((c for c in NAME_COLUMNS if c in names), None)
        status_cols = [c for c in _STATUS_COLUMNS if c in names]
        cols = [c for c in dict.fromkeys((image_col, label_col, name_col, *status_cols)) if c is not None]
        table, first = [], 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if first < stop and first + n > start:
                table.append(pf.read_row_group(g, columns=cols).slice(max(start - first, 0), stop - max(start, first)))
            first += n
    rows = pa.concat_tables(table)
    column = rows.column(image_col)
    struct = pa.types.is_struct(column.type)
    images = _field(column, "bytes") if struct else column.to_pylist()
    paths = _field(column, "path") if struct else [None] * len(images)
    labels, keys = (_texts(rows, c, len(images)) for c in (label_col, name_col))
    status = list(zip(*(_texts(rows, c, len(images)) for c in status_cols), strict=True)) or [()] * len(images)
    folder = posixpath.dirname(shard.uri)
    for row, (data, path, label, key, why) in enumerate(zip(images, paths, labels, keys, status, strict=True), start):
        item = row_item(shard.uri, row, path, key)
        if data is not None:
            yield Record(item, data, label)
        elif path:
            rec = read_bytes(resolve_uri(path, folder))
            yield Record(item, rec.data, label, rec.error)
        else:
            reason = ": ".join(w for w in why if w)
            detail = f"row {row}: {image_col!r} is null" + (f" ({reason})" if reason else "")
            yield Record(item, None, label, error=detail)


def row_item(uri: str, row: int, path: str | None = None, key: object = None) -> str:
    """The item name of row ``row`` of the parquet file ``uri``: ``<uri>#<path>`` (the image struct's path), else
    ``<uri>#<key>`` (its key or id column), else ``<uri>#<row>``."""
    return f"{uri}#{path or (None if key is None else str(key)) or row}"


def read_metadata(uri: str) -> pq.FileMetaData:
    """The footer of one parquet file (schema, row groups, row count)."""
    with fsspec.open(uri, "rb") as f:
        return pq.read_metadata(f)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _check_image_type(uri: str, t: pa.DataType) -> None:
    if _is_binary(t) or (pa.types.is_struct(t) and (t.get_field_index("bytes") >= 0 or t.get_field_index("path") >= 0)):
        return
    raise SourceError(f"{uri}: the image column must hold bytes (binary, or a struct with a 'bytes' or 'path' "
                      f"field); got {t}")


def _field(column: pa.ChunkedArray, name: str) -> list:
    """One field of a struct column, per row (None where the row or the field is missing)."""
    return [None if v is None else v.get(name) for v in column.to_pylist()]


def _texts(table: pa.Table, column: str | None, n: int) -> list[str | None]:
    """A column's values as text (None: null), or n Nones without the column."""
    if column is None:
        return [None] * n
    return [None if v is None else str(v) for v in table.column(column).to_pylist()]
