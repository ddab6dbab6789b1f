"""Work items on a group of replaceable workers (Ray actors): the ``prune`` stage's units on its eval workers.

:func:`dispatch` keeps at most :data:`IN_FLIGHT` items at each worker (one running, one waiting,
so that a worker never idles for the driver), and gives the next queued item to the least busy worker (then the
least used) as workers finish, not round-robin up front: a slow item holds back only its own worker. When a
worker dies (:class:`ray.exceptions.RayActorError`), the items it held go back to the front of the queue, in the
order it was given them, and a fresh worker takes its place, under the replacement budget of
:class:`ccs_ray.retry.Restarts` (:class:`~ccs_ray.retry.ActorsKeepDying` past it). An item that raises an
ordinary exception is not retried (it would fail again): the exception is its result, and the others go on.
Every worker is killed at the end, whatever happened. Torch-free; the Ray calls are parameters, so the rule
also runs without a cluster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from ..retry import Restarts

IN_FLIGHT = 2  # items at a worker at once


def _first_ready(futures: list) -> Any:
    """The first of ``futures`` (Ray object refs) to finish."""
    ready, _ = ray.wait(futures, num_returns=1)
    return ready[0]


@dataclass(eq=False)
class _Worker:
    handle: Any
    held: list[int] = field(default_factory=list)  # indices of the items in flight, in the order given
    given: int = 0  # items given in all


def dispatch(items: Sequence, start: Callable[[], Any], call: Callable[[Any, Any], Any],
             done: Callable[[int, Any], None], n_workers: int, what: str, *,
             wait: Callable[[list], Any] = _first_ready, get: Callable[[Any], Any] = ray.get,
             kill: Callable[[Any], None] = ray.kill) -> int:
    """Run ``items`` on at most ``n_workers`` workers (module docstring) and return how many were replaced.

    ``start()`` starts a worker; ``call(worker, item)`` gives it an item and returns the item's future, which
    ``wait(futures)`` (the first to finish) and ``get(future)`` (its result, or the exception it raises) read;
    ``kill(worker)`` ends a worker. ``done(index, result)`` is told of each item once, as it finishes: its result,
    or the ordinary exception it raised. ``what`` names the workers in :class:`~ccs_ray.retry.ActorsKeepDying`.
    """
    queue = deque(range(len(items)))
    workers: list[_Worker] = []
    pending: dict[Any, tuple[_Worker, int]] = {}  # future -> (worker, item index)
    restarts = Restarts(what, min(n_workers, len(items)))
    try:
        for _ in range(min(n_workers, len(items))):
            workers.append(_Worker(start()))
        while queue or pending:
            while queue:
                w = min(workers, key=lambda w: (len(w.held), w.given))  # least busy, then least used
                if len(w.held) >= IN_FLIGHT:
                    break
                i = queue.popleft()
                w.held.append(i)
                w.given += 1
                pending[call(w.handle, items[i])] = (w, i)
            future = wait(list(pending))
            w, i = pending.pop(future)
            try:
                result = get(future)
            except RayActorError as e:  # the worker died: what it held runs again on a fresh one
                restarts.replaced(e)
                for f in [f for f, (held_by, _) in pending.items() if held_by is w]:
                    del pending[f]
                queue.extendleft(reversed(w.held))
                kill(w.handle)  # dead; frees whatever it may still hold
                workers[workers.index(w)] = _Worker(start())
                continue
            except Exception as e:  # noqa: BLE001 - the item fails alone; the others go on
                result = e
            w.held.remove(i)
            done(i, result)
    finally:
        for w in workers:
            kill(w.handle)
    return restarts.count
