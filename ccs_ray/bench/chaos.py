"""``ccs-ray bench chaos``: one run that meets every fault at once ends exactly as an undisturbed run.

Two runs of the same job (scan, spans and judge of the random-init tiny model over a generated probe set,
an LLM judge on the loopback server of :mod:`ccs_ray.judges.loopback`) on a local Ray cluster that this
process starts (the chaos thread kills only that cluster's processes, never another's on the machine):

- undisturbed: in this process, against a fault-free server;
- chaos: ``ccs-ray run`` in a process of its own (connected to the cluster, which outlives it), against a
  server that answers with :data:`~ccs_ray.judges.loopback.CHAOS_MIX` (429s, 500s, garbage,
  dropped connections, answers slower than the client's timeout) and honours ``Idempotency-Key``, while
  a chaos thread SIGKILLs a random scan actor every :data:`SCAN_KILL_EVERY` checkpoints of the scan (at
  most :data:`SCAN_KILLS`), one judge actor once :data:`JUDGE_KILL_AT` requests have arrived, and the
  driver once :data:`DRIVER_KILL_AT` have; the run is then finished by ``ccs-ray run --resume``.

Figures: whether moments (``n`` per head exactly, sums to float rounding), spans, labels, judgments, CCS
and the errors table equal the undisturbed run's; lost judgments; ``paid_twice`` and ``computed_twice``
from the chaos server's own log over both driver lifetimes; ``judge_calls_vs_server``: the run's judge_calls
against the server's log (:func:`calls_vs_server`); leftover ``*.tmp`` and uncommitted partial files; how long
after the driver's death a request still reached the server and a process of the run was still alive
(``processes_alive_after_s``); and the counts (kills, shards scanned again, requests sent vs answers needed, requests
beyond one per distinct request over both driver lifetimes, the judge stage's calls of each run).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from ..judges.journal import UNKNOWN
from ..watchdog import descendants

SPEC = """name = "bench-chaos"
stages = ["scan", "spans", "judge"]
[models]
keys = ["ccs-tiny/none"]
last_layers = 4
[data]
source = "probe://?n={images}&seed=4&size=48"
shard_size = 8
[scan]
batch_size = 8
checkpoint_every = 3
actors = 2
cpus_per_actor = 0.5
[spans]
pool = "ccs-basic"
m = 5
[judge]
model = "chaos"
base_url = "{base_url}"
rpm = 60000
concurrency = 8
actors = 2
timeout_s = {timeout_s}
backoff_s = 0.05
backoff_max_s = 0.5
max_retries = 12
"""

SCAN_KILL_EVERY = 2  # checkpoints committed (of scan.checkpoint_every shards each) between scan actor kills
SCAN_KILLS = 3
SCAN_KILL_DELAY_S = 0.05  # a kill comes up to this long after the checkpoint that triggers it
JUDGE_KILL_AT = 40  # requests at the server when one judge actor is killed
DRIVER_KILL_AT = 100  # ... and when the driver is killed
TIMEOUT_S = 1.0  # the client's timeout; slow-beyond-timeout answers take BEYOND_S
BEYOND_S = 1.6
#: judge_calls outcomes of a call that got no answer, and so may never have reached the server: its sender died first
#: (unknown), or the connection was refused or timed out, at the server's door under load too (connection, timeout).
UNANSWERED = (UNKNOWN, "connection", "timeout")
JUDGE_COUNTS = ("calls", "cached", "merged", "retried_after_timeout")  # of a run's judge stage summary
MOMENTS_RTOL = 1e-9  # moments summed in another order differ by float64 rounding only
FLOAT32_RTOL = 1e-6  # ... which can move a value stored as float32 by one rounding step (2^-24 relative)


def ray_processes(root: int, titles: tuple[str, ...] = ("ray::",)) -> dict[int, str]:
    """pid -> title of the Ray worker processes descended from process ``root`` (the process that started the
    local cluster: its raylet's workers) whose title starts with one of ``titles``. Other clusters on the machine
    are never counted, nor killed."""
    return {pid: command for pid, (_, command) in descendants(root).items() if command.startswith(titles)}


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def _driver(spec: Path, root: Path, run_id: str, env: dict, resume: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "ccs_ray.cli", "run", str(spec), "--no-progress", "--json", "--results", str(root),
            "--run-id", run_id] + (["--resume"] if resume else [])
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}: {err[-3000:]}")
    return json.loads(out)


class _Chaos(threading.Thread):
    """Kills scan actors during the scan, a judge actor and then the driver during the judge stage."""

    def __init__(self, driver: subprocess.Popen, server, root: Path, seed: int, others: set[int]):
        super().__init__(daemon=True)
        self.driver, self.server, self.root, self.others = driver, server, root, others
        self.rng = random.Random(seed)
        self.scan_kills = self.judge_kills = 0
        self.processes: set[int] = set()  # the run's Ray worker processes when the driver was killed
        self.driver_killed_at: float | None = None
        self.error: str | None = None

    def _kill_one(self, title: str) -> bool:
        victims = sorted(set(ray_processes(os.getpid(), (title,))) - self.others)
        return bool(victims) and _kill(self.rng.choice(victims))

    def run(self) -> None:
        seen, at_last_kill = set(), 0
        while self.driver.poll() is None and self.driver_killed_at is None:
            time.sleep(0.05)
            requests = len(self.server.log)
            if not requests and self.scan_kills < SCAN_KILLS:
                seen |= {str(p) for p in self.root.glob("_state/*/*/partials/*/*.commit")}  # checkpoints so far
                if len(seen) - at_last_kill >= SCAN_KILL_EVERY:
                    time.sleep(self.rng.uniform(0.0, SCAN_KILL_DELAY_S))  # not always just after a checkpoint
                    if self._kill_one("ray::ModelActor"):
                        self.scan_kills, at_last_kill = self.scan_kills + 1, len(seen)
            if requests >= JUDGE_KILL_AT and not self.judge_kills and self._kill_one("ray::JudgeWorker"):
                self.judge_kills += 1
            if requests >= DRIVER_KILL_AT and self.judge_kills:
                self.processes = set(ray_processes(os.getpid())) - self.others
                os.killpg(self.driver.pid, signal.SIGKILL)
                self.driver_killed_at = time.time()
        if self.driver_killed_at is None:
            self.error = f"the driver ended before it was killed (exit {self.driver.poll()})"


def _rows(root: Path, table: str, run_id: str, model: str) -> list[dict]:
    """A table's rows of one run without times, in a canonical order."""
    from ..tables import read_table

    rows = [{k: v for k, v in r.items() if k != "logged_at"}
            for r in read_table(str(root), table, run_id, model).to_pylist()]
    return sorted(rows, key=lambda r: json.dumps({k: v for k, v in r.items() if not isinstance(v, (float, list))},
                                                 sort_keys=True, default=str))


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    """Equal rows, floats (variances computed from moments summed in another order) to :data:`MOMENTS_RTOL`,
    float vectors (span directions, stored as float32) to :data:`FLOAT32_RTOL`."""
    def same(x, y, rtol=MOMENTS_RTOL):
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, rel_tol=rtol, abs_tol=rtol)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(u, v, FLOAT32_RTOL) for u, v in zip(x, y, strict=True))
        return x == y

    return len(a) == len(b) and all(r.keys() == q.keys() and all(same(r[k], q[k]) for k in r)
                                    for r, q in zip(a, b, strict=True))


