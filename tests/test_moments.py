"""HeadMoments: exact sums, order-independent merges, safe files, flat memory."""

import json
import resource

import pytest
import torch
from safetensors.torch import save as st_save

from ccs_ray import HeadMoments
from ccs_ray.decompose import TowerShape, decomposed_forward
from ccs_ray.moments import FORMAT_VERSION

SHAPE = TowerShape(layers=4, n_heads=3, width=6, head_dim=2, embed_dim=5, tokens=4)


def _batches(n_batches, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, 3, 5, generator=g) for _ in range(n_batches)]


def _moments(folds=2):
    return HeadMoments("m/none", [2, 3], SHAPE, folds=folds)


def test_update_equals_direct_sums():
    moments = _moments()
    assert moments.heads == ["L2.H0", "L2.H1", "L2.H2", "L3.H0", "L3.H1", "L3.H2"] and moments.embed_dim == 5
    xs = _batches(4)
    for i, x in enumerate(xs):
        moments.update(x, fold=i % 2)
    flat = torch.cat(xs).double().flatten(1, 2)  # [N, NH, D]
    n, total, outer = moments.head("L3.H1")
    x = flat[:, moments.head_index("L3.H1")]
    assert n == 32
    torch.testing.assert_close(total, x.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outer, x.T @ x, rtol=1e-12, atol=1e-12)
    n0, total0, _ = moments.head("L3.H1", folds=[0])
    assert n0 == 16
    torch.testing.assert_close(total0,
                               torch.cat(xs[0::2]).double().flatten(1, 2)[:, moments.head_index("L3.H1")].sum(0))


def test_constructor_checks():
    with pytest.raises(ValueError, match="out of range"):
        HeadMoments("m/none", [2, 4], SHAPE)
    with pytest.raises(TypeError):
        HeadMoments("m/none", [2, 3], SHAPE, 2)  # folds and the rest are keyword-only
    with pytest.raises(TypeError, match="Decomposition.contributions"):
        _moments().update(["L2.H0"])


def test_merge_is_order_independent_and_checks_shards():
    xs = _batches(6)
    parts = []
    for i in range(3):
        p = _moments()
        p.update(xs[2 * i], 0)
        p.update(xs[2 * i + 1], 1)
        p.mark_covered(f"s{i}")
        parts.append(p)
    a = _moments().merge(parts[0]).merge(parts[1]).merge(parts[2])
    b = _moments().merge(parts[2]).merge(parts[0]).merge(parts[1])
    torch.testing.assert_close(a.outer, b.outer, rtol=1e-12, atol=1e-12)
    assert set(a.shards) == {"s0", "s1", "s2"} and torch.equal(a.n, b.n)
    with pytest.raises(ValueError, match="counted twice"):
        a.merge(parts[0])
    with pytest.raises(ValueError, match="different layouts"):
        a.merge(_moments(folds=3))
    with pytest.raises(ValueError, match="already counted"):
        parts[0].mark_covered("s0")


def test_save_load_roundtrip_any_fsspec_uri(tmp_path):
    moments = _moments()
    moments.update(_batches(1)[0], 1, z_sum=torch.randn(2, 3, 4, 2))
    moments.mark_covered("s7", {"n_images": 8, "errors": [{"item": "x.jpg", "reason": "truncated"}]})
    for uri in (str(tmp_path / "a" / "m.safetensors"), "memory://moments/m.safetensors"):
        moments.save(uri)
        back = HeadMoments.load(uri)
        assert back.meta == moments.meta and back.heads == moments.heads and back.shape == SHAPE
        assert HeadMoments.read_meta(uri) == moments.meta
        for name in ("n", "total", "outer", "z_sum"):
            assert torch.equal(getattr(back, name), getattr(moments, name))


def test_loads_format_1_files(tmp_path):
    """A file as the previous version wrote it (format 1: H under "heads", no tower depth) loads and merges."""
    g = torch.Generator().manual_seed(4)
    tensors = {"n": torch.tensor([3, 5]), "total": torch.randn(2, 6, 5, generator=g, dtype=torch.float64),
               "outer": torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64),
               "z_sum": torch.randn(6, 4, 2, generator=g, dtype=torch.float64)}
    meta = {"format": 1, "model": "m/none", "layers": [2, 3], "heads": 3, "embed_dim": 5, "folds": 2,
            "convention": "centered", "tokens": 4, "head_dim": 2, "shards": {"s0": {"n_images": 8}}}
    uri = tmp_path / "old.safetensors"
    uri.write_bytes(st_save(tensors, metadata={"ccs_ray": json.dumps(meta)}))
    old = HeadMoments.load(str(uri))
    assert old.shape == SHAPE and old.heads == _moments().heads and old.shards == meta["shards"]
    assert (old.folds, old.convention, old.model, old.layers) == (2, "centered", "m/none", [2, 3])
    for name, t in tensors.items():
        assert torch.equal(getattr(old, name), t)
    n, total, _ = old.head("L3.H2")
    assert n == 8 and torch.equal(total, tensors["total"][:, 5].sum(0))
    assert HeadMoments.read_meta(str(uri))["n_heads"] == 3
    assert old.meta["format"] == FORMAT_VERSION and "heads" not in old.meta
    merged = _moments().merge(old)  # an old partial merges with a new one (e.g. a resumed scan)
    assert torch.equal(merged.n, tensors["n"])
    old.save(str(tmp_path / "new.safetensors"))  # written back in the current format
    assert HeadMoments.read_meta(str(tmp_path / "new.safetensors"))["format"] == FORMAT_VERSION
    meta["format"] = 99
    uri.write_bytes(st_save(tensors, metadata={"ccs_ray": json.dumps(meta)}))
    with pytest.raises(ValueError, match="format 99"):
        HeadMoments.load(str(uri))


def test_file_is_not_a_pickle(tmp_path):
    uri = tmp_path / "m.safetensors"
    _moments().save(str(uri))
    raw = uri.read_bytes()
    assert not raw.startswith(b"\x80") and b"ccs_ray" in raw[:4096]


def test_mean_z_is_mean_attention_output(tiny_model):
    model, _ = tiny_model
    moments = HeadMoments.for_model("ccs-tiny/none", model, [2, 3])
    images = torch.randn(6, 3, 32, 32)
    d = decomposed_forward(model, images, layers=[2, 3], keep_z_sum=True, coefficients=True)
    moments.update(d.coefficients, 0, d.z_sum)
    assert d.heads == moments.heads
    mz = moments.mean_z()
    assert set(mz) == {2, 3} and mz[3].shape == (4, 17, 16)
    torch.testing.assert_close(mz[2] * 6, d.z_sum[0], rtol=1e-12, atol=1e-12)


def test_memory_does_not_grow_with_images(tiny_model):
    """RSS high-water mark after 10x more images is the same (moments are O(heads x k^2))."""
    model, _ = tiny_model
    moments = HeadMoments.for_model("ccs-tiny/none", model, [0, 1, 2, 3])
    images = torch.randn(64, 3, 32, 32)

    def run(batches):
        for _ in range(batches):
            moments.update(decomposed_forward(model, images, layers=[0, 1, 2, 3], coefficients=True).coefficients, 0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    size = moments.nbytes()
    run(4)
    after_1x = run(4)
    after_10x = run(40)
    assert moments.nbytes() == size and int(moments.n.sum()) == 64 * 48
    assert after_10x - after_1x < 20 * 1024  # KiB: under 20 MiB of growth for 10x the images
