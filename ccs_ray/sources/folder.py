"""Folders and globs of image files. A file in a sub-folder of the source folder is labelled with the name
of its top sub-folder (ImageFolder layout: ``root/<class>/<file>``); files directly in it, or matched by a
glob, have no label."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import fsspec

from .base import (
    IMAGE_EXTENSIONS,
    Record,
    Shard,
    SourceError,
    chunks,
    file_version,
    fingerprint,
    read_bytes,
    walk_files,
)


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(uri, items, fingerprint) per shard, streamed from the listing; items are ``(file uri, label)`` pairs."""
    root = _root(cfg.source)
    files = islice(walk_files(cfg.source, IMAGE_EXTENSIONS), cfg.limit)
    empty = True
    for chunk in chunks(files, cfg.shard_size):
        empty = False
        items = [(u, _label(u, root)) for u, _ in chunk]
        yield cfg.source, tuple(items), fingerprint(items, [file_version(info) for _, info in chunk])
    if empty:
        raise SourceError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.source!r}")


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
