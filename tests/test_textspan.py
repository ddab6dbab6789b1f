"""TextSpan from moments equals TextSpan on the raw matrix (same texts, same order)."""

import numpy as np
import pytest
import torch

from ccs_ray import HeadMoments, head_contributions, textspan, textspan_from_moments
from ccs_ray.decompose import decomposed_forward
from ccs_ray.texts import text_embeddings
from ccs_ray.textspan import EXHAUSTED_RTOL, RANK_RTOL, TIE_RTOL, span_bases, span_basis


def _reference_textspan(X, T, m, rank):
    """clip_text_span's algorithm written plainly in numpy (SVD projection, centred greedy deflation)."""
    _, s, vh = np.linalg.svd(X, full_matrices=False)
    vh = vh[: min(rank, int((s > s[0] * 1e-6).sum()))]
    T = vh.T @ np.linalg.inv(vh @ vh.T) @ vh @ T.T
    T = T.T
    X = X - X.mean(0, keepdims=True)
    chosen = []
    for _ in range(m):
        i = int(np.argmax((X @ T.T).std(0)))
        chosen.append(i)
        t = T[i]
        X = X - np.outer(X @ t / (t @ t), t)
        T = T - np.outer(T @ t / (t @ t), t)
    return chosen


@pytest.mark.parametrize("n,d,texts,rank", [(300, 24, 150, 80), (40, 24, 150, 80), (500, 48, 400, 10),
                                            (2000, 32, 64, 32)])
def test_moments_equal_raw_on_random_data(n, d, texts, rank):
    g = np.random.default_rng(n + d)
    X = g.normal(size=(n, d)) @ g.normal(size=(d, d)) + g.normal(size=d)
    T = g.normal(size=(texts, d))
    names = [f"text {i}" for i in range(texts)]
    raw = textspan(X, T, names, m=8, rank=rank)
    mom = textspan_from_moments(n, X.sum(0), X.T @ X, T, names, m=8, rank=rank)
    assert [s.text for s in raw] == [s.text for s in mom]
    assert [s.index for s in raw] == _reference_textspan(X, T, 8, rank)
    np.testing.assert_allclose([s.variance for s in raw], [s.variance for s in mom], rtol=1e-8)
    assert raw[0].svd_rank == min(rank, n, d)
    assert all(0 < s.variance_explained <= 1 for s in raw)


def test_directions_are_the_deflated_texts_and_project_raw_data_as_deflated_data():
    g = np.random.default_rng(3)
    X = g.normal(size=(400, 20)) @ g.normal(size=(20, 20)) + g.normal(size=20)
    T = g.normal(size=(60, 20))
    names = [f"text {i}" for i in range(60)]
    raw = textspan(X, T, names, m=6, rank=12)
    mom = textspan_from_moments(400, X.sum(0), X.T @ X, T, names, m=6, rank=12)
    D = np.stack([s.direction for s in raw])
    np.testing.assert_allclose(np.stack([s.direction for s in mom]), D, atol=1e-9)
    np.testing.assert_allclose(D @ D.T, np.eye(6), atol=1e-9)  # unit length, each orthogonal to the earlier ones
    total = np.var(X, axis=0).sum()
    for s in raw:  # Var(X d) over the raw images is the share of the total variance that choosing s removed
        np.testing.assert_allclose(np.var(X @ s.direction), s.variance_explained * total, rtol=1e-9)


def test_ties_go_to_the_first_text_and_rank_beyond_span():
    g = np.random.default_rng(0)
    X = g.normal(size=(5, 16))  # rank 5 < requested 80
    T = g.normal(size=(10, 16))
    T = np.vstack([T[:3], T[2:3], T[3:]])  # text 3 duplicates text 2
    names = [f"t{i}" for i in range(len(T))]
    raw = textspan(X, T, names, m=10, rank=80)
    mom = textspan_from_moments(5, X.sum(0), X.T @ X, T, names, m=10, rank=80)
    assert [s.index for s in raw] == [s.index for s in mom]
    assert raw[0].svd_rank == 5
    assert 3 not in [s.index for s in raw]  # its twin (index 2) is always preferred or both removed
    assert len(raw) == 5  # texts live in the 5-dim span: after 5 removals nothing is left, fewer than m=10


