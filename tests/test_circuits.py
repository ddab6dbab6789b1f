"""Data-free spans (ccs_ray.circuits, stage spans with spans.method weights / both) against direct computations."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale

from ccs_ray.circuits import head_covariances, span_agreement
from ccs_ray.heads import parse_head_name
from ccs_ray.preflight import PreflightError, preflight
from ccs_ray.spec import load_spec
from ccs_ray.tables import read_table
from ccs_ray.textspan import textspan, textspan_from_moments
from conftest import guarded

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_ONLY = REPO / "jobs" / "weights-only.toml"
RTOL = 1e-10  # float64 against float64, different operation order


@pytest.fixture(scope="module")
def model64(tiny_model, request):
    """The tiny model in float64 with non-trivial ln_1 / ln_post scales and a LayerScale in layer 2, so that
    every factor of M is exercised (random init has unit LayerNorm scales and no LayerScale)."""
    model = copy.deepcopy(tiny_model[0]).double()
    gen = torch.Generator().manual_seed(7)
    visual = model.visual
    W = visual.transformer.resblocks[0].attn.embed_dim
    with torch.no_grad():
        for block in visual.transformer.resblocks:
            block.ln_1.weight.copy_(0.5 + torch.rand(W, generator=gen, dtype=torch.float64))
        visual.ln_post.weight.copy_(0.5 + torch.rand(W, generator=gen, dtype=torch.float64))
        visual.transformer.resblocks[2].ls_1 = LayerScale(W).double()
        visual.transformer.resblocks[2].ls_1.gamma.copy_(0.1 + torch.rand(W, generator=gen, dtype=torch.float64))
    return guarded(model, request)


@torch.no_grad()
def _direct_M(model, name: str, convention: str) -> torch.Tensor:
    """M [W, D] of one head: each basis vector e_i of the residual width pushed through the model's modules."""
    layer, h = parse_head_name(name)
    visual = model.visual
    block = visual.transformer.resblocks[layer]
    attn = block.attn
    W, d = attn.embed_dim, attn.head_dim
    rows = []
    for i in range(W):
        u = torch.zeros(W, dtype=torch.float64)
        u[i] = 1.0
        value = F.linear(block.ln_1.weight * u, attn.in_proj_weight[2 * W + h * d:2 * W + (h + 1) * d])  # [d]
        z = torch.zeros(W, dtype=torch.float64)
        z[h * d:(h + 1) * d] = value
        r = block.ls_1(F.linear(z, attn.out_proj.weight))  # the head's residual write, no bias
        if convention == "centered":
            r = r - r.mean()
        rows.append((r * visual.ln_post.weight) @ visual.proj)
    return torch.stack(rows)


@pytest.mark.parametrize("convention", ["centered", "textspan"])
def test_head_covariance_equals_basis_vectors_pushed_through_the_model(model64, convention):
    covariances = head_covariances(model64, [0, 1, 2, 3], convention)
    assert list(covariances) == [f"L{l}.H{h}" for l in range(4) for h in range(4)]
    for name, C in covariances.items():
        M = _direct_M(model64, name, convention)
        assert C.dtype == torch.float64 and C.device.type == "cpu"
        torch.testing.assert_close(C, M.T @ M, rtol=RTOL, atol=RTOL * float((M.T @ M).abs().max()))
    # centering changes it (the check above would not notice a convention ignored)
    other = head_covariances(model64, [3], "textspan" if convention == "centered" else "centered")["L3.H0"]
    assert not torch.allclose(other, covariances["L3.H0"])


@torch.no_grad()
def test_value_rows_are_what_the_attention_module_passes_for_one_token(model64):
    """The slices M is built from are the real module's: for a single token (attention weight 1), the heads'
    writes u diag(gamma_ln1) W_V,h^T W_O[:, h]^T summed over h are nn.MultiheadAttention's output minus its
    output at 0 (the biases)."""
    block = model64.visual.transformer.resblocks[1]
    attn = block.attn
    W, d, H = attn.embed_dim, attn.head_dim, attn.num_heads
    u = torch.randn(W, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    y = (block.ln_1.weight * u).view(1, 1, W)
    zero = torch.zeros_like(y)
    want = (attn(y, y, y, need_weights=False)[0] - attn(zero, zero, zero, need_weights=False)[0]).view(W)
    w_v, w_o = attn.in_proj_weight[2 * W:], attn.out_proj.weight
    got = sum((y.view(W) @ w_v[h * d:(h + 1) * d].T) @ w_o[:, h * d:(h + 1) * d].T for h in range(H))
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL * float(want.abs().max()))


