"""Re-runs reuse: a later run whose inputs match copies a finished scan, spans and explain output (no image read
again), records it in the ``runs`` table, and gives the tables a fresh run gives; ``--rescan`` and any changed input
compute again."""

import json
import os
import shutil
from pathlib import Path

import pytest

from ccs_ray import HeadMoments, analytics, cli, pipeline
from ccs_ray.runs import RunError, RunState
from ccs_ray.spec import load_spec
from ccs_ray.stages import BY_NAME, RunContext, reuse
from ccs_ray.tables import REFERENCE_TABLES, TABLES, read_table

SMOKE = str(Path(__file__).resolve().parents[1] / "ccs_ray" / "jobs" / "smoke.toml")
MODEL = "ccs-tiny/none"
#: Columns that differ between two runs of the same inputs: the run's id and when things happened.
RUN_COLUMNS = {"run_id", "started_at", "finished_at", "logged_at"}
SCAN_TABLES = BY_NAME["scan"].writes


def _spec(root, *overrides, n=16):
    return load_spec(SMOKE, [f"results.root={json.dumps(str(root))}", f'data.source="probe://?n={n}&seed=3&size=48"',
                             "data.shard_size=8", *overrides])


def _rows(root, table: str, run_id: str) -> list[dict]:
    """The run's rows of ``table`` without its run id and time columns (the root and run id inside a value, such as
    the moments' URI in the run's state, read as ROOT and RUN), in a stable order."""
    def plain(v):
        return v.replace(str(root), "ROOT").replace(run_id, "RUN") if isinstance(v, str) else v

    rows = [{k: plain(v) for k, v in r.items() if k not in RUN_COLUMNS}
            for r in read_table(str(root), table, run_id).to_pylist()]
    return sorted(rows, key=repr)


def _same_tables(root_a, run_a: str, root_b, run_b: str, tables) -> None:
    for table in tables:
        a, b = _rows(root_a, table, run_a), _rows(root_b, table, run_b)
        assert a == b, f"table {table} differs"


def _keys(spec, root, stage="scan", run_id="keys"):
    ctx = RunContext.of(spec, run_id, str(root))
    return reuse.stage_keys(BY_NAME[stage], ctx, BY_NAME[stage].section(spec), list(spec.models.keys))


def test_a_stage_key_changes_with_every_input_and_only_with_them(tmp_path):
    base = _keys(_spec(tmp_path), tmp_path)
    assert set(base) == {MODEL}
    for same in (["scan.batch_size=5"], ["scan.actors=1"], ["scan.checkpoint_every=7"], ["models.layers=[0, 1, 2, 3]"],
                 ['stages=["scan", "spans"]']):
        assert _keys(_spec(tmp_path, *same), tmp_path) == base, same
    changed = (['scan.convention="textspan"'], ["models.last_layers=2"], ['models.precision="bf16"'], ["data.folds=1"],
               ["data.shard_size=4"], ['prune.mode="mean"'])
    for other in changed:
        assert _keys(_spec(tmp_path, *other), tmp_path).get(MODEL) != base[MODEL], other
    assert _keys(_spec(tmp_path, n=24), tmp_path) != base  # another source: other shards
    assert _keys(_spec(tmp_path, 'data.source="probe://?n=16&seed=4&size=48"'), tmp_path) != base  # other images

    # A checkpoint is known by its size and modification time, never by reading it.
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"0" * 64)
    before = reuse.weights_identity(f"ccs-tiny@{ckpt}")
    assert reuse.weights_identity(f"ccs-tiny@{ckpt}") == before
    os.utime(ckpt, (1_000_000, 1_000_000))
    assert reuse.weights_identity(f"ccs-tiny@{ckpt}") != before

    # Spans follow this run's scan and the spans settings; explain this run's spans and the explain settings.
    spec = _spec(tmp_path)
    state = RunState(str(tmp_path), "keys")
    state.create(spec)
    assert _keys(spec, tmp_path, "spans") == {}  # no scan in this run yet: nothing to match
    state.mark("scan", info={"reuse_key": {MODEL: "scan-1"}})
    spans = _keys(spec, tmp_path, "spans")
    assert spans != _keys(_spec(tmp_path, "spans.rank=40"), tmp_path, "spans")
    assert spans != _keys(_spec(tmp_path, "judge.heldout=false"), tmp_path, "spans")  # fewer spans per head
    state.mark("scan", info={"reuse_key": {MODEL: "scan-2"}})
    assert _keys(spec, tmp_path, "spans") != spans
    state.mark("spans", MODEL, info={"reuse_key": "spans-1"})
    explain = _keys(spec, tmp_path, "explain")
    assert set(explain) == {MODEL} and explain != _keys(_spec(tmp_path, "explain.k=3"), tmp_path, "explain")


