"""Manifests: CSV/TSV or Parquet tables with a column of image URIs (any fsspec URI; a relative one is
taken relative to the manifest's folder) and an optional label column. Rows keep the manifest's order and
are cut into shards of ``shard_size``. A shard's fingerprint covers the manifest file and the shard's rows,
not the images' own versions (checking 10 M remote files at planning time would cost 10 M requests)."""

from __future__ import annotations

import posixpath

from ..files import read_table_file, resolve_uri
from . import folder, parquet
from .base import SourceError, chunks, file_version, fingerprint, source_files

MANIFEST_EXTENSIONS = (".csv", ".tsv", *parquet.PARQUET_EXTENSIONS)

read = folder.read  # items are (uri, label) pairs, as for folders


def plan(cfg) -> list[tuple[str, tuple, str]]:
    """(manifest uri, ((image uri, label), ...), fingerprint) per shard."""
    manifests = source_files(cfg.source, MANIFEST_EXTENSIONS, "manifest")
    out, left = [], cfg.limit
    for uri, info in manifests.items():
        rows = read_rows(uri, cfg.uri_column, cfg.label_column)[:left]
        for chunk in chunks(rows, cfg.shard_size):
            out.append((uri, tuple(chunk), fingerprint(uri, chunk, file_version(info))))
        if left is not None:
            left -= len(rows)
            if left == 0:
                break
    if not out:
        raise SourceError(f"manifest {cfg.source!r} lists no images")
    return out


def read_rows(uri: str, uri_column: str, label_column: str) -> list[tuple[str, str | None]]:
    """(image uri, label or None) per manifest row, relative URIs resolved against the manifest's folder."""
    table = read_table_file(uri)
    if uri_column not in table.column_names:
        raise SourceError(f"manifest {uri}: no URI column {uri_column!r} (set data.uri_column); "
                          f"columns: {table.column_names}")
    base = posixpath.dirname(uri)
    uris = [None if u is None else resolve_uri(str(u), base) for u in table.column(uri_column).to_pylist()]
    labels = (table.column(label_column).to_pylist() if label_column in table.column_names
              else [None] * table.num_rows)
    return [(u, None if lab is None else str(lab)) for u, lab in zip(uris, labels) if u]

