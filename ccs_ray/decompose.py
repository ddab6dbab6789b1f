"""The one forward pass: image embedding, per-head direct contributions, and head ablation, together.

Notation (TransformerLens style): B batch, T tokens (class token first), W residual width, H heads per
layer, d head width (W = H d), D embedding dim, L layers in the tower (:class:`TowerShape` holds L, H,
W, d, D, T of a model). Names: ``heads`` is always a list of head names (``["L11.H5", ...]``),
``n_heads`` is H, ``contributions`` the [B, len(layers), H, D] tensor of per-head contributions.

Head ``L{l}.H{h}`` writes ``r = ls_1 * (z_{l,h} @ W_O[:, h d:(h+1) d].T)`` into the class-token residual,
where ``z_{l,h}`` (d values) is its attention output at the class token. The image embedding is
``e = ln_post(x_cls) @ proj``; ``ln_post`` is linear once its per-image mean mu and std sigma are fixed,
so each residual component maps into embedding space. Two conventions (docs/architecture.md,
"Decomposition conventions"):

- ``"centered"``: ``c -> (gamma * (c - mean_W(c)) / sigma) @ proj``. All components (embeddings after
  ``ln_pre``, every head, every out_proj bias, every MLP output) plus ``beta @ proj`` sum to ``e``.
- ``"textspan"`` (clip_text_span, the paper's numbers): a head also carries ``b_O / H`` of its layer's
  out_proj bias, ``-mu / (K H)`` and ``+beta / (K H)`` with ``K = 2 L + 1``, and the result is divided by
  ``|e|``; the ``ln_pre`` output, the heads and the MLP outputs then sum to ``e / |e|``.

Compact coordinates. With mu and sigma fixed, a head's contribution is ``x_i = c_i B_h``: k per-image coefficients
c_i times a [k, D] matrix B_h fixed by the weights (:func:`head_basis`, docs/architecture.md "Compact moments"). With
``A_h = W_O[:, h d:(h+1) d]^T diag(ls_1)`` [d, W] and ``g`` the ``ln_post`` scale:

- ``"centered"``: k = d, ``c_i = z_i / sigma_i``, ``B_h = A_h (I - 11^T / W) diag(g) proj``;
- ``"textspan"``: k = d + 3, ``c_i = (z_i / (sigma_i |e_i|), 1 / (sigma_i |e_i|), mu_i / (sigma_i |e_i|), 1 / |e_i|)``
  and ``B_h`` stacks ``A_h diag(g) proj``, ``(b_O ls_1 / H) diag(g) proj``, ``-g proj / (K H)``, ``beta proj / (K H)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale, VisionTransformer

from .choices import CONVENTIONS
from .heads import head_names
from .models import check_supported
from .towers import choose_layers


def select_layers(model: torch.nn.Module, layers: list[int] | None = None, last: int = 4) -> list[int]:
    """:func:`choose_layers` for the image tower of ``model``."""
    visual: VisionTransformer = model.visual
    return choose_layers(len(visual.transformer.resblocks), layers, last)


@dataclass(frozen=True)
class TowerShape:
    """The shape of an image tower, in the letters of this module's docstring.

    Attributes:
        layers: L, the number of residual blocks (layers ``0..L-1``).
        n_heads: H, attention heads per layer.
        width: W, residual stream width (``W = H d``).
        head_dim: d, width of one head's attention output.
        embed_dim: D, image embedding dim (columns of ``visual.proj``).
        tokens: T, tokens per image, class token included.
    """

    layers: int
    n_heads: int
    width: int
    head_dim: int
    embed_dim: int
    tokens: int

    def __post_init__(self):
        if self.width != self.n_heads * self.head_dim:
            raise ValueError(f"width W = {self.width} is not n_heads H = {self.n_heads} x head_dim d = {self.head_dim}")

    def head_names(self, layers: list[int] | None = None) -> list[str]:
        """:func:`head_names` of ``layers`` (default: all L) of this tower."""
        return head_names(layers if layers is not None else range(self.layers), self.n_heads)


def tower_shape(model: torch.nn.Module) -> TowerShape:
    """The :class:`TowerShape` (L, H, W, d, D, T) of ``model``'s image tower."""
    visual = check_supported(model)
    attn = visual.transformer.resblocks[0].attn
    grid = visual.grid_size
    return TowerShape(
        layers=len(visual.transformer.resblocks),
        n_heads=attn.num_heads,
        width=attn.embed_dim,
        head_dim=attn.head_dim,
        embed_dim=visual.proj.shape[1],
        tokens=grid[0] * grid[1] + 1,
    )


