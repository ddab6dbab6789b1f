"""Mistakes preflight refuses before anything runs, each against the part that would otherwise fail later: explicit
head lists (exactly the heads the prune stage refuses), ``.tar`` sources that are not tars (a header is read, not the
file), an unreachable Ray address (within its timeout), a local results root on a cluster of several nodes, and
credentials or a query in a judge's ``base_url``; and an explicit-only prune, which reads no ``ccs`` rows."""

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from ccs_ray.ablate import head_ablation, prune_strategies
from ccs_ray.cluster import unreachable_address
from ccs_ray.errors import UserError
from ccs_ray.heads import head_names
from ccs_ray.preflight import PreflightError, check_shared_root, preflight
from ccs_ray.reference import PaperHeads
from ccs_ray.sources import plan_shards
from ccs_ray.sources.base import SourceError
from ccs_ray.sources.tar import check_tar
from ccs_ray.spec import DataConfig, SpecError, load_spec

SMOKE = str(Path(__file__).resolve().parents[1] / "jobs" / "smoke.toml")
EXPLICIT = ['stages=["scan", "prune"]', 'prune.strategies=["explicit"]']


def spec_problems(tmp_path, *overrides: str) -> list[str]:
    """The problems of preflight's first phase (the spec and the model configs) for the smoke spec."""
    spec = load_spec(SMOKE, [f'results.root="{tmp_path / "r"}"', *overrides])
    with pytest.raises(PreflightError) as e:
        preflight(spec, dry_run=True, cluster=False)
    return e.value.problems


@pytest.mark.parametrize("heads, shown", [
    ('["L1H2"]', "'L1H2'"), ('["L1.H2 "]', "'L1.H2 '"), ('[" L1.H2"]', "' L1.H2'"), ('["l1.h2"]', "'l1.h2'"),
    ('["L1.H2.x"]', "'L1.H2.x'"), ('["L01.H2"]', "'L01.H2'"), ('["L-1.H2"]', "'L-1.H2'"), ('["L1_0.H2"]', "'L1_0.H2'"),
    ('["L+1.H2"]', "'L+1.H2'"), ('["L1.H2", "L1.H2"]', "heads named twice in one list: mine: 'L1.H2'"),
    ("[]", "list 'mine' names no head")])
def test_a_malformed_explicit_list_is_a_spec_error_naming_the_list_and_head(heads, shown):
    with pytest.raises(SpecError) as e:
        load_spec(SMOKE, [f"prune.heads={{mine = {heads}}}"])
    (line,) = str(e.value).splitlines()[1:]
    assert line.startswith("  prune.heads: ") and shown in line


def test_preflight_refuses_exactly_the_explicit_heads_the_prune_stage_refuses(tmp_path, tiny_model):
    """Every head of a grid wider than ccs-tiny's tower (4 layers x 4 heads): preflight's spec phase names the ones
    outside, and they are exactly the ones :func:`head_ablation` (what prune runs) refuses; in mean mode, the heads
    outside the decomposed layers, exactly those whose mean outputs the scan does not measure."""
    model, _ = tiny_model
    grid = head_names(range(6), 6)

    def prune_refuses(head: str, mode: str = "zero", mean_z=None) -> bool:
        try:
            head_ablation(model, [head], mode, mean_z)
        except ValueError:
            return False
        return True

    t0 = time.perf_counter()
    (line,) = spec_problems(tmp_path, *EXPLICIT, f"prune.heads={{grid = {grid}}}".replace("'", '"'))
    assert time.perf_counter() - t0 < 2  # no engine loaded
    assert line.startswith("prune.heads.grid: ") and line.endswith(
        " outside the image tower of ccs-tiny/none (layers 0..3, heads 0..3)")
    refused = line.removeprefix("prune.heads.grid: ").split(" outside")[0].split(", ")
    assert refused == [h for h in grid if not prune_refuses(h)] and len(refused) == 36 - 16

    inside = head_names(range(4), 4)
    (line,) = spec_problems(tmp_path, *EXPLICIT, "prune.mode=mean", "models.layers=[2, 3]",
                            f"prune.heads={{inside = {inside}}}".replace("'", '"'))
    mean_z = {layer: torch.zeros(4, 32) for layer in (2, 3)}
    refused = line.removeprefix("prune.heads.inside: ").split(" outside")[0].split(", ")
    assert refused == [h for h in inside if not prune_refuses(h, "mean", mean_z)] == head_names(range(2), 4)
    assert "outside the layers ccs-tiny/none decomposes ([2, 3])" in line and "prune.mode = 'zero'" in line