def test_textspan_on_the_weights_covariance_equals_textspan_on_plus_minus_M(model64):
    """TextSpan's moments form on (n=1, mu=0, C_w) picks what the raw form picks on X = [M; -M] (mean 0,
    covariance M^T M / W): the same texts, directions and variance shares."""
    gen = torch.Generator().manual_seed(3)
    D = model64.visual.proj.shape[1]
    emb = F.normalize(torch.randn(200, D, generator=gen, dtype=torch.float64), dim=-1)
    texts = [f"text {i}" for i in range(200)]
    covariances = head_covariances(model64, [1, 3], "centered")
    for name in ("L1.H2", "L3.H0"):
        M = _direct_M(model64, name, "centered")
        got = textspan_from_moments(1, torch.zeros(D, dtype=torch.float64), covariances[name], emb, texts, m=8)
        want = textspan(torch.cat([M, -M]), emb, texts, m=8)
        assert [s.text for s in got] == [s.text for s in want] and len(got) == 8
        head_dim = model64.visual.transformer.resblocks[0].attn.head_dim  # M has rank d
        assert [s.svd_rank for s in got] == [s.svd_rank for s in want] == [head_dim] * 8
        np.testing.assert_allclose([s.variance_explained for s in got], [s.variance_explained for s in want], rtol=1e-8)
        np.testing.assert_allclose(np.stack([s.direction for s in got]), np.stack([s.direction for s in want]),
                                   atol=1e-8)


def _orthonormal(k: int, D: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, k)))
    return q.T  # [k, D], orthonormal rows


@pytest.mark.parametrize("k_a, k_b, m", [(5, 5, 5), (7, 4, 5), (3, 6, 10)])
def test_span_agreement_equals_scipy_principal_angles_and_set_jaccard(k_a, k_b, m):
    A, B = _orthonormal(k_a, 24, 1), _orthonormal(k_b, 24, 2)
    B[:2] = A[:2]  # two shared directions: cosines of 1 among the angles
    B = np.linalg.qr(B.T)[0].T
    texts_a = [f"t{i}" for i in range(k_a)]
    texts_b = ["t0", "t2", "x1", "t9", "x2", "t1"][:k_b]
    got = span_agreement(texts_a, A, texts_b, B, m)
    k = min(m, k_a, k_b)
    angles = scipy.linalg.subspace_angles(A[:k].T, B[:k].T)
    top_a, top_b = np.array(texts_a[:k]), np.array(texts_b[:k])
    assert got.m == k
    assert got.mean_cosine == pytest.approx(float(np.cos(angles).mean()), abs=1e-12)
    assert got.jaccard == pytest.approx(len(np.intersect1d(top_a, top_b)) / len(np.union1d(top_a, top_b)))
    assert span_agreement([], np.zeros((0, 24)), texts_b, B, m) == (0, None, None)


def _weights_only_spec(root, extra=()):
    return load_spec(WEIGHTS_ONLY, ['models.keys=["ccs-tiny/none"]', f"results.root={json.dumps(str(root))}", *extra])


@pytest.mark.parametrize("method", ["data", "both"])
def test_preflight_refuses_spans_from_data_without_the_scan(tmp_path, method):
    with pytest.raises(PreflightError, match=f"spans.method = '{method}' finds spans from the scan's moments"):
        preflight(_weights_only_spec(tmp_path, [f'spans.method="{method}"']), dry_run=True, cluster=False)


def _span_rows(method: str | None, heads: list[str], subsets=("all",)) -> list[dict]:
    return [dict(layer=parse_head_name(h)[0], head=parse_head_name(h)[1], head_label=h, subset=sub, rank=r,
                 text=f"{method}-{h}-{sub}-{r}", method=method) for h in heads for sub in subsets for r in (1, 2)]


def test_judged_spans_are_the_data_spans_else_the_weights_spans(tmp_path):
    """Per run and model, the judge (heads_from_spans) and the SQL view judged_spans read one method's rows: data
    where the spans have any (method NULL in files without the column counts as data), else weights."""
    import pyarrow.parquet as pq

    from ccs_ray.analytics import connect, query
    from ccs_ray.judges.headspans import heads_from_spans
    from ccs_ray.tables import SCHEMAS, partition_path, to_arrow, write_table

    root, heads = str(tmp_path), ["L0.H0", "L0.H1"]
    parts = {"both": _span_rows("data", heads, ("all", "fold0")) + _span_rows("weights", heads),
             "weights": _span_rows("weights", heads)}
    for model, rows in parts.items():
        write_table(root, "spans", rows, "r1", model)
    old = to_arrow("spans", _span_rows(None, heads)).drop_columns(["method"])  # a file of an earlier version
    assert "method" in SCHEMAS["spans"].names and "method" not in old.column_names
    Path(partition_path(root, "spans", "r1", "old")).mkdir(parents=True)
    pq.write_table(old, f"{partition_path(root, 'spans', 'r1', 'old')}/part-old.parquet")
    want = {"both": "data", "weights": "weights", "old": None}
    got = query(connect(root), "SELECT model, list(DISTINCT method) AS methods, count(*) AS n FROM judged_spans "
                               "GROUP BY model").to_pylist()
    assert {r["model"]: (r["methods"], r["n"]) for r in got} == {
        "both": (["data"], 8), "weights": (["weights"], 4), "old": ([None], 4)}
    for model, method in want.items():
        spans, _ = heads_from_spans(read_table(root, "spans", "r1", model), m=2, heldout=False)
        assert [h.texts("paper") for h in spans] == [[f"{method}-{h}-all-{r}" for r in (1, 2)] for h in heads]


