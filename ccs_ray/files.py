"""File helpers every stage shares, over any fsspec URI: atomic writes, table files, relative URIs.

- :func:`atomic_write`: the bytes land under a unique temporary name (``.NAME.<32 hex>.tmp``, which no
  reader's pattern matches) in the target's folder and are then moved into place, so on local disk a reader
  (or a concurrent writer of the same content) never sees half a file. :func:`sweep_tmp` removes the
  temporary files a killed writer left.
- Commit folders, for checkpoints that must never be half visible even where a move is a copy then a delete
  (object stores) and an interrupted copy can leave a truncated file under its final name:
  :func:`commit_write` writes the data file ``NNNNNNNN<suffix>`` (NNNNNNNN: the checkpoint's sequence number)
  and then the marker ``NNNNNNNN.commit``, a small JSON ``{"file": data file name, "size": bytes}``, and only
  then removes older checkpoints; nothing is overwritten in place. :func:`latest_committed` reads the newest
  checkpoint whose marker parses and whose data file has the recorded size: a torn marker, data without a
  marker and truncated data are never visible. The size check catches every interrupted write (a write or
  copy cut short is short) at the cost of a listing; the data itself is not re-read. :func:`sweep_commits`
  removes all but the newest committed checkpoint of a folder.
- :class:`IncompleteFileError`: a file cut short or not in its format, named with what to do;
  :func:`read_parquet` raises it for a Parquet file.
- :func:`read_table_file`: CSV/TSV, Parquet, JSON (a list of objects) or JSON lines -> a pyarrow Table;
  :func:`write_parquet`: a pyarrow Table -> a Parquet file, written atomically.
- :func:`resolve_uri`: a URI written relative to a folder (a manifest's, a dataset's) made absolute.
- :func:`cache_dir`: the local folder where downloads of one kind (checkpoints, pools, datasets) are kept.
- :func:`unreachable`: a bounded probe of whether a download URL answers (weights, pools), for preflight.
- :func:`use_storage`: the spec's ``[storage]`` options (per fsspec protocol) for every URI of the run, in this
  process and in the Ray workers it starts.
- Writes that tell the truth: a write the storage refuses raises :class:`WriteError`, whose message is the cause in
  words and the URI (``no space left on device while writing <uri>``). While a run's :class:`WriteGuard` is in
  force in a process (:func:`guard_writes`: the run's driver and every actor of the run), a write under the run's
  results root first checks that the run's record is still there, and raises :class:`RootGone` instead of creating
  the root (or the run's folders) again: a root deleted or unmounted during a run is reported, never recreated.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import fsspec.config
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import UserError

#: Seconds a reachability probe of a download URL (model weights, the textspan-general pool) may take.
PROBE_TIMEOUT_S = 5.0
PARQUET_EXTENSIONS = (".parquet", ".pq")
TABLE_FILE_EXTENSIONS = (".csv", ".tsv", *PARQUET_EXTENSIONS, ".json", ".jsonl")
COMMIT_SUFFIX = ".commit"
_TMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # atomic_write's temporary names
_SEQ = re.compile(r"^(\d{8})(?!\d)")  # a commit folder's file names start with their checkpoint's number


class IncompleteFileError(UserError, ValueError):
    """A file cut short (an interrupted write or copy) or not in the format its name says."""


class WriteError(OSError):
    """A write the storage refused (full, read-only, no permission, unreachable): ``errno`` is the storage's, the
    message says why in words and names the URI."""

    @classmethod
    def of(cls, error: OSError, uri: str) -> WriteError:
        """``error`` of the storage, raised while writing ``uri``."""
        why = (error.strerror or str(error) or type(error).__name__).strip()
        return cls(error.errno, f"{why[:1].lower()}{why[1:]} while writing {uri}")

    def __str__(self) -> str:
        return str(self.strerror)


class RootGone(UserError, OSError):
    """A run's results root (or its run record) vanished during the run; nothing was written there."""


class WriteGuard:
    """The writes of one run: every write under ``root`` needs the file ``record`` (the run's ``run.json``)."""

    def __init__(self, root: str, record: str):
        self.root, self.record = root.rstrip("/"), record

    def check(self, uri: str) -> None:
        """:class:`RootGone` when ``uri`` lies under the root and the run's record is gone."""
        if (uri == self.root or uri.startswith(self.root + "/")) and not exists(self.record):
            raise RootGone(f"the results root {self.root} disappeared during the run (its run record {self.record} "
                           f"is gone); nothing was written there again")


_GUARDS: list[WriteGuard] = []  # the guards in force in this process


@contextlib.contextmanager
def guard_writes(guard: WriteGuard) -> Iterator[WriteGuard]:
    """Check every :func:`atomic_write` under ``guard.root`` in this process against ``guard`` while in the block."""
    _GUARDS.append(guard)
    try:
        yield guard
    finally:
        _GUARDS.remove(guard)


