"""Stage ``explain``: a second pass over the images that keeps, per head and span, the images that drive it.

Section: ``[explain]`` (k, thumb_px, head_maps) with ``[data]``, ``[scan]`` and the spans' section
(:class:`ExplainSection`); per run (all models at once, sharing decoding as the scan does); needs ``spans``.
Writes ``top_images``.

For every head of every model and each of its data spans 1..``spans.m`` (subset ``all``), the k images with the
largest and the k with the smallest projection of the head's contribution onto the span's direction
(``spans.direction``, stored by the stage spans: TextSpan is not run again, except for spans written by an
earlier version without directions, whose directions are computed again in memory with
:func:`~ccs_ray.span_rows.find_spans`: the same texts; the ``spans`` table is left as it is), and
the k images with the largest contribution norm (:mod:`ccs_ray.topimages`). It is a pass over the shards
(:mod:`ccs_ray.passes`) on the scan's actors, decode path, layout and checkpoint settings, with
:class:`~ccs_ray.topimages.TopImages` as the accumulator: resumable by shard, bad images skipped as in the scan (they
are already in its ``errors``), and merged at the end into exactly the top k of a single pass. Partials:
``_state/<run_id>/<model>/explain/<12 hex>/NNNNNNNN.parquet``.

Then, where each head looks in its top images (``top_images.patch_map``, :func:`patch_maps`): the distinct images
of the top lists of the spans are decoded again (only the shards that hold them, as the pass decoded them) and
passed through the model once per batch, which gives the maps of every listed head at once
(:func:`ccs_ray.headmap.span_maps`, in the scan's convention, so that a map and the class token's term sum to the
row's ``score``); each row keeps its own head's map along its own span. This runs where the pass's model ran: on a
model actor the run keeps (its model loaded, on its GPU where it holds one), else in a task of its own that loads the
model (:meth:`~ccs_ray.passes.ModelActors.stream`), never on the driver, which may have no accelerator. A quickstart
run lists at most its 256 images; a run of any size at most heads x spans x k, but those may lie in most of its
shards: ``explain.head_maps = false`` leaves the maps out. Resuming a stage that stopped here passes over no shard
again and computes the maps again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import ray

from .. import tables
from ..decompose import tower_shape
from ..passes import ModelActors, PassKind, covered_shards, merge_partials, run_pass
from ..preprocess import Pixels, model_input, preprocess_config
from ..progress import Progress
from ..shard_plan import ShardPlan
from ..sources import Shard, load_shard
from ..span_rows import SpanSettings, find_spans
from ..spec import DataConfig, ExplainConfig, ScanConfig, Spec
from ..topimages import TopImages
from .context import RunContext
from .summaries import ExplainSummary


@dataclass(frozen=True)
class ExplainSection:
    """What the stage reads: ``[explain]``, the images (``[data]``), how to pass over them (``[scan]``) and
    the spans (it explains spans 1..``spans.spans.m``)."""

    explain: ExplainConfig
    data: DataConfig
    scan: ScanConfig
    spans: SpanSettings


def section(spec: Spec) -> ExplainSection:
    return ExplainSection(spec.explain, spec.data, spec.scan, SpanSettings.of(spec))


@dataclass(frozen=True)
class TopImagesPass(PassKind):
    """The explain pass's accumulator: per model, ``directions[model][head_label]`` [m, D] (NaN rows where a
    head has fewer spans), kept k at a time with thumbnails of ``thumb_px``."""

    directions: dict
    k: int
    thumb_px: int
    name = "explain"
    folder = "explain"
    suffix = ".parquet"

    def start(self, model_key, model, layers, device):
        heads = tower_shape(model).head_names(layers)
        mine = self.directions[model_key]
        m, dim = next(iter(mine.values())).shape
        directions = np.stack([mine.get(h, np.full((m, dim), np.nan)) for h in heads])
        return TopImages(heads, directions, self.k, self.thumb_px)

    def add(self, acc, d, loaded, batch, fold):
        acc.update(d.contributions.flatten(1, 2), loaded.items[batch], loaded.shard.shard_id, loaded.images[batch])

    def read_shards(self, uri):
        return TopImages.read_meta(uri)["shards"]

    def load(self, uri):
        return TopImages.load(uri)


def span_directions(ctx: RunContext, model: str, spans: SpanSettings) -> tuple[dict[str, np.ndarray],
                                                                              dict[tuple[str, int], str]]:
    """From the ``spans`` table (data spans: method ``data`` or null; subset ``all``, ranks 1..m): head -> directions
    [m, D] (NaN rows for missing spans) and (head, rank) -> text. Spans without directions (an earlier version's)
    are computed again, in memory."""
    m = spans.spans.m

    def explained(r: dict) -> bool:
        return r["subset"] == "all" and r["rank"] <= m and (r["method"] or "data") == "data"

    rows = [r for r in tables.read_table(ctx.root, "spans", ctx.run_id, model).to_pylist() if explained(r)]
    if not rows:
        raise ValueError(f"the spans of {model} in run {ctx.run_id} under {ctx.root} are all from the weights: explain "
                         f"ranks images along data spans (spans.method 'data' or 'both')")
    if any(r["direction"] is None for r in rows):
        found = find_spans(ctx.actors, model, ctx.models, spans, ctx.state.moments_uri(model),
                           ctx.state.text_cache(model), ctx.cluster_resources(), ctx.progress)[0]
        rows = [r for r in found if explained(r)]
    dim = len(rows[0]["direction"])
    directions: dict[str, np.ndarray] = {}
    for r in rows:
        directions.setdefault(r["head_label"], np.full((m, dim), np.nan))[r["rank"] - 1] = r["direction"]
    return directions, {(r["head_label"], r["rank"]): r["text"] for r in rows}


def run(ctx: RunContext, section: ExplainSection) -> ExplainSummary:
    data = section.data
    models = list(ctx.models.keys)
    spans = {key: span_directions(ctx, key, section.spans) for key in models}
    kind = TopImagesPass({key: d for key, (d, _) in spans.items()}, section.explain.k, section.explain.thumb_px)
    plan = ctx.shard_plan(data)
    todo = {key: plan.ids() - set(covered_shards(ctx, kind, key, plan)) for key in models}
    stats = run_pass(ctx, kind, section.scan, plan, todo, data.folds)
    rows = {}
    for key in models:
        top = merge_partials(ctx, kind, key, plan)
        written = top.rows(spans[key][1])
        if section.explain.head_maps:
            add_patch_maps(ctx, key, section.scan, plan, written, spans[key][0])
        tables.write_table(ctx.root, "top_images", written, ctx.run_id, key, name="explain")
        rows[key] = len(written)
    return ExplainSummary(shards_scanned=stats.shards_scanned, shards_skipped=stats.shards_skipped,
                          seconds=round(stats.seconds, 2), decode_share=stats.decode_share,
                          cpus_per_actor=stats.cpus_per_actor, decode_on_actors=stats.decode_on_actors, rows=rows,
                          images=stats.images)


def add_patch_maps(ctx: RunContext, model: str, scan: ScanConfig, plan: ShardPlan, rows: list[dict],
                   directions: dict[str, np.ndarray]) -> None:
    """Set ``patch_map`` (float32 list, row-major) and ``patch_grid`` (the grid's rows) of the ``top_images`` rows
    of ``model`` that list a top image of a span, in place (module docstring); ``directions``: head -> [m, D] the
    spans' directions; an image that no longer decodes keeps null ones."""
    by_shard: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for r in rows:
        if r["span_rank"] is not None and r["direction"] == "top":
            by_shard.setdefault(r["shard"], {}).setdefault(r["image_uri"], []).append((r["head_label"], r["span_rank"]))
    if not by_shard:
        return
    shards = [(s, by_shard[s.shard_id]) for s in plan if s.shard_id in by_shard]
    heads = {h for wanted in by_shard.values() for listed in wanted.values() for h, _ in listed}
    actors = ctx.actors if ctx.actors is not None else ModelActors()  # none kept: in a task
    n_images = sum(len(wanted) for wanted in by_shard.values())
    maps, _ = actors.stream(model, patch_maps, shards, {h: directions[h] for h in heads}, scan.convention,
                            scan.batch_size, preprocess_config(model), models=ctx.models,
                            resources=ctx.cluster_resources(),
                            read=partial(_collect_maps, f"head maps {model}", n_images, ctx.progress))
    for r in rows:
        found = maps.get((r["image_uri"], r["head_label"], r["span_rank"])) if r["direction"] == "top" else None
        if found is not None:
            r["patch_map"], r["patch_grid"] = found.ravel().tolist(), found.shape[0]


def _collect_maps(label: str, n_images: int, progress: bool, stream) -> dict[tuple[str, str, int], np.ndarray]:
    """(image URI, head, span rank) -> map [gh, gw] from a :func:`patch_maps` stream of refs, with progress."""
    maps: dict[tuple[str, str, int], np.ndarray] = {}
    with Progress(label, n_images, "images", progress) as bar:
        for ref in stream:
            done, batch = ray.get(ref)
            maps.update(((uri, head, rank), m) for uri, head, rank, m in batch)
            bar.update(done)
    return maps


def patch_maps(model, device: str, shards: list[tuple[Shard, dict[str, list[tuple[str, int]]]]],
               directions: dict[str, np.ndarray], convention: str, batch_size: int, preprocess: dict):
    """Yields, per batch of up to ``batch_size`` listed images, (images done, [(image URI, head, span rank, map
    float32 [gh, gw])]), for ``model`` on ``device``.

    ``shards``: each shard that holds listed images with its listed images (URI -> their (head, span rank)),
    decoded again as the pass decoded them (:class:`~ccs_ray.preprocess.Pixels` of ``preprocess``); an image that
    no longer decodes counts as done without a map. ``directions``: head -> [m, D] (row r - 1: span r);
    ``convention``: the scan's."""
    from ..headmap import span_maps

    pixels = Pixels(preprocess)
    items: list[tuple[str, list[tuple[str, int]]]] = []
    images: list[np.ndarray] = []
    lost = 0

    def batch():
        heads = {h for _, listed in items for h, _ in listed}
        x = model_input(np.stack(images), preprocess, device)
        maps = span_maps(model, x, {h: directions[h] for h in heads}, convention)  # head -> [B, m, gh, gw]
        out = [(uri, h, rank, maps[h][b, rank - 1].float().cpu().numpy())
               for b, (uri, listed) in enumerate(items) for h, rank in listed]
        return len(items) + lost, out

    for shard, wanted in shards:
        loaded = load_shard(shard, pixels)
        assert isinstance(loaded.images, np.ndarray)  # Pixels' uint8 [n, 3, S, S]
        seen = set()
        for uri, image in zip(loaded.items, loaded.images, strict=True):
            if uri in wanted and uri not in seen:
                seen.add(uri)
                items.append((uri, wanted[uri]))
                images.append(image)
                if len(items) == batch_size:
                    yield batch()
                    items, images, lost = [], [], 0
        lost += len(wanted) - len(seen)
    if items or lost:
        yield batch() if items else (lost, [])
