"""Manifests: CSV/TSV or Parquet tables with a column of image URIs (any fsspec URI; a relative one is
taken relative to the manifest's folder) and an optional label column. Rows keep the manifest's order, are
read a batch at a time and cut into shards of ``shard_size``. A shard's fingerprint covers the manifest file and
the shard's rows, not the images' own versions (checking 10 M remote files at planning time would cost 10 M
requests)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from itertools import islice

import fsspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ..files import resolve_uri
from . import folder, parquet
from .base import SourceError, chunks, file_version, fingerprint, source_files

MANIFEST_EXTENSIONS = (".csv", ".tsv", *parquet.PARQUET_EXTENSIONS)

read = folder.read  # items are (uri, label) pairs, as for folders


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(manifest uri, ((image uri, label), ...), fingerprint) per shard, streamed: one batch of rows in memory."""
    left = cfg.limit
    empty = True
    for uri, info in source_files(cfg.source, MANIFEST_EXTENSIONS, "manifest").items():
        rows = islice(iter_rows(uri, cfg.uri_column, cfg.label_column), left)
        n = 0
        for chunk in chunks(rows, cfg.shard_size):
            empty, n = False, n + len(chunk)
            yield uri, tuple(chunk), fingerprint(uri, chunk, file_version(info))
        if left is not None:
            left -= n
            if left == 0:
                break
    if empty:
        raise SourceError(f"manifest {cfg.source!r} lists no images")


BATCH_ROWS = 65_536  # manifest rows read at a time


def iter_rows(uri: str, uri_column: str, label_column: str) -> Iterator[tuple[str, str | None]]:
    """(image uri, label or None) per manifest row, in order and read a batch at a time; relative URIs are resolved
    against the manifest's folder and rows without a URI are skipped."""
    base = posixpath.dirname(uri)
    for batch in _batches(uri, uri_column, label_column):
        uris = batch.column(uri_column).to_pylist()
        labels = (batch.column(label_column).to_pylist() if label_column in batch.schema.names
                  else [None] * batch.num_rows)
        for u, lab in zip(uris, labels, strict=True):
            if u:
                yield resolve_uri(str(u), base), None if lab is None else str(lab)


def read_rows(uri: str, uri_column: str, label_column: str) -> list[tuple[str, str | None]]:
    """Every row of :func:`iter_rows`."""
    return list(iter_rows(uri, uri_column, label_column))


def _batches(uri: str, uri_column: str, label_column: str) -> Iterator[pa.RecordBatch]:
    """The manifest's URI and label columns, :data:`BATCH_ROWS` rows at a time (CSV/TSV: empty cells are nulls)."""
    low = uri.lower()
    if not low.endswith(MANIFEST_EXTENSIONS):
        raise SourceError(f"{uri}: a manifest is CSV, TSV or Parquet")
    with fsspec.open(uri, "rb") as f:
        if low.endswith(parquet.PARQUET_EXTENSIONS):
            reader = pq.ParquetFile(f)
            names = reader.schema_arrow.names
            _check_uri_column(uri, uri_column, names)
            yield from reader.iter_batches(BATCH_ROWS, columns=[c for c in (uri_column, label_column) if c in names])
            return
        reader = pcsv.open_csv(
            f, read_options=pcsv.ReadOptions(block_size=1 << 24),
            parse_options=pcsv.ParseOptions(delimiter="\t" if low.endswith(".tsv") else ","),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True, column_types={
                uri_column: pa.string(), label_column: pa.string()}))
        _check_uri_column(uri, uri_column, reader.schema.names)
        yield from reader


def _check_uri_column(uri: str, uri_column: str, names: list[str]) -> None:
    if uri_column not in names:
        raise SourceError(f"manifest {uri}: no URI column {uri_column!r} (set data.uri_column); columns: {names}")
