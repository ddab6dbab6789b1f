"""One global rate limiter per endpoint and model, shared by every judge worker of the cluster.

:class:`RateLimiter` hands out send times (absolute, ``time.time()`` seconds) in FIFO order so that
- requests/min and tokens/min follow token buckets (refill rpm/60 and tpm/60 per second, ``burst_s``
  seconds' worth of capacity, so a pause can be caught up), and
- no sliding window of ``WINDOW_S`` seconds (60 s plus a margin for send jitter) holds more than rpm
  requests or tpm tokens, whatever the bursts;
- ``pause(seconds)`` (Retry-After, exhausted x-ratelimit quotas) holds every later request back.
Every sent request takes a slot, retries included. A reservation's tokens are an estimate; ``settle``
replaces it by the usage the answer reported, so that the tokens/min budget counts what was really spent.
:func:`limiter_actor` runs it as one named Ray actor.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping

WINDOW_S = 61.0


class _Bucket:
    """Token bucket (as GCRA): ``capacity`` units, refilled at ``rate`` units/s."""

    def __init__(self, per_minute: float, burst_s: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.tat = -math.inf  # when the bucket is full again

    def earliest(self, now: float, amount: float) -> float:
        return max(now, self.tat + (amount - self.capacity) / self.rate)

    def take(self, at: float, amount: float) -> None:
        self.tat = max(self.tat, at) + amount / self.rate


class _Window:
    """At most ``limit`` units in any ``WINDOW_S`` window of reserved times."""

    def __init__(self, limit: float):
        self.limit = limit
        self.log: deque[list[float]] = deque()  # [time, amount]; an amount may be settled later
        self.total = 0.0

    def earliest(self, now: float, amount: float) -> float:
        while self.log and self.log[0][0] <= now - WINDOW_S:
            self.total -= self.log.popleft()[1]
        at, left = now, self.total
        for t, a in self.log:  # oldest first: wait until enough of them have left the window
            if left + amount <= self.limit:
                break
            left -= a
            at = t + WINDOW_S
        return at

    def take(self, at: float, amount: float) -> None:
        self.log.append([at, amount])
        self.total += amount

    def settle(self, at: float, estimated: float, actual: float) -> None:
        """One entry (``at``, ``estimated``) now counts ``actual``; nothing when it has left the window."""
        for entry in reversed(self.log):  # the entry is recent: search from the newest
            if entry[0] < at:
                return
            if entry == [at, estimated]:
                entry[1] = actual
                self.total += actual - estimated
                return


class RateLimiter:
    """Send times for requests of one endpoint+model under rpm and tpm (None: no token limit)."""

    def __init__(self, rpm: float, tpm: float | None = None, burst_s: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.clock = clock
        self.paused_until = -math.inf
        self.last = -math.inf
        self.configure(rpm, tpm, burst_s)

    def configure(self, rpm: float, tpm: float | None = None, burst_s: float = 1.0) -> None:
        """(Re)set the limits; past reservations are forgotten only when the limits change."""
        if rpm <= 0 or (tpm is not None and tpm <= 0) or burst_s <= 0:
            raise ValueError(f"rpm, tpm and burst_s must be > 0, got rpm={rpm}, tpm={tpm}, burst_s={burst_s}")
        if getattr(self, "limits", None) == (rpm, tpm, burst_s):
            return
        self.limits = (rpm, tpm, burst_s)
        self.requests = (_Bucket(rpm, burst_s), _Window(max(1, math.floor(rpm))))
        self.tokens = (_Bucket(tpm, burst_s), _Window(tpm)) if tpm else ()

    def reserve(self, tokens: int = 0) -> float:
        """The absolute time at which the caller may send a request of ``tokens`` (prompt + completion)."""
        if self.limits[1] and tokens > self.limits[1]:
            raise ValueError(f"a request of {tokens} tokens can never fit a limit of {self.limits[1]} tokens/min")
        now = self.clock()
        at = max(now, self.paused_until, self.last)
        for limit, amount in [(r, 1) for r in self.requests] + [(t, tokens) for t in self.tokens]:
            at = max(at, limit.earliest(now, amount))
        for limit, amount in [(r, 1) for r in self.requests] + [(t, tokens) for t in self.tokens]:
            limit.take(at, amount)
        self.last = at
        return at

    def settle(self, at: float, estimated: int, actual: int) -> None:
        """Correct a reservation of ``estimated`` tokens sent at ``at`` (as :meth:`reserve` returned it) to the
        ``actual`` tokens (prompt + completion) its answer reported: later requests wait for (or gain) the
        difference."""
        if self.tokens and actual != estimated:
            bucket, window = self.tokens
            bucket.tat += (actual - estimated) / bucket.rate
            window.settle(at, estimated, actual)

    def pause(self, seconds: float) -> float:
        """Send nothing new for ``seconds`` from now; returns the time the pause ends."""
        self.paused_until = max(self.paused_until, self.clock() + max(0.0, seconds))
        return self.paused_until


def limiter_actor(name: str, rpm: float, tpm: float | None = None, burst_s: float = 1.0):
    """The cluster's one named limiter actor ``name`` (created on first use), set to these limits."""
    import ray

    from ..cluster import named_actor

    handle = named_actor(RateLimiter, name, rpm, tpm, burst_s)
    ray.get(handle.configure.remote(rpm, tpm, burst_s))
    return handle


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


def parse_duration(text: str) -> float | None:
    """Seconds of ``"1.5"``, ``"20ms"``, ``"6m0s"``, ``"1h2m3.5s"`` (x-ratelimit-reset-* forms); None if not one."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not text or not match:
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def pause_from_headers(headers: Mapping[str, str]) -> float:
    """Seconds to hold every request back: ``retry-after-ms`` / ``Retry-After`` (seconds), or the reset time of
    an exhausted ``x-ratelimit-remaining-requests`` / ``-tokens`` quota; 0 when the headers ask for no pause."""
    h = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in h and (ms := parse_duration(h["retry-after-ms"])) is not None:
        return ms / 1000
    if "retry-after" in h and (s := parse_duration(h["retry-after"])) is not None:
        return s
    wait = 0.0
    for quota in ("requests", "tokens"):
        remaining = h.get(f"x-ratelimit-remaining-{quota}")
        reset = parse_duration(h.get(f"x-ratelimit-reset-{quota}", ""))
        if remaining is not None and remaining.strip() in ("0", "0.0") and reset is not None:
            wait = max(wait, reset)
    return wait
