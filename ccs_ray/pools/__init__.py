"""Text pools: the candidate descriptions TextSpan picks a head's spans from, one per line.

``load_pool(name_or_uri)`` takes an alias or a path / fsspec URI of a text file:

- ``ccs-basic``: our own pool (``ccs-basic.txt`` here, ~500 short descriptions of colors, shapes,
  textures, counts, letters and digits, places, animals, objects, food, people, art styles, weather,
  materials, lighting); it needs no network.
- ``textspan-general``: TextSpan's general pool (what the paper used), pinned to its published content
  (:data:`TEXTSPAN_GENERAL_SHA256`: 88,419 bytes, 3,498 lines). Downloaded on first use from
  :data:`TEXTSPAN_GENERAL_URL` (override: env ``CCS_RAY_TEXTSPAN_GENERAL_URL``) into the cache folder
  ``$CCS_RAY_CACHE/pools`` (default ``~/.cache/ccs-ray/pools``), written there only once verified. Offline,
  download it elsewhere and either put it in that folder or set
  ``spans.pool = "file:///path/to/image_descriptions_general.txt"`` (a plain path works too).

Every load of the published file is verified against the pin: the cached copy, a download, and any path or
URI whose file name is ``image_descriptions_general.txt``. A mismatch is a :class:`PoolError`.

``check_pool(name_or_uri)`` is the preflight check: it raises :class:`PoolError` (one line) unless the pool
loads; for ``textspan-general`` not yet cached it only probes, within :data:`ccs_ray.files.PROBE_TIMEOUT_S` seconds,
that the download URL answers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec

from .. import files
from ..errors import UserError
from ..files import atomic_write, unreachable

TEXTSPAN_GENERAL_URL = ("https://raw.githubusercontent.com/yossigandelsman/clip_text_span/main/"
                        "text_descriptions/image_descriptions_general.txt")
TEXTSPAN_GENERAL_FILE = "image_descriptions_general.txt"
TEXTSPAN_GENERAL_SHA256 = "39c6bf3e788684d9e0e8afa902c13aae1ee8eafefdbab94ba923fd05b9038630"
TEXTSPAN_GENERAL_BYTES = 88_419
TEXTSPAN_GENERAL_LINES = 3_498
_HERE = Path(__file__).parent
ALIASES = ("ccs-basic", "textspan-general")


class PoolError(UserError, ValueError):
    """A pool that cannot be loaded: missing, empty, unreachable, or not the file it should be."""


def load_pool(name_or_uri: str) -> list[str]:
    """The pool's descriptions: stripped, non-empty lines, in file order."""
    if name_or_uri == "ccs-basic":
        return _lines((_HERE / "ccs-basic.txt").read_bytes(), name_or_uri)
    if name_or_uri == "textspan-general":
        return _lines(_textspan_general(), name_or_uri)
    try:
        with fsspec.open(name_or_uri, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:
        raise PoolError(f"text pool {name_or_uri!r} cannot be read ({type(e).__name__}: {e}); give an alias "
                        f"({', '.join(ALIASES)}) or a path/URI of a text file with one description per line") from None
    if name_or_uri.rstrip("/").rsplit("/", 1)[-1] == TEXTSPAN_GENERAL_FILE:
        _verify(data, name_or_uri, f"download it again from {TEXTSPAN_GENERAL_URL}")
    return _lines(data, name_or_uri)


def check_pool(name_or_uri: str) -> None:
    """Raise :class:`PoolError` unless the pool loads; ``textspan-general`` not yet cached needs its download
    URL to answer within :data:`ccs_ray.files.PROBE_TIMEOUT_S` seconds."""
    path = cache_dir() / TEXTSPAN_GENERAL_FILE
    if name_or_uri == "textspan-general" and not path.exists():
        url = _url()
        why = unreachable(url)
        if why:
            raise PoolError(f"the textspan-general pool is not cached at {path} and {url} is not reachable "
                            f"({why}). {_offline_fix(path)}")
        return
    load_pool(name_or_uri)


def cache_dir() -> Path:
    """Where downloaded pools are kept: ``$CCS_RAY_CACHE/pools`` or ``~/.cache/ccs-ray/pools``."""
    return files.cache_dir("pools")


def _lines(data: bytes, name: str) -> list[str]:
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise PoolError(f"text pool {name!r} is not UTF-8 text: {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise PoolError(f"text pool {name!r} is empty: expected one description per line")
    return lines


def _verify(data: bytes, where: str, fix: str) -> None:
    """Raise :class:`PoolError` unless ``data`` is TextSpan's published general pool."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != TEXTSPAN_GENERAL_SHA256:
        raise PoolError(f"{where} is not TextSpan's published general pool: sha256 {digest} ({len(data):,} bytes), "
                        f"expected {TEXTSPAN_GENERAL_SHA256} ({TEXTSPAN_GENERAL_BYTES:,} bytes, "
                        f"{TEXTSPAN_GENERAL_LINES:,} lines); {fix}")


def _url() -> str:
    return os.environ.get("CCS_RAY_TEXTSPAN_GENERAL_URL") or TEXTSPAN_GENERAL_URL


def _offline_fix(path: Path) -> str:
    return (f"Offline? Download it from {TEXTSPAN_GENERAL_URL} and set "
            f'spans.pool = "file:///path/to/{TEXTSPAN_GENERAL_FILE}", or put it at {path}')


def _textspan_general() -> bytes:
    """The TextSpan general pool from the cache, else downloaded and cached once verified."""
    path = cache_dir() / TEXTSPAN_GENERAL_FILE
    if path.exists():
        data = path.read_bytes()
        _verify(data, str(path), f"delete it to download it again from {_url()}")
        return data
    url = _url()
    data = _download(url, path)
    _verify(data, f"the download from {url}", f"download it by hand from {TEXTSPAN_GENERAL_URL}")
    atomic_write(str(path), data)  # concurrent first uses on one node never see half a file
    return data


def _download(url: str, path: Path) -> bytes:
    import aiohttp  # noqa: PLC0415 - fsspec's HTTP backend; only needed for this download

    is_http = url.startswith(("http://", "https://"))
    http = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=60)}} if is_http else {}
    try:
        with fsspec.open(url, "rb", **http) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - aiohttp, DNS and HTTP errors all mean: not reachable from here
        raise PoolError(f"cannot download the textspan-general pool from {url} ({type(e).__name__}: {e}). "
                        f"{_offline_fix(path)}") from None
