"""Preflight of the URIs a spec names: no shipped placeholder, every scheme's fsspec package installed, files
readable, the results root writable (a probe file created and removed) and the run resolved
(:func:`~ccs_ray.runs.resolve_run`)."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable

import fsspec
from fsspec.registry import known_implementations

from ..files import is_local
from ..model_keys import ModelKey
from ..runs import RunState, resolve_run
from ..spec import Spec
from .problems import Checks

PLACEHOLDER = "YOUR-"
#: fsspec packages that an extra of ccs-ray installs: ``pip install "ccs-ray[EXTRA]"``.
EXTRAS = {"s3fs": "s3", "gcsfs": "gcs"}


def _spec_uris(spec: Spec) -> list[tuple[str, str, str]]:
    """(key, URI, what to set it to) of every URI the run reads or writes, for the stages it runs."""
    stages = set(spec.stages)
    uris = [("results.root", spec.results_root, "a writable folder or URI (--results URI)")]
    if {"scan", "explain"} & stages:
        uris.append(("data.source", spec.data.source,
                     "your images: a folder, tar shards, parquet or a manifest (--set data.source=URI)"))
    if "spans" in stages and "://" in spec.spans.pool:
        uris.append(("spans.pool", spec.spans.pool, "a text file of descriptions, or a pool alias"))
    if "judge" in stages and spec.judge.cache:
        uris.append(("judge.cache", spec.judge.cache, "a writable folder or URI, or drop it"))
    if "prune" in stages:
        uris.append(("evals.data_root", spec.evals.data_root or "",
                     "the folder holding the datasets as their releases unpack (--set evals.data_root=PATH)"))
        for kind in ("classification", "video", "bias"):
            for i, entry in enumerate(getattr(spec.evals, kind)):
                uris.append((f"evals.{kind}[{i}].source", entry.source, f"your copy of {entry.name}"))
                captions = getattr(entry, "captions", None)
                if captions and "://" in captions:
                    uris.append((f"evals.{kind}[{i}].captions", captions, f"the captions of {entry.name}"))
    for key in spec.models.keys:
        parsed = ModelKey.parse(key) if "@" in key else None
        if parsed is not None and parsed.checkpoint and parsed.weights:
            uris.append((f"models.keys: {key!r}", parsed.weights, "your checkpoint's path or URI"))
    return [(key, uri, what) for key, uri, what in uris if uri]


def _missing_package(uri: str) -> tuple[str, str] | None:
    """(scheme, how to install its fsspec package) when a scheme of ``uri`` (``a::b://...`` chains too) needs a
    package that is not installed, else None."""
    for part in uri.split("::"):
        scheme = part.split("://", 1)[0] if "://" in part else "file"
        impl = known_implementations.get(scheme)
        if impl is None:  # ours (probe://, torchvision://) or registered at run time
            continue
        package = impl["class"].split(".", 1)[0]
        if importlib.util.find_spec(package) is None:
            extra = EXTRAS.get(package)
            return scheme, f'pip install "ccs-ray[{extra}]"' if extra else f"{impl['err']} (pip install {package})"
    return None


def check_uris(checks: Checks, spec: Spec) -> set[str]:
    """Shipped placeholders (one problem each) and schemes whose package is missing (one problem per scheme);
    returns the keys whose URI cannot be used, which the later checks skip."""
    unusable: set[str] = set()
    missing: dict[str, tuple[str, list[str]]] = {}  # scheme -> (how to install, keys)
    root = spec.evals.data_root or ""
    for key, uri, what in _spec_uris(spec):
        if PLACEHOLDER in uri:
            under_root = key != "evals.data_root" and PLACEHOLDER in root and uri.startswith(root)
            if not under_root:  # a source under a placeholder evals.data_root: that key's one problem says it
                checks.problems.append(f"{key}: {uri} is a placeholder: set it to {what}")
            unusable.add(key)
        gap = _missing_package(uri)
        if gap is not None:
            missing.setdefault(gap[0], (gap[1], []))[1].append(key)
            unusable.add(key)
    for scheme, (install, keys) in missing.items():
        more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        checks.problems.append(f"{scheme}:// needs {install} (used by {keys[0]}{more})")
    return unusable


def readable(uri: str, what: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{what} not found: {uri}")
    with fs.open(path, "rb") as f:
        f.read(1)


def check_results(checks: Checks, spec: Spec, resume: bool, run_id: str | None, dry_run: bool) -> RunState | None:
    """The results root is writable; the run the command works in (:func:`~ccs_ray.runs.resolve_run`), or None
    when it cannot be resolved (a problem says why)."""
    root = spec.results_root
    fs, path = fsspec.core.url_to_fs(root)
    existing = path if fs.exists(path) else next((p for p in _parents(path) if fs.exists(p)), None)
    local = is_local(fs)
    if local and (existing is None or not os.access(existing, os.W_OK)):
        checks.problems.append(f"results.root: {root!r} is not writable ({existing or '/'} refuses writes); pass "
                               f"--results with a writable folder or URI")
    elif not (dry_run and existing != path):  # a plan writes nothing, not even the root

        def write_probe():  # create, write and delete a file; folders made for it are removed again
            probe = f"{path.rstrip('/')}/.ccs-ray-probe-{uuid.uuid4().hex}"
            try:
                fs.makedirs(path, exist_ok=True)
                with fs.open(probe, "wb") as f:
                    f.write(b"ccs-ray")
            finally:
                if fs.exists(probe):
                    fs.rm(probe)
                for made in [path, *_parents(path)] if local else []:
                    if made == existing or not fs.exists(made):
                        break
                    fs.rmdir(made)

        checks.run("results.root", lambda: _not_writable(write_probe, root))
    return checks.run("--resume" if resume else "--run-id", resolve_run, spec, resume, run_id)


def _parents(path: str):
    while path not in ("", "/"):
        path = os.path.dirname(path.rstrip("/")) or "/"
        yield path


def _not_writable(write: Callable[[], None], root: str) -> None:
    try:
        write()
    except OSError as e:
        raise OSError(f"{root!r} is not writable ({e.strerror or e}); pass --results with a writable folder or URI, "
                      f"or free space there") from None
