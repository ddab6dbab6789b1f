"""Every JSON ccs-ray prints is strict (RFC 8259): NaN and infinities come out as null, never as bare tokens that
strict parsers (jq, JSON.parse) refuse. Each entry point is fed a NaN: real results where that is cheap
(``ccs-ray sql --format json``, ``compare-paper --json``), else the command's producer replaced by one that
returns NaN and infinities (``run --json``, ``--dry-run --json``, ``ratings``, ``bench --json``)."""

import importlib
import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from ccs_ray import cli, jsonout
from ccs_ray.compare import compare_paper
from ccs_ray.sqlshell import run_sql
from ccs_ray.tables import write_table
from synthetic_results import write_paper_figures

NOT_FINITE = (float("nan"), float("inf"), float("-inf"))


def strict(text: str):
    """``text`` parsed as strict JSON: a bare NaN, Infinity or -Infinity fails the test."""
    def refuse(token):
        raise AssertionError(f"bare {token} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_not_finite_numbers_are_null_at_any_depth_and_in_numpy_and_arrow_values():
    value = {"nan": float("nan"), "nested": [{"inf": float("inf")}, (float("-inf"), 1.5)],
             "np": [np.float32("nan"), np.float64("inf"), np.array([1.0, np.nan]), np.int64(3)],
             "arrow": [pa.scalar(float("nan")), pa.array([2.5, float("inf")]), pa.table({"x": [float("nan"), 1.0]})],
             7: {frozenset(): None}}
    got = strict(jsonout.dumps(value))
    assert got == {"nan": None, "nested": [{"inf": None}, [None, 1.5]], "np": [None, None, [1.0, None], 3],
                   "arrow": [None, [2.5, None], [{"x": None}, {"x": 1.0}]], "7": {"frozenset()": None}}


@pytest.fixture
def nan_root(tmp_path):
    root = str(tmp_path / "results")
    write_table(root, "ccs", [dict(layer=0, head=h, head_label=f"L0.H{h}", judge="combined", ccs=3,
                                   label_variance=v, label_percentile=50.0) for h, v in enumerate(NOT_FINITE)],
                "run-1", "ViT-B-32/openai")
    return root


def test_sql_format_json(nan_root, capsys):
    sql = "SELECT head, label_variance, [label_variance, 1.0] AS pair FROM ccs ORDER BY head"
    want = [{"head": h, "label_variance": None, "pair": [None, 1.0]} for h in range(len(NOT_FINITE))]
    assert strict(run_sql(sql, nan_root, "json")) == want
    assert cli.main(["sql", sql, "--results", nan_root, "--format", "json"]) == 0
    assert strict(capsys.readouterr().out) == want


def test_compare_paper_json(tmp_path, capsys):
    root = str(tmp_path / "results")
    published = write_paper_figures(root, shift=float("nan"))  # every figure of ours is NaN
    got = strict(compare_paper(root, as_json=True))
    assert len(got["figures"]) == len(published) > 0
    assert all(f["ours"] is None and f["difference"] is None and f["theirs"] is not None for f in got["figures"])
    assert cli.main(["compare-paper", "--results", root, "--json"]) == 0
    assert strict(capsys.readouterr().out) == got


@pytest.fixture
def not_finite():
    """A producer's answer with NaN and infinities, and what the strict JSON of it reads back as."""
    value = {"cost_usd": float("nan"), "per_model": {"m": {"ratio": float("inf"), "n": np.int64(2)}},
             "seconds": [1.5, float("-inf")]}
    return value, {"cost_usd": None, "per_model": {"m": {"ratio": None, "n": 2}}, "seconds": [1.5, None]}


@pytest.fixture
def fake_spec(monkeypatch, not_finite):
    """``ccs-ray run SPEC``'s spec loading and preflight replaced: the plan's dict holds ``not_finite``."""
    from ccs_ray import pipeline, spec  # noqa: F401  pipeline imported first: it keeps the real preflight

    monkeypatch.setattr(spec, "load_spec", lambda *a, **k: SimpleNamespace(name="fake"))
    plan = SimpleNamespace(to_dict=lambda: not_finite[0])
    # the module (the package binds its function preflight to the name)
    monkeypatch.setattr(importlib.import_module("ccs_ray.preflight"), "preflight", lambda *a, **k: plan)


def test_dry_run_json(fake_spec, not_finite, capsys):
    assert cli.main(["run", "spec.toml", "--dry-run", "--json"]) == 0
    assert strict(capsys.readouterr().out) == not_finite[1]


def test_run_json(fake_spec, not_finite, monkeypatch, capsys):
    from ccs_ray import pipeline

    monkeypatch.setattr(pipeline, "run", lambda *a, **k: not_finite[0])
    assert cli.main(["run", "spec.toml", "--json", "--no-progress"]) == 0
    assert strict(capsys.readouterr().out) == not_finite[1]


def test_ratings(not_finite, monkeypatch, capsys):
    from ccs_ray.judges import human

    monkeypatch.setattr(human, "import_human_ratings", lambda *a, **k: not_finite[0])
    assert cli.main(["ratings", "r.csv", "--results", "root", "--run-id", "r"]) == 0
    assert strict(capsys.readouterr().out) == not_finite[1]


def test_bench_json(not_finite, monkeypatch, capsys):
    from ccs_ray.bench import preflight

    monkeypatch.setattr(preflight, "run", lambda: not_finite[0])
    assert cli.main(["bench", "preflight", "--json"]) == 0
    assert strict(capsys.readouterr().out) == not_finite[1]



def _ray_warns_then(value, warning: str):
    """A producer that, while it computes, has Ray print a cluster warning the way Ray's driver does (its real
    ``print_to_stdstream``, from a thread of its own, to ``sys.stdout``), then returns ``value``. Ray prints a
    repeated line once: each ``warning`` is new."""
    import threading

    from ray._private.worker import print_to_stdstream

    def produce(*args, **kwargs):
        data = {"lines": [warning], "pid": "raylet", "is_err": False}
        thread = threading.Thread(target=print_to_stdstream, args=(data,), kwargs={"ignore_prefix": False})
        thread.start()
        thread.join()
        return value

    return produce


def test_run_and_bench_json_keep_ray_warnings_off_stdout(fake_spec, not_finite, monkeypatch, capsys):
    """stdout holds the JSON alone, so that ``ccs-ray run --json | jq`` parses; Ray's warnings go to stderr."""
    from ccs_ray import pipeline
    from ccs_ray.bench import preflight

    monkeypatch.setattr(pipeline, "run", _ray_warns_then(not_finite[0], "WARNING: 8 workers started (run)"))
    monkeypatch.setattr(preflight, "run", _ray_warns_then(not_finite[0], "WARNING: 8 workers started (bench)"))
    for argv, command in ((["run", "spec.toml", "--json", "--no-progress"], "run"),
                          (["bench", "preflight", "--json"], "bench")):
        assert cli.main(argv) == 0
        out, err = capsys.readouterr()
        assert strict(out) == not_finite[1]
        assert f"WARNING: 8 workers started ({command})" in err
