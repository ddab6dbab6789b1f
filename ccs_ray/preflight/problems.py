"""What preflight found: :class:`Checks` collects problems (one line each, naming the key) and network probes run
concurrently at the end of a phase; :class:`PreflightError` reports them all at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from ..errors import UserError

_P = ParamSpec("_P")
_T = TypeVar("_T")


class PreflightError(UserError, ValueError):
    """Problems found before a run started: one line each; nothing was computed or written."""

    def __init__(self, problems: list[str], later: str = ""):
        self.problems = problems
        n = len(problems)
        super().__init__(f"{n} problem{'s' * (n > 1)} found before starting (nothing was computed"
                         f"{'; ' + later + ' once they are fixed' if later else ''}):\n  " + "\n  ".join(problems))


class Checks:
    """Problems and deferred network probes, collected while the plan is built."""

    def __init__(self):
        self.problems: list[str] = []
        self.probes: list[tuple[Callable[[], str | None], str]] = []

    def run(self, key: str, check: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """``check(*args, **kwargs)``, called at once; a user-facing error becomes a problem of ``key`` (returns
        None then)."""
        try:
            return check(*args, **kwargs)
        except (UserError, ValueError, OSError, KeyError, ImportError) as e:
            text = str(e).replace("\n", " ").strip()
            self.problems.append(text if text.startswith(key) else f"{key}: {text}")
            return None

    def probe(self, check: Callable[[], str | None], problem: str) -> None:
        """Run ``check`` later, concurrently with the other probes; a message it returns is a problem."""
        self.probes.append((check, problem))

    def finish(self, later: str = "") -> None:
        """Run the probes; a :class:`PreflightError` of every problem found (``later``: what is still to check)."""
        with ThreadPoolExecutor(max(1, len(self.probes))) as pool:
            for (_, problem), why in zip(self.probes, pool.map(lambda p: p[0](), self.probes), strict=True):
                if why:
                    self.problems.append(problem.format(why=why))
        self.probes = []
        if self.problems:
            raise PreflightError(list(dict.fromkeys(self.problems)), later)  # one line per problem, however often
