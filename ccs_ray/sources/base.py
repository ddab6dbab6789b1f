"""What every source kind shares: the :class:`Shard` and :class:`Record` types, file listing over fsspec,
fingerprints and chunking."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import fsspec

from ..errors import UserError
from ..files import fs_uri

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".jfif")

# fsspec ``info()`` keys that change when a file's content changes (local, memory, s3, gcs, http, ...).
_VERSION_KEYS = ("size", "mtime", "LastModified", "last_modified", "updated", "ETag", "etag", "md5Hash",
                 "generation", "version_id", "created")


class SourceError(UserError, ValueError):
    """A data source that cannot be planned: wrong path, empty source, unknown or ambiguous kind."""


@dataclass(frozen=True)
class Shard:
    """One independent unit of scan work: enough to re-read exactly the same images."""

    shard_id: str  # "s000042": stable across runs for the same source
    index: int  # 0-based position in the plan; fold = index % folds
    kind: str  # folder | tar | parquet | manifest | probe
    uri: str  # the tar / parquet file, the manifest, the folder or glob, or the probe URI
    items: tuple  # file URIs, (start, stop) rows or probe indices, (uri, label) pairs, or tar keys
    fingerprint: str  # sha256 (16 hex) of what the shard covers and the files' sizes and versions

    def fold(self, folds: int) -> int:
        """The moments fold this shard belongs to."""
        return self.index % folds

    @property
    def size(self) -> int | None:
        """Images (or videos) in the shard; None for a whole tar, whose samples are counted while reading."""
        if self.kind in ("parquet", "probe", "torchvision"):  # (start, stop, ...) index ranges
            return self.items[1] - self.items[0]
        if self.kind == "tar" and not self.items:
            return None
        return len(self.items)


@dataclass(frozen=True)
class Record:
    """One raw input: ``data`` is None exactly when ``error`` says why it could not be read."""

    item: str
    data: bytes | None
    label: str | None = None
    error: str | None = None


def fingerprint(*parts) -> str:
    """Short sha256 (16 hex chars) of JSON-serialisable parts."""
    return digest(json.dumps(parts, sort_keys=True, default=str))


def digest(text: str) -> str:
    """Short sha256 (16 hex chars) of a JSON text: :func:`fingerprint` of the parts it writes."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_version(info: dict) -> list:
    """The parts of an fsspec ``info()`` dict that identify a file's content version."""
    return [[k, info[k]] for k in _VERSION_KEYS if info.get(k) is not None]


def list_files(uri: str, extensions: tuple[str, ...] | None) -> dict[str, dict]:
    """Files under a folder, matching a glob, or one file: ``{uri: info}``, sorted by URI.

    ``extensions`` keeps only names ending so (case-insensitive); None keeps every file.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path) and fs.isdir(path):
        found = fs.find(path, detail=True)
    elif any(c in path for c in "*?["):
        found = fs.glob(path, detail=True)
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise SourceError(f"data source not found: {uri!r} (expected a folder, a glob, or a file)")
    files = {fs_uri(fs, p): info for p, info in found.items()
             if info.get("type") != "directory" and (extensions is None or p.lower().endswith(extensions))}
    return dict(sorted(files.items()))


def source_files(source: str, extensions: tuple[str, ...], what: str) -> dict[str, dict]:
    """:func:`list_files` of a source, or a SourceError naming ``what`` was expected there."""
    files = list_files(source, extensions)
    if not files:
        raise SourceError(f"no {what} ({', '.join(extensions)}) under {source!r}")
    return files


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter), read lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def row_ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row ranges of ``size`` over ``n`` rows (the last may be shorter)."""
    return ((start, min(n, start + size)) for start in range(0, n, size))


def walk_files(uri: str, extensions: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """What :func:`list_files` gives, ``(uri, info)`` sorted by URI, one folder listing at a time: a folder is
    walked depth first with each folder's entries in the order their paths sort (a sub-folder ``b`` sorts as
    ``b/``), so memory holds one listing per level, not every file. A glob or a single file is listed whole."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not (fs.exists(path) and fs.isdir(path)):
        yield from list_files(uri, extensions).items()
        return

    def walk(folder: str) -> Iterator[tuple[str, dict]]:
        entries = fs.ls(folder, detail=True)
        key = lambda e: e["name"].rstrip("/") + ("/" if e["type"] == "directory" else "")  # noqa: E731
        for entry in sorted(entries, key=key):
            name = entry["name"].rstrip("/")
            if entry["type"] == "directory":
                if name != folder.rstrip("/"):
                    yield from walk(name)
            elif name.lower().endswith(extensions):
                yield fs_uri(fs, name), entry

    yield from walk(path.rstrip("/"))


def read_bytes(uri: str) -> Record:
    """The bytes of one file as a Record, or a Record with an "unreadable" error (missing, permission, I/O)."""
    try:
        with fsspec.open(uri, "rb") as f:
            return Record(uri, f.read())
    except Exception as e:  # noqa: BLE001 - missing, permission, I/O, HTTP status, network: one file is lost, not the shard
        return Record(uri, None, error=f"{type(e).__name__}: {e}")
