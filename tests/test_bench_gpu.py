"""``ccs-ray bench gpu``: without a GPU one line and exit status 0; its measurements, run on the CPU with the tiny
model (the figures of a GPU come from the command itself on a GPU machine)."""

import json
import subprocess

import pytest
import torch
from open_clip.transformer import LayerScale

from ccs_ray import decompose
from ccs_ray.bench import gpu
from ccs_ray.decompose import decomposed_forward


def _cpu_figures(**options):
    return gpu.run(models=("ccs-tiny/none",), precisions=("fp32", "bf16"), batch_size=4, reps=3, warmup=1,
                   seconds=None, sum_back_images=2, device="cpu", **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the command measures")
def test_without_a_gpu_one_line_and_exit_0():
    for args, expected in (([], f"skipped  {gpu.NO_GPU}\n"), (["--json"], json.dumps({"skipped": gpu.NO_GPU}) + "\n")):
        done = subprocess.run(["ccs-ray", "bench", "gpu", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout == expected, done.stderr


def test_figures_of_each_model_and_precision_on_the_cpu():
    f = _cpu_figures(scan_images=0)
    assert f["bench"] == "gpu" and f["device"].startswith("cpu") and "scan" not in f
    fp32, bf16 = f["ccs-tiny/none fp32"], f["ccs-tiny/none bf16"]
    for m in (fp32, bf16):
        assert m["reps"] == 3 and m["n_decomposed_heads"] == 16 and "peak_gpu_mb" not in m  # no GPU memory here
        assert min(m["plain_images_per_s"], m["forward_images_per_s"], m["decomposed_images_per_s"]) > 0
        assert m["moments_overhead"] == pytest.approx(m["plain_images_per_s"] / m["decomposed_images_per_s"],
                                                      rel=1e-3)
        assert m["ratio"] == pytest.approx(1 / m["moments_overhead"], rel=1e-3)
    # the components sum back to encode_image to float32 rounding; bf16 within its bound (tests/test_decompose.py)
    assert fp32["sum_back_rel_error"] < 1e-5 and 1e-5 < bf16["sum_back_rel_error"] < 3e-2
    assert f["min_ratio"] == min(fp32["ratio"], bf16["ratio"])
    assert f["targets_met"] == {"ratio": f["min_ratio"] >= gpu.TARGET_RATIO, "wall_s": f["wall_s"] <= gpu.BUDGET_S}


def test_sum_back_error_is_rounding_in_float64_with_layer_scale(tiny_model_copy, monkeypatch):
    net = tiny_model_copy[0].double()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert gpu.sum_back_error(net, images) < 1e-12
    width = net.visual.transformer.width
    for block in net.visual.transformer.resblocks:  # a layer scale on every residual write, as some ViTs have
        block.ls_1, block.ls_2 = LayerScale(width, 0.5).double(), LayerScale(width, 2.0).double()
        torch.nn.init.uniform_(block.ls_1.gamma, 0.5, 1.5)
    assert gpu.sum_back_error(net, images) < 1e-12

    def one_head_lost(*args, **kwargs):
        d = decomposed_forward(*args, **kwargs)
        d.contributions[:, -1, 0] = 0
        return d

    monkeypatch.setattr(decompose, "decomposed_forward", one_head_lost)
    assert gpu.sum_back_error(net, images) > 1e-3


@pytest.mark.slow
def test_scan_figures_on_the_cpu(ray_cluster):
    f = _cpu_figures(scan_model="ccs-tiny/none", scan_precision="fp32", scan_images=32, scan_batch_size=8,
                     shard_size=8, image_px=64)
    s = f["scan"]
    assert s["images"] == 32 and s["actor_gpus"] == 0 and s["decode_on_actors"] is False  # no GPU: CPU decoders
    assert min(s["model_only_images_per_s"], s["end_to_end_images_per_s"]) > 0
    assert s["ratio"] == pytest.approx(s["end_to_end_images_per_s"] / s["model_only_images_per_s"], rel=1e-3)
    assert f["targets_met"]["scan_ratio"] == (s["ratio"] >= gpu.TARGET_SCAN_RATIO)
