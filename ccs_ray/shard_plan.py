"""A pass's shard plan, streamed: what the driver holds of a source of any size.

A :class:`ShardPlan` reads its source twice, each time as a stream (:func:`~ccs_ray.sources.iter_shards`: one
listing, tar or batch of manifest rows at a time). :meth:`ShardPlan.index` keeps each shard's id and fingerprint
(about 150 bytes per shard, whatever the shard holds) and hands the shards, without their items, to a callback in
parts, which is how the scan writes its ``planned`` shard rows; iterating the plan reads the source again for
dispatch and checks that every shard still has the fingerprint it was indexed with. A shard's items (file names,
manifest rows) are in the driver's memory only while it waits to be dispatched or to be saved by an actor.

    plan = ShardPlan(data)              # DataConfig
    plan.index(on_part)                 # ids and fingerprints; on_part(shards, part) per PART_SHARDS shards,
                                        # each with items=(), so that a part never holds the source's rows
    for shard in plan: ...              # the same shards, in the same order, with their items
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from .errors import UserError
from .sources import Shard, detect_kind, iter_shards
from .sources.base import chunks

PART_SHARDS = 10_000  # shards per part handed to ShardPlan.index's callback


class PlanChanged(UserError, RuntimeError):
    """The source changed between indexing the plan and reading it again (files added, removed or rewritten)."""


class ShardPlan:
    """The shards of a :class:`~ccs_ray.spec.DataConfig`'s source (module docstring)."""

    def __init__(self, data):
        kind = detect_kind(data.source, data.image_column, data.uri_column) if data.kind == "auto" else data.kind
        self.data = data.model_copy(update={"kind": kind})  # detected once, not again at every read of the source
        self.fingerprints: dict[str, str] = {}  # shard id -> fingerprint, in plan order, after index()

    def index(self, on_part: Callable[[list[Shard], int], None] | None = None) -> ShardPlan:
        """Read the source once, keeping each shard's id and fingerprint; ``on_part(shards, part)`` gets them
        :data:`PART_SHARDS` at a time (part 0, 1, ...), each without its items. Returns the plan."""
        self.fingerprints = {}
        for part, shards in enumerate(chunks((replace(s, items=()) for s in iter_shards(self.data)), PART_SHARDS)):
            self.fingerprints.update((s.shard_id, s.fingerprint) for s in shards)
            if on_part is not None:
                on_part(shards, part)
        return self

    def __len__(self) -> int:
        return len(self.fingerprints)

    def __contains__(self, shard_id: str) -> bool:
        return shard_id in self.fingerprints

    def ids(self) -> set[str]:
        """Every shard id."""
        return set(self.fingerprints)

    def first(self) -> Shard:
        """The plan's first shard."""
        return next(iter_shards(self.data))

    def __iter__(self) -> Iterator[Shard]:
        """The shards again, read from the source; :class:`PlanChanged` when one is not the shard indexed."""
        n = 0
        for shard in iter_shards(self.data):
            n += 1
            if self.fingerprints.get(shard.shard_id) != shard.fingerprint:
                raise PlanChanged(f"data source {self.data.source!r} changed during the run (shard {shard.shard_id} "
                                  f"is not the one planned); start a new run")
            yield shard
        if n != len(self.fingerprints):
            raise PlanChanged(f"data source {self.data.source!r} changed during the run ({n} shards, "
                              f"{len(self.fingerprints)} planned); start a new run")