def test_a_second_run_reads_no_image_and_copies_the_scan(ray_cluster, tmp_path):
    spec = _spec(tmp_path, 'stages=["scan"]')
    first = pipeline.run(spec, progress=False)
    second = pipeline.run(spec, progress=False)
    assert first["images_scanned"] == {MODEL: 16} and second["images_scanned"] == {MODEL: 0}
    scan = second["stages"]["scan"]
    assert scan["shards_scanned"] == 0 and scan["n_images"] == {MODEL: 16}
    assert scan["reused"] == {MODEL: {"run_id": first["run_id"], "root": str(tmp_path)}}
    assert scan["reuse_key"] == first["stages"]["scan"]["reuse_key"]
    _same_tables(tmp_path, first["run_id"], tmp_path, second["run_id"], SCAN_TABLES)
    runs = analytics.connect(str(tmp_path)).execute(
        "SELECT run_id, reused['scan'].run_id FROM runs ORDER BY started_at").fetchall()
    assert runs == [(first["run_id"], None), (second["run_id"], first["run_id"])]

    # The copy lives in the second run's state: it needs nothing of the first run.
    old = RunState(str(tmp_path), first["run_id"])
    moments = HeadMoments.load(old.moments_uri(MODEL))
    shutil.rmtree(old.dir)
    uri = RunState(str(tmp_path), second["run_id"]).moments_uri(MODEL)
    assert uri.startswith(RunState(str(tmp_path), second["run_id"]).dir)
    copy = HeadMoments.load(uri)
    assert copy.n.tolist() == moments.n.tolist() and copy.outer.equal(moments.outer)

    # --resume goes on with the run's own work: its reused scan is done, and nothing is reused on the way.
    resumed = pipeline.run(spec, resume=True, progress=False)
    assert resumed["run_id"] == second["run_id"] and resumed["images_scanned"] == {MODEL: 0}
    with pytest.raises(RunError, match="--reuse-from: a resumed run"):
        pipeline.run(spec, resume=True, reuse_from=[str(tmp_path)], progress=False)


def test_reuse_from_must_name_a_results_root(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["run", SMOKE, "--results", str(tmp_path / "r"), "--reuse-from", str(tmp_path / "empty"), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--reuse-from {tmp_path / 'empty'}: no runs there" in err
    assert not (tmp_path / "r" / "_state").exists()  # nothing started
    with pytest.raises(SystemExit):  # --rescan reuses nothing: naming a root to reuse from contradicts it
        cli.main(["run", SMOKE, "--rescan", "--reuse-from", str(tmp_path)])


@pytest.mark.slow
def test_a_second_smoke_run_scans_no_image_and_gives_identical_tables(smoke_run, tmp_path, capsys):
    """The smoke job again (``ccs-ray run --json``), naming the session's smoke run's root to reuse from: it reads
    no image, reuses the scan, spans and explain, and every table but ``runs`` has the first run's rows."""
    _, first_root, first = smoke_run
    assert cli.main(["run", SMOKE, "--results", str(tmp_path), "--reuse-from", first_root, "--json",
                     "--no-progress"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["images_scanned"] == {MODEL: 96} and second["images_scanned"] == {MODEL: 0}
    origin = {"run_id": first["run_id"], "root": first_root}
    assert second["stages"]["scan"]["reused"] == second["stages"]["explain"]["reused"] == {MODEL: origin}
    assert second["stages"]["spans"][MODEL]["reused"] == origin
    _same_tables(first_root, first["run_id"], tmp_path, second["run_id"],
                 [t for t in TABLES if t not in REFERENCE_TABLES and t != "runs"])
    reused = analytics.connect(str(tmp_path)).execute(
        "SELECT map_keys(reused) FROM runs WHERE run_id = ?", [second["run_id"]]).fetchone()[0]
    assert sorted(reused) == ["explain", "scan", "spans"]


@pytest.mark.slow
def test_reuse_from_another_root_rescan_and_changed_inputs(ray_cluster, tmp_path):
    stages = 'stages=["scan", "spans", "explain"]'
    a, b = tmp_path / "a", tmp_path / "b"
    first = pipeline.run(_spec(a, stages, n=16), progress=False)

    # Another root reuses the first root's runs only when named.
    fresh = pipeline.run(_spec(b, 'stages=["scan"]', n=16), progress=False)
    assert fresh["images_scanned"] == {MODEL: 16}
    shutil.rmtree(b)
    named = pipeline.run(_spec(b, stages, n=16), reuse_from=[str(a)], progress=False)
    assert named["images_scanned"] == {MODEL: 0}
    assert named["stages"]["scan"]["reused"][MODEL] == {"run_id": first["run_id"], "root": str(a)}
    _same_tables(a, first["run_id"], b, named["run_id"], ["moments", "shards", "spans", "span_agreement",
                                                         "top_images"])
    shutil.rmtree(a)  # the copies are the second root's own
    assert HeadMoments.load(RunState(str(b), named["run_id"]).moments_uri(MODEL)).n.sum() == 16

    # --rescan scans again (and computes spans and explain again).
    again = pipeline.run(_spec(b, stages, n=16), rescan=True, progress=False)
    assert again["images_scanned"] == {MODEL: 16}
    assert not any(again["stages"][s].get("reused") for s in ("scan", "explain"))
    assert again["stages"]["spans"][MODEL]["reused"] is None

    # Changed spans settings: the scan is reused without starting its actors (spans run in a task), explain follows.
    ranked = pipeline.run(_spec(b, stages, "spans.rank=40", n=16), progress=False)
    assert ranked["images_scanned"] == {MODEL: 0}
    assert ranked["stages"]["spans"][MODEL]["reused"] is None and ranked["stages"]["spans"][MODEL]["ran_on"] == "task"
    assert ranked["stages"]["explain"]["reused"] == {} and ranked["stages"]["explain"]["images"] == 16

    # A changed input of the scan's key (test_a_stage_key_changes_with_every_input_and_only_with_them lists them):
    # the scan runs again (the scan alone is run to show it).
    other = pipeline.run(_spec(b, 'stages=["scan"]', 'scan.convention="textspan"', n=16), progress=False)
    assert other["images_scanned"] == {MODEL: 16} and other["stages"]["scan"]["reused"] == {}
