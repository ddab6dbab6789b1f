"""Zero-shot classification: template-ensembled text classifier, logits, top-1/top-5/per-class accuracy.

Shapes: N images, C classes, D embedding dim, K ranks kept. Accuracies are in percent.
"""

from __future__ import annotations

import torch

from ..texts import text_embeddings


def classifier_weights(model, class_texts: list[str], templates: list[str], encoder=None) -> torch.Tensor:
    """[D, C] float32: per class, the mean of its normalised template embeddings, renormalised (CLIP).

    ``encoder``: a :class:`ccs_ray.texts.TextEncoder` of ``model`` to encode the prompts through (its cache);
    default: :func:`ccs_ray.texts.text_embeddings` of ``model``.
    """
    if not class_texts or not templates:
        raise ValueError("a zero-shot classifier needs at least one class name and one template")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates must contain exactly one '{{}}' for the class name: {bad}")
    prompts = [t.format(c) for t in templates for c in class_texts]
    emb = encoder(prompts) if encoder is not None else text_embeddings(model, prompts)
    per_template = emb.reshape(len(templates), len(class_texts), -1)  # [T, C, D]
    mean = per_template.mean(0)
    return (mean / mean.norm(dim=-1, keepdim=True)).T


def zeroshot_logits(image_embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[N, C] = 100 * normalised image embeddings [N, D] @ classifier weights [D, C]."""
    x = image_embeddings.float()
    return 100 * (x / x.norm(dim=-1, keepdim=True)) @ weights.to(x)


def top_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """[N, min(k, C)] class indices by decreasing logit."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def top_hits(top: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image hits [N] bool: ``top1`` (the first prediction is the true class) and ``top5`` (one of the first
    min(5, K) is), from predictions ``top`` [N, K] and true class indices ``labels`` [N]."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if top.shape[0] != labels.shape[0] or top.shape[0] == 0:
        raise ValueError(f"need predictions for every image: {top.shape[0]} predictions, {labels.shape[0]} labels")
    return {"top1": top[:, 0] == labels, "top5": (top[:, :5] == labels[:, None]).any(1)}


def accuracy_metrics(top: torch.Tensor, labels: torch.Tensor, classnames: list[str]) -> dict[str, float]:
    """``top1``, ``top5`` (over the first min(5, C) ranks) and ``acc:<class>`` (top-1 per class; classes
    without images are left out) from predictions ``top`` [N, K] and true class indices ``labels`` [N]:
    percent of the images :func:`top_hits` counts."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    hits = top_hits(top, labels)
    hit1 = hits["top1"]
    out = {name: 100 * hit.double().mean().item() for name, hit in hits.items()}
    for c, name in enumerate(classnames):
        mask = labels == c
        if mask.any():
            out[f"acc:{name}"] = 100 * hit1[mask].double().mean().item()
    return out
