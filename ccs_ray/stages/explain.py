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

Where each head looks in its top images (``top_images.patch_map``) comes from the same pass: the forward also gives,
per head and span, the projection on the span's direction of the part of the head's contribution read from each token
(``decomposed_forward(token_directions=...)``, the directions in each head's compact coordinates,
:func:`~ccs_ray.decompose.head_basis`; :mod:`ccs_ray.headmap` has the math), in the scan's convention, so that a map
and the class token's term sum to the row's ``score``; an image that enters a span's top list keeps its map there
(:class:`~ccs_ray.topimages.TopImages`). No image is decoded or passed through the model again for its map.
``explain.head_maps = false`` writes the rows without maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import tables
from ..passes import PassKind, covered_shards, merge_partials, run_pass
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
    head has fewer spans), kept k at a time with thumbnails of ``thumb_px`` and, when ``head_maps``, the maps of the
    spans' top images in ``convention``."""

    directions: dict
    k: int
    thumb_px: int
    convention: str = "centered"
    head_maps: bool = True
    name = "explain"
    folder = "explain"
    suffix = ".parquet"

    def start(self, model_key, model, layers, device):
        import torch

        from ..decompose import head_basis, tower_shape

        shape = tower_shape(model)
        heads = shape.head_names(layers)
        mine = self.directions[model_key]
        m, dim = next(iter(mine.values())).shape
        directions = np.stack([mine.get(h, np.full((m, dim), np.nan)) for h in heads])  # [NH, m, D]
        top = TopImages(heads, directions, self.k, self.thumb_px, model.visual.grid_size[0] if self.head_maps else 0)
        if self.head_maps:  # the directions in each head's compact coordinates: B_h d [Ls, H, k, m]
            basis = head_basis(model, layers, self.convention)
            d = torch.as_tensor(np.nan_to_num(directions), dtype=torch.float64).view(len(layers), shape.n_heads, m, -1)
            top.token_directions = torch.einsum("lhkd,lhmd->lhkm", basis, d).to(device)
        return top

    def forward_options(self, acc):
        return {"token_directions": acc.token_directions}

    def add(self, acc, d, loaded, batch, fold):
        maps = d.token_projections
        if maps is not None:  # [B, Ls, H, m, T] -> the patches' [B, NH, m, T - 1]
            maps = maps.flatten(1, 2)[..., 1:]
        acc.update(d.contributions.flatten(1, 2), loaded.items[batch], loaded.shard.shard_id, loaded.images[batch],
                   maps)

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
    kind = TopImagesPass({key: d for key, (d, _) in spans.items()}, section.explain.k, section.explain.thumb_px,
                         section.scan.convention, section.explain.head_maps)
    plan = ctx.shard_plan(data)
    todo = {key: plan.ids() - set(covered_shards(ctx, kind, key, plan)) for key in models}
    stats = run_pass(ctx, kind, section.scan, plan, todo, data.folds)
    rows = {}
    for key in models:
        top = merge_partials(ctx, kind, key, plan)
        written = top.rows(spans[key][1], maps=section.explain.head_maps)
        tables.write_table(ctx.root, "top_images", written, ctx.run_id, key, name="explain")
        rows[key] = len(written)
    return ExplainSummary(shards_scanned=stats.shards_scanned, shards_skipped=stats.shards_skipped,
                          seconds=round(stats.seconds, 2), decode_share=stats.decode_share,
                          cpus_per_actor=stats.cpus_per_actor, decode_on_actors=stats.decode_on_actors, rows=rows,
                          images=stats.images)
