"""A pass's shard plan: the source listed once per run, what the driver holds of a source of any size.

:meth:`ShardPlan.index` reads the source once, as a stream (:func:`~ccs_ray.sources.iter_shards`: one listing, tar or
batch of manifest rows at a time). It keeps in memory each shard's id and fingerprint (about 150 bytes per shard,
whatever the shard holds) and spools the shards themselves, items included, to a local folder, :data:`PART_SHARDS`
per file; it hands each part, without its items, to a callback. Iterating the plan reads the spool, never the
source again, so preflight's plan serves the scan, the cost measurement and the explain pass of the same run. A
shard's items (file names, manifest rows) are in the driver's memory only while it waits to be dispatched or saved.
The spool is removed when the plan is garbage collected or the process ends.

A source changed during a run is noticed when the run is resumed: the new plan's fingerprints differ from the
checkpoints' (:func:`~ccs_ray.passes.covered_shards`).

    plan = ShardPlan(data)              # DataConfig
    plan.index(on_part)                 # ids and fingerprints; on_part(shards, part) per PART_SHARDS shards,
                                        # each with items=(), so that a part never holds the source's rows
    for shard in plan: ...              # the same shards, in the same order, with their items (from the spool)
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from .sources import Shard, detect_kind, iter_shards
from .sources.base import chunks

PART_SHARDS = 10_000  # shards per spooled part, and per part handed to ShardPlan.index's callback


class ShardPlan:
    """The shards of a :class:`~ccs_ray.spec.DataConfig`'s source (module docstring)."""

    def __init__(self, data):
        kind = detect_kind(data.source, data.image_column, data.uri_column) if data.kind == "auto" else data.kind
        self.data = data.model_copy(update={"kind": kind})  # detected once, not again at every read of the source
        self.fingerprints: dict[str, str] = {}  # shard id -> fingerprint, in plan order, after index()
        self.images: int | None = 0  # images (or videos) in all shards; None when a shard counts them while reading
        self._spool: Path | None = None  # the indexed shards: NNNNNN.pkl per part
        self._parts = 0

    def index(self, on_part: Callable[[list[Shard], int], None] | None = None) -> ShardPlan:
        """Read the source once, keeping each shard's id and fingerprint and the image count, and spooling the
        shards; ``on_part(shards, part)`` gets them :data:`PART_SHARDS` at a time (part 0, 1, ...), each without its
        items. Returns the plan."""
        spool = Path(tempfile.mkdtemp(prefix="ccs-ray-plan-"))
        weakref.finalize(self, shutil.rmtree, spool, ignore_errors=True)
        self.fingerprints, self.images, self._spool, self._parts = {}, 0, spool, 0
        for part, shards in enumerate(chunks(iter_shards(self.data), PART_SHARDS)):
            (spool / f"{part:06d}.pkl").write_bytes(pickle.dumps(shards, protocol=pickle.HIGHEST_PROTOCOL))
            self._parts = part + 1
            self.fingerprints.update((s.shard_id, s.fingerprint) for s in shards)
            sizes = [s.size for s in shards]
            known = [n for n in sizes if n is not None]
            self.images = None if self.images is None or len(known) < len(sizes) else self.images + sum(known)
            if on_part is not None:
                on_part([replace(s, items=()) for s in shards], part)
        return self

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __contains__(self, shard_id: str) -> bool:
        return shard_id in self.fingerprints

    def ids(self) -> set[str]:
        """Every shard id."""
        return set(self.fingerprints)

    def parts(self) -> Iterator[list[Shard]]:
        """The indexed shards, one spooled part at a time, in plan order."""
        if self._spool is None:
            raise RuntimeError("ShardPlan.index() first")
        for part in range(self._parts):
            yield pickle.loads((self._spool / f"{part:06d}.pkl").read_bytes())

    def first(self) -> Shard:
        """The plan's first shard."""
        return next(iter(self))

    def __iter__(self) -> Iterator[Shard]:
        """The indexed shards, with their items, in plan order (read from the spool, not from the source)."""
        for shards in self.parts():
            yield from shards
