"""Results written by an earlier version keep working: reading, SQL, the report and --resume.

The fixture ``tests/fixtures/results-0.1.0`` was written by ccs-ray 0.1.0. A newer schema is simulated by
adding columns to ``tables.SCHEMAS`` (as a later version would): they must come back as nulls.
"""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccs_ray import analytics, sqlshell, tables
from ccs_ray.spec import load_spec

FIXTURE = Path(__file__).parent / "fixtures" / "results-0.1.0"
REPO = Path(__file__).resolve().parents[1]
RUN = "v0.1.0"


@pytest.fixture
def old_root(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture
def newer_schema(monkeypatch):
    """Two columns that a later version adds: a float in ``ccs``, a list in ``spans``."""
    schemas = dict(tables.SCHEMAS)
    schemas["ccs"] = schemas["ccs"].append(pa.field("later_score", pa.float64()))
    schemas["spans"] = schemas["spans"].append(pa.field("principal_angles", pa.list_(pa.float32())))
    monkeypatch.setattr(tables, "SCHEMAS", schemas)
    monkeypatch.setattr(analytics, "SCHEMAS", schemas)
    return schemas


def _raw(root: Path, table: str) -> pa.Table:
    """The table's files read directly, without ccs-ray (the old columns only)."""
    return pa.concat_tables([pq.read_table(p, partitioning=None) for p in sorted((root / table).rglob("*.parquet"))])


def test_old_files_read_with_new_columns_as_nulls(old_root, newer_schema):
    for table in ("ccs", "spans"):
        got = tables.read_table(str(old_root), table)
        raw = _raw(old_root, table)
        assert got.schema == newer_schema[table] and got.num_rows == raw.num_rows > 0
        new = [n for n in newer_schema[table].names if n not in raw.column_names]
        assert new and all(got.column(n).null_count == got.num_rows for n in new)
        for name in raw.column_names:  # the old values, unchanged
            assert got.column(name).to_pylist() == raw.column(name).cast(got.schema.field(name).type).to_pylist()


def test_sql_views_have_every_column_of_old_and_mixed_roots(old_root, newer_schema):
    old_rows = _raw(old_root, "ccs").num_rows
    with analytics.connect(str(old_root)) as conn:
        n, labelled = conn.execute("SELECT count(*), count(later_score) FROM ccs").fetchone()
        assert n == old_rows and labelled == 0
        assert {r[0]: r[1] for r in conn.execute("DESCRIBE ccs").fetchall()}["later_score"] == "DOUBLE"
    # A newer run beside the old one: its values show, the old rows read null.
    rows = [dict(layer=3, head=1, head_label="L3.H1", judge="combined", label="color", ccs=5, level="high",
                 later_score=0.25)]
    tables.write_table(str(old_root), "ccs", rows, "new-run", "ccs-tiny/none")
    with analytics.connect(str(old_root)) as conn:
        got = conn.execute("SELECT run_id, later_score FROM ccs WHERE later_score IS NOT NULL").fetchall()
        assert got == [("new-run", 0.25)]
        assert conn.execute("SELECT count(*) FROM ccs WHERE run_id = ? AND later_score IS NULL",
                            [RUN]).fetchone()[0] == old_rows


def test_canned_queries_and_report_over_old_results(old_root, newer_schema):
    for name in analytics.canned_queries():
        sqlshell.run_canned(name, str(old_root))  # no query fails on an old root
    from ccs_ray.reporting import build_report

    out = build_report(str(old_root), str(old_root / "report.html"))
    html = Path(out).read_text()
    assert "ccs-tiny/none" in html and RUN in html


def test_resume_an_old_run(ray_cluster, old_root):
    """An old run.json (missing keys added since, e.g. evals.cpus_per_actor) resumes: finished stages are
    skipped, and a key missing under a result-defining section reads as its default, not as a change."""
    state = old_root / "_state" / RUN / "run.json"
    before = json.loads(state.read_text())
    assert "cpus_per_actor" not in before["evals"]
    del before["spans"]["normalize"]  # as if spans.normalize had been added after this run
    state.write_text(json.dumps(before))
    from ccs_ray import pipeline
    from ccs_ray.preflight import PreflightError

    # the old run's stages: a stage added since (explain) would need the old run's moments, which the fixture
    # does not keep
    stages = f'stages={json.dumps(before["stages"])}'
    spec = load_spec(REPO / "jobs" / "smoke.toml", [f'results.root="{old_root}"', stages])
    summary = pipeline.run(spec, resume=True, progress=False)
    assert summary["run_id"] == RUN and set(summary["stages"]) == set(spec.stages)
    runs = tables.read_table(str(old_root), "runs", RUN).to_pylist()
    assert [r["status"] for r in runs] == ["done"]
    with pytest.raises(PreflightError, match="different spans settings"):
        pipeline.run(load_spec(REPO / "jobs" / "smoke.toml", [f'results.root="{old_root}"', stages, "spans.m=4"]),
                     resume=True, progress=False)
