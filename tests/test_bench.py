"""``ccs-ray bench decompose|scan --json`` print one JSON object whose figures are consistent with each other."""

import json

from ccs_ray.bench import scan as bench_scan
from ccs_ray.cli import main


def test_bench_decompose_json(capsys):
    assert main(["bench", "decompose", "--model", "ccs-tiny/none", "--batch-size", "4", "--reps", "3", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n_decomposed_heads"] == 16 and figures["plain_images_per_s"] > 0
    assert abs(figures["ratio"] - figures["decomposed_images_per_s"] / figures["plain_images_per_s"]) < 0.01


def test_bench_scan_figures(ray_cluster):
    f = bench_scan.run(model="ccs-tiny/none", images=32, batch_size=8, shard_size=8, image_px=64,
                       memory_scale=2, memory_images=16)
    bound = min(f["decode_only_images_per_s"], f["model_only_images_per_s"])
    assert abs(f["ratio_end_to_end_vs_min"] - f["end_to_end_images_per_s"] / bound) < 0.01
    assert f["memory_1x"]["images"] == 16 and f["memory_2x"]["images"] == 32
    assert f["memory_2x"]["actor_peak_rss_mb"] > 0 and f["gpus"] == 0
