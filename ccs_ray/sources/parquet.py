"""Parquet files with an image-bytes column (binary, or a struct with a ``bytes`` field as Hugging Face
datasets write it) and an optional label column. Each file is cut into row ranges of ``shard_size`` rows."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import PARQUET_EXTENSIONS
from .base import Record, Shard, SourceError, file_version, fingerprint, row_ranges, source_files


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(file uri, (start, stop, image column, label column or None), fingerprint) per shard."""
    left = cfg.limit
    for uri, info in source_files(cfg.source, PARQUET_EXTENSIONS, "parquet files").items():
        meta = read_metadata(uri)
        schema = meta.schema.to_arrow_schema()
        if cfg.image_column not in schema.names:
            raise SourceError(f"{uri}: no image column {cfg.image_column!r} (set data.image_column); "
                              f"columns: {schema.names}")
        _check_image_type(uri, schema.field(cfg.image_column).type)
        label = cfg.label_column if cfg.label_column in schema.names else None
        rows = meta.num_rows if left is None else min(meta.num_rows, left)
        for start, stop in row_ranges(rows, cfg.shard_size):
            items = (start, stop, cfg.image_column, label)
            yield uri, items, fingerprint(uri, items, file_version(info))
        if left is not None:
            left -= rows
            if left == 0:
                return


def read(shard: Shard) -> Iterator[Record]:
    """The shard's rows: image bytes (a null cell gives a Record with an error) and the label as text."""
    start, stop, image_col, label_col = shard.items
    with fsspec.open(shard.uri, "rb") as f:
        pf = pq.ParquetFile(f)
        cols = [image_col] + ([label_col] if label_col else [])
        table, first = [], 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if first < stop and first + n > start:
                table.append(pf.read_row_group(g, columns=cols).slice(max(start - first, 0), stop - max(start, first)))
            first += n
    table = pa.concat_tables(table)
    images = _bytes_column(table.column(image_col))
    labels = table.column(label_col).to_pylist() if label_col else [None] * len(images)
    for row, (data, label) in enumerate(zip(images, labels, strict=True), start):
        item = f"{shard.uri}#{row}"
        if data is None:
            yield Record(item, None, _text(label), error=f"row {row}: {image_col!r} is null")
        else:
            yield Record(item, data, _text(label))


def read_metadata(uri: str) -> pq.FileMetaData:
    """The footer of one parquet file (schema, row groups, row count)."""
    with fsspec.open(uri, "rb") as f:
        return pq.read_metadata(f)


def _check_image_type(uri: str, t: pa.DataType) -> None:
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)):
        return
    raise SourceError(f"{uri}: the image column must hold bytes (binary, or a struct with a 'bytes' field); got {t}")


def _bytes_column(col: pa.ChunkedArray) -> list[bytes | None]:
    if pa.types.is_struct(col.type):
        return [None if v is None else v["bytes"] for v in col.to_pylist()]
    return col.to_pylist()


def _text(label) -> str | None:
    return None if label is None else str(label)
