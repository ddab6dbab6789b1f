"""Results written by an earlier version keep working: reading, SQL, the report and --resume.

The fixture ``tests/fixtures/results-0.1.0`` was written by ccs-ray 0.1.0. A newer schema is simulated by
adding columns to ``tables.SCHEMAS`` (as a later version would): they must come back as nulls. A column renamed
since (``tables.RENAMED``) reads under its new name.
"""

import json
import shutil
from datetime import UTC, datetime
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


def _old_style(root: Path, table: str, rows: list[dict]) -> None:
    """Rows of ``table`` as ccs-ray 0.2.0 wrote them: the column now named logged_at named ``at``."""
    schema = pa.schema([pa.field("at" if f.name == "logged_at" else f.name, f.type) for f in tables.SCHEMAS[table]])
    folder = Path(tables.partition_path(str(root), table, RUN, "ccs-tiny/none"))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([dict(r, run_id=RUN, model="ccs-tiny/none") for r in rows],
                                        schema=schema), folder / "old.parquet")


def test_logged_at_of_earlier_versions_reads_under_its_new_name(old_root):
    """judge_calls, errors and conversions whose time column is ``at`` (as 0.2.0 wrote them) read with it as
    logged_at, alone and beside a newer run's files: in read_table, the SQL views and a shard record's rows."""
    then, now = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    old = {"errors": dict(stage="decode", item="a.jpg", reason="truncated", at=then),
           "conversions": dict(item="b.png", from_mode="L", at=then),
           "judge_calls": dict(judge="j", via="sent", outcome="ok", at=then)}
    for table, row in old.items():
        _old_style(old_root, table, [row])
    want = [(RUN, then)]
    for newer in (False, True):
        for table, row in old.items():
            if newer:
                new = {k: v for k, v in row.items() if k != "at"}
                tables.write_table(str(old_root), table, [dict(new, logged_at=now)], "new-run", "ccs-tiny/none")
            got = tables.read_table(str(old_root), table)
            assert got.schema == tables.SCHEMAS[table]
            assert sorted(zip(got["run_id"].to_pylist(), got["logged_at"].to_pylist(), strict=True)) == want
        with analytics.connect(str(old_root)) as conn:
            for table in old:
                assert [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()] == tables.SCHEMAS[table].names
                assert conn.execute(f"SELECT run_id, logged_at FROM {table} ORDER BY run_id").fetchall() == want
        want = [("new-run", now), (RUN, then)]
    assert tables.renamed("errors", {"item": "a", "at": "t"}) == {"item": "a", "logged_at": "t"}


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
