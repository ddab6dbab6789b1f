"""The judge through the ``ccs-ray`` command line (a process of its own, with its own Ray): ``bench judge --json``
and ``run --dry-run`` against the loopback judge server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ccs_ray.judges.loopback import JudgeServer
from ccs_ray.tables import read_table

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
    assert figures["requests"] >= figures["answered"] >= 6 * figures["heads_judged"]  # a label and 5 judgments per head
    assert figures["lost_judgments"] == 0 and figures["rerun_requests"] == 0


@pytest.mark.slow
def test_run_dry_run_counts_calls_and_cost_without_a_request(tmp_path):
    with JudgeServer() as server:
        out = cli("run", str(JOBS / "smoke.toml"), "--set", f"judge.base_url={server.base_url}",
                      "--set", "judge.model=fake", "--set", "judge.input_price=1.5", "--results", str(tmp_path),
                      "--dry-run", "--no-progress")
        assert server.log == []  # not one request reached the endpoint
    summary = json.loads(out)
    assert summary["dry_run"] is True
    (model, plan), = summary["stages"]["judge"].items()
    spans = read_table(str(tmp_path), "spans", model=model).to_pylist()
    heads = {r["head_label"] for r in spans if r["subset"] == "all"}
    n_spans = sum(r["subset"] == "all" for r in spans)  # per span: a judgment; per head: one label
    assert plan["calls"] == plan["judges"]["fake"]["calls"] == len(heads) + n_spans > 0
    assert plan["cost_usd"] == pytest.approx(plan["judges"]["fake"]["prompt_tokens"] * 1.5 / 1e6) and plan["cost_usd"] > 0
    assert not (tmp_path / "judgments").exists() and not (tmp_path / "judge_calls").exists()
