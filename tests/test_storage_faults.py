"""Storage that fails mid-write: checkpoints are never half visible, incomplete Parquet parts are named,
and a finished scan leaves no temporary or orphan partial files.

``faulty://`` is local disk with an object store's failure modes: a move is a copy then a delete, and
the Nth write (an opened write stream, or the copy inside a move) stores half its bytes and raises. After
that fault the store refuses removals, as if the writer had died before cleaning up.
"""

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from test_scan import _scan, _spec

from ccs_ray import analytics, passes
from ccs_ray.checkpoints import Checkpointer
from ccs_ray.decompose import TowerShape
from ccs_ray.errors import UserError
from ccs_ray.files import IncompleteFileError, commit_write, latest_committed, sweep_commits, sweep_tmp
from ccs_ray.moments import HeadMoments
from ccs_ray.runs import RunState
from ccs_ray.shard_plan import ShardPlan
from ccs_ray.spec import DataConfig
from ccs_ray.stages.scan import MomentsPass, _finish_model
from ccs_ray.stages.summaries import ScanSummary
from ccs_ray.tables import read_table, write_table


class _TornWriter:
    """A write stream that stores the first half of what it is given, then fails."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data)[: len(data) // 2])
        self.f.close()
        FaultyFileSystem.crashed = True
        raise OSError(5, "storage failed mid-write")

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaultyFileSystem(LocalFileSystem):
    """Local disk that fails write number :attr:`fail_at` (1-based) and moves by copy then delete."""

    protocol = "faulty"
    fail_at: int | None = None
    writes = 0
    crashed = False

    @classmethod
    def _strip_protocol(cls, path):
        """``faulty:///abs/path`` -> ``/abs/path`` (LocalFileSystem strips only its own protocols before fsspec
        2026.9)."""
        path = str(path)
        return super()._strip_protocol(path.removeprefix("faulty://"))

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if set(mode) & {"w", "a", "x"}:
            FaultyFileSystem.writes += 1
            if FaultyFileSystem.writes == FaultyFileSystem.fail_at:
                return _TornWriter(f)
        return f

    def mv(self, path1, path2, *args, **kwargs):
        with self.open(path1, "rb") as src, self.open(path2, "wb") as dst:
            dst.write(src.read())
        self.rm(path1)

    def rm(self, path, *args, **kwargs):
        if FaultyFileSystem.crashed:
            raise OSError(5, "storage unreachable after the fault")
        return super().rm(path, *args, **kwargs)


fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)


@pytest.fixture
def faulty():
    """FaultyFileSystem, healthy again after the test."""
    yield FaultyFileSystem
    heal()


def fail_at(n: int | None) -> None:
    FaultyFileSystem.fail_at, FaultyFileSystem.writes, FaultyFileSystem.crashed = n, 0, False


def heal() -> None:
    """The storage is back and the writer restarts: no fault to come."""
    fail_at(None)


def _read(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def folder_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _payload(seq: int) -> bytes:
    return bytes([seq]) * (1000 + seq)


WRITES_PER_COMMIT = 4  # data: temporary file, copy into place; marker: the same


@pytest.mark.parametrize("n", range(1, 3 * WRITES_PER_COMMIT + 2))
def test_a_failure_at_any_write_leaves_the_previous_or_the_new_checkpoint(tmp_path, faulty, n):
    folder = f"faulty://{tmp_path}/ckpt"
    fail_at(n)
    committed = 0
    for seq in (1, 2, 3):
        try:
            assert commit_write(folder, seq, _payload(seq), ".bin") == f"{folder}/{seq:08d}.bin"
        except OSError:
            break
        committed = seq
    heal()
    latest = latest_committed(folder, ".bin")
    assert latest is not None or committed == 0
    if latest is not None:
        assert _read(latest) in (_payload(committed), _payload(committed + 1))
    if n == 2:  # the copy of the first data file cut short: truncated under its final name, never visible
        assert (tmp_path / "ckpt" / "00000001.bin").stat().st_size == len(_payload(1)) // 2 and latest is None
    if n == WRITES_PER_COMMIT + 4:  # checkpoint 2's marker torn: checkpoint 1 stays the visible one
        assert (tmp_path / "ckpt" / "00000002.commit").read_bytes()[-1:] != b"}" and _read(latest) == _payload(1)

    # The writer restarts with a number above every one in the folder (nothing is overwritten); the sweep
    # leaves only the newest committed pair.
    commit_write(folder, 9, _payload(9), ".bin")
    assert _read(latest_committed(folder, ".bin")) == _payload(9)
    with pytest.raises(ValueError, match="ckpt: already holds 00000009.bin; checkpoint 9 must be numbered above"):
        commit_write(folder, 9, b"again", ".bin")
    sweep_commits(folder)
    assert folder_files(tmp_path / "ckpt") == ["00000009.bin", "00000009.commit"]


def test_torn_markers_uncommitted_and_short_data_are_ignored(tmp_path):
    folder = tmp_path / "ckpt"
    commit_write(str(folder), 1, _payload(1), ".bin")
    (folder / "00000002.bin").write_bytes(_payload(2))
    (folder / "00000002.commit").write_bytes(b'{"file": "00000002.bin", "si')  # torn marker
    (folder / "00000003.bin").write_bytes(_payload(3)[:10])  # truncated under its final name
    (folder / "00000003.commit").write_bytes(json.dumps({"file": "00000003.bin", "size": len(_payload(3))}).encode())
    (folder / "00000004.bin").write_bytes(_payload(4))  # data without a marker
    (folder / f".00000005.bin.{uuid.uuid4().hex}.tmp").write_bytes(b"half")
    assert latest_committed(str(folder), ".bin") == f"{folder}/00000001.bin"
    assert latest_committed(str(folder), ".other") is None
    assert latest_committed(str(tmp_path / "none"), ".bin") is None
    assert sweep_commits(str(folder)) == 6
    assert folder_files(folder) == ["00000001.bin", "00000001.commit"]


# A scan's checkpoints on faulty storage, written in this process the way ModelActor.checkpoint writes them.

SHAPE = TowerShape(layers=2, n_heads=2, width=8, head_dim=4, embed_dim=6, tokens=3)
MODEL, FOLDS = "tiny/faulty", 2
SCAN = MomentsPass(FOLDS, "centered")
PLAN = ShardPlan(DataConfig(source="probe://?n=24", shard_size=4)).index()  # six shards of four images
SHARDS = {s.shard_id: s for s in PLAN}


def _moments() -> HeadMoments:
    return HeadMoments(MODEL, [0, 1], SHAPE, folds=FOLDS)


def _add(moments: HeadMoments, shard_id: str) -> dict:
    """Scan one shard (random contributions fixed by the shard) into ``moments``; returns its record."""
    shard = SHARDS[shard_id]
    g = torch.Generator().manual_seed(shard.index)
    moments.update(torch.randn(4, 2, 2, 6, generator=g, dtype=torch.float64), shard.fold(FOLDS),
                   torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64))
    record = {"shard_id": shard_id, "source": shard.uri, "fingerprint": shard.fingerprint, "fold": shard.fold(FOLDS),
              "n_images": 4, "n_errors": 0, "n_converted": 0, "seconds": 0.1, "node": "n1", "worker": "w",
              "finished_at": datetime.now(UTC).isoformat(), "errors": [], "conversions": []}
    moments.mark_covered(shard_id, record)
    return record


class _Actor:
    """What a ModelActor keeps and writes: its moments and its checkpoints (data files and shard log)."""

    def __init__(self, state: RunState, name: str):
        self.moments = _moments()
        self.checkpointer = Checkpointer(f"{state.model_dir(MODEL)}/partials/{name * 12}", SCAN.suffix)

    def scan(self, *shard_ids: str) -> None:
        for shard_id in shard_ids:
            self.checkpointer.add(_add(self.moments, shard_id))
        self.checkpointer.commit(self.moments.to_bytes(shards=False))


def _finish_equals_clean_run(ctx) -> ScanSummary:
    """Merge the model's partials (``_finish_model``) and check the moments equal a clean run's over PLAN."""
    summary = ScanSummary()
    _finish_model(ctx, SCAN, MODEL, PLAN, summary)
    clean = _moments()
    for shard_id in SHARDS:
        _add(clean, shard_id)
    merged = HeadMoments.load(summary.moments[MODEL])
    assert torch.equal(merged.n, clean.n) and set(merged.shards) == PLAN.ids()
    for name in ("total", "outer", "z_sum"):
        torch.testing.assert_close(getattr(merged, name), getattr(clean, name), rtol=1e-12, atol=1e-12)
    return summary


CHECKPOINT_WRITES = WRITES_PER_COMMIT + 2  # the shard log's part (temporary file, copy into place) first


@pytest.mark.parametrize("n", range(1, CHECKPOINT_WRITES + 2))
def test_a_resumed_scan_reads_only_committed_checkpoints(tmp_path, faulty, n):
    root = f"faulty://{tmp_path}/root"
    state = RunState(root, "r1")
    ctx = SimpleNamespace(run_id="r1", root=root, state=state)
    a, b = _Actor(state, "a"), _Actor(state, "b")
    a.scan("s000000", "s000001")
    b.scan("s000002", "s000003")
    fail_at(n)  # the driver and its actors die while a's second checkpoint is written
    try:
        a.scan("s000004")
    except OSError:
        pass
    heal()
    covered = passes.covered_shards(ctx, SCAN, MODEL, PLAN)
    saved = {"s000000", "s000001", "s000002", "s000003"} | ({"s000004"} if n > CHECKPOINT_WRITES else set())
    assert set(covered) == saved
    assert len(passes.partials(state, SCAN, MODEL)) == 2 and all(p.startswith("faulty://")
                                                                 for p in passes.partials(state, SCAN, MODEL))

    # Resume: a fresh actor scans what no committed checkpoint holds; the merge equals a clean run's.
    c = _Actor(state, "c")
    c.scan(*sorted(PLAN.ids() - saved))
    summary = _finish_equals_clean_run(ctx)
    assert summary.n_images[MODEL] == 24

    # The finished scan keeps its merged moments alone: no partial, no temporary file.
    assert not (tmp_path / "root" / "_state" / "r1" / "tiny%2Ffaulty" / "partials").exists()
    assert not list((tmp_path / "root").rglob("*.tmp"))


def test_a_finished_scan_keeps_one_copy_of_its_moments(ray_cluster, tmp_path):
    """No checkpoint duplicates the merged moments; what a killed run left in the partials (a temporary file, an
    uncommitted checkpoint, a torn marker) is removed when the resumed scan finishes, which rescans nothing."""
    spec = _spec(tmp_path, n=32, extra=["scan.checkpoint_every=1"])
    _scan(spec, str(tmp_path), "r1")
    model_dir = Path(RunState(str(tmp_path), "r1").model_dir(spec.models.keys[0]))
    assert sorted(p.name for p in model_dir.iterdir()) == ["costs.json", "moments.basis.safetensors",
                                                           "moments.safetensors"]
    assert not list(tmp_path.rglob("*.tmp"))
    partials = model_dir / "partials"
    (partials / ("a" * 12)).mkdir(parents=True)
    (partials / ("a" * 12) / f".00000042.safetensors.{uuid.uuid4().hex}.tmp").write_bytes(b"half")
    (partials / ("a" * 12) / "00000041.safetensors").write_bytes(b"uncommitted")
    (partials / "cccccccccccc").mkdir()
    (partials / "cccccccccccc" / "00000001.commit").write_bytes(b'{"file": "000')
    again = _scan(spec, str(tmp_path), "r1")
    assert again.shards_scanned == 0 and again.shards_skipped == 4 and not partials.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_partials_of_an_earlier_version_keep_their_records_in_the_file(tmp_path):
    """A partial written before the shard log existed (records in its header, no log part) still resumes and merges."""
    state = RunState(str(tmp_path / "root"), "r1")
    ctx = SimpleNamespace(run_id="r1", root=str(tmp_path / "root"), state=state)
    old = _moments()
    for shard_id in ("s000000", "s000001"):
        _add(old, shard_id)
    commit_write(f"{state.model_dir(MODEL)}/partials/{'0' * 12}", 1, old.to_bytes(), SCAN.suffix)
    new = _Actor(state, "n")
    new.scan(*sorted(PLAN.ids() - {"s000000", "s000001"}))
    assert set(passes.covered_shards(ctx, SCAN, MODEL, PLAN)) == PLAN.ids()
    summary = _finish_equals_clean_run(ctx)
    assert HeadMoments.load(summary.moments[MODEL]).shards["s000000"]["n_images"] == 4


def test_a_truncated_parquet_part_is_named(tmp_path):
    root = str(tmp_path)
    write_table(root, "errors", [{"stage": "scan", "reason": "empty"}], "r1", "m")
    part = Path(write_table(root, "errors", [{"stage": "scan", "reason": "corrupt"}], "r1", "m"))
    # A write in progress (atomic_write's temporary name) matches no reader's pattern.
    (part.parent / f".{part.name}.{uuid.uuid4().hex}.tmp").write_bytes(b"PAR1 half")
    assert read_table(root, "errors").num_rows == 2
    with analytics.connect(root) as conn:
        assert conn.execute("SELECT count(*) FROM errors").fetchone() == (2,)

    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    for read in (lambda: read_table(root, "errors"), lambda: analytics.connect(root)):
        with pytest.raises(IncompleteFileError, match="incomplete or not a Parquet file") as info:
            read()
        assert isinstance(info.value, UserError)
        assert str(part) in str(info.value) and "remove it, then re-run the stage that wrote it" in str(info.value)


def test_sweep_tmp_removes_only_old_temporary_files(tmp_path):
    old = tmp_path / "a" / "b" / f".x.json.{uuid.uuid4().hex}.tmp"
    new = tmp_path / "a" / f".y.json.{uuid.uuid4().hex}.tmp"
    others = [tmp_path / "a" / "z.json", tmp_path / "a" / ".hidden.tmp", tmp_path / "a" / "x.tmp",
              tmp_path / "a" / "b" / f"y.json.{uuid.uuid4().hex}.tmp"]
    for p in (old, new, *others):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep_tmp(f"faulty://{tmp_path}", older_than_s=60) == 1
    assert not old.exists() and new.exists()
    assert sweep_tmp(str(tmp_path)) == 1 and not new.exists()
    assert all(p.exists() for p in others)
    assert sweep_tmp(str(tmp_path / "missing")) == 0
