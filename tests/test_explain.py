"""Stage explain: top images per head and span, against a direct single-process computation."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_scan import _scan, _spec, run_killing_actors

from ccs_ray import load_model
from ccs_ray.decompose import decomposed_forward
from ccs_ray.passes import partials
from ccs_ray.preflight import PreflightError, preflight
from ccs_ray.runs import RunState
from ccs_ray.sources import load_shard, plan_shards
from ccs_ray.stages import run_stage
from ccs_ray.stages.explain import TopImagesPass
from ccs_ray.tables import read_table
from ccs_ray.topimages import TopImages, thumbnail

EXPLAIN = TopImagesPass({}, 8, 96)  # where the explain pass's partials are


def _exact(X: np.ndarray, uris: list[str], directions: np.ndarray, k: int) -> dict[tuple, list[tuple[str, float]]]:
    """(head index, span rank or None, top/bottom) -> [(uri, score)], best first: every image scored in a loop,
    sorted whole (ties by URI)."""
    out = {}
    for h in range(X.shape[1]):
        for r in range(directions.shape[1]):
            if np.isnan(directions[h, r]).any():
                continue
            s = [float(X[i, h] @ directions[h, r]) for i in range(len(X))]
            out[h, r + 1, "top"] = sorted(((uris[i], s[i]) for i in range(len(X))), key=lambda e: (-e[1], e[0]))[:k]
            out[h, r + 1, "bottom"] = sorted(((uris[i], s[i]) for i in range(len(X))), key=lambda e: (e[1], e[0]))[:k]
        norms = [float(np.sqrt((X[i, h] ** 2).sum())) for i in range(len(X))]
        out[h, None, "top"] = sorted(((uris[i], norms[i]) for i in range(len(X))), key=lambda e: (-e[1], e[0]))[:k]
    return out


def _lists(rows: list[dict], heads: list[str]) -> dict[tuple, list[tuple[str, float]]]:
    out: dict[tuple, list] = {}
    for r in sorted(rows, key=lambda r: r["position"]):
        out.setdefault((heads.index(r["head_label"]), r["span_rank"], r["direction"]), []).append(
            (r["image_uri"], r["score"]))
    return out


def _assert_same_lists(got: dict, want: dict, rtol: float) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert [u for u, _ in got[key]] == [u for u, _ in want[key]], key
        np.testing.assert_allclose([s for _, s in got[key]], [s for _, s in want[key]], rtol=rtol, atol=1e-9)


def test_merged_partials_equal_the_exact_top_k(tmp_path):
    g = np.random.default_rng(0)
    n, heads, m, dim, k = 300, 5, 3, 12, 6
    X = g.normal(size=(n, heads, dim)) + g.normal(size=(1, heads, dim))
    directions = g.normal(size=(heads, m, dim))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    directions[2, 2] = np.nan  # a head with fewer spans than m
    uris = [f"file:///images/{i:04d}.jpg" for i in g.permutation(n)]
    images = g.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    maps = g.normal(size=(n, heads, m, 4)).astype(np.float32)  # each image's 2 x 2 map along each head's spans
    names = [f"L0.H{h}" for h in range(heads)]
    merged = None
    for part, (lo, hi) in enumerate([(0, 40), (40, 41), (41, 180), (180, 300)]):  # uneven partials and batches
        top = TopImages(names, directions, k, 16, grid=2)
        for a in range(lo, hi, 1 + part * 7):
            b = min(hi, a + 1 + part * 7)
            top.update(torch.from_numpy(X[a:b]), uris[a:b], f"s{part}", images[a:b], torch.from_numpy(maps[a:b]))
        top.mark_covered(f"s{part}")
        assert len(top.images) <= 2 * top.ids.numel()  # memory bounded by the lists, not by the images seen
        path = tmp_path / f"part{part}.parquet"
        path.write_bytes(top.to_bytes())
        assert TopImages.read_meta(str(path))["shards"] == {f"s{part}": {}}
        loaded = TopImages.load(str(path))
        merged = loaded if merged is None else merged.merge(loaded)
    rows = merged.rows()
    _assert_same_lists(_lists(rows, names), _exact(X, uris, directions, k), rtol=1e-12)
    # each top image of a span carries its own map along that span; no other row has one
    index = {u: i for i, u in enumerate(uris)}
    for r in rows:
        h = names.index(r["head_label"])
        if r["span_rank"] is not None and r["direction"] == "top":
            want = maps[index[r["image_uri"]], h, r["span_rank"] - 1]
            assert r["patch_grid"] == 2 and r["patch_map"] == want.tolist()
        else:
            assert r["patch_map"] is None and r["patch_grid"] is None
    assert all(r["patch_map"] is None for r in merged.rows(maps=False))
    with pytest.raises(ValueError, match="counted twice"):
        merged.merge(TopImages.load(str(tmp_path / "part0.parquet")))


def test_thumbnail_is_the_image_as_the_model_saw_it_downscaled():
    pixels = np.zeros((3, 64, 64), np.uint8)
    pixels[0, :, :32] = 255  # left half red, right half black
    image = Image.open(io.BytesIO(thumbnail(pixels, 24)))
    assert image.format == "JPEG" and image.size == (24, 24)
    rgb = np.asarray(image.convert("RGB")).astype(int)
    assert (abs(rgb[12, 4] - [255, 0, 0]) < 40).all() and (rgb[12, 20] < 40).all()


def _reference(spec, directions: dict[str, np.ndarray], heads: list[str]):
    """Contributions and image URIs of every image, computed in this process without Ray."""
    model, preprocess = load_model(spec.models.keys[0], device="cpu")
    X, uris = [], []
    for shard in plan_shards(spec.data):
        loaded = load_shard(shard, preprocess)
        for i in range(0, len(loaded.images), spec.scan.batch_size):
            d = decomposed_forward(model, loaded.images[i:i + spec.scan.batch_size], layers=[0, 1, 2, 3])
            X.append(d.contributions.flatten(1, 2).double().numpy())
        uris += loaded.items
    return np.concatenate(X), uris, np.stack([directions[h] for h in heads])


def _directions(root, model: str, m: int, run_id: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for r in read_table(root, "spans", run_id, model).to_pylist():
        if r["subset"] == "all" and r["rank"] <= m:
            out.setdefault(r["head_label"], np.full((m, len(r["direction"])), np.nan))[r["rank"] - 1] = r["direction"]
    return out


def check_against_reference(spec, root: str, run_id: str = "r1") -> list[dict]:
    """The top_images rows of ``run_id``, checked against every image scored in this process."""
    key = spec.models.keys[0]
    rows = read_table(root, "top_images", run_id, key).to_pylist()
    heads = sorted({r["head_label"] for r in rows}, key=lambda h: tuple(int(x) for x in h[1:].split(".H")))
    X, uris, directions = _reference(spec, _directions(root, key, spec.spans.m, run_id), heads)
    _assert_same_lists(_lists(rows, heads), _exact(X, uris, directions, spec.explain.k), rtol=1e-4)
    return rows


@pytest.mark.slow
def test_explain_stage_equals_a_single_process_top_k_after_an_actor_kill(ray_cluster, tmp_path):
    """The stage on Ray, its actor killed mid-pass: only unsaved shards are passed over again, and the top images
    equal those of every image scored in one process (each image counted once)."""
    spec = _spec(tmp_path, n=96, extra=["data.shard_size=4", "scan.checkpoint_every=3", "explain.k=3",
                                        "explain.thumb_px=20"])
    root, key = str(tmp_path), spec.models.keys[0]
    _scan(spec, root, "r1")
    run_stage("spans", spec, root, "r1", key)
    summary = run_killing_actors(lambda: run_stage("explain", spec, root, "r1", progress=False), RunState(root, "r1"),
                                 EXPLAIN, key)
    # Only what the dead actor had not saved is passed over again: at most checkpoint_every shards plus one in flight.
    assert 24 <= summary["shards_scanned"] <= 24 + 3 + 2 and summary["shards_skipped"] == 0
    assert len(partials(RunState(root, "r1"), EXPLAIN, key)) >= 2  # the dead actor's partial and its replacement's
    rows = check_against_reference(spec, root)
    assert summary["rows"][key] == len(rows) == 16 * (2 * spec.spans.m + 1) * 3
    spans = {(r["head_label"], r["rank"]): r["text"] for r in read_table(root, "spans", "r1", key).to_pylist()
             if r["subset"] == "all"}
    assert all(r["text"] == spans[r["head_label"], r["span_rank"]] for r in rows if r["span_rank"])
    assert all(max(Image.open(io.BytesIO(r["thumbnail"])).size) == 20 for r in rows)
    assert all(r["shard"] in {s.shard_id for s in plan_shards(spec.data)} for r in rows)
    # Re-running the finished stage adds nothing: every shard is covered by its partials.
    again = run_stage("explain", spec, root, "r1", progress=False)
    assert again["shards_scanned"] == 0 and again["rows"] == summary["rows"]
    assert len(read_table(root, "top_images", "r1", key)) == len(rows)


def test_explain_without_spans_is_a_preflight_problem(tmp_path):
    spec = _spec(tmp_path, extra=['stages=["scan", "explain"]'])
    with pytest.raises(PreflightError, match="explain: ranks images along each head's span directions"):
        preflight(spec, dry_run=True, cluster=False)
