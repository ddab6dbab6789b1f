"""Text pools: the candidate descriptions TextSpan picks a head's spans from, one per line.

``load_pool(name_or_uri)`` takes an alias or a path / fsspec URI of a text file:

- ``ccs-basic``: our own pool (``ccs-basic.txt`` here, ~500 short descriptions of colors, shapes,
  textures, counts, letters and digits, places, animals, objects, food, people, art styles, weather,
  materials, lighting); it needs no network.
- ``textspan-general``: TextSpan's general pool of 3,498 lines (what the paper used), downloaded on first
  use from :data:`TEXTSPAN_GENERAL_URL` (override: env ``CCS_RAY_TEXTSPAN_GENERAL_URL``) into the cache
  folder ``$CCS_RAY_CACHE/pools`` (default ``~/.cache/ccs-ray/pools``; a copy put there by hand as
  ``image_descriptions_general.txt`` is used instead of downloading). The file must have 3,498
  non-empty lines; its sha256 is pinned on first use (stored next to it) and checked on every later
  load, and also against env ``CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL`` when that is set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec

from .. import files
from ..errors import UserError
from ..files import atomic_write

TEXTSPAN_GENERAL_URL = ("https://raw.githubusercontent.com/yossigandelsman/clip_text_span/main/"
                        "text_descriptions/image_descriptions_general.txt")
TEXTSPAN_GENERAL_LINES = 3498
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
    return _lines(data, name_or_uri)


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


def _textspan_general() -> bytes:
    """The cached TextSpan general pool: downloaded (or placed there by hand), checked and pinned on first use."""
    path = cache_dir() / "image_descriptions_general.txt"
    pin = path.with_name(path.name + ".sha256")
    url = os.environ.get("CCS_RAY_TEXTSPAN_GENERAL_URL") or TEXTSPAN_GENERAL_URL
    data = path.read_bytes() if path.exists() else _download(url, path)
    digest = hashlib.sha256(data).hexdigest()
    expected = os.environ.get("CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL", "").strip().lower()
    pinned = pin.read_text().strip() if pin.exists() else ""
    where = path if path.exists() else url
    for want, what in ((pinned, f"the pin stored at first use ({pin})"), (expected, "CCS_RAY_POOL_SHA256_TEXTSPAN_GENERAL")):
        if want and digest != want:
            raise PoolError(f"{where} has sha256 {digest}, but {what} says {want}: the file changed; "
                            f"delete {path} and {pin} to download it again")
    n = len([line for line in data.decode("utf-8", "replace").splitlines() if line.strip()])
    if n != TEXTSPAN_GENERAL_LINES:
        raise PoolError(f"{where} has {n} non-empty lines, expected {TEXTSPAN_GENERAL_LINES}: "
                        f"not TextSpan's general pool")
    for target, content in ((path, data), (pin, f"{digest}\n".encode())):
        if not target.exists():
            atomic_write(str(target), content)  # concurrent first uses on one node never see half a file
    return data


def _download(url: str, path: Path) -> bytes:
    import aiohttp  # noqa: PLC0415 - fsspec's HTTP backend; only needed for this download

    http = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=60)}} if url.startswith(("http://", "https://")) else {}
    try:
        with fsspec.open(url, "rb", **http) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - aiohttp, DNS and HTTP errors all mean: not reachable from here
        raise PoolError(
            f"cannot download the textspan-general pool from {url} ({type(e).__name__}: {e}). Offline? Download "
            f"it manually from {TEXTSPAN_GENERAL_URL} and either pass its path (spans.pool = '/path/to/"
            f"image_descriptions_general.txt') or put it at {path}") from None
