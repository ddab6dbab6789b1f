"""A pass actor's checkpoints: data files of constant size, and the shard log that says which shards they cover."""

import json

import pytest

from ccs_ray import checkpoints
from ccs_ray.bench import plan as bench_plan
from ccs_ray.checkpoints import Checkpointer, read_log, sweep_log
from ccs_ray.files import latest_committed


def _record(i: int) -> dict:
    return {"shard_id": f"s{i:06d}", "n_images": i, "errors": [{"item": f"{i}.jpg", "reason": "truncated"}] * (i % 3)}


def test_the_log_chain_holds_exactly_the_committed_shards(tmp_path, monkeypatch):
    folder = str(tmp_path / "actor")
    writer = Checkpointer(folder, ".bin")
    for i in range(3):
        writer.add(_record(i))
    assert writer.commit(b"data-1") == ["s000000", "s000001", "s000002"]
    writer.add(_record(3))
    real = checkpoints.commit_write

    def fail(*args):
        raise OSError("storage refused the data file")

    monkeypatch.setattr(checkpoints, "commit_write", fail)
    with pytest.raises(OSError):
        writer.commit(b"data-2")  # its log part is written, its data file never committed
    monkeypatch.setattr(checkpoints, "commit_write", real)
    assert read_log(latest_committed(folder, ".bin")) == {f"s{i:06d}": _record(i) for i in range(3)}
    writer.add(_record(4))
    assert writer.commit(b"data-3") == ["s000003", "s000004"]  # the failed checkpoint's shards come again
    latest = latest_committed(folder, ".bin")
    assert latest.endswith("00000003.bin")
    assert read_log(latest) == {f"s{i:06d}": _record(i) for i in range(5)}
    parts = sorted(p.name for p in (tmp_path / "actor" / "shards").iterdir())
    assert parts == ["00000001.jsonl", "00000002.jsonl", "00000003.jsonl"]
    assert json.loads((tmp_path / "actor" / "shards" / "00000003.jsonl").read_text().splitlines()[0]) == {"prev": 1}
    assert sweep_log(latest) == 1  # the part off the chain
    assert sorted(p.name for p in (tmp_path / "actor" / "shards").iterdir()) == ["00000001.jsonl", "00000003.jsonl"]
    assert read_log(latest) == {f"s{i:06d}": _record(i) for i in range(5)}
    assert writer.commit(b"unused") == []  # nothing new: no checkpoint


def test_a_checkpoint_without_a_log_part_is_of_an_earlier_version_and_a_broken_chain_is_an_error(tmp_path):
    folder = str(tmp_path / "actor")
    writer = Checkpointer(folder, ".bin")
    writer.add(_record(0))
    writer.commit(b"one")
    writer.add(_record(1))
    writer.commit(b"two")
    (tmp_path / "actor" / "shards" / "00000001.jsonl").unlink()
    with pytest.raises(ValueError, match="shard log of checkpoint 1 is missing"):
        read_log(latest_committed(folder, ".bin"))
    (tmp_path / "actor" / "shards" / "00000002.jsonl").unlink()
    assert read_log(latest_committed(folder, ".bin")) is None


def test_bench_plan_checkpoint_bytes_do_not_grow_with_the_shards():
    f = bench_plan.run(small=10, large=300, checkpoint_every=10)
    assert f["log_records_read"] == 300
    assert abs(f["checkpoint_bytes_300_shards"] / f["checkpoint_bytes_10_shards"] - 1) < 0.01
    assert f["ratio_checkpoint_bytes_300_vs_10"] == pytest.approx(f["checkpoint_bytes_300_shards"]
                                                                  / f["checkpoint_bytes_10_shards"], abs=1e-4)
    # with every record inside the data file, one checkpoint at 300 shards weighs far more
    assert f["records_in_file_checkpoint_bytes_300_shards"] > 1.5 * f["checkpoint_bytes_300_shards"]
