"""Ablation in the forward pass: equals the paper's weight zeroing, leaves the model intact, shares prefixes."""

import copy

import pytest
import torch

from ccs_ray import ablated
from ccs_ray.ablate import encode_ablations, head_ablation
from ccs_ray.decompose import encode_images, tower_shape
from ccs_ray.heads import parse_head_name
from conftest import guarded

HEADS = ["L3.H1", "L2.H0", "L2.H3"]


@pytest.fixture(scope="module")
def model64(tiny_model, request):
    return guarded(copy.deepcopy(tiny_model[0]).double(), request)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(4, 3, 32, 32, dtype=torch.float64)


def zeroed_copy(model, heads):
    """The paper's method: zero the head's columns of out_proj.weight in a copy of the model."""
    copy_ = copy.deepcopy(model)
    d = tower_shape(model).head_dim
    for name in heads:
        layer, head = parse_head_name(name)
        with torch.no_grad():
            copy_.visual.transformer.resblocks[layer].attn.out_proj.weight[:, head * d:(head + 1) * d] = 0
    return copy_


def test_zero_ablation_equals_zeroing_out_proj_columns(model64, images):
    expected = zeroed_copy(model64, HEADS).encode_image(images)
    before = {k: v.clone() for k, v in model64.state_dict().items()}
    with ablated(model64, HEADS, mode="zero"):
        got = model64.encode_image(images)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the ablation changed something, left no weight changed, and is gone after the with
    assert (got - model64.encode_image(images)).abs().max() > 1e-3
    assert all(torch.equal(before[k], v) for k, v in model64.state_dict().items())
    assert not any("forward" in vars(b) for b in model64.visual.transformer.resblocks)


def test_zero_ablation_fp32_close_to_weight_zeroing(tiny_model, images):
    model = tiny_model[0]
    x = images.float()
    with ablated(model, ["L0.H2", "L3.H3"]):
        got = model.encode_image(x)
    torch.testing.assert_close(got, zeroed_copy(model, ["L0.H2", "L3.H3"]).encode_image(x), rtol=1e-4, atol=1e-5)


def test_mean_ablation_replaces_attention_output_by_its_mean(model64, images):
    """Mean ablation with the mean z of one image equals no ablation for that image (z replaced by itself)."""
    from ccs_ray.decompose import decomposed_forward

    one = images[:1]
    z_sum = decomposed_forward(model64, one, layers=[1, 3], keep_z_sum=True).z_sum  # [2, H, T, d], batch of 1
    mean_z = {1: z_sum[0], 3: z_sum[1]}
    with ablated(model64, ["L1.H0", "L3.H2"], mode="mean", mean_z=mean_z):
        same = model64.encode_image(one)
        other = model64.encode_image(images[1:2])
    torch.testing.assert_close(same, model64.encode_image(one), rtol=1e-10, atol=1e-12)
    assert (other - model64.encode_image(images[1:2])).abs().max() > 1e-6


def test_restored_after_error_and_bad_input(model64, images):
    with pytest.raises(ZeroDivisionError):
        with ablated(model64, ["L1.H1"]):
            raise ZeroDivisionError
    assert "forward" not in vars(model64.visual.transformer.resblocks[1])
    with pytest.raises(ValueError, match="outside the image tower"):
        head_ablation(model64, ["L9.H0"])
    with pytest.raises(ValueError, match="L<layer>.H<head>"):
        head_ablation(model64, ["layer3"])
    with pytest.raises(ValueError, match="not one of"):
        head_ablation(model64, ["L1.H0"], mode="half")
    with pytest.raises(ValueError, match="mean_z"):
        head_ablation(model64, ["L1.H0"], mode="mean")
    with ablated(model64, ["L1.H1"]):
        with pytest.raises(RuntimeError, match="already patched"):
            with ablated(model64, ["L1.H2"]):
                pass


def test_prefix_shared_encoding_equals_each_configuration_alone(model64, images):
    configs = [None, ["L3.H1"], ["L3.H1", "L2.H0"], ["L2.H0", "L3.H1"], ["L0.H1"], HEADS, [], ["L3.H2"]]
    ablations = [head_ablation(model64, h) if h else None for h in configs]
    shared = encode_ablations(model64, images, ablations)
    assert shared.shape == (len(configs), 4, model64.visual.proj.shape[1])
    for i, a in enumerate(ablations):
        torch.testing.assert_close(shared[i], encode_images(model64, images, a), rtol=1e-12, atol=1e-12)
        with ablated(model64, configs[i] or []):
            torch.testing.assert_close(shared[i], model64.encode_image(images), rtol=1e-10, atol=1e-12)


def test_prefix_sharing_runs_common_layers_once(model64, images):
    """Count block calls: 4 configurations differing only in layer 3 run layers 0..2 once."""
    calls = []
    hooks = [b.register_forward_pre_hook(lambda m, a, l=l: calls.append(l))
             for l, b in enumerate(model64.visual.transformer.resblocks)]
    try:
        ablations = [None] + [head_ablation(model64, [f"L3.H{h}"]) for h in range(3)]
        encode_ablations(model64, images, ablations)
    finally:
        for h in hooks:
            h.remove()
    # layers 0-2 are plain block calls, once; the last layer 3 runs through the per-head path (no block call), the
    # class token's row alone, for all 4 configurations, the unablated one included
    assert calls == [0, 1, 2]


def test_prune_bench_reports_figures():
    from ccs_ray.bench.prune import run

    out = run(model="ccs-tiny/none", configs=3, batch_size=2, heads_per_config=2, repeats=1)
    assert out["configs"] == 3 and out["max_abs_diff"] == 0.0
    assert out["speedup"] == pytest.approx(out["alone_s"] / out["shared_s"]) and out["speedup"] > 0
    # the single strategy: each of the 16 heads of the last 4 layers alone, as encoded one at a time
    assert out["single_head_configs"] == 16 and out["single_head_max_abs_diff"] == 0.0
    assert out["single_head_cost_vs_unpruned"] == pytest.approx(out["single_head_s"] / out["unpruned_s"])
    assert out["single_head_cost_vs_unpruned"] > 0
