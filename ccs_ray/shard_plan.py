"""A pass's shard plan: the source listed once per run, what the driver holds of a source of any size.

:meth:`ShardPlan.index` reads the source once, as a stream (:func:`~ccs_ray.sources.iter_shards`: one listing, tar or
batch of manifest rows at a time). It keeps in memory each shard's id and fingerprint (about 150 bytes per shard,
whatever the shard holds) and spools the shards to a local folder in chunks of at most :data:`PART_SHARDS` shards
and :data:`CHUNK_BYTES` bytes of items: each chunk is a file of the shards without their items and a file of each
shard's items packed into bytes (:func:`pack_items`). It hands every :data:`PART_SHARDS` shards, without their items,
to a callback. Reading the plan reads the spool, never the source again, so preflight's plan serves the scan, the
cost measurement and the explain pass of the same run, and holds one chunk at a time: a shard's items are in the
driver's memory, as bytes, only while it waits to be dispatched; a pass's driver hands them to the decoders packed
(:meth:`ShardPlan.packed`) and reads them back by shard (:meth:`ShardPlan.packed_items`) when an actor dies with the
shard unsaved. The spool is removed when the plan is garbage collected or the process ends.

A source changed during a run is noticed when the run is resumed: the new plan's fingerprints differ from the
checkpoints' (:func:`~ccs_ray.passes.covered_shards`).

    plan = ShardPlan(data)              # DataConfig
    plan.index(on_part)                 # ids and fingerprints; on_part(shards, part) per PART_SHARDS shards,
                                        # each with items=(), so that a part never holds the source's rows
    for shard in plan: ...              # the same shards, in the same order, with their items (from the spool)
    for shard, items in plan.packed():  # the same shards without items, and their items packed (unpack_items)
"""

from __future__ import annotations

import bisect
import gc
import marshal
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from .sources import Shard, detect_kind, iter_shards

PART_SHARDS = 10_000  # shards per part handed to ShardPlan.index's callback and by ShardPlan.parts, at most per chunk
CHUNK_BYTES = 1 << 24  # packed items per spooled chunk, at most (a chunk holds at least one shard)


def pack_items(items: tuple) -> bytes:
    """A shard's items as bytes (``marshal``: items are plain data, str, int, float, None and tuples of them): packed
    once while indexing, they go to a decoder as they are instead of being pickled item by item at every dispatch."""
    return marshal.dumps(items)


def unpack_items(packed: bytes) -> tuple:
    """The items :func:`pack_items` packed."""
    return marshal.loads(packed)


