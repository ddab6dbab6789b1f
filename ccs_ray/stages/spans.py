"""Stage ``spans``: TextSpan over each head's statistics and a text pool -> the ``spans`` table.

Section: ``[spans]`` plus how many spans to choose per head and the weights' convention (:class:`SpansSection`:
``spans.m``, twice that when the judge scores held-out spans; ``scan.convention``). Per model, in one Ray task
(on a GPU when the cluster has one). ``spans.method`` says where a head's statistics come from:

- ``data``: the scan's merged moments (so it needs ``scan``); for every head and data subset (``all``, and
  ``fold<i>`` when the moments keep folds) :func:`ccs_ray.textspan.textspan_from_moments`; rows ``method = 'data'``;
- ``weights``: no images. For every head of the analysed layers (``models.layers`` / ``models.last_layers``) its
  output covariance under isotropic inputs C_w (:func:`ccs_ray.circuits.head_covariances`, in ``scan.convention``),
  and the same ``textspan_from_moments(1, 0, C_w)``; subset ``all`` only, rows ``method = 'weights'``;
- ``both``: both sets of rows, and per head the ``span_agreement`` table (:func:`ccs_ray.circuits.span_agreement`
  of the top ``spans.m`` of each, subset ``all``).
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
import torch

from .. import tables
from ..circuits import head_covariances, span_agreement
from ..decompose import select_layers, tower_shape
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
    when the judge also scores held-out spans m+1..2m); ``convention``: the decomposition convention of the
    weights' covariances (``scan.convention``, the one the scan's moments use)."""

    spans: SpansConfig
    n_spans: int
    convention: str


def section(spec: Spec) -> SpansSection:
    heldout = spec.judge.heldout and "judge" in spec.stages
    return SpansSection(spec.spans, spec.spans.m * (2 if heldout else 1), spec.scan.convention)


def run_spans(ctx: Context, section: SpansSection) -> list[dict]:
    """TextSpan rows for every head of ``ctx.model`` (``spans.method``: from data over all data and each fold,
    from the weights, or both; with both, the span_agreement rows are written too)."""
    gpus = 1 if ctx.cluster_resources().get("GPU", 0) else 0
    uri = moments_uri(ctx, ctx.model) if section.spans.method != "weights" else None
    stream = _spans_task.options(num_gpus=gpus).remote(ctx.models, section, uri, ctx.model)
    n_heads = ray.get(next(stream))
    rows, agreement = [], []
    with Progress(f"spans {ctx.model}", n_heads, "heads", ctx.progress) as progress:
        for ref in stream:
            head_rows, head_agreement = ray.get(ref)
            rows += head_rows
            agreement += head_agreement
            progress.update(1)
    tables.write_table(ctx.root, "spans", rows, ctx.run_id, ctx.model, name="spans")
    if section.spans.method == "both":
        tables.replace_file(ctx.root, "span_agreement", agreement, ctx.run_id, ctx.model, "spans")
    return rows


@ray.remote(num_returns="streaming")
def _spans_task(models: ModelsConfig, section: SpansSection, uri: str | None, model_key: str):
    """Yields the number of heads, then each head's (spans rows, span_agreement rows) as it finishes (the driver
    shows progress). ``uri``: the merged moments (None: spans from the weights alone)."""
    cfg = section.spans
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    moments = HeadMoments.load(uri, device) if uri is not None else None
    model, _ = load_model(model_key, models.precision, device)
    weights_layers = select_layers(model, models.layers, models.last_layers) if cfg.method != "data" else []
    data_heads = list(moments.heads) if moments is not None else []
    heads = sorted(set(data_heads) | set(tower_shape(model).head_names(weights_layers)), key=parse_head_name)
    yield len(heads)
    texts = load_pool(cfg.pool)
    emb = text_embeddings(model, texts, cfg.template, cfg.normalize).to(device)
    subsets = ({"all": None} | ({f"fold{f}": [f] for f in range(moments.folds)} if moments.folds > 1 else {})
               if moments is not None else {})
    covariances: dict[str, torch.Tensor] = {}
    for name in heads:
        layer, head = parse_head_name(name)
        if layer in weights_layers and name not in covariances:
            covariances = head_covariances(model, [layer], section.convention)  # one layer's heads at a time
        key = dict(layer=layer, head=head, head_label=name)
        rows, found = [], {}
        for subset, folds in (subsets if name in data_heads else {}).items():
            n, total, outer = moments.head(name, folds)
            if n == 0:
                continue
            spans = textspan_from_moments(n, total, outer, emb, texts, m=section.n_spans, rank=cfg.rank)
            rows += _rows(key, spans, subset, "data", moments.convention, cfg.pool)
            found["data", subset] = spans
        if layer in weights_layers:
            C_w = covariances.pop(name).to(device)
            spans = textspan_from_moments(1, torch.zeros(len(C_w), dtype=C_w.dtype, device=device), C_w, emb, texts,
                                          m=section.n_spans, rank=cfg.rank)
            rows += _rows(key, spans, "all", "weights", section.convention, cfg.pool)
            found["weights", "all"] = spans
        agreement = []
        if cfg.method == "both" and ("data", "all") in found and ("weights", "all") in found:
            a, b = found["data", "all"], found["weights", "all"]
            agreement.append(dict(**key, **span_agreement([s.text for s in a], [s.direction for s in a],
                                                          [s.text for s in b], [s.direction for s in b],
                                                          cfg.m)._asdict()))
        yield rows, agreement


def _rows(key: dict, spans, subset: str, method: str, convention: str, pool: str) -> list[dict]:
    """spans table rows of one head's TextSpan result."""
    return [dict(**key, subset=subset, rank=s.rank, text=s.text, variance=s.variance,
                 variance_explained=s.variance_explained, pool=pool, svd_rank=s.svd_rank, convention=convention,
                 direction=s.direction.astype("float32").tolist(), method=method) for s in spans]


def run(ctx: Context, section: SpansSection) -> dict:
    return {"rows": len(run_spans(ctx, section))}


# needs scan unless spans.method = 'weights' (preflight checks it)
STAGE = Stage("spans", needs=("scan",), per_model=True, section=section, run=run)