def test_moments_equal_raw_on_real_decomposition(tiny_model):
    model, _ = tiny_model
    g = torch.Generator().manual_seed(5)
    images = torch.rand(96, 3, 32, 32, generator=g)
    pool = [f"a photo of {w}" for w in ("a dog", "a cat", "red", "blue", "three circles", "paris", "a car", "text",
                                         "stripes", "a face", "a tree", "the sea", "a square", "green", "a star",
                                         "a letter A", "digits", "snow", "night", "food")]
    T = text_embeddings(model, pool)
    moments = HeadMoments.for_model("ccs-tiny/none", model, [2, 3], folds=2)
    contributions = []
    for i in range(0, 96, 32):  # compact moments of the coefficients; the raw form on the contributions
        moments.update(decomposed_forward(model, images[i:i + 32], layers=[2, 3], coefficients=True).coefficients,
                       fold=(i // 32) % 2)
        contributions.append(head_contributions(model, images[i:i + 32], [2, 3]))
    X = torch.cat(contributions)
    for name in ("L2.H0", "L3.H3"):
        l, h = int(name[1]), int(name[-1])
        raw = textspan(X[:, [2, 3].index(l), h], T, pool, m=5, rank=80)
        n, total, outer = moments.head(name)
        assert [s.text for s in raw] == [s.text for s in textspan_from_moments(n, total, outer, T, pool, m=5, rank=80)]


def test_text_embeddings_template_and_normalisation(tiny_model):
    model, _ = tiny_model
    plain = text_embeddings(model, ["dog", "cat"])
    torch.testing.assert_close(plain.norm(dim=-1), torch.ones(2))
    templated = text_embeddings(model, ["dog"], template="a photo of a {}.", normalize=False)
    tokens = model.tokenizer(["a photo of a dog."])
    with torch.no_grad():
        torch.testing.assert_close(templated, model.encode_text(tokens))
    with pytest.raises(ValueError, match="expected"):
        textspan(np.zeros((3, 4)), np.zeros((2, 5)), ["a", "b"])


def _full_d_textspan_from_moments(n, total, outer, T, m, rank):
    """The moments form's greedy loop written out in all D dimensions (numpy): texts projected onto the top
    eigenvectors of S, C = S / n - mu mu^T deflated as Q C Q with Q formed explicitly, the first text within
    TIE_RTOL of the largest variance wins, stop once no variance above EXHAUSTED_RTOL x tr C is left.
    Returns (index, variance, variance_explained, svd_rank, direction) per chosen text."""
    lam, vec = np.linalg.eigh(outer)
    lam, vec = lam[::-1], vec[:, ::-1]
    r = min(rank, int((lam > lam[0] * RANK_RTOL**2).sum())) if lam[0] > 0 else 0
    T = T @ vec[:, :r] @ vec[:, :r].T
    mu = total / n
    C = outer / n - np.outer(mu, mu)
    total_var = np.trace(C)
    chosen = []
    for _ in range(m):
        var = np.einsum("md,de,me->m", T, C, T)
        if var.max() <= EXHAUSTED_RTOL * total_var:
            break
        i = int(np.flatnonzero(var >= var.max() * (1 - TIE_RTOL))[0])
        t = T[i]
        tt = t @ t
        chosen.append((i, var[i], var[i] / tt / total_var, r, t / np.sqrt(tt)))
        Q = np.eye(len(t)) - np.outer(t, t) / tt
        C, T = Q @ C @ Q, T @ Q
    return chosen


@pytest.mark.parametrize("rank,m,r,chosen", [(80, 12, 7, 7), (4, 3, 4, 3), (4, 10, 4, 4)])
def test_span_coordinates_equal_full_d_loop_with_ties_and_exhaustion(rank, m, r, chosen):
    """Rank cut inactive (data span of dim 7 < rank) and active (rank 4); exhausted after r texts when m > r; a
    near-twin of the best text placed first in the pool wins the tie although its variance is slightly smaller."""
    g = np.random.default_rng(rank + m)
    n, d, k = 200, 32, 6
    X = (g.normal(size=(n, k)) * np.geomspace(10.0, 0.1, k)) @ np.linalg.qr(g.normal(size=(d, k)))[0].T
    X += g.normal(size=d)  # uncentred span: dim k + 1 = 7
    total, outer = X.sum(0), X.T @ X
    T = g.normal(size=(60, d))
    best = _full_d_textspan_from_moments(n, total, outer, T, 1, rank)[0][0]
    T = np.vstack([T[best] * (1 - 1e-11), T])  # variance 2e-11 (relative) below the best's: within TIE_RTOL
    names = [f"text {i}" for i in range(len(T))]
    want = _full_d_textspan_from_moments(n, total, outer, T, m, rank)
    assert want[0][0] == 0 and len(want) == chosen
    bases = span_bases(torch.as_tensor(outer)[None], rank)
    for basis in (None, bases[0][0]):
        got = textspan_from_moments(n, total, outer, T, names, m=m, rank=rank, basis=basis)
        assert [s.index for s in got] == [w[0] for w in want]
        assert [s.text for s in got] == [names[w[0]] for w in want]
        assert [s.svd_rank for s in got] == [w[3] for w in want] == [r] * chosen
        np.testing.assert_allclose([s.variance for s in got], [w[1] for w in want], rtol=1e-9)
        np.testing.assert_allclose([s.variance_explained for s in got], [w[2] for w in want], rtol=1e-9)
        np.testing.assert_allclose(np.stack([s.direction for s in got]), np.stack([w[4] for w in want]), atol=1e-9)
        assert all(s.direction.dtype == np.float64 and s.direction.shape == (d,) for s in got)


def test_span_bases_equal_per_head_eigh():
    """One batched eigh gives each head the span a per-head torch.linalg.eigh gives (same r, same projector),
    including an all-zero S (r = 0)."""
    g = np.random.default_rng(11)
    d = 24
    outers = []
    for k in (24, 9, 3, 0):  # full, low rank, very low rank, all zero
        A = g.normal(size=(k, d)) * g.uniform(0.5, 5.0, size=(k, 1))
        outers.append(A.T @ A)
    stack = torch.as_tensor(np.stack(outers))
    for rank, rs in ((80, [24, 9, 3, 0]), (5, [5, 5, 3, 0])):
        got = span_bases(stack, rank)
        assert [r for _, r in got] == rs
        for S, (basis, r) in zip(outers, got, strict=True):
            lam, vec = torch.linalg.eigh(torch.as_tensor(S))
            lam, vec = lam.flip(0).numpy(), vec.flip(1).numpy()
            assert r == (min(rank, int((lam > lam[0] * RANK_RTOL**2).sum())) if lam[0] > 0 else 0)
            assert basis.dtype == torch.float64 and basis.shape == (d, r)
            B = basis.numpy()
            np.testing.assert_allclose(B @ B.T, vec[:, :r] @ vec[:, :r].T, atol=1e-10)
            np.testing.assert_allclose(B.T @ B, np.eye(r), atol=1e-10)
            single, single_r = span_basis(S, rank)
            assert single_r == r
            np.testing.assert_allclose(single.numpy() @ single.numpy().T, B @ B.T, atol=1e-10)
    assert span_bases(torch.zeros(0, d, d), 80) == []
    with pytest.raises(ValueError, match="H, D, D"):
        span_bases(torch.zeros(d, d), 80)
