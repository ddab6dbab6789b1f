"""The per-head decomposition sums back to open_clip's own encode_image.

The reference components come from forward hooks on open_clip's modules (ln_pre output, every MLP
output, every attention output), i.e. from open_clip's forward, not from ours.
"""

import ctypes
import dataclasses
import gc

import pytest
import torch

from ccs_ray import head_contributions, load_model
from ccs_ray.decompose import TowerShape, decomposed_forward, tower_shape

MODELS = {}
REFERENCES = {}  # (key, batch, seed) -> (images, _reference(model, images)): open_clip's forward does not depend
# on the convention or the layers decomposed, so tests of the same images share it


@pytest.fixture(autouse=True, scope="module")
def _release_models():
    """The fp64 models (ViT-L-14: 3.4 GB) and references are freed when this module ends, not held by the
    test session while later tests start Ray clusters."""
    yield
    MODELS.clear()
    REFERENCES.clear()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _model(key, dtype=torch.float64):
    if (key, dtype) not in MODELS:
        torch.manual_seed(0)
        model, _ = load_model(key, device="cpu")
        MODELS[(key, dtype)] = model.to(dtype)
    return MODELS[(key, dtype)]


def _images_and_reference(key, batch, seed):
    model = _model(key)
    if (key, batch, seed) not in REFERENCES:
        size = model.visual.image_size[0]
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        REFERENCES[(key, batch, seed)] = images, _reference(model, images)
    return REFERENCES[(key, batch, seed)]


def _reference(model, images):
    """encode_image plus the class-token outputs of ln_pre, every attention and every MLP, via hooks."""
    vis, comps, hooks = model.visual, {}, []
    hooks.append(vis.ln_pre.register_forward_hook(lambda m, i, o: comps.__setitem__("pre", o[:, 0])))
    for l, block in enumerate(vis.transformer.resblocks):
        hooks.append(block.mlp.register_forward_hook(lambda m, i, o, l=l: comps.__setitem__(("mlp", l), o[:, 0])))
        hooks.append(block.attn.register_forward_hook(lambda m, i, o, l=l: comps.__setitem__(("attn", l), o[0][:, 0])))
    with torch.no_grad():
        e = model.encode_image(images)
    for h in hooks:
        h.remove()
    return e, comps


def _sum_back(model, images, layers, convention, reference=None):
    """Embedding rebuilt from our head contributions plus hooked remaining components (``reference``:
    ``_reference(model, images)`` when already computed)."""
    vis = model.visual
    blocks = vis.transformer.resblocks
    L, H = len(blocks), blocks[0].attn.num_heads
    e, comps = reference or _reference(model, images)
    contributions = head_contributions(model, images, layers, convention)
    residual = comps["pre"] + sum(comps[("mlp", l)] + comps[("attn", l)] for l in range(L))
    ln = vis.ln_post
    mu, sigma = residual.mean(-1), torch.sqrt(residual.var(-1, unbiased=False) + ln.eps)
    w, b = ln.weight.to(residual.dtype), ln.bias.to(residual.dtype)
    proj = vis.proj.to(residual.dtype)
    if convention == "centered":
        rest = [comps["pre"]] + [comps[("mlp", l)] for l in range(L)]
        rest += [comps[("attn", l)] for l in range(L) if l not in layers]
        rest += [blocks[l].attn.out_proj.bias.to(residual.dtype).expand_as(comps["pre"]) for l in layers]
        def centered(c):
            return ((c - c.mean(-1, keepdim=True)) * w / sigma[:, None]) @ proj

        total = contributions.to(residual.dtype).sum((1, 2)) + sum(centered(c) for c in rest) + b @ proj
        return total, e
    K = 2 * L + 1
    norm = e.norm(dim=-1, keepdim=True)

    def project(c, share):
        return ((w * (c - mu[:, None] * share) / sigma[:, None]) + b * share) @ proj / norm

    rest = [(comps["pre"], 1 / K)] + [(comps[("mlp", l)], 1 / K) for l in range(L)]
    rest += [(comps[("attn", l)], H / (K * H)) for l in range(L) if l not in layers]
    total = contributions.to(residual.dtype).sum((1, 2)) + sum(project(c, s) for c, s in rest)
    return total, e / norm


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("convention", ["centered", "textspan"])
@pytest.mark.parametrize("key,batch,layers", [
    ("ccs-tiny/none", 1, None), ("ccs-tiny/none", 16, [0, 1, 2, 3]), ("ccs-tiny/none", 16, [1, 3]),
    ("ViT-B-32/none", 1, None), ("ViT-B-32/none", 8, [11]), ("ViT-B-32/none", 4, list(range(12))),
    # ViT-L-14 in float64 (3.4 GB), the gate for a torch upgrade, in the end-to-end tier: a batch, on early, middle
    # and the last layers
    pytest.param("ViT-L-14/none", 2, [0, 5, 20, 21, 22, 23], marks=pytest.mark.slow),
])
def test_sums_back_to_encode_image_fp64(key, batch, layers, convention):
    model = _model(key)
    images, reference = _images_and_reference(key, batch, seed=batch)
    used = layers if layers is not None else list(range(len(model.visual.transformer.resblocks)))[-4:]
    total, target = _sum_back(model, images, used, convention, reference)
    assert _rel(total, target) < 1e-5


