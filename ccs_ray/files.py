"""File helpers every stage shares, over any fsspec URI: atomic writes, table files, relative URIs.

- :func:`atomic_write`: the bytes land under a unique temporary name in the target's folder and are then
  moved into place, so a reader (or a concurrent writer of the same content) never sees half a file.
- :func:`read_table_file`: CSV/TSV, Parquet, JSON (a list of objects) or JSON lines -> a pyarrow Table;
  :func:`write_parquet`: a pyarrow Table -> a Parquet file, written atomically.
- :func:`resolve_uri`: a URI written relative to a folder (a manifest's, a dataset's) made absolute.
- :func:`cache_dir`: the local folder where downloads of one kind (checkpoints, pools, datasets) are kept.
- :func:`unreachable`: a bounded probe of whether a download URL answers (weights, pools), for preflight.
- :func:`use_storage`: the spec's ``[storage]`` options (per fsspec protocol) for every URI of the run, in this
  process and in the Ray workers it starts.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
import urllib.request
import uuid
from pathlib import Path

import fsspec
import fsspec.config
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

#: Seconds a reachability probe of a download URL (model weights, the textspan-general pool) may take.
PROBE_TIMEOUT_S = 5.0
PARQUET_EXTENSIONS = (".parquet", ".pq")
TABLE_FILE_EXTENSIONS = (".csv", ".tsv", *PARQUET_EXTENSIONS, ".json", ".jsonl")


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
    that fails (a full or read-only disk) leaves no temporary file behind."""
    fs, path = fsspec.core.url_to_fs(uri)
    parent, _, name = path.rpartition("/")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:
            pass  # the storage refuses even the removal; the original error says why
        raise


def remove(uri: str) -> None:
    """Remove the file at ``uri`` if it exists."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path)


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` as the Parquet file ``uri`` (:func:`atomic_write`: never half visible)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    atomic_write(uri, buf.getvalue().to_pybytes())


def read_table_file(uri: str) -> pa.Table:
    """A CSV/TSV (empty strings read as nulls), Parquet, JSON (a list of objects) or JSON-lines file."""
    low = uri.lower()
    if not low.endswith(TABLE_FILE_EXTENSIONS):
        raise ValueError(f"{uri}: unsupported table file (use {', '.join(TABLE_FILE_EXTENSIONS)})")
    with fsspec.open(uri, "rb") as f:
        if low.endswith(PARQUET_EXTENSIONS):
            return pq.read_table(f)
        if low.endswith((".csv", ".tsv")):
            return pcsv.read_csv(f, parse_options=pcsv.ParseOptions(delimiter="\t" if low.endswith(".tsv") else ","),
                                 convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        text = f.read().decode("utf-8")
    rows = json.loads(text) if low.endswith(".json") else [json.loads(line) for line in text.splitlines() if line.strip()]
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
