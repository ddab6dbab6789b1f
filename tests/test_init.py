"""What a user has outside the repository: the built-in job specs by name, ``ccs-ray init`` (a commented starter
spec in the current folder) and ``ccs-ray sql --views-file ROOT`` (the views and macros for plain DuckDB)."""

import duckdb
import pytest

from ccs_ray import cli
from ccs_ray.analytics import canned_queries, connect
from ccs_ray.spec import BUILTIN_DIR, builtin_specs, load_spec
from synthetic_results import MODELS, write_results


def test_init_writes_the_commented_quickstart_spec_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    written = tmp_path / "quickstart.toml"
    assert written.read_text() == (BUILTIN_DIR / "quickstart.toml").read_text()
    assert written.read_text().startswith("# ") and "quickstart.toml" in capsys.readouterr().out
    assert load_spec("quickstart.toml").name == "quickstart"  # the copy in this folder, ready to edit
    written.write_text("# mine\n")
    assert cli.main(["init"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "quickstart.toml already exists" in err
    assert written.read_text() == "# mine\n"
    assert cli.main(["init", "smoke"]) == 0 and (tmp_path / "smoke.toml").is_file()


def test_init_of_an_unknown_name_lists_the_built_in_specs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "smok"]) == 2
    err = capsys.readouterr().err
    assert "no built-in spec 'smok'" in err and all(name in err for name in builtin_specs())
    assert list(tmp_path.iterdir()) == []


def test_built_in_names_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"quickstart", "smoke", "paper", "paper-pruning", "weights-only"} <= set(builtin_specs())
    for spec in ("smoke", "smoke.toml", "jobs/smoke.toml"):
        assert load_spec(spec).data.source == "probe://?n=96&seed=0&size=64"
    (tmp_path / "smoke.toml").write_text('name = "mine"\n')  # an existing file wins over the built-in name
    assert load_spec("smoke.toml").name == "mine"


def test_views_file_opens_every_view_and_canned_query_in_plain_duckdb(tmp_path, monkeypatch, capsys):
    root = tmp_path / "results it's"  # a quote in the path stays one literal
    write_results(str(root))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sql", "--views-file", str(root)]) == 0
    assert "duckdb -init views.sql" in capsys.readouterr().out
    plain = duckdb.connect()
    plain.execute((tmp_path / "views.sql").read_text())
    assert plain.sql("SELECT count(DISTINCT model) FROM runs").fetchall() == [(len(MODELS),)]
    ours = connect(str(root))
    for name, sql in canned_queries().items():  # the same rows as ccs-ray sql, intervals aside
        assert len(plain.sql(sql).fetchall()) == len(ours.sql(sql).fetchall()), name
    query = "SELECT model, judge, layer, head, ccs FROM ccs ORDER BY ALL"
    assert plain.sql(query).fetchall() == ours.sql(query).fetchall()
    assert plain.sql("SELECT count(*) FROM conversions").fetchall() == [(0,)]  # no files: an empty, typed view
    assert plain.sql("SELECT wilson_interval(50.0, 10)").fetchall() == [(None,)]  # computed by ccs-ray sql only
    paper = "SELECT count(*) FROM vs_paper"
    assert plain.sql(paper).fetchall() == ours.sql(paper).fetchall() != [(0,)]


def test_views_file_of_a_missing_root_is_one_line(tmp_path, capsys):
    assert cli.main(["sql", "--views-file", str(tmp_path / "nope"), "-o", str(tmp_path / "v.sql")]) == 2
    assert "results root not found" in capsys.readouterr().err and not (tmp_path / "v.sql").exists()


@pytest.mark.parametrize("spec", ["nope", "jobs/nope.toml"])
def test_a_missing_spec_lists_the_built_in_names(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", spec, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"job spec not found: {spec}" in err
    assert all(name in err for name in builtin_specs()) and "ccs-ray init NAME" in err
