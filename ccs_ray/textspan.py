"""TextSpan (Gandelsman et al., ICLR 2024): the texts that best span a head's outputs.

Given a head's contributions X [N, D] and a pool of text embeddings [M, D] (:mod:`ccs_ray.texts`):

1. keep the top ``rank`` right singular vectors V of the *uncentred* X and project every text onto span(V);
2. centre X; ``m`` times: pick the text t whose projection X t has the largest variance over images,
   record it, and remove the direction t from X and from every text (``X <- X - (X t / |t|^2) t^T``).

:func:`textspan` does this on the raw matrix (as clip_text_span does). :func:`textspan_from_moments`
does the same from (n, sum x, sum x x^T) alone: V are the top eigenvectors of S = X^T X, the centred
covariance is C = S / n - mu mu^T, Var(X t) = t^T C t, and removing t maps C -> Q C Q with
Q = I - t t^T / |t|^2. It works in the span's coordinates: with B = V [D, r] orthonormal, a projected text is
t = B t_r (t_r = B^T t), so t^T C t = t_r^T C_r t_r with C_r = B^T C B [r, r]; every chosen t lies in span(B), so
deflation stays there: T Q = (T_r Q_r) B^T and B^T (Q C Q) B = Q_r C_r Q_r (Q_r = I - t_r t_r^T / |t_r|^2).
Each step costs M r^2 instead of M D^2; the total variance is still tr C over all D dimensions and the direction
is B t_r / |t_r|. Both forms compute in float64. :func:`span_basis` is the moments form's step 1 on its own and
:func:`span_bases` the same for a stack of heads in one batched eigh (:mod:`ccs_ray.fidelity` projects labels
onto the same span); :func:`textspan_from_moments` takes a precomputed basis.

Rules, shared by both so that they agree exactly:

- rank: directions whose singular value is below ``RANK_RTOL`` x the largest are dropped, so a rank
  larger than the data's span uses the span itself (``svd_rank`` in the result says how many were kept);
- ties: texts whose variance is within ``TIE_RTOL`` (relative) of the largest count as tied, and the
  first in pool order wins;
- exhaustion: when no direction with variance above ``1e-12`` x the initial total variance is left,
  fewer than ``m`` texts are returned.

``variance`` is Var(X t) with the text as deflated at that step (the quantity maximised);
``variance_explained`` is the share of the initial total variance (trace C) that removing t took away;
``direction`` is t / |t| [D], the deflated text as chosen. Each chosen t is orthogonal to the earlier ones, so
the deflated data project onto it as the raw data do: (X Q) t = X t. The stage ``explain`` ranks images by
x . direction.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

RANK_RTOL = 1e-6
TIE_RTOL = 1e-9
EXHAUSTED_RTOL = 1e-12

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Span:
    """One chosen text: its pool index, the variance it captured, its share of the total, and its unit
    direction [D] (float64, in the embedding space) as TextSpan chose it."""

    rank: int
    index: int
    text: str
    variance: float
    variance_explained: float
    svd_rank: int
    direction: np.ndarray = field(repr=False, compare=False)


def _f64(x, device=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.to(dtype=torch.float64, device=device if device is not None else t.device)


def _pick(variance: torch.Tensor, floor: float) -> int | None:
    """Index of the largest variance (first of ties within TIE_RTOL), or None when all are below floor."""
    best = float(variance.max())
    if best <= floor:
        return None
    return int(torch.nonzero(variance >= best * (1 - TIE_RTOL))[0, 0])


def _project_texts(texts_emb: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Project [M, D] texts onto the span of orthonormal columns ``basis`` [D, r]."""
    return (texts_emb @ basis) @ basis.T


def textspan(data, text_embeddings, texts: list[str], m: int = 5, rank: int = 80) -> list[Span]:
    """TextSpan on a raw matrix.

    Args:
        data: [N, D] a head's contributions over N images.
        text_embeddings: [M, D] embeddings of the pool (see :func:`ccs_ray.texts.text_embeddings`).
        texts: the M pool lines.
        m: how many texts to choose; rank: SVD rank of the data span.
    """
    X = _f64(data)
    T = _f64(text_embeddings, X.device)
    _check(X.shape[1], T, texts)
    _, s, vh = torch.linalg.svd(X, full_matrices=False)
    r = min(rank, int((s > s[0] * RANK_RTOL).sum())) if len(s) and s[0] > 0 else 0
    T = _project_texts(T, vh[:r].T)
    X = X - X.mean(0, keepdim=True)
    total = float((X * X).sum()) / X.shape[0]
    spans = []
    for step in range(m):
        var = ((X @ T.T) ** 2).mean(0)
        i = _pick(var, EXHAUSTED_RTOL * total)
        if i is None:
            break
        t = T[i]
        tt = t @ t
        spans.append(_span(step, i, texts, var, tt, total, r, t))
        X = X - torch.outer(X @ t / tt, t)
        T = T - torch.outer(T @ t / tt, t)
    return spans


