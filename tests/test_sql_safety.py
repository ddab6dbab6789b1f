"""``ccs-ray sql`` and ``analytics.connect`` stay inside the results root: real symlinks and ``..`` that lead outside
are refused in one line (every file-reading function, read-only and writable connections), symlinks that stay
inside keep working, and ``glob`` never names a file outside."""

import os
import re

import pytest

import ccs_ray
from ccs_ray import cli
from ccs_ray.analytics import OutsideRootError, connect, query
from ccs_ray.tables import write_table

MODEL = "m/x"
# the file-reading functions DuckDB offers, each over a path that leads to outside/secret.txt
READERS = ["SELECT * FROM read_text('{path}')", "SELECT * FROM read_blob('{path}')", "SELECT * FROM read_csv('{path}')",
           "SELECT * FROM read_parquet('{path}')", "SELECT * FROM read_json('{path}')", "SELECT * FROM glob('{path}')"]
ESCAPES = ["link/secret.txt", "pw", "../outside/secret.txt", "link/../outside/secret.txt"]


@pytest.fixture
def root(tmp_path):
    """``tmp/root`` (a ccs table, notes.txt) with symlinks out (``link`` a folder, ``pw`` a file) and in (``alias.txt``,
    ``ccs_alias``), and ``tmp/outside/secret.txt``."""
    outside, root = tmp_path / "outside", tmp_path / "root"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    write_table(str(root), "ccs", [dict(layer=11, head=5, head_label="L11.H5", judge="combined", ccs=5)], "r1", MODEL)
    (root / "notes.txt").write_text("inside\n")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret.txt", root / "pw")
    os.symlink("notes.txt", root / "alias.txt")
    os.symlink(root / "ccs", root / "ccs_alias")
    return root


@pytest.mark.parametrize("read_only", [True, False])
def test_paths_that_lead_outside_the_root_are_refused(root, read_only):
    secret = os.path.realpath(root.parent / "outside" / "secret.txt")
    with connect(str(root), read_only=read_only) as conn:
        for sql in READERS:
            for escape in ESCAPES:
                with pytest.raises(OutsideRootError) as refused:
                    query(conn, sql.format(path=f"ccsresults://{escape}"))
                assert str(refused.value) == (f"ccsresults://{escape} leads to {secret}, outside the results root "
                                              f"{root}"), (sql, escape)


def test_symlinks_inside_the_root_work_and_glob_names_nothing_outside(root):
    with connect(str(root)) as conn:
        assert query(conn, "SELECT content FROM read_text('ccsresults://alias.txt')").to_pylist() == [
            {"content": "inside\n"}]
        assert query(conn, "SELECT run_id, ccs FROM read_parquet('ccsresults://ccs_alias/**/*.parquet', "
                           "hive_partitioning = true)").to_pylist() == [{"run_id": "r1", "ccs": 5}]
        found = {r["file"] for r in query(conn, "SELECT file FROM glob('ccsresults://*')").to_pylist()}
        assert found == {f"ccsresults://{n}" for n in ("alias.txt", "ccs", "ccs_alias", "notes.txt")}
        assert query(conn, "SELECT file FROM glob('ccsresults://*/*.txt')").num_rows == 0  # not link/secret.txt


def test_a_table_folder_that_leads_outside_is_refused_when_opened(tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    write_table(str(elsewhere), "ccs", [dict(layer=1, head=0, head_label="L1.H0", judge="combined", ccs=1)], "r1",
                MODEL)
    root.mkdir()
    os.symlink(elsewhere / "ccs", root / "ccs")
    where = re.escape(os.path.realpath(elsewhere / "ccs"))
    with pytest.raises(OutsideRootError, match=f"leads to {where}/.*, outside the results root {re.escape(str(root))}"):
        connect(str(root))


def test_cli_refusal_is_one_line_exit_2(root, capsys):
    secret = os.path.realpath(root.parent / "outside" / "secret.txt")
    assert cli.main(["sql", "SELECT * FROM read_text('ccsresults://link/secret.txt')", "--results", str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"Error: ccsresults://link/secret.txt leads to {secret}, outside the results root "
                                 f"{root}\n")


def test_results_api_refuses_in_one_line(root):
    with ccs_ray.open(str(root), read_only=False) as results, pytest.raises(OutsideRootError) as refused:
        results.sql("SELECT * FROM read_text('ccsresults://pw')").fetchall()
    assert "\n" not in str(refused.value) and str(refused.value).startswith("ccsresults://pw leads to ")
