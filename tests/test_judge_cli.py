"""The judge through the ``ccs-ray`` command line: ``bench judge --json`` and ``run --dry-run`` against the
loopback judge server."""

import json
from pathlib import Path

import pytest

from ccs_ray.cli import main
from ccs_ray.judges.loopback import JudgeServer
from ccs_ray.tables import read_table

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_bench_judge_json_prints_one_object(ray_cluster, capsys):
    assert main(["bench", "judge", "--json", "--rpm", "120", "--seconds", "3"]) == 0
    figures = json.loads(capsys.readouterr().out)  # "Extra data" if anything else was printed
    assert isinstance(figures, dict) and figures["rpm"] == 120
    assert figures["requests"] >= figures["answered"] >= 6 * figures["heads"]  # a label and 5 judgments per head
    assert figures["lost_judgments"] == 0 and figures["rerun_requests"] == 0


def test_run_dry_run_counts_calls_and_cost_without_a_request(ray_cluster, tmp_path, capsys):
    with JudgeServer() as server:
        code = main(["run", str(JOBS / "smoke.toml"), "--set", f"judge.base_url={server.base_url}",
                     "--set", "judge.model=fake", "--set", "judge.input_price=1.5", "--results", str(tmp_path),
                     "--dry-run", "--no-progress"])
        assert code == 0 and server.log == []  # not one request reached the endpoint
    summary = json.loads(capsys.readouterr().out)
    assert summary["dry_run"] is True
    (model, plan), = summary["stages"]["judge"].items()
    spans = read_table(str(tmp_path), "spans", model=model).to_pylist()
    heads = {r["head_label"] for r in spans if r["subset"] == "all"}
    n_spans = sum(r["subset"] == "all" for r in spans)  # per span: a judgment; per head: one label
    assert plan["calls"] == plan["judges"]["fake"]["calls"] == len(heads) + n_spans > 0
    assert plan["cost_usd"] == pytest.approx(plan["judges"]["fake"]["prompt_tokens"] * 1.5 / 1e6) and plan["cost_usd"] > 0
    assert not (tmp_path / "judgments").exists() and not (tmp_path / "judge_calls").exists()
