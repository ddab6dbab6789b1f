"""Manifests: CSV/TSV or Parquet tables with a column of image URIs and an optional label column. A URI is any
fsspec URI or absolute path; a relative path (``img/1.jpg``, ``../flat/1.jpg``) is resolved against the folder the
manifest is in, as an absolute URI, so every worker reads the same file whatever its working directory. Rows keep
the manifest's order, are read a batch at a time and cut into shards of ``shard_size``. A shard's fingerprint covers
the manifest file and the shard's rows, not the images' own versions (checking 10 M remote files at planning time
would cost 10 M requests)."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from itertools import chain

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ..files import resolve_uri
from . import folder, parquet
from .base import SourceError, digest, file_version, source_files

MANIFEST_EXTENSIONS = (".csv", ".tsv", *parquet.PARQUET_EXTENSIONS)

read = folder.read  # items are (uri, label) pairs, as for folders


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(manifest uri, ((image uri, label), ...), fingerprint) per shard, streamed: one batch of rows in memory."""
    left = cfg.limit
    empty = True
    for uri, info in source_files(cfg.source, MANIFEST_EXTENSIONS, "manifest").items():
        # fingerprint(uri, rows, file_version(info)), its JSON written around each shard's rows
        head, tail = json.dumps(uri), json.dumps(file_version(info), sort_keys=True, default=str)
        for rows, text in _shards(uri, cfg, left):
            empty = False
            left = None if left is None else left - len(rows)
            yield uri, rows, digest(f"[{head}, [{text}], {tail}]")
        if left == 0:
            break
    if empty:
        raise SourceError(f"manifest {cfg.source!r} lists no images")


BATCH_ROWS = 65_536  # manifest rows read at a time


def _shards(uri: str, cfg, limit: int | None) -> Iterator[tuple[tuple, str]]:
    """(rows, their JSON texts joined by ``", "``) of each shard of ``cfg.shard_size`` rows of the manifest ``uri``
    (the last may be shorter), ``limit`` rows at most (None: all): a batch at a time (:func:`_columns`)."""
    size = cfg.shard_size
    rows: list[tuple[str, str | None]] = []  # the rows of a shard begun in the last batch
    texts = pa.array([], pa.string())
    for batch in _batches(uri, cfg.uri_column, cfg.label_column):
        uris, labels, written = _columns(batch, cfg.uri_column, cfg.label_column, _folder(uri))
        if limit is not None:
            uris, labels, written = uris[:limit], labels[:limit], written[:limit]
            limit -= len(uris)
        rows += zip(uris, labels, strict=True)
        texts = pa.concat_arrays([texts, written])
        full = len(rows) - len(rows) % size
        offsets = pa.array(range(0, full + 1, size), pa.int32())
        for k, text in enumerate(pc.binary_join(pa.ListArray.from_arrays(offsets, texts[:full]), ", ").to_pylist()):
            yield tuple(rows[k * size:(k + 1) * size]), text
        rows, texts = rows[full:], texts[full:]
        if limit == 0:
            break
    if rows:
        yield tuple(rows), ", ".join(texts.to_pylist())


def iter_rows(uri: str, uri_column: str, label_column: str) -> Iterator[tuple[str, str | None]]:
    """(image uri, label or None) per manifest row, in order and read a batch at a time; relative URIs are resolved
    against the manifest's folder and rows without a URI are skipped."""
    base = _folder(uri)
    return chain.from_iterable(zip(*_columns(batch, uri_column, label_column, base)[:2], strict=True)
                               for batch in _batches(uri, uri_column, label_column))


def _folder(uri: str) -> str:
    """The folder a manifest is in, as an absolute URI (a local relative path made absolute)."""
    folder = posixpath.dirname(uri)
    return folder if "://" in uri or folder.startswith("/") else posixpath.abspath(folder)


# A URI or label that Arrow's kernels would not write as Python does: a relative URI that normalizing changes (a
# ".", ".." or empty segment), or a character JSON escapes (not printable ASCII, or '"' or '\').
_ODD_URI = r"(^|/)\.\.?(/|$)|//|/$|[^ !#-\[\]-~]"
_ODD_LABEL = r"[^ !#-\[\]-~]"


def _columns(batch: pa.RecordBatch, uri_column: str, label_column: str,
             base: str) -> tuple[list[str], list[str | None], pa.Array]:
    """(image URIs, labels or None, JSON texts) of a batch's rows that have a URI: each URI resolved against the
    folder ``base`` (:func:`~ccs_ray.files.resolve_uri`) and each row written as ``json.dumps([uri, label])`` writes
    it, by Arrow's string kernels; the rare odd row one at a time."""
    uris = _text(batch.column(uri_column))
    keep = pc.fill_null(pc.greater(pc.binary_length(uris), 0), False)
    uris = uris.filter(keep)
    column = batch.column(label_column).filter(keep) if label_column in batch.schema.names else None
    labels, quoted, odd_label = _labels(pa.nulls(len(uris), pa.string()) if column is None else column)
    absolute = pc.or_(pc.match_substring(uris, "://"), pc.starts_with(uris, "/"))
    prefix = resolve_uri("x", base)[:-1]  # the folder, normalized, with its protocol and a trailing "/" (or none)
    resolved = pc.if_else(absolute, uris, pc.binary_join_element_wise(prefix, uris, ""))
    texts = pc.binary_join_element_wise('["', resolved, '", ', pc.fill_null(quoted, "null"), "]", "")
    odd = pc.or_(pc.match_substring_regex(uris, _ODD_URI), pc.fill_null(odd_label, False))
    fixed = resolved.to_pylist()
    rows = pc.indices_nonzero(odd).to_pylist()
    if rows:
        written = texts.to_pylist()
        for i in rows:
            fixed[i] = resolve_uri(uris[i].as_py(), base)
            written[i] = json.dumps([fixed[i], labels[i]])
        texts = pa.array(written, pa.string())
    return fixed, labels, texts


def _labels(column: pa.Array) -> tuple[list[str | None], pa.Array, pa.Array]:
    """(each label or None, each quoted as JSON would be without escapes or null, whether JSON escapes a character
    of it) of a label column; a dictionary of strings (a Parquet label column) has each distinct label written
    once."""
    if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
        values = column.dictionary.to_pylist() + [None]
        indices = column.indices
        quoted, odd = _labels(column.dictionary)[1:]
        return ([values[i] for i in indices.fill_null(len(values) - 1).to_pylist()], pc.take(quoted, indices),
                pc.take(odd, indices))
    text = _text(column)
    return text.to_pylist(), pc.binary_join_element_wise('"', text, '"', ""), pc.match_substring_regex(text, _ODD_LABEL)


def _text(column: pa.Array) -> pa.Array:
    """A column as strings, nulls kept (other types as Python's ``str`` writes them)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
        return column.cast(pa.string())
    return pa.array([None if x is None else str(x) for x in column.to_pylist()], pa.string())


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
            if label_column in names and pa.types.is_string(reader.schema_arrow.field(label_column).type):
                reader = pq.ParquetFile(f, read_dictionary=[label_column])  # labels repeat: each read once
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