# Low precision: the decomposition itself is float32 from the half-precision attention outputs, so the
# error is that of the fp16/bf16 forward pass. Bounds: relative error < 1e-2 (fp16) and < 3e-2 (bf16,
# 8-bit mantissa), measured against open_clip's encode_image in the same precision.
@pytest.mark.slow
@pytest.mark.parametrize("precision,dtype,bound", [("fp16", torch.float16, 1e-2), ("bf16", torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("convention", ["centered", "textspan"])
def test_sums_back_low_precision(precision, dtype, bound, convention):
    model = _model("ViT-B-32/none", dtype)
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(dtype)
    total, target = _sum_back(model, images, [8, 9, 10, 11], convention)
    assert _rel(total, target) < bound


def test_embedding_matches_encode_image_fp32():
    """Same embedding as open_clip in the same pass (per-head attention differs only in kernel rounding)."""
    model = _model("ViT-B-32/none", torch.float32)
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _rel(decomposed_forward(model, images).embedding, model.encode_image(images)) < 1e-5


def test_shape_and_default_layers():
    model = _model("ccs-tiny/none", torch.float32)
    contributions = head_contributions(model, torch.randn(5, 3, 32, 32))
    assert contributions.shape == (5, 4, 4, 32)
    with pytest.raises(ValueError, match="out of range"):
        head_contributions(model, torch.randn(1, 3, 32, 32), layers=[7])
    with pytest.raises(ValueError, match="convention"):
        head_contributions(model, torch.randn(1, 3, 32, 32), convention="bogus")
    with pytest.raises(ValueError, match=r"repeat \[2\]"):  # not a duplicated block of heads
        head_contributions(model, torch.randn(1, 3, 32, 32), layers=[2, 3, 2])
    assert head_contributions(model, torch.randn(1, 3, 32, 32), layers=[3, 1]).shape == (1, 2, 4, 32)


@pytest.mark.parametrize("dtype,returned", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                            (torch.float16, torch.float32), (torch.bfloat16, torch.float32)])
def test_returned_dtype_is_the_documented_one(dtype, returned):
    """float32 for fp32 and half-precision models (the decomposition is computed in float32), float64 for fp64."""
    model = _model("ccs-tiny/none", dtype)
    assert head_contributions(model, torch.randn(2, 3, 32, 32)).dtype == returned


def test_tower_shape_and_keyword_only_forward():
    model = _model("ccs-tiny/none", torch.float32)
    shape = tower_shape(model)
    assert shape == TowerShape(layers=4, n_heads=4, width=64, head_dim=16, embed_dim=32, tokens=17)
    assert shape.head_names([3])[:2] == ["L3.H0", "L3.H1"] and len(shape.head_names()) == 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        shape.n_heads = 8
    with pytest.raises(ValueError, match="width"):
        TowerShape(layers=1, n_heads=2, width=5, head_dim=2, embed_dim=3, tokens=4)
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError):
        decomposed_forward(model, images, [3])
    d = decomposed_forward(model, images, layers=[1, 3])
    assert d.contributions.shape == (2, 2, 4, 32) and d.layers == [1, 3]
    assert d.heads == shape.head_names([1, 3])
    with pytest.raises(ValueError, match="needs images, or start to resume from"):
        decomposed_forward(model, None, layers=[1, 3])


@pytest.mark.parametrize("mode", [None, "zero", "mean"])
def test_last_block_on_the_class_token_alone_equals_its_full_row(mode):
    """The last block computes only the class token's row (its query against every key and value): the same
    attention outputs and residual row as the full block, with or without heads ablated there, in float64."""
    from ccs_ray.decompose import HeadAblation, block_forward, head_outputs

    model = _model("ViT-B-32/none")
    block = model.visual.transformer.resblocks[11]
    x = torch.randn(3, 50, 768, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mean_z = {11: torch.randn(12, 50, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)}
    ablation = HeadAblation({11: [2, 7]}, mode, mean_z) if mode else None
    with torch.no_grad():
        z_full, z_cls = head_outputs(block, x), head_outputs(block, x, cls_only=True)
        (full, _), (cls, z) = (block_forward(block, x, ablation, 11),
                               block_forward(block, x, ablation, 11, cls_only=True))
        from_whole, _ = block_forward(block, x, ablation, 11, z_full, cls_only=True)  # every token's z given
        stock = block(x)
    assert z_cls.shape == (3, 12, 1, 64) and cls.shape == (3, 1, 768)
    torch.testing.assert_close(z_cls, z_full[:, :, :1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cls, full[:, :1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(from_whole, full[:, :1], rtol=1e-12, atol=1e-12)
    if mode is None:
        torch.testing.assert_close(cls, stock[:, :1], rtol=1e-10, atol=1e-10)
    elif mode == "mean":
        torch.testing.assert_close(z[:, [2, 7], 0], mean_z[11][[2, 7], :1].squeeze(-2).expand(3, -1, -1))


def test_keeping_the_last_layers_z_sum_runs_its_attention_whole_with_the_same_results():
    """With ``keep_z_sum`` the last block's attention runs over every token (its z sum covers them all); the
    embedding and the contributions equal those of the class-token-only pass."""
    model = _model("ViT-B-32/none")
    images, _ = _images_and_reference("ViT-B-32/none", 1, seed=1)
    whole = decomposed_forward(model, images, keep_z_sum=True)
    cls = decomposed_forward(model, images)
    assert whole.z_sum.shape == (4, 12, 50, 64)
    torch.testing.assert_close(cls.embedding, whole.embedding, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cls.contributions, whole.contributions, rtol=1e-12, atol=1e-12)