def _leftovers(root: Path) -> dict:
    """Temporary files anywhere under ``root`` and partial checkpoint files no commit marker names."""
    from ..files import latest_committed
    from ..stages.scan import MomentsPass

    tmp = [str(p) for p in root.rglob("*.tmp")]
    orphans = []
    for folder in root.glob("_state/*/*/partials/*"):
        latest = latest_committed(str(folder), MomentsPass.suffix)
        orphans += [str(p) for p in folder.glob(f"*{MomentsPass.suffix}") if latest is None or str(p) != latest]
    return {"tmp_files": tmp, "orphan_partials": orphans}


def calls_vs_server(calls: list[dict], server_keys: list[str | None]) -> dict:
    """A run's judge_calls rows sent (every lifetime) against the requests a server logged, matched by cache key
    (every call carries it as ``Idempotency-Key``; ``server_keys``: the header of each request).

    ``judge_calls_sent``, ``server_requests``; ``outcome_unknown``: rows whose call's outcome was never recorded
    (its process died in flight); ``requests_without_row``: requests no row accounts for; ``rows_without_request``:
    rows of calls the server never received, which only a call that got no answer may be (:data:`UNANSWERED`: cut
    short before it went out, or refused a connection or timed out before the server took it); ``equal``: every
    request has its own row and every other row is such a call.
    """
    sent = [c for c in calls if c["via"] == "sent"]
    rows, server = Counter(c["cache_key"] for c in sent), Counter(server_keys)
    answered = Counter(c["cache_key"] for c in sent if c["outcome"] not in UNANSWERED)
    figures = {"judge_calls_sent": len(sent), "server_requests": len(server_keys),
               "outcome_unknown": sum(c["outcome"] == UNKNOWN for c in sent),
               "requests_without_row": (server - rows).total(), "rows_without_request": (rows - server).total()}
    return {**figures, "equal": figures["requests_without_row"] == 0 and not answered - server}


