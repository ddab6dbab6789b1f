"""Label fidelity: how much of a head's output variance lies along its label, judged without any LLM.

For one head with moments n, ``total`` = sum_i x_i [D] and ``outer`` = S = sum_i x_i x_i^T [D, D] (its
contributions x_i to N = n images' embeddings, :mod:`ccs_ray.moments`), and a text embedded as the pool is
(same template and normalisation, :func:`ccs_ray.texts.text_embeddings`), t [D]:

1. project t onto the head's data span, the span TextSpan projects its pool onto:
   p = V V^T t with V = :func:`ccs_ray.textspan.span_basis` (S, rank) (same rank and cut-off; callers that
   batch heads pass V from :func:`ccs_ray.textspan.span_bases`);
2. normalise: l = p / |p|; a text with no projection (|p| <= ``ZERO_PROJECTION_RTOL`` x |t|) has value 0;
3. value(t) = l^T C l / tr C with C = S / n - mu mu^T, mu = total / n: the share of the head's total variance
   (tr C = sum over embedding dimensions of Var x_d) that lies along l, i.e. Var_i(x_i . l) / tr C, in [0, 1]
   (variances over images with divisor n).

``label_variance`` is value(label). ``label_percentile`` is the percent of pool texts whose value is <= the
label's, as ``scipy.stats.percentileofscore(pool_values, label_value, kind="weak")`` (a pool value within
:data:`ccs_ray.textspan.TIE_RTOL`, relative, above the label's counts as equal, so a label that is itself a pool
text counts itself): 100 means no pool text explains more of the head's variance than the label.

The weights-only form of a head (``spans.method = "weights"``: n = 1, total = 0, outer = C_w) gives C = S = C_w,
so the same formulas apply with the weights' covariance. A head with no variance (tr C = 0) has NaN for both.

TextSpan's first text t_1 maximises p^T C p = |p|^2 value(t) over the pool, not value(t) itself; the two agree
(and a label equal to t_1 has percentile 100) when every pool text keeps its norm under the projection, e.g.
when the span is the whole embedding space and the pool is normalised.
"""

from __future__ import annotations

import numpy as np
import torch

from .textspan import TIE_RTOL, _as_basis, _f64, span_basis

ZERO_PROJECTION_RTOL = 1e-9  # |p| / |t| at or below this: the text has no component in the head's span


def text_values(n: int, total, outer, text_embeddings, rank: int, *, basis=None) -> torch.Tensor:
    """value(t) [K] float64 (module docstring) of each of K texts ``text_embeddings`` [K, D] for one head.

    Args:
        n: images the moments count (1 for the weights-only form); ``total`` [D]; ``outer`` [D, D].
        rank: the TextSpan rank (``spans.rank``).
        basis: V [D, r] as :func:`ccs_ray.textspan.span_bases` gives it for ``outer`` and ``rank`` (computed
            here when None).
    """
    if n <= 0:
        raise ValueError(f"label fidelity needs moments of at least one image, got n = {n}")
    S = _f64(outer)
    mu = _f64(total, S.device) / n
    T = _f64(text_embeddings, S.device)
    if T.ndim != 2 or T.shape[1] != S.shape[0]:
        raise ValueError(f"text embeddings have shape {tuple(T.shape)}, expected [K, {S.shape[0]}]")
    C = S / n - torch.outer(mu, mu)
    C = (C + C.T) / 2
    trace = float(torch.trace(C))
    if trace <= 0:
        return torch.full((T.shape[0],), float("nan"), dtype=torch.float64, device=S.device)
    basis = span_basis(S, rank)[0] if basis is None else _as_basis(basis, S)
    coords = T @ basis  # [K, r]: p = basis @ coords, |p|^2 = |coords|^2 (orthonormal columns)
    norm2 = (coords * coords).sum(1)
    quad = ((coords @ (basis.T @ C @ basis)) * coords).sum(1)  # p^T C p
    kept = norm2 > ZERO_PROJECTION_RTOL**2 * (T * T).sum(1)
    return torch.where(kept, quad / torch.where(kept, norm2, 1.0) / trace, torch.zeros_like(quad))


def percentile_weak(pool_values: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[L] percent of ``pool_values`` [M] that are <= each of ``values`` [L] (ties within TIE_RTOL count), as
    ``scipy.stats.percentileofscore(pool_values, v, kind="weak")``; NaN for a NaN value or an empty pool."""
    if len(pool_values) == 0:
        return torch.full_like(values, float("nan"))
    ordered = torch.sort(pool_values).values
    count = torch.searchsorted(ordered, values + TIE_RTOL * values.abs(), right=True)
    return torch.where(values.isnan(), float("nan"), count.to(values.dtype) * (100.0 / len(ordered)))


def label_fidelity(n: int, total, outer, label_embeddings, pool_embeddings, rank: int, *,
                   basis=None) -> tuple[np.ndarray, np.ndarray]:
    """``(label_variance [L], label_percentile [L])`` float64 of L labels of one head against a pool of M texts.

    Args:
        n, total [D], outer [D, D]: the head's moments (module docstring).
        label_embeddings [L, D], pool_embeddings [M, D]: encoded alike (template and normalisation of the spans).
        rank: the TextSpan rank (``spans.rank``); basis: the head's V [D, r], as for :func:`text_values`.
    """
    labels, pool = _f64(label_embeddings), _f64(pool_embeddings)
    values = text_values(n, total, outer, torch.cat([labels, pool.to(labels.device)]), rank, basis=basis)
    variance, pool_values = values[:len(labels)], values[len(labels):]
    return variance.cpu().numpy(), percentile_weak(pool_values, variance).cpu().numpy()
