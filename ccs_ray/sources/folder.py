"""Folders and globs of image files. A file in a sub-folder of the source folder is labelled with the name
of its top sub-folder (ImageFolder layout: ``root/<class>/<file>``); files directly in it, or matched by a
glob, have no label."""

from __future__ import annotations

from typing import Iterator

import fsspec

from .base import IMAGE_EXTENSIONS, Record, Shard, chunks, file_version, fingerprint, read_bytes, source_files


def plan(cfg) -> list[tuple[str, tuple, str]]:
    """(uri, items, fingerprint) per shard; items are ``(file uri, label)`` pairs."""
    files = source_files(cfg.source, IMAGE_EXTENSIONS, "image files")
    uris = list(files)[: cfg.limit]
    root = _root(cfg.source)
    items = [(u, _label(u, root)) for u in uris]
    return [(cfg.source, tuple(chunk), fingerprint(chunk, [file_version(files[u]) for u, _ in chunk]))
            for chunk in chunks(items, cfg.shard_size)]


def read(shard: Shard) -> Iterator[Record]:
    """Each listed file's bytes, in order; a file that cannot be read gives a Record with its error."""
    for uri, label in shard.items:
        rec = read_bytes(uri)
        yield Record(rec.item, rec.data, label, rec.error)


def _root(source: str) -> str | None:
    fs, path = fsspec.core.url_to_fs(source)
    return path.rstrip("/") + "/" if fs.exists(path) and fs.isdir(path) else None


def _label(uri: str, root: str | None) -> str | None:
    if root is None:
        return None
    path = fsspec.core.url_to_fs(uri)[1]
    rel = path[len(root):] if path.startswith(root) else ""
    return rel.split("/")[0] if "/" in rel else None