def test_weights_only_run_labels_every_head_without_a_scan(ray_cluster, tmp_path):
    """jobs/weights-only.toml on the tiny model: spans from the weights for all 16 heads (the same as TextSpan on
    head_covariances in this process), CCS for each, and no moments, shards or images read."""
    from ccs_ray import load_model
    from ccs_ray.decompose import decomposed_forward
    from ccs_ray.moments import HeadMoments
    from ccs_ray.pipeline import run
    from ccs_ray.pools import load_pool
    from ccs_ray.stages import run_stage
    from ccs_ray.tables import write_table
    from ccs_ray.texts import text_embeddings

    spec = _weights_only_spec(tmp_path, ['data.source="/no/such/images"', "judge.heldout=false",  # images never read
                                         'judge.vocabulary=["colors", "animals", "objects"]'])  # a quick offline judge
    summary = run(spec, progress=False)
    assert set(summary["stages"]) == {"spans", "judge"}
    spans = read_table(str(tmp_path), "spans").to_pylist()
    heads = [f"L{l}.H{h}" for l in range(4) for h in range(4)]
    assert {r["head_label"] for r in spans} == set(heads)
    assert {(r["method"], r["subset"], r["convention"]) for r in spans} == {("weights", "all", "centered")}
    n_spans = spec.spans.m
    assert sorted(r["rank"] for r in spans if r["head_label"] == "L3.H1") == list(range(1, n_spans + 1))
    model, _ = load_model("ccs-tiny/none", device="cpu")
    texts = load_pool(spec.spans.pool)
    emb = text_embeddings(model, texts)
    covariances = head_covariances(model, [0, 1, 2, 3], "centered")
    weights_texts = {name: [s.text for s in textspan_from_moments(1, torch.zeros(emb.shape[1]), covariances[name], emb,
                                                                  texts, m=n_spans)] for name in heads}
    for name in heads:
        got = sorted((r for r in spans if r["head_label"] == name), key=lambda r: r["rank"])
        assert [r["text"] for r in got] == weights_texts[name], name
    ccs = read_table(str(tmp_path), "ccs").to_pylist()
    assert {r["head_label"] for r in ccs if r["judge"] == "combined"} == set(heads)
    for table in ("moments", "shards", "span_agreement", "top_images"):
        assert read_table(str(tmp_path), table).num_rows == 0, table

    # The same run's spans with spans.method = "both", over moments of 24 random images made here: the data spans
    # are TextSpan on those moments, the weights spans are unchanged, and span_agreement compares the two.
    moments = HeadMoments.for_model("ccs-tiny/none", model, [0, 1, 2, 3], folds=2)
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for fold, batch in enumerate(images.split(12)):
        moments.update(decomposed_forward(model, batch, layers=[0, 1, 2, 3], coefficients=True).coefficients, fold)
    uri = str(tmp_path / "moments.safetensors")
    moments.save(uri)
    run_id = summary["run_id"]
    write_table(str(tmp_path), "moments", [dict(uri=uri, convention="centered", n_images=24)], run_id, "ccs-tiny/none")
    both = _weights_only_spec(tmp_path, ['spans.method="both"', "judge.heldout=false"])
    run_stage("spans", both, str(tmp_path), run_id, "ccs-tiny/none", progress=False)
    rows = read_table(str(tmp_path), "spans").to_pylist()

    def ranked(name, method, subset="all"):
        return sorted((r for r in rows if (r["head_label"], r["method"], r["subset"]) == (name, method, subset)),
                      key=lambda r: r["rank"])

    agreement = {r["head_label"]: r for r in read_table(str(tmp_path), "span_agreement").to_pylist()}
    assert set(agreement) == set(heads)
    for name in heads:
        assert [r["text"] for r in ranked(name, "weights")] == weights_texts[name]
        for subset, folds in (("all", None), ("fold0", [0]), ("fold1", [1])):
            want = textspan_from_moments(*moments.head(name, folds), emb, texts, m=n_spans)
            assert [r["text"] for r in ranked(name, "data", subset)] == [s.text for s in want], (name, subset)
        a, b = ranked(name, "data"), ranked(name, "weights")
        k = min(len(a), len(b), both.spans.m)
        angles = scipy.linalg.subspace_angles(np.array([r["direction"] for r in a[:k]], dtype=np.float64).T,
                                              np.array([r["direction"] for r in b[:k]], dtype=np.float64).T)
        top_a, top_b = [r["text"] for r in a[:k]], [r["text"] for r in b[:k]]
        assert agreement[name]["m"] == k
        assert agreement[name]["mean_cosine"] == pytest.approx(float(np.cos(angles).mean()), abs=1e-5)
        assert agreement[name]["jaccard"] == pytest.approx(
            len(np.intersect1d(top_a, top_b)) / len(np.union1d(top_a, top_b)))