@dataclass
class HeadAblation:
    """What to do to some heads' outputs during the forward pass.

    ``by_layer`` maps layer -> head indices within that layer (build it with
    :func:`ccs_ray.ablate.head_ablation` from head names). ``mode`` ``"zero"`` removes the head's output
    (its out_proj bias share stays, as in the paper's zeroing of ``out_proj.weight`` columns); ``"mean"``
    replaces its attention output z by ``mean_z[layer]`` (shape [H, T, d]), e.g. from ``HeadMoments.mean_z``.
    """

    by_layer: dict[int, list[int]]
    mode: str = "zero"
    mean_z: dict[int, torch.Tensor] | None = None

    def apply(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """z: [B, H, T, d] (or the class token's alone, T = 1) -> the same with this layer's ablated heads replaced."""
        idx = self.by_layer.get(layer)
        if not idx:
            return z
        z = z.clone()
        if self.mode == "zero":
            z[:, idx] = 0
        elif self.mode == "mean":
            if self.mean_z is None or layer not in self.mean_z:
                raise ValueError(f"mean ablation of layer {layer} needs that layer's mean head outputs (mean_z)")
            z[:, idx] = self.mean_z[layer][idx, :z.shape[2]].to(z)
        else:
            raise ValueError(f"ablation mode {self.mode!r} is not 'zero' or 'mean'")
        return z


@dataclass
class Decomposition:
    """Output of :func:`decomposed_forward`.

    Attributes:
        embedding: [B, D] the image embedding, equal to ``model.encode_image`` (model dtype).
        contributions: [B, len(layers), H, D] each head's direct contribution in embedding space
            (float32, or float64 for a float64 model), or None when no layer was requested.
        layers: the decomposed layers, in order.
        z_sum: [len(layers), H, T, d] sum over the batch of each head's attention output (float64), or None.
        coefficients: [B, len(layers), H, k] each head's contribution in its compact coordinates (module docstring;
            ``contributions == coefficients @ head_basis``), when asked for (contributions are then None).
        token_projections: [B, len(layers), H, m, T] per head, direction and token, the projection on the direction
            of the part of the head's contribution read from the token (summed over T: the contribution's
            projection), when ``token_directions`` were given.
    """

    embedding: torch.Tensor
    contributions: torch.Tensor | None
    layers: list[int]
    z_sum: torch.Tensor | None = None
    coefficients: torch.Tensor | None = None
    token_projections: torch.Tensor | None = None

    @property
    def heads(self) -> list[str]:
        """Names of the decomposed heads, in the order of ``contributions.flatten(1, 2)``."""
        per_head = self.contributions if self.contributions is not None else self.coefficients
        return head_names(self.layers, per_head.shape[2] if per_head is not None else 0)


def _layer_scale(module: torch.nn.Module) -> torch.Tensor | None:
    return module.gamma if isinstance(module, LayerScale) else None


def head_qkv(block, x: torch.Tensor, cls_only: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head queries, keys and values of one ``ResidualAttentionBlock`` for its input ``x`` [B, T, W]: q, k, v
    [B, H, T, d]; ``cls_only``: the class token's query alone, q [B, H, 1, d] (k and v still of every token)."""
    attn = block.attn
    B, T, W = x.shape
    H = attn.num_heads
    h = block.ln_1(x)
    if not cls_only:
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(B, T, 3, H, W // H).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(h[:, :1], weight[:W], bias[:W] if bias is not None else None).view(B, 1, H, W // H).transpose(1, 2)
    kv = F.linear(h, weight[W:], bias[W:] if bias is not None else None)
    k, v = kv.view(B, T, 2, H, W // H).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def head_outputs(block, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
    """Per-head attention outputs z [B, H, T, d] of one ``ResidualAttentionBlock`` for its input ``x`` [B, T, W];
    ``cls_only``: the class token's alone, z [B, H, 1, d] (its query against every token's key and value)."""
    return F.scaled_dot_product_attention(*head_qkv(block, x, cls_only))


def block_forward(block, x: torch.Tensor, ablation: HeadAblation | None, layer: int,
                  z: torch.Tensor | None = None, cls_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``ResidualAttentionBlock`` (block ``layer``) through the per-head attention path, with ``ablation``
    applied to its heads. ``z``: :func:`head_outputs` of ``x`` when already computed (left unchanged: the ablation
    works on a copy), so that configurations that differ only in this layer's heads share it. ``cls_only``: the
    class token's row alone after the attention (a last block, whose other rows nothing reads; ``z`` may still
    hold every token's).
    Returns (the residual stream after the block [B, T, W] (T = 1 with ``cls_only``), the head outputs after the
    ablation [B, H, T, d] (as computed or given))."""
    z = head_outputs(block, x, cls_only) if z is None else z
    if ablation is not None:
        z = ablation.apply(layer, z)
    rows = z[:, :, :1] if cls_only else z
    B, T, W = rows.shape[0], rows.shape[2], x.shape[2]
    out = F.linear(rows.transpose(1, 2).reshape(B, T, W), block.attn.out_proj.weight, block.attn.out_proj.bias)
    x = x[:, :T] + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x))), z


def last_block_cls_only(blocks, layer: int, stop_at: int | None) -> bool:
    """Whether block ``layer`` is the tower's last in a pass that runs to the embedding (``stop_at`` None): the
    embedding reads only the class token (``pool_type == "tok"``, :func:`ccs_ray.models.check_supported`), so that
    block needs the class token's query alone; its keys and values still come from every token."""
    return stop_at is None and layer == len(blocks) - 1


@overload
def decomposed_forward(
    model: torch.nn.Module, images: torch.Tensor | None, *, layers: list[int] | None = None,
    convention: str = "centered", ablation: HeadAblation | None = None, keep_z_sum: bool = False,
    start: tuple[int, torch.Tensor] | None = None, coefficients: bool = False,
    token_directions: torch.Tensor | None = None, stop_at: None = None,
) -> Decomposition: ...


@overload
def decomposed_forward(
    model: torch.nn.Module, images: torch.Tensor | None, *, layers: list[int] | None = None,
    convention: str = "centered", ablation: HeadAblation | None = None, keep_z_sum: bool = False,
    start: tuple[int, torch.Tensor] | None = None, coefficients: bool = False,
    token_directions: torch.Tensor | None = None, stop_at: int,
) -> torch.Tensor: ...


def decomposed_forward(
    model: torch.nn.Module,
    images: torch.Tensor | None,
    *,
    layers: list[int] | None = None,
    convention: str = "centered",
    ablation: HeadAblation | None = None,
    keep_z_sum: bool = False,
    start: tuple[int, torch.Tensor] | None = None,
    coefficients: bool = False,
    token_directions: torch.Tensor | None = None,
    stop_at: int | None = None,
) -> Decomposition | torch.Tensor:
    """One pass through the image tower that yields the embedding and per-head contributions.

    Args:
        model: an open_clip CLIP whose image tower passes :func:`ccs_ray.models.check_supported`.
        images: [B, 3, S, S] preprocessed images (any dtype; cast to the model's); None with ``start``.
        layers: layers whose heads to decompose; ``None`` means the last 4, ``[]`` none.
        convention: ``"centered"`` or ``"textspan"`` (module docstring).
        ablation: heads to zero or mean-ablate on the way.
        keep_z_sum: also return the batch sum of each decomposed head's attention output.
        start: ``(l, x)`` resumes from the residual stream ``x`` [B, T, W] entering layer ``l``
            (``images`` is then ignored); used to share a prefix between ablation configurations.
        coefficients: give each head's compact coefficients (:attr:`Decomposition.coefficients`, what the scan's
            moments keep) instead of its contributions.
        token_directions: [len(layers), H, k, m] directions in each head's compact coordinates (``B_h d`` for m
            directions d [D] of each head, :func:`head_basis`): also give, per head and token, the projection on
            each direction of the head's contribution read from that token (:attr:`Decomposition.token_projections`,
            module docstring of :mod:`ccs_ray.headmap`); not with ``ablation``.
        stop_at: return the residual stream [B, T, W] entering layer ``stop_at`` instead.

    Only the class token's per-head outputs are kept: no [B, H, T, W] tensor is ever formed. After its attention,
    the last block computes the class token's row alone (:func:`last_block_cls_only`); its attention too, unless
    its outputs are summed (``keep_z_sum``, which sums every token's).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {CONVENTIONS}")
    visual: VisionTransformer = model.visual
    blocks = visual.transformer.resblocks
    layers = select_layers(model, layers)
    bad = [l for l in layers if not 0 <= l < len(blocks)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the image tower has layers 0..{len(blocks) - 1}")
    dtype = visual.proj.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    custom = set(layers) | (set(ablation.by_layer) if ablation else set())
    if token_directions is not None and ablation is not None:
        raise ValueError("token_directions map the heads of an unablated pass: give no ablation with them")

    with torch.no_grad():
        if start is None:
            if images is None:
                raise ValueError("decomposed_forward needs images, or start to resume from")
            first, x = 0, visual._embeds(images.to(device=visual.proj.device, dtype=dtype))
        else:
            first, x = start
        head_res, z_sums, reads = {}, {}, {}
        for l in range(first, len(blocks) if stop_at is None else stop_at):
            block = blocks[l]
            last = last_block_cls_only(blocks, l, stop_at)
            if l not in custom and not last:
                x = block(x)
                continue
            qkv = head_qkv(block, x, cls_only=last and not (keep_z_sum and l in layers))
            z = F.scaled_dot_product_attention(*qkv)  # head_outputs
            if token_directions is not None and l in layers:
                reads[l] = _class_token_reads(*qkv)
            x, z = block_forward(block, x, ablation, l, z, cls_only=last)
            if l in layers:
                if coefficients:
                    head_res[l] = z[:, :, 0].to(acc)  # [B, H, d]
                    if keep_z_sum:
                        z_sums[l] = z.to(torch.float64).sum(0)
                    continue
                H, d = z.shape[1], z.shape[3]
                w_o = block.attn.out_proj.weight.to(acc).view(-1, H, d)  # [W, H, d]
                r = torch.einsum("bhd,whd->bhw", z[:, :, 0].to(acc), w_o)  # [B, H, W]
                gamma = _layer_scale(block.ls_1)
                head_res[l] = r * gamma.to(acc) if gamma is not None else r
                if keep_z_sum:
                    z_sums[l] = z.to(torch.float64).sum(0)
        if stop_at is not None:
            return x
        pooled, _ = visual._pool(x)
        embedding = pooled @ visual.proj
        if not layers:
            return Decomposition(embedding, None, [])
        per_head = torch.stack([head_res[l] for l in layers], 1)  # [B, Ls, H, d] (coefficients), else [B, Ls, H, W]
        z_sum = torch.stack([z_sums[l] for l in layers]) if keep_z_sum else None
        x_cls, e = x[:, 0].to(acc), embedding.to(acc)
        tokens = None
        if token_directions is not None:
            tokens = torch.stack([_token_coefficients(visual, x_cls, *reads[l], convention, e).to(acc)
                                  for l in layers], 1)  # [B, Ls, H, T, k]
            tokens = torch.einsum("blhtk,lhkm->blhmt", tokens, token_directions.to(tokens))
        if coefficients:
            coeffs = _coefficients(visual, x_cls, per_head, convention, e)
            return Decomposition(embedding, None, layers, z_sum, coeffs, tokens)
        contributions = _to_embedding_space(visual, x_cls, per_head, layers, convention, e)
    return Decomposition(embedding, contributions, layers, z_sum, None, tokens)


def _class_token_reads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the class token's query reads from each token: (``a_j v_j`` [B, H, T, d], ``a_j`` [B, H, T]) for the
    attention weights ``a`` of the class token (q [B, H, 1 or T, d]; k, v [B, H, T, d]); ``sum_j a_j v_j`` is its
    attention output."""
    a = torch.softmax((q[:, :, :1] @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, -1)[:, :, 0]  # [B, H, T]
    return a[..., None] * v, a


def _token_coefficients(visual, x_cls, reads, weights, convention, embedding) -> torch.Tensor:
    """Per token j, the compact coefficients [B, H, T, k] of the part of each head's contribution read from j (they sum
    over j to :func:`_coefficients`): ``reads`` ``a_j v_j`` [B, H, T, d] and ``weights`` ``a_j`` [B, H, T], the
    fixed terms of ``"textspan"`` spread over the tokens by the attention weights (:mod:`ccs_ray.headmap`)."""
    reads, weights = reads.to(x_cls.dtype), weights.to(x_cls.dtype)
    mu, sigma = _ln_stats(visual, x_cls)
    if convention == "centered":
        return reads / sigma[:, None, None, None]
    norm = embedding.norm(dim=-1)
    s = (1 / (sigma * norm))[:, None, None]  # [B, 1, 1]
    extra = torch.stack([weights * s, weights * mu[:, None, None] * s, weights / norm[:, None, None]], -1)
    return torch.cat([reads * s[..., None], extra], -1)


def _ln_stats(visual, x_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu [B], sigma [B]) of ``ln_post`` for the final class-token residual ``x_cls`` [B, W]."""
    mu = x_cls.mean(-1)
    return mu, torch.sqrt(x_cls.var(-1, unbiased=False) + visual.ln_post.eps)


def _coefficients(visual, x_cls, z, convention, embedding) -> torch.Tensor:
    """The compact coefficients [B, Ls, H, k] (module docstring) of the class token's head outputs ``z``
    [B, Ls, H, d], for the final class-token residual ``x_cls`` [B, W] and the ``embedding`` [B, D]."""
    mu, sigma = _ln_stats(visual, x_cls)
    if convention == "centered":
        return z / sigma[:, None, None, None]
    norm = embedding.norm(dim=-1)
    s = 1 / (sigma * norm)  # [B]
    extra = torch.stack([s, mu * s, 1 / norm], -1)[:, None, None, :].expand(*z.shape[:3], 3)
    return torch.cat([z * s[:, None, None, None], extra], -1)


def coefficient_count(convention: str, head_dim: int) -> int:
    """k, the compact coefficients per head in ``convention`` (module docstring)."""
    return head_dim + (3 if convention == "textspan" else 0)


def head_basis(model: torch.nn.Module, layers: list[int], convention: str = "centered") -> torch.Tensor:
    """B_h of every head of ``layers``: [len(layers), H, k, D] float64 on CPU (module docstring), so that a head's
    contribution is ``coefficients @ B_h`` (:attr:`Decomposition.coefficients` of the same layers and convention)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r} is not one of {CONVENTIONS}")
    visual: VisionTransformer = model.visual
    blocks = visual.transformer.resblocks

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device="cpu", dtype=torch.float64)

    g, beta, proj = f64(visual.ln_post.weight), f64(visual.ln_post.bias), f64(visual.proj)  # [W], [W], [W, D]
    H = blocks[0].attn.num_heads
    K = 2 * len(blocks) + 1
    out = []
    with torch.no_grad():
        for l in layers:
            attn, ls = blocks[l].attn, _layer_scale(blocks[l].ls_1)
            scale = f64(ls) if ls is not None else torch.ones_like(g)
            A = f64(attn.out_proj.weight).view(len(g), H, -1).permute(1, 2, 0) * scale  # [H, d, W]
            if convention == "centered":
                out.append(((A - A.mean(-1, keepdim=True)) * g) @ proj)
                continue
            fixed = torch.stack([(f64(attn.out_proj.bias) * scale / H * g) @ proj, (-g / (K * H)) @ proj,
                                 (beta / (K * H)) @ proj])  # [3, D]
            out.append(torch.cat([(A * g) @ proj, fixed.expand(H, 3, -1)], 1))
    return torch.stack(out)


def _to_embedding_space(visual, x_cls, residual, layers, convention, embedding, share=None):
    """Map residual-space head outputs ``residual`` [B, Ls, N, W] to embedding space [B, Ls, N, D] through ln_post
    (module docstring), for the final class-token residual ``x_cls`` [B, W] and the ``embedding`` [B, D] of the same
    images; entry [:, i] belongs to layer ``layers[i]``.

    ``share``: None when the N entries are the H heads of each layer. Else [B, Ls, N, 1], the fraction of its head's
    non-residual terms (``"textspan"``: the out_proj bias share, ``-mu`` and ``beta``) that each entry carries; N
    parts of one head whose shares sum to 1 then sum to the head's contribution. ``"centered"`` has no such terms.
    """
    ln = visual.ln_post
    mu, sigma = _ln_stats(visual, x_cls)  # [B]
    gamma, beta = ln.weight.to(x_cls.dtype), ln.bias.to(x_cls.dtype)
    proj = visual.proj.to(x_cls.dtype)
    scale = (gamma / sigma[:, None])[:, None, None, :]  # [B, 1, 1, W]
    if convention == "centered":
        return ((residual - residual.mean(-1, keepdim=True)) * scale) @ proj
    blocks = visual.transformer.resblocks
    H = blocks[0].attn.num_heads
    K = 2 * len(blocks) + 1
    bias = []
    for l in layers:
        b = blocks[l].attn.out_proj.bias.to(x_cls.dtype)
        g = _layer_scale(blocks[l].ls_1)
        bias.append(b * g.to(b) if g is not None else b)
    bias = torch.stack(bias)[None, :, None, :] / H  # [1, Ls, 1, W]
    constant, offset = bias - (mu / (K * H))[:, None, None, None], beta / (K * H)
    if share is not None:
        constant, offset = constant * share, offset * share
    out = ((residual + constant) * scale + offset) @ proj
    return out / embedding.norm(dim=-1)[:, None, None, None]


def head_contributions(model, images, layers=None, convention: str = "centered") -> torch.Tensor | None:
    """Each head's direct contribution to the image embedding, in the pass that computes the embedding.

    Args:
        images: Tensor[batch, 3, H, W], preprocessed as the model expects (any float dtype; cast to the model's).
        layers: 0-based block indices (default: the last 4); returned in ascending order.
        convention: ``"centered"`` or ``"textspan"`` (see :func:`decomposed_forward`).

    Returns:
        Tensor[batch, len(layers), n_heads, embed_dim] ([B, len(layers), H, D]), on the model's device:
        float32 (float64 for a float64 model). Head ``L{l}.H{h}`` is ``[:, layers.index(l), h]``. None for
        ``layers=[]`` (:attr:`Decomposition.contributions`).
    """
    return decomposed_forward(model, images, layers=layers, convention=convention).contributions


def encode_images(model, images, ablation: HeadAblation | None = None) -> torch.Tensor:
    """[B, D] image embeddings through the same pass, optionally with heads ablated."""
    return decomposed_forward(model, images, layers=[], ablation=ablation).embedding

