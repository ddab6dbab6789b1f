"""Where a head looks in its top images: the explain stage's ``top_images.patch_map``, old roots without it, and the
head card's heatmaps over the thumbnails of its top images."""

import base64
import html as html_lib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from test_scan import _scan, _spec

from ccs_ray import analytics, head_map, load_model, tables
from ccs_ray.heatmap import CELL_LEVELS, colors, default_scale
from ccs_ray.preprocess import Pixels, model_input, preprocess_config
from ccs_ray.reporting import build_report
from ccs_ray.reporting.cards import head_cards, where
from ccs_ray.sources import load_shard, plan_shards
from ccs_ray.stages import run_stage
from synthetic_results import MODELS, RUN_ID, write_results

#: Relative error of a stored float32 map against head_map of the same image and direction: the same float32
#: sums, in batches of other sizes.
FP32_TOLERANCE = 1e-5


def _images(spec) -> dict[str, torch.Tensor]:
    """Image URI -> [3, S, S] model input, every image of the spec's data decoded as the explain pass decodes it."""
    cfg = preprocess_config(spec.models.keys[0])
    out = {}
    for shard in plan_shards(spec.data):
        loaded = load_shard(shard, Pixels(cfg))
        out.update(zip(loaded.items, model_input(loaded.images, cfg), strict=True))
    return out


@pytest.mark.slow
def test_stored_maps_equal_head_map_of_the_top_images(ray_cluster, tmp_path):
    """scan, spans and explain on 24 generated images, 3 images per list: each top image of a span has the map of
    its head along its span."""
    spec, root = _spec(tmp_path, n=24, extra=["explain.k=3", "explain.thumb_px=16", "spans.m=2"]), str(tmp_path)
    _scan(spec, root, "r1")
    run_stage("spans", spec, root, "r1", spec.models.keys[0])
    run_stage("explain", spec, root, "r1", progress=False)
    key = spec.models.keys[0]
    rows = tables.read_table(root, "top_images", "r1", key).to_pylist()
    spans = {(r["head_label"], r["rank"]): r for r in tables.read_table(root, "spans", "r1", key).to_pylist()
             if r["subset"] == "all"}
    images = _images(spec)
    model = load_model(key, device="cpu")[0]
    mapped = [r for r in rows if r["span_rank"] is not None and r["direction"] == "top"]
    assert mapped and all(r["patch_grid"] == 4 and len(r["patch_map"]) == 16 for r in mapped)
    assert all(r["patch_map"] is None and r["patch_grid"] is None for r in rows if r not in mapped)
    for head in sorted({r["head_label"] for r in mapped}):
        mine = [r for r in mapped if r["head_label"] == head]
        x = torch.stack([images[r["image_uri"]] for r in mine])
        d = torch.tensor(np.array([spans[head, r["span_rank"]]["direction"] for r in mine]), dtype=torch.float32)
        want = head_map(model, head, x, d, spec.scan.convention)  # [n, n, 4, 4]: image i along row j's span
        got = torch.tensor([r["patch_map"] for r in mine]).view(-1, 4, 4)
        want = want[torch.arange(len(mine)), torch.arange(len(mine))]
        assert ((got - want).norm() / want.norm()).item() < FP32_TOLERANCE, head
    # explain.head_maps = false: the finished pass is not repeated and the rows are written without maps
    without = spec.model_copy(update={"explain": spec.explain.model_copy(update={"head_maps": False})})
    assert run_stage("explain", without, root, "r1", progress=False)["shards_scanned"] == 0
    again = tables.read_table(root, "top_images", "r1", key).to_pylist()
    assert len(again) == len(rows) and all(r["patch_map"] is None for r in again)


def _old_top_images(root: str) -> None:
    """A top_images file as an earlier version wrote it (no patch_map, no patch_grid): a head's top image."""
    schema = tables.SCHEMAS["top_images"]
    old = pa.schema([f for f in schema if f.name not in ("patch_map", "patch_grid")])
    row = dict(run_id="old", model="ccs-tiny/none", layer=3, head=1, head_label="L3.H1", span_rank=None, text=None,
               direction="top", position=1, image_uri="file:///a.jpg", shard="s000000", score=0.5, thumbnail=None)
    path = f"{tables.partition_path(root, 'top_images', 'old', 'ccs-tiny/none')}/explain.parquet"
    Path(path).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=old), path)