def run(images: int = 240, seed: int = 0) -> dict:
    """Run the undisturbed and the chaos run; returns the figures (``equal_*`` must all be true)."""
    import ray
    import torch

    from ..cluster import ensure_ray
    from ..judges.loopback import CHAOS_MIX, JudgeServer
    from ..moments import HeadMoments
    from ..pipeline import run as run_pipeline
    from ..spec import load_spec
    from ..tables import read_table

    if os.environ.get("RAY_ADDRESS"):
        raise ValueError("bench chaos kills processes of the local cluster it starts: unset RAY_ADDRESS")
    ensure_ray()
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    model = "ccs-tiny/none"
    figures: dict = {"images": images}
    with tempfile.TemporaryDirectory(prefix="ccs-bench-chaos-") as tmp_dir:
        tmp = Path(tmp_dir)
        results = {}
        with JudgeServer(latency_s=0.02) as calm, JudgeServer(latency_s=0.05, fault_mix=CHAOS_MIX, beyond_s=BEYOND_S,
                                                              honour_idempotency=True, retry_after_s=0.05,
                                                              seed=seed) as wild:
            for name, server in (("calm", calm), ("chaos", wild)):
                spec = tmp / f"{name}.toml"
                spec.write_text(SPEC.format(images=images, base_url=server.base_url, timeout_s=TIMEOUT_S))
                results[name] = (spec, tmp / name)
            t0 = time.perf_counter()
            spec, root = results["calm"]
            undisturbed = run_pipeline(load_spec(str(spec), [f'results.root="{root}"']), run_id="r1", progress=False)
            figures["undisturbed_s"] = time.perf_counter() - t0
            needed = calm.accounting()["keys"]

            t0 = time.perf_counter()
            others = set(ray_processes(os.getpid()))  # the cluster's processes of earlier jobs (the undisturbed run)
            driver = _driver(*results["chaos"], "r1", env)
            chaos = _Chaos(driver, wild, results["chaos"][1], seed, others)
            chaos.start()
            chaos.join(900)
            driver.wait()
            if chaos.error:
                assert driver.stderr is not None  # _driver pipes it
                raise RuntimeError(f"chaos run: {chaos.error}: {driver.stderr.read()[-3000:]}")
            killed_at = chaos.driver_killed_at
            assert killed_at is not None  # no error: the chaos thread killed the driver
            gone = None
            while time.time() - killed_at < 60:
                if not chaos.processes & set(ray_processes(os.getpid())):
                    gone = time.time() - killed_at
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # once the run's processes are gone nothing of it sends; a request in the air lands
            after = [t - killed_at for t, _ in wild.log if t > killed_at]
            requests_first = len(wild.log)
            resumed = _finish(_driver(*results["chaos"], "r1", env, resume=True), "the resumed run")
            figures["chaos_s"] = time.perf_counter() - t0
            account = wild.accounting()
            server_keys = [r.idempotency_key for r in wild.records]

        calm_root, wild_root = results["calm"][1], results["chaos"][1]
        a = HeadMoments.load(read_table(str(calm_root), "moments", "r1", model).to_pylist()[-1]["uri"])
        b = HeadMoments.load(read_table(str(wild_root), "moments", "r1", model).to_pylist()[-1]["uri"])
        same_tables = {t: _same_rows(_rows(calm_root, t, "r1", model), _rows(wild_root, t, "r1", model))
                       for t in ("spans", "labels", "judgments", "ccs", "errors")}
        judgments = read_table(str(wild_root), "judgments", "r1", model).to_pylist()
        scan, planned = resumed["stages"]["scan"], undisturbed["stages"]["scan"]["shards_scanned"]
        leftovers = _leftovers(wild_root)
        figures.update({
            "equal_n_per_head": bool(torch.equal(a.n, b.n)) and a.heads == b.heads,
            "equal_moments": a.mean_outputs == b.mean_outputs and all(
                torch.allclose(getattr(a, k), getattr(b, k), rtol=MOMENTS_RTOL, atol=MOMENTS_RTOL)
                for k in ("total", "outer", "z_sum") if getattr(a, k) is not None),
            **{f"equal_{t}": same for t, same in same_tables.items()},
            "lost_judgments": sum(j["aligned"] is None for j in judgments),
            "paid_twice": account["paid_twice"], "computed_twice": account["computed_twice"],
            "replayed": account["replayed"],
            "tmp_files_left": len(leftovers["tmp_files"]), "orphan_partials_left": len(leftovers["orphan_partials"]),
            "scan_actor_kills": chaos.scan_kills, "judge_actor_kills": chaos.judge_kills, "driver_kills": 1,
            "shards_planned": planned, "shards_scanned": scan["shards_scanned"],
            "shards_rescanned_after_actor_kills": scan["shards_scanned"] - planned,
            "requests_sent": account["requests"], "requests_before_driver_kill": requests_first,
            "answers_needed": needed, "requests_beyond_one_per_key": account["requests"] - account["keys"],
            "resumed_judge": {k: resumed["stages"]["judge"][model][k] for k in JUDGE_COUNTS},
            "last_request_after_driver_kill_s": max(after) if after else 0.0,
            "run_processes_at_driver_kill": len(chaos.processes), "processes_alive_after_s": gone,
            "judge_calls_vs_server": calls_vs_server(read_table(str(wild_root), "judge_calls", "r1", model).to_pylist(),
                                                     server_keys),
            "undisturbed_judge": {k: undisturbed["stages"]["judge"][model][k] for k in JUDGE_COUNTS},
        })
    return figures
