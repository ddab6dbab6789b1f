"""The Ray scan equals a single-process computation, survives killed actors and drivers, and spreads over nodes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_sources import planar_tiff

from ccs_ray import HeadMoments, analytics, load_model
from ccs_ray.cluster import LayoutError, actor_layout
from ccs_ray.decompose import decomposed_forward
from ccs_ray.passes import PassError, _Worker, partial_shards, partials, run_pass
from ccs_ray.runs import RunState
from ccs_ray.sources import load_shard, plan_shards
from ccs_ray.spec import load_spec
from ccs_ray.stages import RunContext, run_stage
from ccs_ray.stages.scan import MomentsPass, run_scan, section
from ccs_ray.tables import read_table, write_table

REPO = Path(__file__).resolve().parents[1]
SCAN = MomentsPass(folds=2, convention="centered")  # where the scan's partials are


def _spec(root, n=64, extra=()):
    return load_spec(REPO / "jobs" / "smoke.toml", [
        f'results.root="{root}"', f'data.source="probe://?n={n}&seed=3&size=48"', "data.shard_size=8",
        "scan.batch_size=5", "scan.checkpoint_every=2", *extra])


def _scan(spec, root, run_id):
    return run_scan(RunContext.of(spec, run_id, root, progress=False), section(spec))


def _reference(spec):
    """Moments computed in this process, shard by shard, without Ray."""
    key = spec.models.keys[0]
    model, preprocess = load_model(key, device="cpu")
    layers = [0, 1, 2, 3]
    mean = section(spec).mean_outputs
    ref = HeadMoments.for_model(key, model, layers, folds=spec.data.folds, mean_outputs=mean)
    for shard in plan_shards(spec.data):
        images = load_shard(shard, preprocess).images
        for i in range(0, len(images), spec.scan.batch_size):
            d = decomposed_forward(model, images[i:i + spec.scan.batch_size], layers=layers, keep_z_sum=mean,
                                   coefficients=True)
            ref.update(d.coefficients, shard.index % spec.data.folds, d.z_sum)
    return ref


def _assert_same_moments(a: HeadMoments, b: HeadMoments):
    assert torch.equal(a.n, b.n) and a.mean_outputs == b.mean_outputs
    for name in ("total", "outer", "z_sum") if a.mean_outputs else ("total", "outer"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)
    for name in a.heads:
        torch.testing.assert_close(a.head(name)[2], b.head(name)[2], rtol=1e-9, atol=1e-9)


def test_scan_equals_single_process(ray_cluster, tmp_path):
    spec = _spec(tmp_path)
    summary = _scan(spec, str(tmp_path), "r1")
    key = spec.models.keys[0]
    merged = HeadMoments.load(summary.moments[key])
    _assert_same_moments(merged, _reference(spec))
    assert summary.n_images[key] == 64 and summary.shards_scanned == 8
    # One copy of the moments: compact, their basis beside them, the partials gone.
    model_dir = tmp_path / "_state" / "r1" / key.replace("/", "%2F")
    assert merged.coefficients == 16 and not merged.mean_outputs  # smoke ablates in zero mode only
    assert (model_dir / "moments.basis.safetensors").exists() and not (model_dir / "partials").exists()
    # The layout came from the measured decode share: the actor held the CPUs decoding did not need (the most
    # the smallest node leaves) and ran that many torch threads.
    costs = json.loads((tmp_path / "_state" / "r1" / key.replace("/", "%2F") / "costs.json").read_text())
    assert summary.decode_share == pytest.approx(costs["decode_s"] / (costs["decode_s"] + costs["model_s"]))
    assert summary.cpus_per_actor == actor_layout(spec.scan, 1, {"CPU": 2}, summary.decode_share)[1]
    records = HeadMoments.read_meta(summary.moments[key])["shards"].values()
    assert {r["threads"] for r in records} == {max(1, round(summary.cpus_per_actor))}
    shards = read_table(str(tmp_path), "shards", "r1").to_pylist()
    assert sorted(r["shard_id"] for r in shards) == [f"s{i:06d}" for i in range(8)]
    assert sum(r["n_images"] for r in shards) == 64
    moments_row = read_table(str(tmp_path), "moments", "r1").to_pylist()[0]
    assert moments_row["n_images"] == 64 and moments_row["n_heads"] == 16

    # Spans from the distributed moments equal spans from the reference moments.
    run_stage("spans", spec, str(tmp_path), "r1", key)
    ref_uri = str(tmp_path / "ref.safetensors")
    _reference(spec).save(ref_uri)
    write_table(str(tmp_path / "ref"), "moments", [{"uri": ref_uri}], "r1", key)
    run_stage("spans", spec, str(tmp_path / "ref"), "r1", key)
    rows, ref_rows = (read_table(root, "spans", "r1", key).to_pylist()
                      for root in (str(tmp_path), str(tmp_path / "ref")))
    assert [(r["head_label"], r["subset"], r["text"]) for r in rows] == [(r["head_label"], r["subset"], r["text"])
                                                                         for r in ref_rows]
    assert max(r["rank"] for r in rows) == 10  # smoke judges held-out spans too: 2 x spans.m per head
    assert {r["subset"] for r in rows} == {"all", "fold0", "fold1"}

    # A results root copied elsewhere finds its moments in its own state folder, not where the scan wrote them.
    moved = tmp_path.with_name(tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    uri = RunState(str(moved), "r1").moments_uri(key)
    assert uri.startswith(str(moved)) and read_table(str(moved), "moments", "r1")["uri"][0].as_py() != uri
    _assert_same_moments(HeadMoments.load(uri), merged)

    # A second scan of the same run finds every shard covered and redoes nothing.
    again = _scan(spec, str(tmp_path), "r1")
    assert again.shards_scanned == 0 and again.shards_skipped == 8
    _assert_same_moments(HeadMoments.load(again.moments[key]), merged)


@pytest.mark.slow
def test_bad_inputs_are_counted_and_the_scan_goes_on(ray_cluster, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 30), (40 * i, 20, 200 - 30 * i)).save(folder / f"ok{i}.png")
    Image.new("L", (40, 30), 128).save(folder / "gray.png")
    Image.new("RGBA", (40, 30), (10, 20, 30, 0)).save(folder / "clear.png")  # transparent: composited over white
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not an image at all")
    good = (folder / "ok0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "float.tif").write_bytes(planar_tiff("<f8"))
    spec = _spec(tmp_path / "out", extra=[f'data.source="{folder}"', "data.shard_size=4", 'data.alpha="white"'])
    summary = _scan(spec, str(tmp_path / "out"), "r1")
    key = spec.models.keys[0]
    assert summary.n_images[key] == 8  # six good images, the converted grayscale and transparent ones
    assert summary.n_errors[key] == 4 and summary.n_converted[key] == 2
    errors = read_table(str(tmp_path / "out"), "errors", "r1").to_pylist()
    reasons = {Path(e["item"]).name: e["reason"] for e in errors}  # only the images not scanned
    assert set(reasons) == {"empty.jpg", "text.jpg", "truncated.png", "float.tif"}
    assert reasons["empty.jpg"] == "empty" and reasons["float.tif"] == "unsupported"
    assert {reasons["text.jpg"], reasons["truncated.png"]} <= {"not_an_image", "truncated", "corrupt"}
    conversions = read_table(str(tmp_path / "out"), "conversions", "r1").to_pylist()
    assert sorted((Path(c["item"]).name, c["from_mode"], c["alpha"], c["model"]) for c in conversions) == \
        [("clear.png", "RGBA", "over #ffffff", key), ("gray.png", "L", None, key)]  # data.alpha reached the decoders
    with analytics.connect(str(tmp_path / "out")) as conn:
        assert conn.execute("SELECT from_mode, count(*) FROM conversions GROUP BY ALL ORDER BY 1").fetchall() == \
            [("L", 1), ("RGBA", 1)]


@pytest.mark.slow
def test_jpegs_decoded_on_the_actors_match_the_decoders(ray_cluster, tmp_path):
    """``scan.decode = "actors"`` (what actors holding a GPU do by default; here on their CPU): the decoders only check
    the JPEGs' headers, and the scan keeps the same images, errors and conversions as with ``"decoders"``, its moments
    as close as the pixels are (preprocess.DEVICE_TOLERANCE)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(10):
        w, h = 40 + 7 * i, 70 - 3 * i
        ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.3, 1, h)[:, None, None] * (1 + i % 3) / 3
        Image.fromarray(np.clip(ramp + g.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    Image.open(folder / "0.jpg").convert("L").save(folder / "gray.jpg")
    (folder / "truncated.jpg").write_bytes((folder / "1.jpg").read_bytes()[:300])
    Image.new("RGB", (30, 30), (10, 200, 30)).save(folder / "green.png")
    out = {}
    for place in ("decoders", "actors"):
        spec = _spec(tmp_path / place, extra=[f'data.source="{folder}"', "data.shard_size=4", f'scan.decode="{place}"'])
        out[place] = _scan(spec, str(tmp_path / place), "r1")
        errors = read_table(str(tmp_path / place), "errors", "r1").to_pylist()
        conversions = read_table(str(tmp_path / place), "conversions", "r1").to_pylist()
        out[place + "_rows"] = (sorted((Path(e["item"]).name, e["reason"]) for e in errors),
                                sorted((Path(c["item"]).name, c["from_mode"]) for c in conversions))
    key = spec.models.keys[0]
    assert (out["decoders"].decode_on_actors, out["actors"].decode_on_actors) == (False, True)
    assert out["actors_rows"] == out["decoders_rows"] == ([("truncated.jpg", "truncated")], [("gray.jpg", "L")])
    assert out["actors"].n_images[key] == out["decoders"].n_images[key] == 12
    cpu, device = (HeadMoments.load(out[p].moments[key]) for p in ("decoders", "actors"))
    assert torch.equal(cpu.n, device.n)
    for name in ("total", "outer"):
        a, b = getattr(cpu, name), getattr(device, name)
        assert 0 < float((a - b).norm() / a.norm()) < 0.02, name  # close, and not bit-equal: resized apart


def test_missing_source_is_a_clear_error(tmp_path):
    spec = _spec(tmp_path, extra=[f'data.source="{tmp_path}/nope"'])
    from ccs_ray.sources import SourceError

    with pytest.raises(SourceError, match="not found"):
        plan_shards(spec.data)


def _scan_processes():
    """Scan actor processes of this session's Ray (started by this process, so they are its descendants)."""
    return [p for p in psutil.Process().children(recursive=True)
            if any("ModelActor" in c for c in p.cmdline())]


def run_killing_actors(work, state: RunState, kind, model: str):
    """Run ``work()`` in a thread, SIGKILL every scan actor process once ``kind``'s first partial of ``model``
    is committed, and return what ``work`` returned."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=work()))
    thread.start()
    deadline = time.time() + 120
    while not partials(state, kind, model) and time.time() < deadline:
        time.sleep(0.05)
    victims = _scan_processes()
    assert victims, "no scan actor process found"
    for p in victims:
        p.send_signal(signal.SIGKILL)
    thread.join(300)
    return result["out"]


@pytest.mark.slow
def test_killed_actor_is_replaced_and_results_are_exact(ray_cluster, tmp_path):
    spec = _spec(tmp_path, n=160, extra=["data.shard_size=4", "scan.checkpoint_every=3"])
    summary = run_killing_actors(lambda: _scan(spec, str(tmp_path), "r1"), RunState(str(tmp_path), "r1"), SCAN,
                                 spec.models.keys[0])
    key = spec.models.keys[0]
    # Only what the dead actor had not saved is scanned again: at most checkpoint_every shards plus one in flight.
    assert 40 <= summary.shards_scanned <= 40 + 3 + 2
    # the dead actor's shards and its replacement's
    assert len({r["worker"] for r in HeadMoments.read_meta(summary.moments[key])["shards"].values()}) >= 2
    _assert_same_moments(HeadMoments.load(summary.moments[key]), _reference(spec))


@pytest.mark.slow
def test_killed_driver_resumes_without_rescanning(tmp_path):
    """`ccs-ray run` killed (with its whole local Ray) mid-scan; `--resume` finishes with the moments of a
    single-process scan."""
    args = [sys.executable, "-m", "ccs_ray.cli", "run", str(REPO / "jobs" / "smoke.toml"), "--no-progress",
            "--set", 'stages=["scan","spans"]', "--set", 'data.source="probe://?n=128&seed=4&size=48"',
            "--set", "data.shard_size=4", "--set", "scan.checkpoint_every=2", "--set", "scan.batch_size=4"]
    env = dict(os.environ, RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    proc = subprocess.Popen(args + ["--results", str(tmp_path / "a"), "--run-id", "r1"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not partials(RunState(str(tmp_path / "a"), "r1"), SCAN, "ccs-tiny/none") and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    # The shards table of the killed scan: its plan and the shards its checkpoints saved, one row per shard.
    covered = {s for uri in partials(RunState(str(tmp_path / "a"), "r1"), SCAN, "ccs-tiny/none")
               for s in partial_shards(SCAN, uri)}
    rows = analytics.connect(str(tmp_path / "a")).execute("SELECT shard_id, status FROM shards").fetchall()
    assert len(rows) == 32 and {s for s, status in rows if status == "done"} <= covered
    done = subprocess.run(args + ["--results", str(tmp_path / "a"), "--resume", "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scan = json.loads(done.stdout)["stages"]["scan"]
    assert scan["shards_skipped"] > 0 and scan["shards_scanned"] + scan["shards_skipped"] == 32
    spec = load_spec(REPO / "jobs" / "smoke.toml",
                     [a for a, flag in zip(args[1:], args[:-1], strict=True) if flag == "--set"])
    moments = read_table(str(tmp_path / "a"), "moments", "r1").to_pylist()[-1]["uri"]
    _assert_same_moments(HeadMoments.load(moments), _reference(spec))  # every image once, as in one process


@pytest.mark.slow
@pytest.mark.xdist_group("ray_start")  # as `ray start`, it records the machine's current cluster
def test_heterogeneous_cluster_scans_on_gpu_nodes_and_decodes_on_every_node(tmp_path):
    """A simulated cluster (ray.cluster_utils.Cluster, in a subprocess) of two GPU nodes and one CPU-only node:
    one scan actor per GPU, on the GPU nodes (their shards spread over both); decoders on the CPUs the actors
    leave, the CPU-only node's included; the moments equal the single-process ones."""
    script = REPO / "tests" / "multinode_scan.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 3 and len(result["gpu_nodes"]) == 2 and result["gpu_node"] in result["gpu_nodes"]
    assert result["shard_nodes"] == result["gpu_nodes"]
    assert result["cpu_node"] in result["decoder_nodes"]
    _assert_same_moments(HeadMoments.load(result["moments"]), _reference(_spec(tmp_path)))


def test_resume_refuses_changed_data(ray_cluster, tmp_path):
    spec = _spec(tmp_path, n=16)
    _scan(spec, str(tmp_path), "r1")
    changed = _spec(tmp_path, n=16, extra=['data.source="probe://?n=16&seed=9&size=48"'])
    with pytest.raises(PassError, match="no longer matches"):
        _scan(changed, str(tmp_path), "r1")


@pytest.mark.slow
def test_two_models_share_each_decode_and_match_their_own_scans(ray_cluster, tmp_path):
    """Two models with one preprocessing: every shard decoded once, each model's moments as if scanned alone."""
    model, _ = load_model("ccs-tiny/none", device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    ckpt = tmp_path / "half.pt"
    torch.save(model.state_dict(), ckpt)
    other = f"ccs-tiny@{ckpt}"
    both = _spec(tmp_path / "both", n=32, extra=[f'models.keys=["ccs-tiny/none", "{other}"]'])
    summary = _scan(both, str(tmp_path / "both"), "r1")
    assert summary.shards_decoded == 4 and summary.shards_scanned == 8
    for key in both.models.keys:
        alone = _spec(tmp_path / "alone", n=32, extra=[f'models.keys=["{key}"]'])
        ref = _scan(alone, str(tmp_path / "alone"), key.replace("/", "_").replace("@", "_")[:8])
        _assert_same_moments(HeadMoments.load(summary.moments[key]), HeadMoments.load(ref.moments[key]))
    a, b = (HeadMoments.load(summary.moments[k]) for k in both.models.keys)
    assert not torch.allclose(a.outer, b.outer)  # really two different models


def test_shards_table_is_the_plan_then_the_record(ray_cluster, tmp_path):
    spec = _spec(tmp_path, n=32)
    _scan(spec, str(tmp_path), "r1")
    rows = read_table(str(tmp_path), "shards", "r1").to_pylist()
    assert sorted(r["shard_id"] for r in rows) == sorted(s.shard_id for s in plan_shards(spec.data))
    assert {r["status"] for r in rows} == {"done"} and sum(r["n_images"] for r in rows) == 32
    partition = tmp_path / "shards" / "run_id=r1" / "model=ccs-tiny%2Fnone"
    assert [p.name for p in partition.iterdir()] == ["scan.parquet"]  # the parts written while it ran are gone


def test_a_run_lists_its_source_once(ray_cluster, tmp_path, monkeypatch):
    """Preflight lists the data source; the scan (its plan rows, the cost measurement, dispatch) and the explain pass
    run that plan: one listing per run, whatever the stages."""
    from ccs_ray import pipeline, shard_plan, sources

    listed = []
    real = sources.iter_shards
    for module in (sources, shard_plan):
        monkeypatch.setattr(module, "iter_shards", lambda data: listed.append(data.source) or real(data))
    spec = _spec(tmp_path, n=16, extra=['stages=["scan", "spans", "explain"]'])
    summary = pipeline.run(spec, progress=False)
    assert listed == [spec.data.source]
    assert summary["stages"]["scan"]["n_images"] == {"ccs-tiny/none": 16}
    assert summary["stages"]["explain"]["images"] == 16


def test_a_partial_counted_twice_is_refused(ray_cluster, tmp_path):
    spec = _spec(tmp_path, n=32)
    ctx, key = RunContext.of(spec, "r1", str(tmp_path), progress=False), spec.models.keys[0]
    plan = ctx.shard_plan(spec.data)
    run_pass(ctx, MomentsPass(2, "centered", False), spec.scan, plan, {key: plan.ids()}, 2)  # partials, not merged
    first = Path(partials(RunState(str(tmp_path), "r1"), SCAN, key)[0]).parent
    shutil.copytree(first, first.with_name("c0de" * 3))  # an actor folder committed twice
    with pytest.raises(PassError, match="counted twice"):
        _scan(spec, str(tmp_path), "r1")


def test_a_checkpoint_may_report_a_shard_before_its_own_result():
    """Results of one actor's calls reach the driver in any order; whichever order they come in, a shard a
    checkpoint holds is not left unsaved (else the pass, ending, asks for checkpoints forever)."""
    a, b = plan_shards(_spec("/tmp", n=16).data)[:2]
    in_order, reversed_ = _Worker("m", None, "f", inflight=2), _Worker("m", None, "f", inflight=2)
    in_order.passed(a)
    in_order.passed(b)
    in_order.saved([a.shard_id, b.shard_id])
    reversed_.passed(a)
    reversed_.saved([a.shard_id, b.shard_id])  # the checkpoint's result came before b's own
    reversed_.passed(b)
    for w in (in_order, reversed_):
        assert (w.unsaved, w.saved_early, w.inflight) == ({}, set(), 0)
    late = _Worker("m", None, "f", inflight=1)
    late.saved([a.shard_id])  # a shard of a dead actor's call, saved before the actor died
    late.passed(b)
    assert set(late.unsaved) == {b.shard_id} and late.saved_early == {a.shard_id}


def test_workers_run_as_many_torch_threads_as_the_cpus_they_hold(ray_cluster):
    import ray

    from ccs_ray.cluster import use_held_cpus

    @ray.remote
    def threads():
        import os

        from threadpoolctl import threadpool_info

        use_held_cpus()
        pools = {p["num_threads"] for p in threadpool_info()}  # torch's OpenMP and BLAS, numpy's BLAS, ...
        return torch.get_num_threads(), pools, os.environ.get("OMP_WAIT_POLICY")

    found = ray.get([threads.options(num_cpus=c).remote() for c in (2, 1.6, 1, 0.3)])
    assert [(n, pools) for n, pools, _ in found] == [(2, {2}), (2, {2}), (1, {1}), (1, {1})]
    assert {wait for _, _, wait in found} == {"PASSIVE"}  # waiting OpenMP threads sleep (ccs_ray.threads)


def test_costs_are_measured_at_one_thread_in_the_driver_which_keeps_its_threads(tmp_path, monkeypatch):
    """The decode share's costs come from the calling process: decoding the first shard and the model's pass at one
    torch thread; the caller's thread count is restored afterwards."""
    from ccs_ray.passes import measure_costs
    from ccs_ray.preprocess import preprocess_config

    spec = _spec(tmp_path)
    key = spec.models.keys[0]
    threads = torch.get_num_threads()
    seen, original = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n)))
    costs = measure_costs(next(iter(plan_shards(spec.data))), preprocess_config(key), key, spec.models,
                          spec.scan.convention, keep_z_sum=True)
    assert seen == [1, threads] and torch.get_num_threads() == threads
    assert costs["decode_s"] > 0 and costs["model_s"] > 0


