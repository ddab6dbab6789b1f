"""Label fidelity from moments equals a direct computation on the raw per-image data (numpy SVD, np.var, scipy)."""

import numpy as np
import pytest
import torch
from scipy.stats import percentileofscore

from ccs_ray import scores
from ccs_ray.fidelity import ZERO_PROJECTION_RTOL, label_fidelity
from ccs_ray.textspan import RANK_RTOL, span_bases, textspan_from_moments


def _reference(X, texts, rank):
    """value(t) of each text, directly on the raw matrix: span of the top right singular vectors of the uncentred
    X (same relative cut), the text projected and normalised, Var(X l) over the total variance of the centred X."""
    _, s, vh = np.linalg.svd(X, full_matrices=False)
    V = vh[:min(rank, int((s > s[0] * RANK_RTOL).sum()))].T
    total = np.var(X, axis=0).sum()
    values = []
    for t in texts:
        p = V @ (V.T @ t)
        if np.linalg.norm(p) <= ZERO_PROJECTION_RTOL * np.linalg.norm(t):
            values.append(0.0)
        else:
            values.append(np.var(X @ (p / np.linalg.norm(p))) / total)
    return np.array(values)


def _low_rank_data(g, n, d, k):
    """[n, d] data of rank k + 1 (a rank-k spread around an offset), with a few large and many small directions."""
    scales = np.geomspace(10.0, 0.1, k)
    return (g.normal(size=(n, k)) * scales) @ np.linalg.qr(g.normal(size=(d, k)))[0].T + g.normal(size=d)


@pytest.mark.parametrize("n,d,k,rank", [(200, 24, 9, 80), (200, 24, 9, 4), (60, 16, 15, 80), (300, 12, 12, 12)])
def test_label_fidelity_equals_direct_computation_on_raw_data(n, d, k, rank):
    g = np.random.default_rng(n + d + k + rank)
    X = _low_rank_data(g, n, d, k)
    pool = g.normal(size=(150, d))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    labels = g.normal(size=(6, d))
    labels[0] = pool[17]  # a label that is itself a pool text counts itself
    _, _, vh = np.linalg.svd(X, full_matrices=False)
    if k + 1 < d:  # a label orthogonal to the data's span has no projection: value 0
        labels[1] = np.linalg.qr(np.concatenate([vh[:k + 1].T, g.normal(size=(d, 1))], axis=1))[0][:, -1]
    variance, percentile = label_fidelity(n, X.sum(0), X.T @ X, labels, pool, rank)

    pool_values, label_values = _reference(X, pool, rank), _reference(X, labels, rank)
    np.testing.assert_allclose(variance, label_values, rtol=1e-7, atol=1e-12)
    expected = [percentileofscore(pool_values, v, kind="weak") for v in label_values]
    np.testing.assert_array_equal(percentile, expected)
    assert variance.dtype == percentile.dtype == np.float64 and np.all((variance >= 0) & (variance <= 1))
    if k + 1 < d:
        assert variance[1] == 0 and percentile[1] == percentileofscore(pool_values, 0.0, kind="weak")


@pytest.mark.parametrize("rank", [80, 4])
def test_label_fidelity_with_batched_bases_equals_direct_computation(rank):
    """Bases of several heads from one span_bases call, passed in, give each head its direct values."""
    g = np.random.default_rng(rank)
    n, d = 200, 24
    heads = [_low_rank_data(g, n, d, k) for k in (9, 15, 23)]
    pool = g.normal(size=(100, d))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    labels = g.normal(size=(5, d))
    bases = span_bases(torch.stack([torch.as_tensor(X.T @ X) for X in heads]), rank)
    for X, (basis, _) in zip(heads, bases, strict=True):
        variance, percentile = label_fidelity(n, X.sum(0), X.T @ X, labels, pool, rank, basis=basis)
        pool_values, label_values = _reference(X, pool, rank), _reference(X, labels, rank)
        np.testing.assert_allclose(variance, label_values, rtol=1e-7, atol=1e-12)
        expected = [percentileofscore(pool_values, v, kind="weak") for v in label_values]
        np.testing.assert_array_equal(percentile, expected)


def test_head_without_variance_has_no_fidelity():
    X = np.tile(np.arange(8.0), (5, 1))  # every image the same: tr C = 0
    variance, percentile = label_fidelity(5, X.sum(0), X.T @ X, np.eye(8)[:2], np.eye(8), 80)
    assert np.isnan(variance).all() and np.isnan(percentile).all()
    with pytest.raises(ValueError, match="n = 0"):
        label_fidelity(0, X.sum(0), X.T @ X, np.eye(8)[:2], np.eye(8), 80)


def test_textspan_first_text_has_percentile_100_when_the_span_is_the_whole_space():
    # With a full-rank span every normalised text keeps its norm, so TextSpan's first choice (largest t^T C t)
    # is also the text of largest share Var(X l) / tr C.
    g = np.random.default_rng(5)
    X = g.normal(size=(400, 16)) @ g.normal(size=(16, 16)) + g.normal(size=16)
    pool = g.normal(size=(80, 16))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    first = textspan_from_moments(400, X.sum(0), X.T @ X, pool, [str(i) for i in range(80)], m=1, rank=80)[0]
    variance, percentile = label_fidelity(400, X.sum(0), X.T @ X, pool[[first.index]], pool, 80)
    assert percentile[0] == 100.0
    assert variance[0] == pytest.approx(_reference(X, pool, 80).max(), rel=1e-9)


def test_label_fidelity_query_lines_labels_up_with_the_judged_first_span(tmp_path):
    from ccs_ray.analytics import canned_queries, connect, query
    from ccs_ray.tables import write_table

    root = str(tmp_path)
    ccs = [{"layer": 3, "head": h, "head_label": f"L3.H{h}", "judge": j, "label": label, "ccs": c,
            "level": scores.level(c), "label_variance": v, "label_percentile": p}
           for h, j, label, c, v, p in [(0, "a", "color", 5, 0.4, 99.5), (0, "combined", "color", 5, 0.4, 99.5),
                                        (1, "a", None, None, None, None)]]
    write_table(root, "ccs", ccs, "r1", "m")
    spans = [{"layer": 3, "head": h, "head_label": f"L3.H{h}", "subset": s, "rank": r, "text": f"{meth} {s} {r}",
              "variance_explained": ve, "method": meth}
             for h, s, r, ve, meth in [(0, "all", 1, 0.3, "data"), (0, "all", 2, 0.1, "data"),
                                       (0, "fold0", 1, 0.9, "data"),
                                       (0, "all", 1, 0.7, "weights"), (1, "all", 1, 0.2, None)]]
    write_table(root, "spans", spans, "r1", "m")
    conn = connect(root)
    try:
        rows = query(conn, canned_queries()["label_fidelity"]).to_pylist()
    finally:
        conn.close()
    got = [(r["head_label"], r["judge"], r["label"], r["level"], r["label_variance"], r["label_percentile"],
            r["first_span"], r["first_span_variance_explained"], r["span_method"]) for r in rows]
    assert got == [("L3.H0", "a", "color", "high", 0.4, 99.5, "data all 1", 0.3, "data"),
                   ("L3.H0", "combined", "color", "high", 0.4, 99.5, "data all 1", 0.3, "data"),
                   ("L3.H1", "a", None, "unscored", None, None, "None all 1", 0.2, "data")]
