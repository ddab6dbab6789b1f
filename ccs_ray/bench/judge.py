"""``ccs-ray bench judge``: the judge pool against the loopback judge server (:mod:`ccs_ray.judges.loopback`) that
allows ``rpm`` requests/min and injects ``error_rate`` 429s (Retry-After) at random.

Measured from the server's own log of arrival times: achieved request throughput / rpm (every request,
429s included, uses the quota), judgment throughput / rpm, the most requests in any sliding 60 s window,
429s the server's own limit had to send, lost judgments (null after all retries), and requests made by
a re-run of the finished stage (must be 0).
"""

from __future__ import annotations

import math
import tempfile
import time

from ..judges.loopback import JudgeServer
from ..cluster import ensure_ray
from ..spec import load_spec
from ..stages import run_stage
from ..tables import read_table, write_table

MODEL = "bench/none"


def max_in_window(times: list[float], width: float = 60.0) -> int:
    """The most arrivals in any half-open window [t, t + width)."""
    times, j, best = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def run(rpm: int = 600, seconds: float = 75.0, error_rate: float = 0.1, latency_s: float = 0.02,
        concurrency: int = 16, actors: int = 2, m: int = 5) -> dict:
    """Judge enough heads for about ``seconds`` of traffic at ``rpm``; returns the figures (the CLI prints them)."""
    ensure_ray()
    per_head = 1 + m
    requests = rpm / 60 * seconds * 0.98
    n_heads = max(1, math.ceil(requests * (1 - error_rate) / per_head))
    root = tempfile.mkdtemp(prefix="ccs-bench-judge-")
    rows = [{"layer": 0, "head": h, "head_label": f"L0.H{h}", "subset": "all", "rank": r,
             "text": f"{'red' if r % 2 else 'blue'} thing {h}-{r}"} for h in range(n_heads) for r in range(1, m + 1)]
    write_table(root, "spans", rows, "bench", MODEL)
    with JudgeServer(rpm_limit=rpm, error_rate=error_rate, latency_s=latency_s, seed=0) as server:
        spec = load_spec({"name": "bench", "spans": {"m": m}, "judge": {
            "base_url": server.base_url, "model": "bench", "rpm": rpm, "concurrency": concurrency,
            "actors": actors, "heldout": False, "max_retries": 10, "timeout_s": 10, "backoff_s": 0.1}})
        start = time.perf_counter()
        first = run_stage("judge", spec, root, "bench", MODEL)
        wall = time.perf_counter() - start
        arrivals = [t for t, _ in server.log]
        outcomes = server.outcomes()
        server.reset()
        second = run_stage("judge", spec, root, "bench", MODEL)
        rerun_requests = len(server.log)
    judgments = read_table(root, "judgments", "bench", MODEL).to_pylist()
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else float("nan")
    ok = outcomes.count("ok")
    figures = {
        "rpm": rpm, "error_rate": error_rate, "heads_judged": n_heads, "requests": len(arrivals), "answered": ok,
        "injected_429": outcomes.count("429"), "limit_429": outcomes.count("limit"),
        "traffic_s": span, "wall_s": wall,
        "throughput_per_min": (len(arrivals) - 1) / span * 60, "throughput_ratio": (len(arrivals) - 1) / span * 60 / rpm,
        "answered_ratio": ok / span * 60 / rpm,
        "max_requests_in_60s": max_in_window(arrivals), "window_ok": max_in_window(arrivals) <= rpm,
        "lost_judgments": sum(j["judge"] == "bench" and j["aligned"] is None for j in judgments),
        "stage_errors": first["errors"], "rerun_requests": rerun_requests, "rerun_calls": second["calls"],
    }
    return figures
