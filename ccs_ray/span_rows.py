"""TextSpan over every analysed head of a model: the rows of the ``spans`` and ``span_agreement`` tables.

:func:`find_spans` runs :func:`span_rows` on a model actor the run kept (its model loaded) or, when there is none or
it died, in a Ray task of its own (:meth:`~ccs_ray.passes.ModelActors.stream`), and collects the rows with progress.
``spans.method`` (:class:`SpanSettings`) says where a head's statistics come from:

- ``data``: the scan's merged moments; for every head and data subset (``all``, and ``fold<i>`` when the moments keep
  folds) :func:`ccs_ray.textspan.textspan_from_moments`; rows ``method = 'data'``;
- ``weights``: no images. For every head of the analysed layers (``models.layers`` / ``models.last_layers``) its
  output covariance under isotropic inputs C_w (:func:`ccs_ray.circuits.head_covariances`, in ``scan.convention``),
  and the same ``textspan_from_moments(1, 0, C_w)``; subset ``all`` only, rows ``method = 'weights'``;
- ``both``: both sets of rows, and per head a ``span_agreement`` row (:func:`ccs_ray.circuits.span_agreement` of
  the top ``spans.m`` of each, subset ``all``).

The pool is encoded through the run's text cache (:class:`ccs_ray.texts.TextEncoder`). Each row keeps ``direction``:
the unit vector [D] of the text as TextSpan chose it (projected onto the data span, deflated by earlier choices).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import ray
import torch

from .circuits import head_covariances, span_agreement
from .decompose import select_layers, tower_shape
from .heads import parse_head_name
from .moments import HeadMoments
from .passes import ModelActors
from .pools import load_pool
from .progress import Progress
from .spec import ModelsConfig, SpansConfig, Spec
from .texts import TextEncoder
from .textspan import keyed_span_bases, textspan_from_moments

_StatsKey = tuple[str, str, str]  # (head, method "data" or "weights", subset)
_Moments = tuple[int, torch.Tensor, torch.Tensor]  # (n, total [D], outer [D, D])


@dataclass(frozen=True)
class SpanSettings:
    """``spans``: the TextSpan settings; ``n_spans``: spans chosen per head (``spans.m``, or ``2 spans.m``
    when the judge also scores held-out spans m+1..2m); ``convention``: the decomposition convention of the
    weights' covariances (``scan.convention``, the one the scan's moments use)."""

    spans: SpansConfig
    n_spans: int
    convention: str

    @classmethod
    def of(cls, spec: Spec) -> SpanSettings:
        heldout = spec.judge.heldout and "judge" in spec.stages
        return cls(spec.spans, spec.spans.m * (2 if heldout else 1), spec.scan.convention)


def find_spans(actors: ModelActors | None, model_key: str, models: ModelsConfig, settings: SpanSettings,
               moments_uri: str | None, text_cache: str, resources: dict, progress: bool = True
               ) -> tuple[list[dict], list[dict], str]:
    """(spans rows, span_agreement rows, where they were computed: ``"kept actor"`` or ``"task"``) of every head of
    ``model_key``. ``moments_uri``: the merged moments (None: spans from the weights alone); ``actors``: the run's
    kept model actors (None: in a task)."""
    actors = actors if actors is not None else ModelActors()  # none kept: in a task
    (rows, agreement), ran_on = actors.stream(model_key, span_rows, models, settings, moments_uri, model_key,
                                              text_cache, models=models, resources=resources,
                                              read=partial(_collect, f"spans {model_key}", progress))
    return rows, agreement, ran_on


def _collect(label: str, progress: bool, stream) -> tuple[list[dict], list[dict]]:
    """The spans and span_agreement rows of a :func:`span_rows` stream of refs, with progress."""
    n_heads = ray.get(next(stream))
    rows, agreement = [], []
    with Progress(label, n_heads, "heads", progress) as bar:
        for ref in stream:
            head_rows, head_agreement = ray.get(ref)
            rows += head_rows
            agreement += head_agreement
            bar.update(1)
    return rows, agreement


def span_rows(model, device: str, models: ModelsConfig, settings: SpanSettings, uri: str | None, model_key: str,
              text_cache: str):
    """Yields the number of heads, then each head's (spans rows, span_agreement rows) as it finishes (the driver
    shows progress), for ``model`` (of key ``model_key``, on ``device``). ``uri``: the merged moments (None: spans
    from the weights alone); ``text_cache``: the run's text-embedding cache of the model
    (:meth:`~ccs_ray.runs.RunState.text_cache`)."""
    cfg = settings.spans
    moments = HeadMoments.load(uri, device) if uri is not None else None
    weights_layers = select_layers(model, models.layers, models.last_layers) if cfg.method != "data" else []
    data_heads = list(moments.heads) if moments is not None else []
    heads = sorted(set(data_heads) | set(tower_shape(model).head_names(weights_layers)), key=parse_head_name)
    yield len(heads)
    texts = load_pool(cfg.pool)
    emb = TextEncoder(model_key, models.precision, cache_dir=text_cache, model=model)(texts, cfg.template,
                                                                                 cfg.normalize).to(device)
    subsets = ({"all": None} | ({f"fold{f}": [f] for f in range(moments.folds)} if moments.folds > 1 else {})
               if moments is not None else {})
    stats: dict[_StatsKey, _Moments] = {}
    bases: dict[_StatsKey, torch.Tensor] = {}
    stats_layer = None
    for name in heads:
        layer, head = parse_head_name(name)
        if layer != stats_layer:  # one layer's heads at a time, their span bases in one batched eigh
            covariances = head_covariances(model, [layer], settings.convention) if layer in weights_layers else {}
            layer_heads = [h for h in data_heads if parse_head_name(h)[0] == layer]
            stats, bases = _layer_stats(moments, subsets, layer_heads, covariances, cfg.rank, device)
            stats_layer = layer
        key = dict(layer=layer, head=head, head_label=name)
        rows, found = [], {}
        for subset in subsets:
            if (name, "data", subset) not in stats:  # not a data head, or no images in this subset
                continue
            assert moments is not None  # data subsets come from the moments
            spans = textspan_from_moments(*stats.pop((name, "data", subset)), emb, texts, m=settings.n_spans,
                                          rank=cfg.rank, basis=bases.pop((name, "data", subset)))
            rows += _rows(key, spans, subset, "data", moments.convention, cfg.pool)
            found["data", subset] = spans
        if layer in weights_layers:
            spans = textspan_from_moments(*stats.pop((name, "weights", "all")), emb, texts, m=settings.n_spans,
                                          rank=cfg.rank, basis=bases.pop((name, "weights", "all")))
            rows += _rows(key, spans, "all", "weights", settings.convention, cfg.pool)
            found["weights", "all"] = spans
        agreement = []
        if cfg.method == "both" and ("data", "all") in found and ("weights", "all") in found:
            a, b = found["data", "all"], found["weights", "all"]
            agreement.append(dict(**key, **span_agreement([s.text for s in a], [s.direction for s in a],
                                                          [s.text for s in b], [s.direction for s in b],
                                                          cfg.m)._asdict()))
        yield rows, agreement


def _layer_stats(moments: HeadMoments | None, subsets: dict, names: list[str], covariances: dict[str, torch.Tensor],
                 rank: int, device) -> tuple[dict[_StatsKey, _Moments], dict[_StatsKey, torch.Tensor]]:
    """One layer's TextSpan inputs: ``stats`` maps (head, "data", subset) to the moments (n, total, outer) of each
    data head in ``names`` over each subset with images, and (head, "weights", "all") to (1, 0, C_w) of each head
    in ``covariances``; ``bases`` maps the same keys to the span basis [D, r] (:func:`span_bases`: one batched eigh
    over the layer's data heads, :meth:`~ccs_ray.moments.HeadMoments.span_bases`, and one over its weights heads)."""
    stats: dict[_StatsKey, _Moments] = {}
    bases: dict[_StatsKey, torch.Tensor] = {}
    if moments is not None:  # (else no data heads and no subsets)
        stats = {(h, "data", s): moments.head(h, folds) for h in names for s, folds in subsets.items()}
        stats = {k: v for k, v in stats.items() if v[0] > 0}
        found = moments.span_bases([(h, subsets[s]) for h, _, s in stats], rank)
        bases = {k: basis for k, (basis, _) in zip(stats, found, strict=True)}
    weights: dict[_StatsKey, _Moments] = {}
    for h, C_w in covariances.items():
        C_w = C_w.to(device)
        weights[h, "weights", "all"] = (1, torch.zeros(len(C_w), dtype=C_w.dtype, device=device), C_w)
    bases |= keyed_span_bases({k: outer for k, (_, _, outer) in weights.items()}, rank)
    return stats | weights, bases


def _rows(key: dict, spans, subset: str, method: str, convention: str, pool: str) -> list[dict]:
    """spans table rows of one head's TextSpan result."""
    return [dict(**key, subset=subset, rank=s.rank, text=s.text, variance=s.variance,
                 variance_explained=s.variance_explained, pool=pool, svd_rank=s.svd_rank, convention=convention,
                 direction=s.direction.astype("float32").tolist(), method=method) for s in spans]
