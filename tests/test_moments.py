"""HeadMoments: exact sums, order-independent merges, safe files, flat memory."""

import resource

import pytest
import torch

from ccs_ray import HeadMoments, head_contributions
from ccs_ray.decompose import decomposed_forward


def _batches(n_batches, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, 3, 5, generator=g) for _ in range(n_batches)]


def _moments(folds=2):
    return HeadMoments("m/none", [2, 3], heads=3, embed_dim=5, folds=folds, tokens=4, head_dim=2)


def test_update_equals_direct_sums():
    m = _moments()
    xs = _batches(4)
    for i, x in enumerate(xs):
        m.update(x, fold=i % 2)
    flat = torch.cat(xs).double().flatten(1, 2)  # [N, NH, D]
    n, total, outer = m.head("L3.H1")
    x = flat[:, m.head_index("L3.H1")]
    assert n == 32
    torch.testing.assert_close(total, x.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outer, x.T @ x, rtol=1e-12, atol=1e-12)
    n0, total0, _ = m.head("L3.H1", folds=[0])
    assert n0 == 16
    torch.testing.assert_close(total0, torch.cat(xs[0::2]).double().flatten(1, 2)[:, m.head_index("L3.H1")].sum(0))


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
    m = _moments()
    m.update(_batches(1)[0], 1, z_sum=torch.randn(2, 3, 4, 2))
    m.mark_covered("s7", {"n_images": 8, "errors": [{"item": "x.jpg", "reason": "truncated"}]})
    for uri in (str(tmp_path / "a" / "m.safetensors"), "memory://moments/m.safetensors"):
        m.save(uri)
        back = HeadMoments.load(uri)
        assert back.meta == m.meta and back.heads == m.heads
        for name in ("n", "total", "outer", "z_sum"):
            assert torch.equal(getattr(back, name), getattr(m, name))


def test_file_is_not_a_pickle(tmp_path):
    uri = tmp_path / "m.safetensors"
    _moments().save(str(uri))
    raw = uri.read_bytes()
    assert not raw.startswith(b"\x80") and b"ccs_ray" in raw[:4096]


def test_mean_z_is_mean_attention_output(tiny_model):
    model, _ = tiny_model
    m = HeadMoments.for_model("ccs-tiny/none", model, [2, 3])
    images = torch.randn(6, 3, 32, 32)
    d = decomposed_forward(model, images, [2, 3], keep_z_sum=True)
    m.update(d.heads, 0, d.z_sum)
    mz = m.mean_z()
    assert set(mz) == {2, 3} and mz[3].shape == (4, 17, 16)
    torch.testing.assert_close(mz[2] * 6, d.z_sum[0], rtol=1e-12, atol=1e-12)


def test_memory_does_not_grow_with_images(tiny_model):
    """RSS high-water mark after 10x more images is the same (moments are O(heads x D^2))."""
    model, _ = tiny_model
    m = HeadMoments.for_model("ccs-tiny/none", model, [0, 1, 2, 3])
    images = torch.randn(64, 3, 32, 32)

    def run(batches):
        for _ in range(batches):
            m.update(head_contributions(model, images, [0, 1, 2, 3]), 0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    size = m.nbytes()
    run(20)
    after_1x = run(20)
    after_10x = run(200)
    assert m.nbytes() == size and int(m.n.sum()) == 64 * 240
    assert after_10x - after_1x < 20 * 1024  # KiB: under 20 MiB of growth for 10x the images