def test_explicit_without_any_list_is_refused(tmp_path):
    assert spec_problems(tmp_path, *EXPLICIT) == [
        "prune.strategies: 'explicit' prunes the lists of prune.heads, which names none; add one (prune.heads = "
        "{ mine = [\"L11.H5\"] }) or drop 'explicit'"]


def test_an_explicit_only_prune_reads_no_ccs_rows():
    """``explicit`` (alone or beside paper-*) with no ccs rows at all, as in a run without the judge stage."""
    lists = {"two": ["L0.H1", "L3.H2"]}
    chosen = prune_strategies([], ["explicit"], explicit=lists)
    assert [(a.ablation_id, a.heads, a.by_ccs) for a in chosen] == [
        ("none", [], False), ("explicit:two", ["L0.H1", "L3.H2"], False)]
    reference = PaperHeads("ViT-B-32/openai", high=["L11.H5"], low=["L11.H0"], concepts={})
    chosen = prune_strategies([], ["explicit", "paper-high"], explicit=lists, reference=reference)
    assert [(a.ablation_id, a.heads) for a in chosen][1:] == [("explicit:two", lists["two"]),
                                                              ("paper-high", ["L11.H5"])]
    with pytest.raises(ValueError, match="the ccs table has no rows of judge 'combined'"):
        prune_strategies([], ["explicit", "high"], explicit=lists)  # a CCS strategy still needs them


