"""Compact moments: the coefficients' moments and the heads' bases give the full D x D moments exactly, in both
conventions, so spans and label fidelity are those of the full path; their files are 50x-100x smaller."""

import copy
import json

import pytest
import torch
from safetensors.torch import save as st_save

from ccs_ray import HeadMoments
from ccs_ray.decompose import TowerShape, coefficient_count, decomposed_forward, head_basis, tower_shape
from ccs_ray.fidelity import label_fidelity
from ccs_ray.moments import basis_uri
from ccs_ray.textspan import textspan_from_moments

CONVENTIONS = ("centered", "textspan")
SAME = dict(rtol=1e-9, atol=1e-12)  # float64 paths that differ only in the order of the sums


def _perturbed(model):
    """A float64 copy of ``model`` whose every weight moved off its initial value (biases, ln_post's scale and
    shift: nothing is 0 or 1 that the bases depend on)."""
    model = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return model


def _both(model, images, layers, convention, batch=4):
    """(compact, full) moments of the same images: two folds, batches alternating."""
    compact = HeadMoments.for_model("m/none", model, layers, convention=convention)
    full = HeadMoments("m/none", layers, tower_shape(model), convention=convention)
    for i in range(0, len(images), batch):
        fold = (i // batch) % 2
        d = decomposed_forward(model, images[i:i + batch], layers=layers, convention=convention, keep_z_sum=True,
                               coefficients=True)
        compact.update(d.coefficients, fold, d.z_sum)
        d = decomposed_forward(model, images[i:i + batch], layers=layers, convention=convention, keep_z_sum=True)
        full.update(d.contributions, fold, d.z_sum)
    return compact, full


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_coefficients_times_basis_are_the_contributions(tiny_model, convention):
    model = _perturbed(tiny_model[0])
    images = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    d = decomposed_forward(model, images, layers=[1, 3], convention=convention)
    c = decomposed_forward(model, images, layers=[1, 3], convention=convention, coefficients=True)
    basis = head_basis(model, [1, 3], convention)  # [Ls, H, k, D]
    assert c.contributions is None and c.coefficients.shape == (5, 2, 4, coefficient_count(convention, 16))
    assert basis.shape == (2, 4, coefficient_count(convention, 16), 32) and c.heads == d.heads
    torch.testing.assert_close(torch.einsum("blhk,lhkd->blhd", c.coefficients, basis), d.contributions, **SAME)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_layer_scale_is_folded_into_the_basis(convention):
    """A tower with LayerScale (open_clip's ``ls_init_value``): its scale sits in the basis."""
    from open_clip.model import CLIP

    torch.manual_seed(3)
    model = CLIP(embed_dim=24, vision_cfg={"layers": 3, "width": 32, "head_width": 8, "patch_size": 8,
                                           "image_size": 32, "ls_init_value": 0.5},
                 text_cfg={"layers": 1, "width": 32, "heads": 4, "context_length": 8, "vocab_size": 64})
    model = _perturbed(model).eval()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    d = decomposed_forward(model, images, layers=[0, 2], convention=convention)
    c = decomposed_forward(model, images, layers=[0, 2], convention=convention, coefficients=True)
    torch.testing.assert_close(torch.einsum("blhk,lhkd->blhd", c.coefficients, head_basis(model, [0, 2], convention)),
                               d.contributions, **SAME)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_compact_moments_give_the_full_moments_spans_and_fidelity(tiny_model, convention):
    """Every head and fold: n, sum and sum of outer products equal the full path's; TextSpan picks the same texts
    with variances equal to 1e-9 relative; label fidelity is the same; mean outputs are the same."""
    model = _perturbed(tiny_model[0])
    g = torch.Generator().manual_seed(1)
    images = torch.randn(24, 3, 32, 32, generator=g, dtype=torch.float64)
    compact, full = _both(model, images, [0, 1, 2, 3], convention)
    texts = [f"text {i}" for i in range(40)]
    pool = torch.randn(40, 32, generator=g, dtype=torch.float64)
    labels = pool[:3] + 0.1 * torch.randn(3, 32, generator=g, dtype=torch.float64)
    for name in compact.heads:
        for folds in ([0], [1], None):
            n, total, outer = compact.head(name, folds)
            n_full, total_full, outer_full = full.head(name, folds)
            assert n == n_full
            torch.testing.assert_close(total, total_full, **SAME)
            torch.testing.assert_close(outer, outer_full, **SAME)
        (basis, r), = compact.span_bases([(name, None)], 80)  # the k x k problem the spans stage solves
        (basis_full, r_full), = full.span_bases([(name, None)], 80)
        assert r == r_full and basis.shape == basis_full.shape
        torch.testing.assert_close(basis @ basis.T, basis_full @ basis_full.T, rtol=0, atol=1e-7)  # one span
        a = textspan_from_moments(*compact.head(name), pool, texts, m=5, rank=80, basis=basis)
        b = textspan_from_moments(*full.head(name), pool, texts, m=5, rank=80)
        assert [s.text for s in a] == [s.text for s in b] and len(a) == 5
        assert [s.svd_rank for s in a] == [s.svd_rank for s in b]
        torch.testing.assert_close(torch.tensor([s.variance for s in a]), torch.tensor([s.variance for s in b]),
                                   rtol=1e-9, atol=0)
        for x, y in zip(label_fidelity(*compact.head(name), labels, pool, 80, basis=basis),
                        label_fidelity(*full.head(name), labels, pool, 80), strict=True):
            torch.testing.assert_close(torch.as_tensor(x), torch.as_tensor(y), rtol=1e-9, atol=1e-12)
    for layer, z in compact.mean_z().items():
        torch.testing.assert_close(z, full.mean_z()[layer], rtol=0, atol=0)


@pytest.mark.slow
def test_vit_b_32_compact_spans_equal_the_full_path():
    """Random-init ViT-B-32 in float64: the same texts, variances to 1e-9 relative, in both conventions."""
    from ccs_ray import load_model

    model, _ = load_model("ViT-B-32/none", "fp32", "cpu")
    model = model.double()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 3, 224, 224, generator=g, dtype=torch.float64)
    texts = [f"text {i}" for i in range(60)]
    pool = torch.randn(60, 512, generator=g, dtype=torch.float64)
    for convention in CONVENTIONS:
        compact, full = _both(model, images, [10, 11], convention, batch=3)
        for name in ("L10.H0", "L11.H7"):
            (basis, _), = compact.span_bases([(name, None)], 80)
            a = textspan_from_moments(*compact.head(name), pool, texts, m=5, rank=80, basis=basis)
            b = textspan_from_moments(*full.head(name), pool, texts, m=5, rank=80)
            assert [s.text for s in a] == [s.text for s in b]
            for x, y in zip(a, b, strict=True):
                assert x.variance == pytest.approx(y.variance, rel=1e-9)


