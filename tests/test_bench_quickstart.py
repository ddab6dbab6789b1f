"""``ccs-ray bench quickstart``: a job run twice as a user runs it, alone and beside a busy loop the bench starts and
stops, with each stage's wall and CPU seconds."""

import os
import subprocess
import sys

import psutil
import pytest

from ccs_ray.bench import quickstart


@pytest.mark.slow
def test_bench_quickstart_times_each_stage_alone_and_loaded():
    sets = ('stages=["scan","spans"]', 'data.source="probe://?n=16&seed=0&size=64"')  # the smoke job, smaller
    figures = quickstart.run(spec="smoke", model=None, sets=sets)
    for run in ("quiet", "loaded"):
        got = figures[run]
        assert list(got["stages"]) == ["scan", "spans"]
        assert got["wall_s"] >= got["run_s"] >= sum(s["wall_s"] for s in got["stages"].values()) > 0
        assert all(s["cpu_s"] > 0 for s in got["stages"].values())  # the driver and its cluster's processes
        assert got["cpu_s"] == pytest.approx(sum(s["cpu_s"] for s in got["stages"].values()), abs=0.05)
    assert figures["ratio"] == pytest.approx(figures["loaded"]["wall_s"] / figures["quiet"]["wall_s"], abs=1e-3)
    assert set(figures["targets_met"]) == {"quiet_wall_s", "ratio"}
    busy = [p for p in psutil.process_iter(["cmdline"]) if quickstart.BUSY_LOOP in " ".join(p.info["cmdline"] or [])]
    assert not busy  # the bench stopped its busy loop


def test_the_driver_computes_with_one_thread_and_passive_waits():
    """What ``ccs-ray run`` does in its driver before the run (ccs_ray.threads), in a process of its own."""
    code = ("import os\nfrom ccs_ray.threads import DRIVER_CPUS, passive_waits, set_threads\npassive_waits()\n"
            "import torch\nfrom threadpoolctl import threadpool_info\nset_threads(DRIVER_CPUS)\n"
            "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}), "
            "os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert out.stdout.split() == ["1", "[1]", "PASSIVE"], out.stderr[-2000:]
