"""A local Ray cluster ends with the driver that started it, even a killed one, within :data:`POLL_S` seconds.

When ``ccs-ray run`` starts a local cluster and the driver is killed (SIGKILL, the out-of-memory killer), Ray ends
the cluster's head processes and workers within a second or two, but its two agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) first try to report the raylet's death to a control store that died with it, and wait
60 s for the answer. :func:`watch` starts this module as a small process of its own (the standard library only)
that lists the driver's Ray processes (its descendants whose command line is Ray's) every :data:`POLL_S` seconds
while the driver lives, and kills those still alive once it is gone; a process is recognised by its pid and start
time, so a pid reused meanwhile is never touched. It ignores Ctrl-C (the driver ends the cluster itself then) and
exits with the driver. Linux only (``/proc``); elsewhere :func:`watch` does nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5  # seconds between two looks at the driver and its processes
RAY_PROGRAMS = ("/ray/core/src/ray/", "-packages/ray/")  # in the command lines of Ray's programs (besides ray::)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), int(fields[19])) if fields[0] != "Z" else None


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every live process descended from ``root``."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    out = {}
    for pid, (parent, start) in stats.items():
        seen = {pid}
        while parent not in (root, 0, 1) and parent in stats and parent not in seen:
            seen.add(parent)
            parent = stats[parent][0]
        if parent == root and pid != root:
            out[pid] = (start, _command(pid))
    return out


def ray_descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process descended from ``root`` whose command line is Ray's (a ``ray::`` worker or
    agent, or a program of the ``ray`` package: the control store, raylet, log monitor, dashboard)."""
    return {pid: start for pid, (start, command) in descendants(root).items()
            if command.startswith("ray::") or any(m in command for m in RAY_PROGRAMS)}


def alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` (as :func:`ray_descendants` gives it) still runs."""
    stat = _stat(pid)
    return stat is not None and stat[1] == start


def _main(driver: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = _stat(driver)
    known: dict[int, int] = {}
    while started is not None and alive(driver, started[1]):
        known.update(ray_descendants(driver))
        time.sleep(POLL_S)
    for pid, start in known.items():
        if alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # it ended meanwhile


def watch() -> subprocess.Popen | None:
    """Start the watchdog of this process's local cluster (call it before the cluster starts); None off Linux."""
    if not os.path.isdir("/proc"):
        return None
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)


if __name__ == "__main__":
    _main(int(sys.argv[1]))