@pytest.mark.parametrize(("shape", "target"), [
    (TowerShape(layers=12, n_heads=12, width=768, head_dim=64, embed_dim=512, tokens=50), 50),  # ViT-B-32
    (TowerShape(layers=24, n_heads=16, width=1024, head_dim=64, embed_dim=768, tokens=257), 100),  # ViT-L-14
])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_files_are_50x_to_100x_smaller(shape, target, convention):
    """The scan's moments file (and so each checkpoint: the same arrays) of the last 4 layers, 2 folds, against the
    full moments as earlier versions wrote them."""
    layers = list(range(shape.layers - 4, shape.layers))
    NH, k = 4 * shape.n_heads, coefficient_count(convention, shape.head_dim)
    compact = HeadMoments("m", layers, shape, convention=convention, mean_outputs=False,
                          basis=torch.zeros(NH, k, shape.embed_dim, dtype=torch.float64))
    full = HeadMoments("m", layers, shape, convention=convention)
    ratio = len(full.to_bytes()) / len(compact.to_bytes(shards=False))
    assert ratio >= target, ratio


def test_saved_compact_moments_read_their_basis(tiny_model, tmp_path):
    model = _perturbed(tiny_model[0])
    compact, full = _both(model, torch.randn(8, 3, 32, 32, dtype=torch.float64), [2, 3], "textspan")
    compact.mark_covered("s0", {"n_images": 8})
    uri = str(tmp_path / "moments.safetensors")
    compact.save(uri)
    assert (tmp_path / "moments.basis.safetensors").exists() and basis_uri(uri).endswith("moments.basis.safetensors")
    meta = HeadMoments.read_meta(uri)
    assert meta["basis"] == "moments.basis.safetensors" and meta["coefficients"] == 19 and meta["format"] == 3
    back = HeadMoments.load(uri)
    for name in compact.heads:
        for a, b in zip(back.head(name), full.head(name), strict=True):
            torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), **SAME)
    # a checkpoint: no basis, no records; merged into loaded moments it reads the file's basis
    part = HeadMoments.load(uri)
    checkpoint = tmp_path / "00000001.safetensors"
    checkpoint.write_bytes(part.to_bytes(shards=False))
    alone = HeadMoments.load(str(checkpoint))
    with pytest.raises(ValueError, match="without their basis"):
        alone.head("L2.H0")
    alone.shards = {"s1": {}}
    assert back.merge(alone).head("L2.H0")[0] == 16
    # a basis of other moments is refused, a missing one named
    other = HeadMoments.for_model("m/none", model, [2, 3], convention="centered")
    other.save(str(tmp_path / "other.safetensors"))
    (tmp_path / "moments.basis.safetensors").write_bytes((tmp_path / "other.basis.safetensors").read_bytes())
    with pytest.raises(ValueError, match="basis of"):
        HeadMoments.load(uri).head("L2.H0")
    (tmp_path / "moments.basis.safetensors").unlink()
    with pytest.raises(ValueError, match="missing"):
        HeadMoments.load(uri).head("L2.H0")
    merged = HeadMoments.load(str(checkpoint))
    with pytest.raises(ValueError, match="missing"):
        merged.save(str(tmp_path / "moments.safetensors"))  # the basis the scan's actors write is not there


