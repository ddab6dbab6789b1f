"""ccs-ray installed as users install it: a wheel built from this checkout, installed into a fresh venv (the
dependencies come from the system site-packages: nothing is downloaded), then ``ccs-ray init`` and a built-in spec
(``ccs-ray run smoke --dry-run``) work from an empty folder, ``ccs-ray report`` and ``ccs-ray sql`` (and its
``--views-file`` in plain DuckDB) run from outside the checkout over a synthetic results root, and the paper's
reference data load from the wheel's package data. The venv's own copy must be the
one imported (not the editable checkout), with the SQL files inside it."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic_results import HOSTILE_TEXT, MODELS, write_results

REPO = Path(__file__).resolve().parents[1]
# what a wheel build does not need; the rest of the checkout is copied, so the build writes nothing into it
NOT_BUILT = ("tests", "results", "build", "test-artifacts", "*.egg-info", "__pycache__", ".*")


def _run(args, cwd, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_reports_and_queries(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_BUILT))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp_path / "dist", source], cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("ccs_ray-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    bin_ = venv / "bin"
    _run([bin_ / "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp_path)

    work = tmp_path / "work"  # a folder that is not the checkout
    work.mkdir()
    installed = Path(_run([bin_ / "python", "-c", "import ccs_ray; print(ccs_ray.__file__)"], work).stdout.strip())
    assert installed.is_relative_to(venv) and not installed.is_relative_to(REPO), installed
    assert (installed.parent / "sql" / "views.sql").is_file()
    assert len(list((installed.parent / "sql" / "queries").glob("*.sql"))) == len(list(
        (REPO / "ccs_ray" / "sql" / "queries").glob("*.sql")))

    assert "wrote quickstart.toml" in _run([bin_ / "ccs-ray", "init"], work).stdout  # from an empty folder
    assert (work / "quickstart.toml").read_text() == (REPO / "jobs" / "quickstart.toml").read_text()
    (work / "quickstart.toml").unlink()
    plan = _run([bin_ / "ccs-ray", "run", "smoke", "--dry-run", "--json"], work, timeout=300).stdout
    assert json.loads(plan)["spec"] == "smoke" and list(work.iterdir()) == []  # a plan writes nothing

    reference = _run([bin_ / "python", "-c", "import ccs_ray, ccs_ray.reference as r; p = ccs_ray.paper_reference(); "
                      "print(r.PAPER_DIR, p.results.num_rows, len(p.heads))"], work).stdout.split()
    assert Path(reference[0]).is_relative_to(venv) and reference[1:] == ["273", "6"]  # the wheel's package data
    assert (Path(reference[0]) / "README.md").is_file()

    root = work / "results"
    write_results(str(root))
    compared = _run([bin_ / "ccs-ray", "compare-paper", "--results", root], work).stdout
    assert "Against the paper" in compared and "ViT-B-32/openai" in compared
    _run([bin_ / "ccs-ray", "report", "--results", root, "-o", work / "report.html"], work)
    html = (work / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE_TEXT not in html  # a span text, escaped
    assert all(model in html for model in MODELS)

    count = _run([bin_ / "ccs-ray", "sql", "SELECT count(*) FROM runs", "--results", root], work).stdout
    assert count.splitlines()[2:] == [str(len(MODELS)), "(1 row)"], count
    summary = _run([bin_ / "ccs-ray", "sql", "--query", "run_summary", "--results", root, "--format", "csv"],
                   work).stdout
    rows = list(csv.DictReader(io.StringIO(summary)))
    assert sorted(r["model"] for r in rows) == sorted(MODELS)

    _run([bin_ / "ccs-ray", "sql", "--views-file", root], work)  # writes ./views.sql, for plain DuckDB
    plain = _run([bin_ / "python", "-c", "import duckdb; c = duckdb.connect(); c.execute(open('views.sql').read()); "
                  "print(c.sql('SELECT count(DISTINCT model) FROM runs').fetchall())"], work).stdout
    assert plain.strip() == f"[({len(MODELS)},)]"
    assert all((r["spec_name"], r["shards"], r["errors"]) == ("synthetic", "6", "2") for r in rows), rows
