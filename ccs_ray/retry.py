"""The replace-and-retry rule of work on long-lived actors (a pass's model actors, the prune stage's eval workers).

When an actor dies (:class:`ray.exceptions.RayActorError`), the work it held and had not saved is queued again, in
the order it was given, and a fresh actor takes its place; work that raised an ordinary exception is not retried
(it would fail again). A run gives each group of actors :data:`RESTARTS_PER_ACTOR` replacements per actor it
started: past that, actors keep dying for a reason a new one will not fix (out of memory, a bad node), and
:meth:`Restarts.replaced` raises :class:`ActorsKeepDying` with the last death's cause. Torch-free.
"""

from __future__ import annotations

from .errors import UserError
from .failures import reason

RESTARTS_PER_ACTOR = 3  # replacements allowed per actor a group started


class ActorsKeepDying(UserError, RuntimeError):
    """A group of actors died more often than :data:`RESTARTS_PER_ACTOR` times its size."""


class Restarts:
    """The replacement budget of one group of ``n_actors`` actors doing ``what`` (a stage's name, in the error)."""

    def __init__(self, what: str, n_actors: int):
        self.what, self.count, self.limit = what, 0, RESTARTS_PER_ACTOR * max(1, n_actors)

    def replaced(self, error: BaseException) -> None:
        """Count one dead actor about to be replaced; :class:`ActorsKeepDying` (from ``error``) past the budget."""
        self.count += 1
        if self.count > self.limit:
            raise ActorsKeepDying(f"{self.what} actors died {self.count} times; last error: {reason(error)}") from error
