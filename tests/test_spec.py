"""Job specs: the shipped ones validate; bad keys and values are named with what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest

from ccs_ray.spec import SpecError, load_spec

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("name", ["quickstart", "smoke", "paper"])
def test_shipped_specs_validate(name):
    spec = load_spec(JOBS / f"{name}.toml")
    assert spec.name == name and spec.results_root == f"./results/{name}"


def test_paper_spec_matches_the_paper():
    spec = load_spec(JOBS / "paper.toml")
    assert len(spec.models.keys) == 6 and spec.models.last_layers == 4
    assert (spec.spans.pool, spec.spans.m, spec.spans.rank, spec.scan.convention) == ("textspan-general", 5, 80, "textspan")
    assert len(spec.judge.judges) == 3 and spec.prune.seeds == 5


def test_overrides_any_key():
    spec = load_spec(JOBS / "smoke.toml", ["judge.base_url=http://127.0.0.1:9/v1", "scan.batch_size=3",
                                           'models.keys=["ViT-B-32/none"]', "judge.heldout=false"])
    assert spec.judge.base_url == "http://127.0.0.1:9/v1" and spec.scan.batch_size == 3
    assert spec.models.keys == ["ViT-B-32/none"] and spec.judge.heldout is False


@pytest.mark.parametrize("override,message", [
    ("scan.batchsize=3", r"scan.batchsize: unknown key; allowed here: actors, batch_size"),
    ("scan.batch_size=0", r"scan.batch_size: Input should be greater than or equal to 1"),
    ("scan.convention=\"pca\"", r"scan.convention: 'pca' is not allowed; expected 'centered' or 'textspan'"),
    ("bogus.key=1", r"bogus: unknown key; allowed here: data, evals, judge"),
    ("spans.template=\"no slot\"", r"spans.template: .*exactly one"),
    ("stages=[\"scan\",\"fly\"]", r"stages.1: 'fly' is not allowed"),
])
def test_bad_keys_are_named(override, message):
    with pytest.raises(SpecError, match=message):
        load_spec(JOBS / "smoke.toml", [override])


def test_cli_reports_bad_spec_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[scan]\nbatch = 1\n')
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "scan.batch: unknown key" in out.stderr
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert out.returncode == 2 and "job spec not found" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(broken)], capture_output=True, text=True)
    assert out.returncode == 2 and "not valid TOML" in out.stderr
