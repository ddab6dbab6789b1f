"""Each ``ccs-ray bench`` prints one JSON object whose figures are consistent with each other, run in-process at a
small size. The targets the benchmarks measure (speedups, throughput ratios) are figures of the benchmarks
themselves, run as commands; tests assert what must hold at any size (exactness, nothing lost or paid twice)."""

import json

import pytest

from ccs_ray.bench import scan as bench_scan
from ccs_ray.cli import main


def test_bench_decompose_json(capsys):
    assert main(["bench", "decompose", "--model", "ccs-tiny/none", "--batch-size", "4", "--reps", "3", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n_decomposed_heads"] == 16 and figures["plain_images_per_s"] > 0
    # the printed throughputs are rounded to 0.01 images/s and the ratio to 4 decimals: they agree to 1e-3 relative
    # or, for a small ratio, to 1e-4 (twice the ratio's rounding)
    assert figures["ratio"] == pytest.approx(figures["decomposed_images_per_s"] / figures["plain_images_per_s"],
                                             rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_bench_scan_figures(ray_cluster):
    f = bench_scan.run(model="ccs-tiny/none", images=32, batch_size=8, shard_size=8, image_px=64,
                       memory_scale=2, memory_images=8)
    bound = min(f["decode_only_images_per_s"], f["model_only_images_per_s"])
    assert f["ratio_end_to_end_vs_min"] == pytest.approx(f["end_to_end_images_per_s"] / bound, rel=0.01)
    assert f["ratio_explain_vs_scan"] == pytest.approx(f["explain_images_per_s"] / f["end_to_end_images_per_s"],
                                                       rel=0.01)
    assert f["memory_1x"]["images"] == 8 and f["memory_2x"]["images"] == 16
    assert f["memory_2x"]["actor_peak_rss_mb"] > 0 and f["gpus"] == 0
    assert f["decode_gpu_images_per_s"] is None and f["end_to_end_decode_on_actors"] is False  # no GPU: decoders
    assert f["ratio_end_to_end_vs_plain"] == pytest.approx(f["end_to_end_images_per_s"]
                                                           / f["plain_encode_images_per_s"], rel=0.01)
    # every core: the model-only actor held all but the decode share of the 2 CPUs and ran 2 torch threads
    assert f["actor_cpus"] > 1 and f["actor_torch_threads"] == 2 and 0 < f["decode_share"] < 1


def test_bench_scan_times_decoding_on_a_device(ray_cluster, tmp_path):
    """The figure ``decode_gpu_images_per_s`` is measured where a GPU exists; its measurement, on the CPU here."""
    from ccs_ray.preprocess import preprocess_config
    from ccs_ray.sources import plan_shards
    from ccs_ray.spec import DataConfig

    bench_scan._write_jpegs(str(tmp_path), 12, 64)
    shards = plan_shards(DataConfig(source=str(tmp_path), shard_size=4))
    assert bench_scan._device_decode_ips(shards, preprocess_config("ccs-tiny/none"), "cpu") > 0


def test_bench_preflight_times_each_case_to_its_one_line_error(monkeypatch):
    from ccs_ray.bench import preflight

    cases = ("typo_in_evals_entry", "base_url_with_credentials")
    monkeypatch.setattr(preflight, "CASES", {case: preflight.CASES[case] for case in cases})
    figures = preflight.run()
    assert figures["failed_cases"] == [] and figures["cases_missed"] == 0  # each: exit status 2, one "ccs-ray:" line
    assert set(figures) == {"typo_in_evals_entry_s", "base_url_with_credentials_s", "results_root_not_writable_s",
                            "slowest_s", "help_s", "slowest_spec_s", "failed_cases", "cases_missed"}
    assert figures["slowest_spec_s"] == max(figures[f"{case}_s"] for case in cases)
    assert figures["slowest_s"] == max(figures["slowest_spec_s"], figures["results_root_not_writable_s"]) > 0


def test_bench_chaos_compares_rows_to_their_tolerances_and_finds_leftovers(tmp_path):
    """What ``ccs-ray bench chaos`` (a whole run under faults: tests/test_chaos.py) compares and counts."""
    from ccs_ray.bench.chaos import FLOAT32_RTOL, MOMENTS_RTOL, _leftovers, _same_rows
    from ccs_ray.files import commit_write

    row = {"head": "L3.H1", "variance": 0.25, "direction": [0.6, 0.8]}
    assert _same_rows([row], [row | {"variance": 0.25 * (1 + MOMENTS_RTOL / 2)}])
    assert not _same_rows([row], [row | {"variance": 0.25 * (1 + 10 * MOMENTS_RTOL)}])
    assert _same_rows([row], [row | {"direction": [0.6 * (1 + FLOAT32_RTOL / 2), 0.8]}])
    assert not _same_rows([row], [row | {"direction": [0.6 * (1 + 10 * FLOAT32_RTOL), 0.8]}])
    assert not _same_rows([row], [row | {"head": "L3.H2"}]) and not _same_rows([row], [row, row])
    partials = tmp_path / "_state" / "r1" / "ccs-tiny%2Fnone" / "partials" / "actor-0"
    commit_write(str(partials), 1, b"committed", ".safetensors")
    (partials / "00000002.safetensors").write_bytes(b"written, never committed")
    (tmp_path / "spans.tmp").write_bytes(b"")
    assert _leftovers(tmp_path) == {"tmp_files": [str(tmp_path / "spans.tmp")],
                                    "orphan_partials": [str(partials / "00000002.safetensors")]}


def test_bench_judge_json_loses_nothing_and_pays_nothing_twice(ray_cluster, capsys):
    assert main(["bench", "judge", "--json", "--rpm", "120", "--seconds", "3"]) == 0
    figures = json.loads(capsys.readouterr().out)  # "Extra data" if anything else was printed
    assert figures["rpm"] == 120 and figures["limit_429"] == 0 and figures["window_ok"]
    # heads in pairs with the same spans: a label and 5 judgments per pair
    assert figures["requests"] >= figures["answered"] >= figures["answers_needed"] == 6 * figures["heads_judged"] // 2
    assert figures["paid_twice"] == 0 and figures["lost_judgments"] == 0 and figures["stage_errors"] == 0
    assert figures["rerun_requests"] == 0 and figures["rerun_calls"] == 0
    assert figures["throughput_ratio"] == pytest.approx((figures["requests"] - 1) / figures["traffic_s"] * 60 / 120)



def test_bench_chaos_counts_only_its_own_runs_ray_processes(ray_cluster):
    """The chaos run kills and counts the Ray processes of the cluster its process started: never another's."""
    import os
    import subprocess

    from ccs_ray.bench.chaos import ray_processes

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the cluster at RAY_ADDRESS was started by another session")

    @ray_cluster.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    probe = Probe.remote()
    pid = ray_cluster.get(probe.pid.remote())  # a worker of the local cluster this session started
    mine = ray_processes(os.getpid())
    assert mine[pid].startswith("ray::Probe") and all(title.startswith("ray::") for title in mine.values())
    assert not ray_processes(os.getpid(), ("ray::Nope",))
    other = subprocess.Popen(["sleep", "30"])  # a process no Ray worker descends from
    try:
        assert ray_processes(other.pid) == {}
    finally:
        other.kill()
        other.wait()
    ray_cluster.kill(probe)
