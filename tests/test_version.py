"""The package version (pyproject.toml's): ``ccs-ray --version``, ``ccs_ray.__version__`` and the ``runs`` rows a run
writes."""

import shutil
import tomllib
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest

import ccs_ray
from ccs_ray import analytics, cli, pipeline, tables
from ccs_ray.runs import RunState
from ccs_ray.spec import load_spec

FIXTURE = Path(__file__).parent / "fixtures" / "results-0.1.0"  # runs rows written by ccs-ray 0.1.0
VERSION = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_the_installed_metadata():
    assert version("ccs-ray") == ccs_ray.__version__ == VERSION  # else: pip install -e . --no-deps


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"ccs-ray {VERSION}\n"


def test_runs_rows_carry_the_version_beside_older_ones(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    spec = load_spec({"name": "version", "models": {"keys": ["ccs-tiny/none", "ccs-tiny/other"]}})
    # what a run writes as it starts
    pipeline._write_runs(spec, RunState(str(root), "now"), "running", "start", datetime.now(UTC))
    rows = tables.read_table(str(root), "runs", "now").to_pylist()
    assert sorted((r["model"], r["version"], r["status"]) for r in rows) == [
        ("ccs-tiny/none", VERSION, "running"), ("ccs-tiny/other", VERSION, "running")]
    # an older root's rows still read, with the version that wrote them, beside the new ones
    assert [r["version"] for r in tables.read_table(str(root), "runs", "v0.1.0").to_pylist()] == ["0.1.0"]
    with analytics.connect(str(root)) as conn:
        got = conn.execute("SELECT run_id, version, count(*) FROM runs GROUP BY ALL ORDER BY run_id").fetchall()
    assert got == [("now", VERSION, 2), ("v0.1.0", "0.1.0", 1)]
