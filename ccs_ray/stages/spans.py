"""Stage ``spans``: TextSpan over each head's moments and a text pool -> the ``spans`` table.

Section: ``[spans]`` plus how many spans to choose per head (:class:`SpansSection`: ``spans.m``, twice
that when the judge scores held-out spans). Per model; needs ``scan`` (the merged moments). For every
head and data subset (``all``, and ``fold<i>`` when the moments keep folds) it runs
:func:`ccs_ray.textspan.textspan_from_moments` in one Ray task (on a GPU when the cluster has one).
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from .. import tables
from ..heads import parse_head_name
from ..models import load_model
from ..moments import HeadMoments
from ..pools import load_pool
from ..progress import Progress
from ..spec import ModelsConfig, Spec, SpansConfig
from ..textspan import text_embeddings, textspan_from_moments
from .base import Context, Stage
from .scan import moments_uri


@dataclass(frozen=True)
class SpansSection:
    """``spans``: the TextSpan settings; ``n_spans``: spans chosen per head (``spans.m``, or ``2 spans.m``
    when the judge also scores held-out spans m+1..2m)."""

    spans: SpansConfig
    n_spans: int


def section(spec: Spec) -> SpansSection:
    heldout = spec.judge.heldout and "judge" in spec.stages
    return SpansSection(spec.spans, spec.spans.m * (2 if heldout else 1))


def run_spans(ctx: Context, section: SpansSection) -> list[dict]:
    """TextSpan rows for every head of ``ctx.model``, over all data and each fold (``subset`` all/fold<i>)."""
    gpus = 1 if ctx.cluster_resources().get("GPU", 0) else 0
    stream = _spans_task.options(num_gpus=gpus).remote(ctx.models, section, moments_uri(ctx, ctx.model), ctx.model)
    n_heads = ray.get(next(stream))
    rows = []
    with Progress(f"spans {ctx.model}", n_heads, "heads", ctx.progress) as progress:
        for ref in stream:
            rows += ray.get(ref)
            progress.update(1)
    tables.write_table(ctx.root, "spans", rows, ctx.run_id, ctx.model, name="spans")
    return rows


@ray.remote(num_returns="streaming")
def _spans_task(models: ModelsConfig, section: SpansSection, uri: str, model_key: str):
    """Yields the number of heads, then each head's rows (as it finishes: the driver shows progress)."""
    cfg = section.spans
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    moments = HeadMoments.load(uri, device)
    yield len(moments.heads)
    model, _ = load_model(model_key, models.precision, device)
    texts = load_pool(cfg.pool)
    emb = text_embeddings(model, texts, cfg.template, cfg.normalize).to(device)
    subsets = {"all": None} | ({f"fold{f}": [f] for f in range(moments.folds)} if moments.folds > 1 else {})
    for name in moments.heads:
        layer, head = parse_head_name(name)
        rows = []
        for subset, folds in subsets.items():
            n, total, outer = moments.head(name, folds)
            if n == 0:
                continue
            for s in textspan_from_moments(n, total, outer, emb, texts, m=section.n_spans, rank=cfg.rank):
                rows.append(dict(layer=layer, head=head, head_label=name, subset=subset, rank=s.rank, text=s.text,
                                 variance=s.variance, variance_explained=s.variance_explained, pool=cfg.pool,
                                 svd_rank=s.svd_rank, convention=moments.convention,
                                 direction=s.direction.astype("float32").tolist()))
        yield rows


def run(ctx: Context, section: SpansSection) -> dict:
    return {"rows": len(run_spans(ctx, section))}


STAGE = Stage("spans", needs=("scan",), per_model=True, section=section, run=run)