def span_bases(outers, rank: int, factors=None) -> list[tuple[torch.Tensor, int]]:
    """The data spans TextSpan projects texts onto, of H heads at once (one batched eigh), from ``outers`` =
    S_h = sum_i x_i x_i^T [H, D, D]; or, with ``factors`` = B_h [H, k, D], from the moments of compact coefficients
    ``outers`` = G_h = sum_i c_i c_i^T [H, k, k] with x_i = c_i B_h (:mod:`ccs_ray.moments`), so S_h = B_h^T G_h B_h.

    Returns per head ``(basis [D, r] float64, r)``: the top r eigenvectors of S_h (the top right singular vectors
    of the uncentred data, largest first), r = min(``rank``, number of eigenvalues above ``RANK_RTOL``^2 x the
    largest, i.e. singular values above ``RANK_RTOL`` x the largest); r = 0 when S_h = 0. The factored form solves
    a k x k problem: with B_h^T = Q_h R_h (Q_h [D, k] orthonormal), S_h = Q_h (R_h G_h R_h^T) Q_h^T, whose nonzero
    eigenvalues are those of R_h G_h R_h^T and whose eigenvectors are Q_h times its eigenvectors (the span and the
    spans it gives are the same; D - k eigenvalues of S_h are 0 and below the cut-off).
    """
    S = _f64(outers)
    if S.ndim != 3 or S.shape[1] != S.shape[2]:
        raise ValueError(f"outers have shape {tuple(S.shape)}, expected [H, D, D] (or [H, k, k] with factors)")
    if len(S) == 0:
        return []
    Q = None
    if factors is not None:
        B = _f64(factors, S.device)
        if B.shape[:2] != S.shape[:2]:
            raise ValueError(f"factors have shape {tuple(B.shape)}, expected [{S.shape[0]}, {S.shape[1]}, D]")
        Q, R = torch.linalg.qr(B.transpose(1, 2))  # [H, D, k], [H, k, k]
        S = R @ S @ R.transpose(1, 2)
        S = (S + S.transpose(1, 2)) / 2
    lam, vec = torch.linalg.eigh(S)  # ascending
    size, top = S.shape[1], lam[:, -1]
    above = (lam > top[:, None] * RANK_RTOL**2).sum(1)
    bases = []
    for h, (largest, count) in enumerate(zip(top.tolist(), above.tolist(), strict=True)):
        r = min(rank, count) if largest > 0 else 0
        basis = vec[h, :, size - r:].flip(1)  # flip copies: the stack is not kept alive
        bases.append((Q[h] @ basis if Q is not None else basis, r))
    return bases


def keyed_span_bases(outers: Mapping[K, torch.Tensor], rank: int) -> dict[K, torch.Tensor]:
    """:func:`span_bases` of the heads whose S_h [D, D] ``outers`` holds (one batched eigh): key -> basis [D, r]."""
    found = span_bases(torch.stack([_f64(o) for o in outers.values()]), rank) if outers else []
    return {k: basis for k, (basis, _) in zip(outers, found, strict=True)}


def span_basis(outer, rank: int) -> tuple[torch.Tensor, int]:
    """:func:`span_bases` of one head: ``(basis [D, r] float64, r)`` from ``outer`` = S [D, D]."""
    return span_bases(_f64(outer)[None], rank)[0]


def textspan_from_moments(n: int, total, outer, text_embeddings, texts: list[str], m: int = 5, rank: int = 80, *,
                          basis=None) -> list[Span]:
    """TextSpan from moments: n images, ``total`` = sum_i x_i [D], ``outer`` = sum_i x_i x_i^T [D, D].

    ``basis``: the head's span [D, r] as :func:`span_bases` gives it for ``outer`` and ``rank`` (computed here when
    None). Returns the same texts in the same order as :func:`textspan` on the matrix the moments came from.
    """
    S = _f64(outer)
    mu = _f64(total, S.device) / n
    T = _f64(text_embeddings, S.device)
    _check(S.shape[0], T, texts)
    B = span_basis(S, rank)[0] if basis is None else _as_basis(basis, S)
    r = B.shape[1]
    C = S / n - torch.outer(mu, mu)
    total_var = float(torch.trace(C))
    T = T @ B  # [M, r]: the texts' coordinates in the span (module docstring)
    C = B.T @ C @ B  # [r, r]
    C = (C + C.T) / 2
    spans = []
    for step in range(m):
        var = ((T @ C) * T).sum(1)
        i = _pick(var, EXHAUSTED_RTOL * total_var)
        if i is None:
            break
        t = T[i]
        tt = t @ t
        spans.append(_span(step, i, texts, var, tt, total_var, r, B @ t))
        Ct = C @ t
        # Q_r C_r Q_r with Q_r = I - t_r t_r^T / tt, expanded to avoid forming Q_r.
        C = C - (torch.outer(t, Ct) + torch.outer(Ct, t)) / tt + torch.outer(t, t) * (t @ Ct) / tt**2
        T = T - torch.outer(T @ t / tt, t)
    return spans


def _as_basis(basis, outer: torch.Tensor) -> torch.Tensor:
    """A given span basis as float64 [D, r] on the device of ``outer`` [D, D] (its shape checked)."""
    B = _f64(basis, outer.device)
    if B.ndim != 2 or B.shape[0] != outer.shape[0]:
        raise ValueError(f"basis has shape {tuple(B.shape)}, expected [{outer.shape[0]}, r]")
    return B


def _span(step: int, i: int, texts: list[str], var: torch.Tensor, tt: torch.Tensor, total: float, r: int,
          t: torch.Tensor) -> Span:
    """The Span of text ``i`` chosen at ``step`` (0-based): deflated text ``t`` [D] with |t|^2 = ``tt``."""
    direction = (t / tt.sqrt()).cpu().numpy()
    return Span(step + 1, i, texts[i], float(var[i]), float(var[i] / tt / total), r, direction)


def _check(dim: int, T: torch.Tensor, texts: list[str]) -> None:
    if T.ndim != 2 or T.shape[1] != dim:
        raise ValueError(f"text embeddings have shape {tuple(T.shape)}, expected [M, {dim}]")
    if T.shape[0] != len(texts):
        raise ValueError(f"{T.shape[0]} text embeddings but {len(texts)} texts")
