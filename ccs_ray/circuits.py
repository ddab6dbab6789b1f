"""Data-free spans: each head's output covariance in embedding space from the weights alone, and how its
TextSpan spans agree with the spans found from data.

Notation as in :mod:`ccs_ray.decompose` (W residual width, H heads, d = W / H head width, D embedding dim),
vectors are rows. In layer l, head h reads the ``ln_1``-normalised token u [W] (``ln_1(x) = gamma_ln1 * u +
beta_ln1`` with ``u = (x - mean_W x) / std_W x``), and writes into embedding space (``_to_embedding_space``)

    c = u M,   M = diag(gamma_ln1) W_V,h^T W_O[:, h]^T diag(ls) P diag(gamma_post) proj / sigma     [W, D]

- ``W_V,h`` [d, W]: rows ``2W + h d .. 2W + (h+1) d`` of ``attn.in_proj_weight`` [3W, W] (open_clip's
  ``nn.MultiheadAttention``), so ``u diag(gamma_ln1) W_V,h^T`` is the head's value [d];
- ``W_O[:, h]`` [W, d]: columns ``h d .. (h+1) d`` of ``attn.out_proj.weight``;
- ``diag(ls)``: ``ls_1``'s LayerScale gamma, the identity for blocks without LayerScale;
- ``P``: convention ``"centered"`` P = I - 1 1^T / W (the head's output centred over W, as ln_post centres
  each component); convention ``"textspan"`` P = I (that convention leaves each head's output uncentred and puts
  the mean into a term ``-mu / (K H)`` shared by every head and the image's ``|e|`` in a divisor);
- ``gamma_post``, ``proj``: ``ln_post.weight`` and ``visual.proj``; sigma: ``ln_post``'s per-image std.

With Cov(u) = I the head's output covariance is ``C_w = M^T M`` [D, D] (:func:`head_covariances`, float64).
What this assumes, and what it means for TextSpan:

- isotropic inputs: the value projection sees u with Cov(u) = I. A real ``ln_1`` output is not isotropic: it
  sums to 0 over W (its true covariance has no variance along 1 / sqrt(W), which adds the rank-one term
  M^T 1 1^T M / W here) and has a few dimensions of outsized variance. C_w is what the head *can* write, weighted
  by how strongly its weights map each input direction, not what it writes on a given image set;
- attention passes one token: the head's attention output is taken as the value of a single token. With
  attention weights a_t (a convex combination) over tokens with Cov(u_t, u_s) = rho_ts I, the output covariance
  is ``(sum_ts a_t a_s rho_ts) C_w``: one positive factor per head, which depends on that head's attention pattern
  (1 for one token, 1/T for uniform attention over T independent tokens). TextSpan's texts, directions, ranks and
  ``variance_explained`` do not change under a positive factor (every rule is relative); the absolute
  ``variance`` of weights spans is in units of that factor and is not comparable across heads. Attention weights
  that depend on the token (the real case) and cross-token covariance other than a multiple of I are not modelled;
- biases dropped: ``beta_ln1``, the value bias, the out_proj bias share, ``beta_post`` (and, for ``"textspan"``,
  the shared ``-mu / (K H)`` term) shift the output by a constant (or, for mu, by a term not owned by the head)
  and add no covariance of the head's own;
- sigma = 1 and, for ``"textspan"``, ``|e| = 1``: both are per-image scalars, one factor on every head alike.

TextSpan runs on these as moments of one "image" with mean 0 and ``outer = C_w``:
``textspan_from_moments(1, 0, C_w, ...)``, the same code path as the moments from data.

:func:`span_agreement` compares a head's data spans with its weights spans: Jaccard of the top-m texts, and the
mean cosine of the principal angles between the spans of their directions. TextSpan's directions are orthonormal
(each is deflated by the earlier ones), so with A [k, D] and B [k, D] the directions of each, the cosines of the
principal angles are the singular values of A B^T.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from open_clip.transformer import VisionTransformer

from .choices import CONVENTIONS
from .decompose import _layer_scale, tower_shape
from .heads import head_names

COSINE_CLIP = 1.0  # singular values of A B^T above 1 (rounding of orthonormal directions) count as cosine 1


def head_covariances(model: torch.nn.Module, layers: list[int], convention: str) -> dict[str, torch.Tensor]:
    """Each head's output covariance in embedding space under isotropic inputs (module docstring).

    Args:
        model: an open_clip CLIP whose image tower :func:`ccs_ray.models.check_supported` accepts (any dtype,
            any device: the weights are read in float64 on the CPU).
        layers: 0-based layers whose heads to compute.
        convention: ``"centered"`` or ``"textspan"``.

    Returns:
        ``{"L{l}.H{h}": C_w}`` in layer then head order, C_w = M^T M a [D, D] float64 CPU tensor (symmetric,
        positive semi-definite, rank at most d), in embedding units squared per unit input variance.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {CONVENTIONS}")
    shape = tower_shape(model)
    H, d, W = shape.n_heads, shape.head_dim, shape.width
    bad = [l for l in layers if not 0 <= l < shape.layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the image tower has layers 0..{shape.layers - 1}")

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device="cpu", dtype=torch.float64)

    visual: VisionTransformer = model.visual
    post = f64(visual.ln_post.weight)[:, None] * f64(visual.proj)  # diag(gamma_post) proj [W, D]
    if convention == "centered":
        post = post - post.mean(0, keepdim=True)  # P diag(gamma_post) proj
    out: dict[str, torch.Tensor] = {}
    for l in layers:
        block = visual.transformer.resblocks[l]
        w_v = f64(block.attn.in_proj_weight)[2 * W:].view(H, d, W)  # W_V,h [H, d, W]
        gram = torch.einsum("hiw,w,hjw->hij", w_v, f64(block.ln_1.weight) ** 2, w_v)  # W_V,h diag(g^2) W_V,h^T
        w_o = f64(block.attn.out_proj.weight).view(W, H, d).permute(1, 2, 0)  # W_O[:, h]^T [H, d, W]
        ls = _layer_scale(block.ls_1)
        if ls is not None:
            w_o = w_o * f64(ls)
        B = w_o @ post  # [H, d, D]: the head's value -> embedding space
        C = B.transpose(1, 2) @ gram @ B  # [H, D, D]
        C = (C + C.transpose(1, 2)) / 2
        out.update(zip(head_names([l], H), C.unbind(0), strict=True))
    return out


class Agreement(NamedTuple):
    """A head's data spans against its weights spans: ``m`` texts compared from each (the top ``m`` asked
    for, fewer where either method found fewer), ``jaccard`` of those texts, ``mean_cosine`` of the m principal
    angles between the spans of their directions (1: the same subspace, 0: orthogonal). None when m = 0."""

    m: int
    jaccard: float | None
    mean_cosine: float | None


def span_agreement(texts_a: list[str], directions_a, texts_b: list[str], directions_b, m: int) -> Agreement:
    """Agreement of two TextSpan results of one head, each given as its texts and unit directions [k, D] in
    rank order (orthonormal rows, as TextSpan chooses them); the top ``min(m, k_a, k_b)`` of each are compared."""
    k = min(m, len(texts_a), len(texts_b))
    if k == 0:
        return Agreement(0, None, None)
    a, b = set(texts_a[:k]), set(texts_b[:k])
    A = np.asarray(directions_a, dtype=np.float64)[:k]
    B = np.asarray(directions_b, dtype=np.float64)[:k]
    cosines = np.minimum(np.linalg.svd(A @ B.T, compute_uv=False), COSINE_CLIP)
    return Agreement(k, len(a & b) / len(a | b), float(cosines.mean()))