def test_actor_layout_fits_the_cluster():
    spec = _spec("/tmp/unused")
    six = _spec("/tmp/unused", extra=['models.keys=["a/none","b/none","c/none","d/none","e/none","f/none"]'])
    # CPU-only: the actors hold every CPU decoding does not need (at least MIN_DECODE_SHARE stays with it).
    assert actor_layout(spec.scan, 1, {"CPU": 2}) == (0.0, 1.96, 1)
    assert actor_layout(spec.scan, 1, {"CPU": 2}, decode_share=0.25) == (0.0, 1.5, 1)
    assert actor_layout(_spec("/tmp/unused", extra=["scan.actors=2"]).scan, 1, {"CPU": 2}) == (0.0, 0.98, 2)
    # ... and fit the smallest node: two nodes of 2 and 4 CPUs, three actors -> two per node
    assert actor_layout(spec.scan, 3, {"CPU": 6}, decode_share=0.1, nodes=[2, 4]) == (0.0, 0.9, 1)
    assert actor_layout(spec.scan, 1, {"CPU": 16, "GPU": 4}) == (1.0, 1.0, 4)
    gpus, _, n = actor_layout(six.scan, 6, {"CPU": 16, "GPU": 1})  # six models share one GPU
    assert n == 1 and 6 * gpus <= 1 and gpus > 0
    with pytest.raises(LayoutError, match="scan.gpus_per_actor"):
        actor_layout(_spec("/tmp/unused", extra=["scan.gpus_per_actor=1"]).scan, 6, {"CPU": 16, "GPU": 1})
    with pytest.raises(LayoutError, match="scan.cpus_per_actor"):
        actor_layout(_spec("/tmp/unused", extra=["scan.actors=2", "scan.cpus_per_actor=1"]).scan, 1, {"CPU": 2})
    # The prune stage's actors decode themselves: they hold every CPU, and name their own section.
    evals = _spec("/tmp/unused", extra=["evals.actors=3"]).evals
    assert actor_layout(evals, 1, {"CPU": 2}, decode_share=0.0, key="evals") == (0.0, 0.66, 3)
    assert actor_layout(spec.evals, 1, {"CPU": 2}, decode_share=0.0, key="evals") == (0.0, 2.0, 1)
    with pytest.raises(LayoutError, match="evals.gpus_per_actor"):
        actor_layout(_spec("/tmp/unused", extra=["evals.gpus_per_actor=1"]).evals, 1, {"CPU": 2}, decode_share=0.0,
                     key="evals")