def test_reads_format_2_full_moments(tmp_path):
    """A file of the previous version (full moments, z_sum always) loads as full moments and gives its sums."""
    shape = TowerShape(layers=4, n_heads=3, width=6, head_dim=2, embed_dim=5, tokens=4)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(7, 6, 5, generator=g, dtype=torch.float64)  # [N, NH, D]
    tensors = {"n": torch.tensor([7, 0]), "total": torch.stack([x.sum(0), torch.zeros(6, 5, dtype=torch.float64)]),
               "outer": torch.stack([torch.einsum("nhd,nhe->hde", x, x), torch.zeros(6, 5, 5, dtype=torch.float64)]),
               "z_sum": torch.randn(6, 4, 2, generator=g, dtype=torch.float64)}
    meta = {"format": 2, "model": "m/none", "layers": [2, 3], "n_heads": 3, "embed_dim": 5, "folds": 2,
            "convention": "centered", "tokens": 4, "head_dim": 2, "tower_layers": 4, "shards": {"s0": {}}}
    uri = tmp_path / "old.safetensors"
    uri.write_bytes(st_save(tensors, metadata={"ccs_ray": json.dumps(meta)}))
    old = HeadMoments.load(str(uri))
    assert old.coefficients is None and old.mean_outputs and old.shape == shape
    n, total, outer = old.head("L3.H1")
    assert n == 7
    torch.testing.assert_close(outer, x[:, 4].T @ x[:, 4], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total, x[:, 4].sum(0), rtol=1e-12, atol=1e-12)
    assert len(old.mean_z()) == 2


def test_moments_without_mean_outputs_say_so(tiny_model):
    moments = HeadMoments.for_model("m/none", tiny_model[0], [3], mean_outputs=False)
    d = decomposed_forward(tiny_model[0], torch.randn(2, 3, 32, 32), layers=[3], keep_z_sum=True, coefficients=True)
    with pytest.raises(ValueError, match="no mean outputs"):
        moments.update(d.coefficients, 0, d.z_sum)
    moments.update(d.coefficients, 0)
    with pytest.raises(ValueError, match="mean mode"):
        moments.mean_z()
    with pytest.raises(ValueError, match="16 coefficients"):
        moments.update(torch.zeros(2, 1, 4, 32), 0)
