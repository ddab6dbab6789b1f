"""A pass actor's checkpoints: constant-size data files, and an append-only log of the shards they cover.

An actor of a pass (:mod:`ccs_ray.passes`) commits its accumulator as numbered checkpoints of its own folder
(:func:`ccs_ray.files.commit_write`). The data file holds only the accumulated numbers (moments, top images), so
its size does not grow with the shards covered. The records of the shards (counts, errors, where and when) go to
the folder's shard log ``<folder>/shards/NNNNNNNN.jsonl``, one part per checkpoint, written (atomically) before
the checkpoint's data file is committed:

- line 1: ``{"prev": k}``, the number of the checkpoint the actor had committed before (0: none);
- every further line: one shard record (``shard_id`` among its keys), of the shards covered since checkpoint k.

The shards committed checkpoint n covers are the records of the parts on its chain n -> prev -> ... -> 0, read by
:func:`read_log`. A part off the chain, whose checkpoint was never committed (the write failed, or the actor died
first), is ignored: the next part, whose ``prev`` is still k, holds its records again. A checkpoint of an earlier
version has no part: its records are in its data file (:func:`read_log` returns None for it).
"""

from __future__ import annotations

import json

import fsspec

from .files import atomic_write, commit_write, folder_files
from .jsonout import dumps

LOG_FOLDER = "shards"


def _part(folder: str, seq: int) -> str:
    return f"{folder.rstrip('/')}/{LOG_FOLDER}/{seq:08d}.jsonl"


def split(uri: str) -> tuple[str, int]:
    """(folder, checkpoint number) of a checkpoint's data file ``<folder>/NNNNNNNN<suffix>``."""
    folder, name = uri.rstrip("/").rsplit("/", 1)
    return folder, int(name[:8])


def read_log(uri: str) -> dict[str, dict] | None:
    """Shard id -> record of every shard the committed checkpoint ``uri`` covers, from its folder's shard log;
    None when the checkpoint has no log part (written by an earlier version: its records are in the file)."""
    folder, seq = split(uri)
    records: dict[str, dict] = {}
    first = True
    while seq:
        try:
            with fsspec.open(_part(folder, seq), "rb") as f:
                lines = f.read().decode().splitlines()
        except FileNotFoundError:
            if first:
                return None
            raise ValueError(f"{folder}: the shard log of checkpoint {seq} is missing (its chain is broken)") from None
        first = False
        for line in lines[1:]:
            r = json.loads(line)
            records.setdefault(r["shard_id"], r)
        seq = json.loads(lines[0])["prev"]
    return records


def sweep_log(uri: str) -> int:
    """Remove the parts of the shard log of ``uri``'s folder that are not on the chain of checkpoint ``uri`` (the
    folder's newest committed one). Call it when no writer uses the folder. Returns how many were removed."""
    folder, seq = split(uri)
    fs, path = fsspec.core.url_to_fs(f"{folder}/{LOG_FOLDER}")
    chain = set()
    while seq and fs.exists(f"{path}/{seq:08d}.jsonl"):  # none for a checkpoint of an earlier version
        chain.add(f"{seq:08d}.jsonl")
        with fs.open(f"{path}/{seq:08d}.jsonl", "rb") as f:
            seq = json.loads(f.readline())["prev"]
    stale = sorted(set(folder_files(fs, path)) - chain)
    for name in stale:
        fs.rm(f"{path}/{name}")
    return len(stale)


class Checkpointer:
    """Writes one actor's checkpoints to ``folder`` (data files ending in ``suffix``) with their shard log.

    ``add`` records a shard once the accumulator holds it; ``commit(data)`` writes the log part of the shards
    added since the last committed checkpoint, then commits ``data`` (the accumulator's bytes without records) as
    the next checkpoint, and returns those shard ids. A failed commit keeps them for the next one; its number is
    never used again.
    """

    def __init__(self, folder: str, suffix: str):
        self.folder, self.suffix = folder.rstrip("/"), suffix
        self.seq = 0  # the last number used
        self.committed = 0  # the last number committed
        self.pending: dict[str, dict] = {}

    def add(self, record: dict) -> None:
        self.pending[record["shard_id"]] = record

    def commit(self, data: bytes) -> list[str]:
        if not self.pending:
            return []
        self.seq += 1
        lines = [dumps({"prev": self.committed})] + [dumps(r) for r in self.pending.values()]
        atomic_write(_part(self.folder, self.seq), ("\n".join(lines) + "\n").encode())
        commit_write(self.folder, self.seq, data, self.suffix)
        self.committed, done, self.pending = self.seq, list(self.pending), {}
        return done
