"""Job specs: the shipped ones validate; bad keys and values are named with what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest

from ccs_ray.spec import SpecError, load_spec

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("name", ["quickstart", "smoke", "paper", "weights-only"])
def test_shipped_specs_validate(name):
    spec = load_spec(JOBS / f"{name}.toml")
    assert spec.name == name and spec.results_root == f"./results/{name}"


def test_the_shipped_specs_are_package_data_and_the_repository_folder_links_to_them():
    from ccs_ray.spec import BUILTIN_DIR, builtin_specs

    assert JOBS.resolve() == BUILTIN_DIR and BUILTIN_DIR.parent.name == "ccs_ray"
    assert builtin_specs() == sorted(p.stem for p in JOBS.glob("*.toml"))


def test_paper_spec_matches_the_paper():
    spec = load_spec(JOBS / "paper.toml")
    assert len(spec.models.keys) == 6 and spec.models.last_layers == 4
    assert (spec.spans.pool, spec.spans.m, spec.spans.rank,
            spec.scan.convention) == ("textspan-general", 5, 80, "textspan")
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
    ("bogus.key=1", r"bogus: unknown key; allowed here: data, evals, explain, judge"),
    ("spans.template=\"no slot\"", r"spans.template: .*exactly one"),
    ("stages=[\"scan\",\"fly\"]", r"stages\[1\]: 'fly' is not allowed"),
    ("evals.classification=[{name='x', sorce='/d'}]", r"evals.classification\[0\].sorce: unknown key; allowed here: "
                                                      r"classnames, image_column, kind, label_column, limit, name"),
    ("evals.video=[{name='v', source='/v', frames=0}]", r"evals.video\[0\].frames: Input should be greater than"),
    ("evals.bias=[{name='b', source='/b', combine='avg'}]", r"evals.bias\[0\].combine: 'avg' is not allowed"),
    ("storage.s3={endpoint_url='http://127.0.0.1:9000', secret='x'}", r"s3.secret: credentials are not kept in specs"),
])
def test_bad_keys_are_named(override, message):
    with pytest.raises(SpecError, match=message):
        load_spec(JOBS / "smoke.toml", [override])


def test_cli_reports_bad_spec_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[scan]\nbatch = 1\n')
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "scan.batch: unknown key" in out.stderr
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(tmp_path / "nope.toml")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "job spec not found" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", str(broken)], capture_output=True, text=True)
    assert out.returncode == 2 and "not valid TOML" in out.stderr


def test_a_bare_string_where_a_list_is_expected_is_that_one_item():
    spec = load_spec(JOBS / "smoke.toml", ["models.keys=ViT-B-32/none", "prune.strategies=high", "stages=scan"])
    assert spec.models.keys == ["ViT-B-32/none"] and spec.prune.strategies == ["high"] and spec.stages == ["scan"]


def test_eval_entries_are_typed_with_their_defaults():
    spec = load_spec(JOBS / "smoke.toml")
    video, bias = spec.evals.video[0], spec.evals.bias[0]
    assert (video.name, video.frames, video.shard_size, video.caption_column) == ("probe-clips", 2, 16, "caption")
    assert (bias.k, bias.combine, bias.attributes, bias.templates) == (6, "embedding_mean", ["race", "gender"], None)
    assert spec.evals.classification[0].shard_size == 256


def test_model_option_and_storage_options(tmp_path, monkeypatch):
    import fsspec

    from ccs_ray import cli
    from ccs_ray.files import use_storage

    args = cli.build_parser().parse_args(["run", str(JOBS / "smoke.toml"), "--model", "ViT-B-32/none",
                                          "--model", "ViT-B-16/none", "--set", "models.keys=ccs-tiny/none"])
    assert cli._load(args).models.keys == ["ViT-B-32/none", "ViT-B-16/none"]  # --model wins over --set
    spec = load_spec(JOBS / "smoke.toml", ["storage.file={auto_mkdir=true}"])
    monkeypatch.setitem(fsspec.config.conf, "file", {})
    monkeypatch.setenv("FSSPEC_FILE", "{}")  # restored (removed) after the test
    env = use_storage(spec.storage)
    assert env == {"FSSPEC_FILE": '{"auto_mkdir": true}'}
    assert fsspec.filesystem("file", skip_instance_cache=True).auto_mkdir is True