def test_old_top_images_without_maps_read(tmp_path):
    root = str(tmp_path)
    _old_top_images(root)
    got = tables.read_table(root, "top_images").to_pylist()
    assert len(got) == 1 and got[0]["patch_map"] is None and got[0]["patch_grid"] is None
    with analytics.connect(root) as conn:
        counts = analytics.query(conn, "SELECT count(*) AS n, count(patch_map) AS maps, count(patch_grid) AS grids "
                                       "FROM top_images").to_pylist()
        assert counts == [dict(n=1, maps=0, grids=0)]
        cards = head_cards(conn, where(["L3.H1"]))
    (card,) = cards["old", "ccs-tiny/none"]
    assert [(i["uri"], i["overlay"]) for i in card["images"]] == [("file:///a.jpg", None)]


def _with_maps(root: Path, model: str, head: str) -> dict[tuple[int, int], np.ndarray]:
    """Give the top images of ``head``'s spans maps of a 3 x 2 patch grid (as the explain stage stores them);
    returns (span rank, position) -> map [3, 2]."""
    folder = Path(tables.partition_path(str(root), "top_images", RUN_ID, model))
    rows = tables.read_table(str(root), "top_images", RUN_ID, model).to_pylist()
    g = np.random.default_rng(2)
    maps = {}
    for r in rows:
        if r["head_label"] == head and r["span_rank"] is not None and r["direction"] == "top":
            m = g.normal(size=(3, 2)).astype(np.float32)
            maps[r["span_rank"], r["position"]] = m
            r["patch_map"], r["patch_grid"] = m.ravel().tolist(), 3
    for part in folder.glob("*.parquet"):
        part.unlink()
    tables.write_table(str(root), "top_images", rows, RUN_ID, model, name="explain")
    return maps


def test_card_lays_maps_over_its_top_images_only(tmp_path):
    root = tmp_path / "results"
    write_results(str(root), layers=(11,), n_heads=3)
    maps = _with_maps(root, MODELS[0], "L11.H0")
    html = Path(build_report(str(root), str(tmp_path / "report.html"))).read_text()
    cards = {html_lib.unescape(m.group(1)): m.group(0)
             for m in re.finditer(r'<article class="card" id="([^"]*)">.*?</article>', html, flags=re.S)}
    mapped = next(c for name, c in cards.items() if name.endswith("L11.H0") and MODELS[0] in name)
    assert html.count('class="heat"') == mapped.count('class="heat"') == len(maps) > 0  # no other card has one
    rows = re.findall(r'<tr><td class="num">(\d+)</td>.*?</tr>', mapped, flags=re.S)
    spans = re.findall(r'<tr><td class="num">\d+</td>.*?</tr>', mapped, flags=re.S)
    assert len(rows) == len(spans) == len({rank for rank, _ in maps})
    for rank, span in zip(rows, spans, strict=True):
        top, bottom = re.findall(r'<div class="thumbs">.*?</div>', span, flags=re.S)
        assert 'class="heat"' not in bottom
        drawn = re.findall(r'class="heat" style="background-image: url\(data:image/png;base64,([^)]*)\)"', top)
        assert len(drawn) == len([k for k in maps if k[0] == int(rank)])
        for position, data in enumerate(drawn, 1):  # in list order, one pixel per patch on the map's own scale
            want = maps[int(rank), position]
            scale = default_scale(want)
            step = 2 * scale / (CELL_LEVELS - 1)  # each cell drawn at the nearest of the scale's steps
            with Image.open(io.BytesIO(base64.b64decode(data))) as png:
                assert png.size == (2, 3)
                drawn_rgb = np.asarray(png.convert("RGB"), dtype=int)
                assert np.abs(drawn_rgb - colors(np.rint(want / step) * step, scale)).max() <= 1  # colour rounding
    # drawing the stored maps loads no model: the report of this root imports neither torch nor open_clip
    code = ("import sys\nfrom ccs_ray.reporting import build_report\nbuild_report(*sys.argv[1:])\n"
            "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "again.html")], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
    assert (tmp_path / "again.html").read_text().count('class="heat"') == len(maps)