def keep_guard(guard: WriteGuard) -> None:
    """Put ``guard`` in force for the rest of this process: a run's actor, which lives and dies with its run."""
    _GUARDS[:] = [g for g in _GUARDS if g.root != guard.root] + [guard]


def cache_dir(kind: str) -> Path:
    """``$CCS_RAY_CACHE/<kind>``, default ``~/.cache/ccs-ray/<kind>`` (not created)."""
    root = os.environ.get("CCS_RAY_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ccs-ray") / kind


def use_storage(options: dict[str, dict]) -> dict[str, str]:
    """Apply ``{protocol: {option: value}}`` (e.g. ``{"s3": {"endpoint_url": ...}}``) to every fsspec filesystem
    made from now on, here and in worker processes started later (through ``FSSPEC_<PROTOCOL>`` variables).
    Returns those environment variables, for workers started elsewhere (a Ray job's runtime env)."""
    env = {}
    for protocol, opts in options.items():
        fsspec.config.conf.setdefault(protocol, {}).update(opts)
        env[f"FSSPEC_{protocol.upper()}"] = os.environ[f"FSSPEC_{protocol.upper()}"] = json.dumps(opts)
    return env


def atomic_write(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` (parent folders created) through a unique temporary name and a move; a write
    that fails (a full or read-only disk: :class:`WriteError`) leaves no temporary file behind. Under a guarded
    run's root, :class:`RootGone` instead when the run's record vanished (the module docstring)."""
    for guard in _GUARDS:
        guard.check(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException as e:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:
            pass  # the storage refuses even the removal; the original error says why
        if isinstance(e, OSError) and not isinstance(e, (WriteError, FileNotFoundError)):
            raise WriteError.of(e, uri) from e
        raise


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is this machine's file system (plain paths, ``file://``)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def fs_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI of ``path`` of ``fs`` (as a listing or glob returns it, without its protocol) that fsspec opens
    again: a plain path on local disk, else with the protocol (``s3://bucket/key``)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def folder_files(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, int]:
    """File name -> size in bytes of the files directly in folder ``path`` (none when it does not exist),
    listed afresh (a cached listing of an object store would miss a newer checkpoint)."""
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e["size"] for e in entries if e["type"] == "file"}


def _newest_commit(fs: fsspec.AbstractFileSystem, path: str, files: dict[str, int],
                   suffix: str | None = None) -> tuple[str, str] | None:
    """(marker, data file) names of the newest complete checkpoint among ``files`` of folder ``path``
    (with data files ending in ``suffix``, when given), or None."""
    for marker in sorted((n for n in files if n.endswith(COMMIT_SUFFIX) and _SEQ.match(n)), reverse=True):
        try:
            with fs.open(f"{path}/{marker}", "rb") as f:
                record = json.loads(f.read())
            name, size = record["file"], record["size"]
        except (ValueError, TypeError, KeyError, FileNotFoundError):  # torn (cut-short JSON) or gone meanwhile
            continue
        seq = marker[:8]
        if (isinstance(name, str) and name.startswith(seq) and name != marker
                and (suffix is None or name == seq + suffix) and files.get(name) == size):
            return marker, name
    return None


def commit_write(folder: str, seq: int, data: bytes, suffix: str) -> str:
    """Write checkpoint number ``seq`` (1, 2, ...: above every number already in ``folder``) as
    ``folder/{seq:08d}{suffix}``, commit it with its marker, then remove the folder's older checkpoints
    (the module docstring). One writer per folder. Returns the data file's URI.

    Until the marker is complete, :func:`latest_committed` still returns the previous checkpoint.
    """
    fs, path = fsspec.core.url_to_fs(folder)
    path, folder = path.rstrip("/"), folder.rstrip("/")
    older = folder_files(fs, path)
    taken = sorted(n for n in older if (m := _SEQ.match(n)) and int(m[1]) >= seq)
    if taken:
        raise ValueError(f"{folder}: already holds {taken[0]}; checkpoint {seq} must be numbered above "
                         f"every checkpoint in the folder (nothing there is overwritten)")
    name = f"{seq:08d}{suffix}"
    atomic_write(f"{folder}/{name}", data)
    atomic_write(f"{folder}/{seq:08d}{COMMIT_SUFFIX}", json.dumps({"file": name, "size": len(data)}).encode())
    # Markers first: a removal cut short leaves data without a marker (ignored), never a marker without data.
    for old in sorted((n for n in older if _SEQ.match(n)), key=lambda n: not n.endswith(COMMIT_SUFFIX)):
        try:
            fs.rm(f"{path}/{old}")
        except OSError:
            pass  # the new checkpoint is committed; sweep_commits removes what is left
    return f"{folder}/{name}"


def latest_committed(folder: str, suffix: str) -> str | None:
    """URI of the newest committed data file ``NNNNNNNN<suffix>`` in ``folder`` (:func:`commit_write`), or
    None when it holds none: a torn marker, data without a marker and data of the wrong size are ignored."""
    fs, path = fsspec.core.url_to_fs(folder)
    path = path.rstrip("/")
    newest = _newest_commit(fs, path, folder_files(fs, path), suffix)
    return f"{folder.rstrip('/')}/{newest[1]}" if newest else None


def sweep_commits(folder: str) -> int:
    """Remove every file of a commit folder but its newest committed checkpoint (data file and marker):
    uncommitted or superseded data, torn markers, temporary files. Call it when no writer uses the folder.
    Returns how many files were removed."""
    fs, path = fsspec.core.url_to_fs(folder)
    path = path.rstrip("/")
    files = folder_files(fs, path)
    keep = set(_newest_commit(fs, path, files) or ())
    stale = sorted(set(files) - keep, key=lambda n: not n.endswith(COMMIT_SUFFIX))  # markers first
    for name in stale:
        fs.rm(f"{path}/{name}")
    return len(stale)


def sweep_tmp(folder: str, older_than_s: float = 0.0) -> int:
    """Remove :func:`atomic_write`'s temporary files (``.NAME.<32 hex>.tmp``) anywhere under ``folder``
    last modified more than ``older_than_s`` seconds ago (0: all; give a writer's longest write when other
    writers may be at work). Returns how many were removed."""
    fs, path = fsspec.core.url_to_fs(folder)
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    now = time.time()
    stale = [p for p in fs.find(path) if _TMP.match(p.rsplit("/", 1)[-1])
             and (older_than_s <= 0 or now - fs.modified(p).timestamp() > older_than_s)]
    for p in stale:
        fs.rm(p)
    return len(stale)


def exists(uri: str) -> bool:
    """Whether a file or folder is at ``uri`` (any fsspec URI)."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    """Remove the file or folder (with what it holds) at ``uri`` if it exists."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` as the Parquet file ``uri`` (:func:`atomic_write`: never half visible)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    atomic_write(uri, buf.getvalue().to_pybytes())


def read_parquet(fs: fsspec.AbstractFileSystem, path: str) -> pa.Table:
    """The Parquet file ``path`` of ``fs``; :class:`IncompleteFileError`, naming it, when it is cut short or
    not Parquet."""
    with fs.open(path, "rb") as f:
        blob = f.read()
    try:
        return pq.read_table(pa.BufferReader(blob))
    except (pa.ArrowInvalid, OSError) as e:  # an in-memory buffer: the bytes, not the storage, are at fault
        why = str(e).removeprefix("Could not open Parquet input source '<Buffer>': ")
        raise IncompleteFileError(
            f"{fs_uri(fs, path)}: incomplete or not a Parquet file ({why}); an interrupted write or copy leaves "
            f"such a file: remove it, then re-run the stage that wrote it (or copy the file again)") from None


def read_table_file(uri: str) -> pa.Table:
    """A CSV/TSV (empty strings read as nulls), Parquet, JSON (a list of objects) or JSON-lines file."""
    low = uri.lower()
    if not low.endswith(TABLE_FILE_EXTENSIONS):
        raise ValueError(f"{uri}: unsupported table file (use {', '.join(TABLE_FILE_EXTENSIONS)})")
    if low.endswith(PARQUET_EXTENSIONS):
        return read_parquet(*fsspec.core.url_to_fs(uri))
    with fsspec.open(uri, "rb") as f:
        if low.endswith((".csv", ".tsv")):
            return pcsv.read_csv(f, parse_options=pcsv.ParseOptions(delimiter="\t" if low.endswith(".tsv") else ","),
                                 convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        text = f.read().decode("utf-8")
    rows = (json.loads(text) if low.endswith(".json")
            else [json.loads(line) for line in text.splitlines() if line.strip()])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{uri}: expected a list of objects (one per row)")
    columns = {}
    for name in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(name) for r in rows]
        if any(isinstance(v, list) for v in values):  # "a caption or a list of captions": all lists
            values = [v if v is None or isinstance(v, list) else [v] for v in values]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # other mixes of types: read as text
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def resolve_uri(uri: str, base: str) -> str:
    """``uri`` as is when absolute (a scheme or a leading ``/``), else joined to the folder ``base``
    (keeping ``base``'s protocol): ``resolve_uri("img/1.jpg", "s3://b/set") == "s3://b/set/img/1.jpg"``."""
    if "://" in uri or uri.startswith("/"):
        return uri
    protocol, folder = fsspec.core.split_protocol(base)
    path = posixpath.normpath(posixpath.join(folder, uri))
    return f"{protocol}://{path}" if protocol else path


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """None when ``url`` answers an HTTP HEAD with success (or, for other URIs, the file exists) within ``timeout``
    seconds (default :data:`PROBE_TIMEOUT_S`), else why not.

    The probe runs in a daemon thread, so a hanging DNS lookup or connection cannot hold the caller longer.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            if url.startswith(("http://", "https://")):
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            else:
                fs, path = fsspec.core.url_to_fs(url)
                if not fs.exists(path):
                    raise FileNotFoundError(path)
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - every failure means: not reachable from here
            outcome.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