def _held(layout, node):
    return round(sum(c for n, c in layout if n == node), 2)


def test_decoders_use_the_cpus_the_actors_leave_on_every_node():
    from ccs_ray.cluster import decoder_layout

    # One node of 2 CPUs, one actor of 0.4: the first decoder (0.01) and one more, one per free CPU.
    assert decoder_layout({"a": {"CPU": 2}}, 0, 0.4, 1, "a") == [("a", 0.79)]
    # Two nodes, an actor on each: two decoders per node, the first one counted on the driver's node.
    two = {"a": {"CPU": 2}, "b": {"CPU": 2}}
    assert decoder_layout(two, 0, 0.4, 2, "a") == [("a", 0.79), ("b", 0.8), ("b", 0.8)]
    # Heterogeneous: GPU nodes hold the model actors (1 GPU, 1 CPU each); the CPU-only nodes decode with every CPU.
    shape = {"g1": {"CPU": 8, "GPU": 1}, "g2": {"CPU": 8, "GPU": 1}, "c1": {"CPU": 16}, "c2": {"CPU": 4}}
    layout = decoder_layout(shape, 1, 1.0, 2, "g1")
    assert [n for n, _ in layout].count("c1") == 16 and _held(layout, "c1") == 16
    assert [n for n, _ in layout].count("c2") == 4 and [n for n, _ in layout].count("g2") == 7
    assert [n for n, _ in layout].count("g1") == 6  # with the first decoder: 7, one per CPU the actor leaves
    for node, res in shape.items():  # no node is asked for more than it has
        actors = 1.0 if "GPU" in res else 0.0
        assert _held(layout, node) + actors + (0.01 if node == "g1" else 0) <= res["CPU"] + 1e-9
    # A node the actors fill leaves nothing to ask for.
    assert decoder_layout({"a": {"CPU": 1}}, 0, 1.0, 1, "a") == []
