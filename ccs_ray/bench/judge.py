"""``ccs-ray bench judge``: the judge pool against the loopback judge server (:mod:`ccs_ray.judges.loopback`) that
allows ``rpm`` requests/min and answers with the fault mix :data:`~ccs_ray.judges.loopback.CHAOS_MIX` (10% 429
with Retry-After, 5% 500, 5% garbage, 2% dropped connections, 5% answers slower than the client's timeout).
Heads come in pairs with the same spans, so half of all requests repeat another one's.

Measured from the server's own log: achieved request throughput / rpm (every request, 429s included, uses
the quota), judgment throughput / rpm, the most requests in any sliding 60 s window, 429s the server's own
limit had to send, ``paid_twice`` (requests the server computed for a key whose valid answer it had already
delivered: must be 0), ``computed_twice`` (keys computed again after an answer the client never got: a
timeout or a dropped answer); from the tables: lost judgments (null after all retries), requests merged into
an identical one in flight or found in the cache, calls sent after a timeout; and requests made by a re-run
of the finished stage (must be 0).
"""

from __future__ import annotations

import math
import tempfile
import time

from ..cluster import ensure_ray
from ..judges.loopback import CHAOS_MIX, JudgeServer
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


def run(rpm: int = 600, seconds: float = 75.0, latency_s: float = 0.02, timeout_s: float = 2.0,
        concurrency: int = 16, actors: int = 2, m: int = 5) -> dict:
    """Judge enough heads for about ``seconds`` of traffic at ``rpm``; returns the figures (the CLI prints them)."""
    ensure_ray()
    per_head = 1 + m
    requests = rpm / 60 * seconds * 0.98
    n_heads = 2 * max(1, math.ceil(requests * (1 - sum(CHAOS_MIX.values())) / per_head))
    root = tempfile.mkdtemp(prefix="ccs-bench-judge-")
    rows = [{"layer": 0, "head": h, "head_label": f"L0.H{h}", "subset": "all", "rank": r,
             "text": f"{'red' if r % 2 else 'blue'} thing {h // 2}-{r}"}
            for h in range(n_heads) for r in range(1, m + 1)]
    write_table(root, "spans", rows, "bench", MODEL)
    with JudgeServer(rpm_limit=rpm, fault_mix=CHAOS_MIX, latency_s=latency_s, beyond_s=timeout_s * 1.25,
                     retry_after_s=0.5, seed=0) as server:
        spec = load_spec({"name": "bench", "spans": {"m": m}, "judge": {
            "base_url": server.base_url, "model": "bench", "rpm": rpm, "concurrency": concurrency,
            "actors": actors, "heldout": False, "max_retries": 10, "timeout_s": timeout_s, "backoff_s": 0.1}})
        start = time.perf_counter()
        first = run_stage("judge", spec, root, "bench", MODEL)
        wall = time.perf_counter() - start
        arrivals = [t for t, _ in server.log]
        account = server.accounting()
        server.reset()
        second = run_stage("judge", spec, root, "bench", MODEL)
        rerun_requests = len(server.log)
    judgments = read_table(root, "judgments", "bench", MODEL).to_pylist()
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else float("nan")
    ok = account["outcomes"].get("ok", 0)
    return {
        "rpm": rpm, "fault_mix": CHAOS_MIX, "heads_judged": n_heads, "requests": len(arrivals), "answered": ok,
        "answers_needed": account["keys"], "faults": {k: v for k, v in account["outcomes"].items() if k != "ok"},
        "limit_429": account["outcomes"].get("limit", 0), "traffic_s": span, "wall_s": wall,
        "throughput_per_min": (len(arrivals) - 1) / span * 60,
        "throughput_ratio": (len(arrivals) - 1) / span * 60 / rpm,
        "answered_ratio": ok / span * 60 / rpm,
        "max_requests_in_60s": max_in_window(arrivals), "window_ok": max_in_window(arrivals) <= rpm,
        "paid_twice": account["paid_twice"], "computed_twice": account["computed_twice"],
        "merged": first["merged"], "cached": first["cached"], "retried_after_timeout": first["retried_after_timeout"],
        "lost_judgments": sum(j["judge"] == "bench" and j["aligned"] is None for j in judgments),
        "stage_errors": first["errors"], "rerun_requests": rerun_requests, "rerun_calls": second["calls"],
    }
