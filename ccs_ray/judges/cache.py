"""Content-addressed answer cache: sha256 of (endpoint, model, messages, parameters) -> the parsed answer.

One JSON file per key under any fsspec root (``ROOT/ab/abcdef....json``), written to a unique temporary
name and then moved into place, so concurrent workers never see a partial file; two workers writing the
same key write the same content. Only valid (parsed) answers are stored. API keys are never part of it.
"""

from __future__ import annotations

import hashlib
import json

import fsspec

from ..files import atomic_write


def json_digest(value) -> str:
    """Hex sha256 of the canonical JSON of ``value`` (sorted keys, no spaces, UTF-8)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(endpoint: str, model: str, messages: list[dict], params: dict) -> str:
    """:func:`json_digest` of everything that determines an answer."""
    return json_digest({"endpoint": endpoint.rstrip("/"), "model": model, "messages": messages, "params": params})


class AnswerCache:
    """``get(key) -> dict | None`` and ``put(key, entry)`` over files under ``root``."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.root)

    def _file(self, key: str) -> str:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be 64 lower-case hex digits, got {key!r}")
        return f"{self.path}/{key[:2]}/{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            with self.fs.open(self._file(key), "rb") as f:
                return json.loads(f.read())
        except (FileNotFoundError, json.JSONDecodeError):  # absent, or torn by a non-atomic store: a miss
            return None

    def put(self, key: str, entry: dict) -> None:
        self._file(key)  # the key is checked before anything is written
        atomic_write(f"{self.root}/{key[:2]}/{key}.json", json.dumps(entry, sort_keys=True).encode())