class ShardPlan:
    """The shards of a :class:`~ccs_ray.spec.DataConfig`'s source (module docstring)."""

    def __init__(self, data):
        kind = detect_kind(data.source, data.image_column, data.uri_column) if data.kind == "auto" else data.kind
        self.data = data.model_copy(update={"kind": kind})  # detected once, not again at every read of the source
        self.fingerprints: dict[str, str] = {}  # shard id -> fingerprint, in plan order, after index()
        self.images: int | None = 0  # images (or videos) in all shards; None when a shard counts them while reading
        self._spool: Path | None = None  # the indexed shards: NNNNNN.shards and NNNNNN.items per chunk
        self._starts: list[int] = []  # the plan index of each chunk's first shard

    def index(self, on_part: Callable[[list[Shard], int], None] | None = None) -> ShardPlan:
        """Read the source once, keeping each shard's id and fingerprint and the image count, and spooling the
        shards; ``on_part(shards, part)`` gets them :data:`PART_SHARDS` at a time (part 0, 1, ...), each without its
        items. Returns the plan. The cyclic garbage collector pauses meanwhile: the millions of item tuples a large
        source makes hold no cycle and live only until their chunk is spooled."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._index(on_part)
        finally:
            if collecting:
                gc.enable()

    def _index(self, on_part: Callable[[list[Shard], int], None] | None) -> ShardPlan:
        spool = Path(tempfile.mkdtemp(prefix="ccs-ray-plan-"))
        weakref.finalize(self, shutil.rmtree, spool, ignore_errors=True)
        self.fingerprints, self.images, self._spool, self._starts = {}, 0, spool, []
        shards: list[Shard] = []  # the chunk being spooled, without items
        packed: list[bytes] = []  # their items
        part: list[Shard] = []  # the part being handed to on_part
        parts = size = 0
        for s in iter_shards(self.data):
            n = s.size
            self.images = None if self.images is None or n is None else self.images + n
            self.fingerprints[s.shard_id] = s.fingerprint
            bare = replace(s, items=())
            shards.append(bare)
            packed.append(pack_items(s.items))
            size += len(packed[-1])
            if len(shards) == PART_SHARDS or size >= CHUNK_BYTES:
                self._spool_chunk(shards, packed)
                shards, packed, size = [], [], 0
            if on_part is not None:
                part.append(bare)
                if len(part) == PART_SHARDS:
                    on_part(part, parts)
                    part, parts = [], parts + 1
        if shards:
            self._spool_chunk(shards, packed)
        if on_part is not None and part:
            on_part(part, parts)
        return self

    def _spool_chunk(self, shards: list[Shard], packed: list[bytes]) -> None:
        assert self._spool is not None  # index() spools
        chunk = len(self._starts)
        self._starts.append(shards[0].index)
        (self._spool / f"{chunk:06d}.shards").write_bytes(
            marshal.dumps([(s.shard_id, s.index, s.kind, s.uri, s.fingerprint) for s in shards]))
        (self._spool / f"{chunk:06d}.items").write_bytes(marshal.dumps(packed))

    def _chunks(self) -> range:
        if self._spool is None:
            raise RuntimeError("ShardPlan.index() first")
        return range(len(self._starts))

    def _read(self, chunk: int, what: str) -> list:
        """A spooled chunk's shards without items (``"shards"``) or their packed items (``"items"``)."""
        assert self._spool is not None  # indexed
        return marshal.loads((self._spool / f"{chunk:06d}.{what}").read_bytes())

    def _shards(self, chunk: int) -> Iterator[Shard]:
        """A spooled chunk's shards, without their items."""
        return (Shard(i, index, kind, uri, (), fp) for i, index, kind, uri, fp in self._read(chunk, "shards"))

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __contains__(self, shard_id: str) -> bool:
        return shard_id in self.fingerprints

    def ids(self) -> set[str]:
        """Every shard id."""
        return set(self.fingerprints)

    def packed(self) -> Iterator[tuple[Shard, bytes]]:
        """(shard without its items, its items packed: :func:`unpack_items`) of every indexed shard, in plan order."""
        for chunk in self._chunks():
            yield from zip(self._shards(chunk), self._read(chunk, "items"), strict=True)

    def packed_items(self, shards: list[Shard]) -> list[bytes]:
        """The packed items of ``shards`` (indexed shards, by their place in the plan), read back from the spool."""
        chunks = {bisect.bisect_right(self._starts, s.index) - 1 for s in shards}
        packed = {self._starts[c] + i: p for c in chunks for i, p in enumerate(self._read(c, "items"))}
        return [packed[s.index] for s in shards]

    def parts(self) -> Iterator[list[Shard]]:
        """The indexed shards without their items, :data:`PART_SHARDS` at a time, in plan order (what ``on_part`` of
        :meth:`index` got)."""
        part: list[Shard] = []
        for chunk in self._chunks():
            for s in self._shards(chunk):
                part.append(s)
                if len(part) == PART_SHARDS:
                    yield part
                    part = []
        if part:
            yield part

    def first(self) -> Shard:
        """The plan's first shard."""
        return next(iter(self))

    def __iter__(self) -> Iterator[Shard]:
        """The indexed shards, with their items, in plan order (read from the spool, not from the source)."""
        for s, packed in self.packed():
            yield replace(s, items=unpack_items(packed))
