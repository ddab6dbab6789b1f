"""CPU time of a run's stages: the driver's and its local Ray cluster's processes, beside the wall time.

:class:`CpuClock` samples, every :data:`SAMPLE_S` seconds on a thread of its own, the CPU seconds (user + system) of
this process and of every process it started (a local cluster's GCS, raylet and workers, actors and tasks alike), and
:meth:`CpuClock.lap` gives the CPU seconds they spent since the previous lap: a process that existed then counts
from the value it had, one started since counts whole (its start-up is the stage's cost), one that ended counts up to
its last sample. On a cluster the driver joined (``RAY_ADDRESS``) the workers are not its processes: the figure is
then the driver's alone. CPU time above the wall time means the stage kept several cores busy; far below, that it
waited (on other work sharing the machine, on storage or on the network).
"""

from __future__ import annotations

import threading

import psutil

SAMPLE_S = 0.5  # seconds between samples


def _cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


class CpuClock:
    """A context manager: CPU seconds of this process and its descendants per :meth:`lap` (module docstring)."""

    def __init__(self, sample_s: float = SAMPLE_S):
        self.sample_s = sample_s
        self.me = psutil.Process()
        self.last: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds at its latest sample
        self.base: dict[tuple[int, float], float] = {}  # the same at the previous lap
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ccs-ray cpu clock", daemon=True)

    def __enter__(self) -> CpuClock:
        self.sample()
        self.base = dict(self.last)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(self.sample_s):
            self.sample()

    def sample(self) -> None:
        """Read the CPU seconds of this process and of every descendant alive now."""
        found = {}
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                found[p.pid, p.create_time()] = _cpu_seconds(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        with self.lock:
            self.last.update(found)

    def lap(self) -> float:
        """CPU seconds spent since the previous lap (or the start), rounded to 0.01."""
        self.sample()
        with self.lock:
            spent = sum(cpu - self.base.get(key, 0.0) for key, cpu in self.last.items())
            self.base = dict(self.last)
        return round(max(0.0, spent), 2)