@pytest.mark.slow
def test_an_explicit_only_prune_runs_without_the_judge_stage(ray_cluster, tmp_path, tiny_model):
    """The prune stage of a run with no ``ccs`` table (no judge stage): its evals equal open_clip's encode_image
    inside :func:`~ccs_ray.ablate.ablated` of the listed heads."""
    from ccs_ray import ablated
    from ccs_ray.evals.datasets import classification_data, load_classification, plan_classification
    from ccs_ray.evals.zeroshot import classifier_weights
    from ccs_ray.stages import run_stage
    from ccs_ray.tables import read_table

    root, heads = str(tmp_path), ["L1.H2", "L3.H0"]
    spec = load_spec({"name": "t", "stages": ["prune"], "models": {"keys": ["ccs-tiny/none"], "precision": "fp32"},
                      "prune": {"strategies": ["explicit"], "heads": {"two": heads}},
                      "evals": {"batch_size": 8, "classification": [
                          {"name": "shapes", "source": "probe://shapes?n=16&seed=1&size=32", "shard_size": 16}]},
                      "results": {"root": root}})
    summary = run_stage("prune", spec, root, "r1", "ccs-tiny/none")
    assert summary["ablation_ids"] == ["none", "explicit:two"]
    top1 = {r["ablation_id"]: r["value"] for r in read_table(root, "evals", "r1", "ccs-tiny/none").to_pylist()
            if r["metric"] == "top1"}
    model, preprocess = tiny_model
    data = classification_data(spec.evals.classification[0])
    parts = [load_classification(data, shard, preprocess) for shard in plan_classification(data)]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    weights = classifier_weights(model, data.class_texts, data.templates)
    for aid, pruned in (("none", []), ("explicit:two", heads)):
        with torch.no_grad(), ablated(model, pruned):
            emb = model.encode_image(images, normalize=True)
        assert top1[aid] == pytest.approx(100 * ((emb @ weights).argmax(1) == labels).double().mean().item())


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_tar_source_that_is_not_a_tar_is_refused_from_its_first_header(tmp_path):
    good = _tar({"a.png": b"x" * 600, "a.cls": b"1"})
    (tmp_path / "ok.tar").write_bytes(good[:1024] + b"garbage " * 4096)  # only the first header is read
    (tmp_path / "ok.tar.gz").write_bytes(_tar({"a.png": b"x"}, "w:gz"))
    (tmp_path / "empty.tar").write_bytes(_tar({}))
    for name in ("ok.tar", "ok.tar.gz", "empty.tar"):
        check_tar(str(tmp_path / name))
    (tmp_path / "notes.tar").write_text("these are notes\n" * 50)
    (tmp_path / "zero.tar").write_bytes(b"")
    (tmp_path / "noise.tgz").write_bytes(b"\x1f\x8b" + os.urandom(2000))
    for name, why in (("notes.tar", "invalid header"), ("zero.tar", "empty file"), ("noise.tgz", "")):
        with pytest.raises(SourceError, match=rf"^{tmp_path / name} is not a tar archive \(.*{why}.*\)$"):
            check_tar(str(tmp_path / name))

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"{i:05d}.tar").write_text("not a tar\n" * 100)
    with pytest.raises(SourceError, match=rf"^{shards / '00000.tar'} is not a tar archive"):
        plan_shards(DataConfig(source=str(shards)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_known_within_the_timeout():
    """Nothing listening: refused at once. A listener whose accept queue is full drops the connection as a blackholed
    host does: no answer within the timeout. ``auto`` and ``local`` are not remote."""
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
        t0 = time.perf_counter()
        assert unreachable_address(address, 1.0) == "Connection refused" and time.perf_counter() - t0 < 0.5
    assert unreachable_address("auto") is None and unreachable_address("local") is None
    assert unreachable_address("head:port").startswith("not a host:port address")
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        waiting = [socket.socket() for _ in range(3)]
        for w in waiting:
            w.setblocking(False)
            w.connect_ex(full.getsockname())
        t0 = time.perf_counter()
        assert unreachable_address(f"127.0.0.1:{full.getsockname()[1]}", 1.0) == "no answer within 1 s"
        assert 0.9 < time.perf_counter() - t0 < 1.5
        for w in waiting:
            w.close()
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            assert unreachable_address(f"127.0.0.1:{listening.getsockname()[1]}", 1.0) is None


def test_a_local_results_root_needs_one_node_or_results_shared():
    """The rule preflight applies to the connected cluster's alive nodes (``tests/multinode_scan.py`` applies it to a
    real cluster of three)."""
    for root in ("/data/results", "file:///data/results", "results/smoke"):
        check_shared_root(root, False, 1)
        check_shared_root(root, True, 2)
        with pytest.raises(UserError) as e:
            check_shared_root(root, False, 2)
        assert str(e.value).startswith(f"results.root: {root!r} is a folder of one machine, but the cluster has 2 "
                                       f"nodes") and "results.shared = true" in str(e.value)
    check_shared_root("memory://results", False, 3)  # not a folder of one machine
    assert load_spec(SMOKE, ["results.shared=true"]).results.shared and not load_spec(SMOKE).results.shared


@pytest.mark.parametrize("url, what", [("http://bob:s3cret-pw@127.0.0.1:9/v1", "user:password@"),
                                       ("http://127.0.0.1:9/v1?token=T0KEN-99", "a query"),
                                       ("http://bob:s3cret-pw@127.0.0.1:9/v1?token=T0KEN-99#f", "and a query")])
def test_a_base_url_with_credentials_or_a_query_is_refused_without_repeating_them(url, what):
    for overrides, key in (([f"judge.base_url={url}", "judge.model=m"], "judge.base_url"),
                           ([f'judge.judges=[{{base_url = "{url}", model = "m"}}]'], "judge.judges[0].base_url")):
        with pytest.raises(SpecError) as e:
            load_spec(SMOKE, overrides)
        (line,) = str(e.value).splitlines()[1:]
        assert line.startswith(f"  {key}: the URL carries ") and what in line and "api_key_env" in line
        assert "s3cret" not in line and "T0KEN" not in line


@pytest.mark.slow
def test_run_with_an_unreachable_cluster_and_a_non_tar_source_fails_in_seconds(tmp_path):
    """``ccs-ray run`` as a user runs it: both problems of the environment phase at once, exit status 2, in seconds
    (imports included), instead of Ray retrying for minutes and the scan failing on every shard. The bound leaves
    room for a loaded machine; ``ccs-ray bench preflight`` measures the 10 s target (``slowest_environment_s``)."""
    (tmp_path / "x.tar").write_text("not a tar\n" * 100)
    address = f"127.0.0.1:{_closed_port()}"
    env = {**os.environ, "RAY_ADDRESS": address, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "run", SMOKE, "--results", str(tmp_path / "r"),
                          "--set", f"data.source={tmp_path / 'x.tar'}"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert time.perf_counter() - t0 < 30 and out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.splitlines()[1:] == [
        f"  RAY_ADDRESS={address}: no Ray cluster answers there (Connection refused); start it (ray start --head) or "
        f"unset RAY_ADDRESS to run on a local cluster",
        f"  data.source: {tmp_path / 'x.tar'} is not a tar archive (invalid header)"]
    assert not (tmp_path / "r").exists()
