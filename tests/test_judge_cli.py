"""The judge through the ``ccs-ray`` command line (a process of its own, with its own Ray): ``bench judge --json``
against the loopback judge server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def cli(*args: str) -> str:
    """stdout of ``ccs-ray ARGS`` (which must exit 0)."""
    done = subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_judge_json_prints_one_object():
    out = cli("bench", "judge", "--json", "--rpm", "120", "--seconds", "3")
    figures = json.loads(out)  # "Extra data" if anything else was printed
    assert isinstance(figures, dict) and figures["rpm"] == 120
    # heads in pairs with the same spans: a label and 5 judgments per pair
    assert figures["requests"] >= figures["answered"] >= figures["answers_needed"] == 6 * figures["heads_judged"] // 2
    assert figures["paid_twice"] == 0
    assert figures["lost_judgments"] == 0 and figures["rerun_requests"] == 0
