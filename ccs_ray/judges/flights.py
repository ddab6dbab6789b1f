"""Single flight per request key across the judge pool: identical requests in flight are sent once.

Two heads (or two judge actors, on any node) often ask the very same question: the same label prompt,
the same span against the same label. Every judge actor of an endpoint+model joins one named registry
(:func:`flights_actor`, an async Ray actor) before it sends a request whose answer is not cached:

- ``join(key, owner) -> ("lead", None)``: no request of that cache key is in flight; the caller sends it
  and then calls ``finish(key, result)``;
- ``join(...) -> ("merged", result)``: the key was in flight; the call waited for the leader and returns
  its ``result`` (``{"value": ..., "error": ...}``) without sending anything;
- ``join(...) -> ("abandoned", None)``: the leader's actor died first (``abandon(owner)``, called by the
  pool when it sees the death): the caller checks the cache and joins again, so one follower takes over.

A leader writes its answer to the cache *before* ``finish``, so a request that joins after ``finish``
finds the answer in the cache (the client checks it again once the limiter grants a slot). Together:
within a run no key is sent again once its answer has been received.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

LEAD, MERGED, ABANDONED = "lead", "merged", "abandoned"


@dataclass
class _Flight:
    owner: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: dict | None = None


class InFlight:
    """The keys in flight, each with the owner (judge actor) sending it and the requests waiting for it."""

    def __init__(self):
        self.flights: dict[str, _Flight] = {}

    async def join(self, key: str, owner: str) -> tuple[str, dict | None]:
        flight = self.flights.get(key)
        if flight is None:
            self.flights[key] = _Flight(owner)
            return LEAD, None
        await flight.done.wait()
        if flight.result is None:
            return ABANDONED, None
        return MERGED, flight.result

    def finish(self, key: str, result: dict | None) -> None:
        """The leader's outcome for ``key`` (None: it gave up without one); wakes every waiter."""
        flight = self.flights.pop(key, None)
        if flight is not None:
            flight.result = result
            flight.done.set()

    def abandon(self, owner: str) -> int:
        """Release every key ``owner`` leads (its actor died); returns how many."""
        keys = [k for k, f in self.flights.items() if f.owner == owner]
        for key in keys:
            self.finish(key, None)
        return len(keys)


#: Calls the registry runs at once: every waiting request holds one, and a leader's ``finish`` needs one more.
MAX_CONCURRENCY = 1_000_000


def flights_actor(name: str):
    """The cluster's one named :class:`InFlight` actor ``name`` (created on first use)."""
    from ..cluster import named_actor

    return named_actor(InFlight, name, max_concurrency=MAX_CONCURRENCY)
