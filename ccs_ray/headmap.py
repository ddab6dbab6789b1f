"""Where a head looks: its contribution to the image embedding split over the image's tokens, drawn as a heatmap.

Notation of :mod:`ccs_ray.decompose` (B images, T tokens with the class token first, W residual width, H heads, d
head width, D embedding dim), and (gh, gw) the patch grid (T = 1 + gh gw). Head ``L{l}.H{h}`` reads the residual
stream ``x`` [B, T, W] entering block l through ``u = ln_1(x)``; its class-token query ``q = u_0 W_Q + b_Q``, keys
``k_j`` and values ``v_j = u_j W_V + b_V`` (all [d]) give attention weights ``a_j = softmax_j(q . k_j / sqrt(d))``
[T] that sum to 1, and the head writes ``r = ls_1 * (sum_j a_j v_j) W_O^T`` [W] into the class token. So ``r`` is
the sum over tokens j of

    r_j = a_j ls_1 * (v_j W_O^T)                                    [B, T, W]

(the value bias ``b_V`` is part of each ``v_j``, hence spread over the tokens by the attention weights). Each
``r_j`` goes to embedding space through the decomposition's convention, with the image's final ``mu``, ``sigma``
and ``|e|``:

- ``"centered"``: ``c_j = (gamma * (r_j - mean_W(r_j)) / sigma) @ proj``, linear in ``r_j``;
- ``"textspan"``: the head's terms that are not read from any token (its ``b_O / H`` share of the out_proj bias,
  ``-mu / (K H)`` and ``+beta / (K H)``) are spread over the tokens by the same attention weights:
  ``c_j = ((r_j + a_j (b_O / H - mu / (K H))) * gamma / sigma + a_j beta / (K H)) @ proj / |e|``.

In both, ``sum_j c_j`` [B, D] is the head's contribution as :func:`ccs_ray.decompose.head_contributions` computes
it, up to float rounding (within 1e-10 relative in float64).
:func:`token_contributions` returns ``c`` [B, T, D].

The head's map along a unit direction ``d`` [D] (a span's ``spans.direction``, or a text's normalised embedding)
is ``m_p = c_p . d`` for the patches p = 1..T-1, in the patch grid's row-major order as [B, gh, gw], in embedding
units like the explain stage's scores (``top_images.score = x . d``). The class token's own term ``c_0 . d`` is not
in the map: ``map.sum((-2, -1)) + c_0 . d`` is the head's contribution projected on ``d``. :func:`head_map` returns
the maps; :func:`ccs_ray.heatmap.overlay_png` draws one over an image (:func:`write_head_map`:
``ccs-ray head MODEL HEAD --image``).

Since ``c_j`` is ``(affine in r_j) @ proj`` (times ``1 / |e|``), ``c_j . d`` is the same expression with ``proj``
replaced by ``proj @ d`` [W]: the maps of many heads and directions (:func:`span_maps`, one forward for every head)
never form the [B, T, D] terms. The explain stage's maps of its top images (``top_images.patch_map``) are the same
terms, from its own pass: ``decomposed_forward(token_directions=...)``.
:func:`ccs_ray.heatmap.cells_png` draws a map as a PNG of one pixel per patch (the head cards lay it over the
image's thumbnail).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import fsspec
import numpy as np
import torch
from PIL import Image

from .decompose import _layer_scale, _to_embedding_space, decomposed_forward, head_qkv, tower_shape
from .errors import UserError
from .heads import head_name, parse_head_name
from .heatmap import overlay_png
from .preprocess import Pixels, _crop_box, model_input
from .sources.decode import DecodeError, decode_image

if TYPE_CHECKING:
    ImageLike = Image.Image | str | os.PathLike[str]


def _head(model, head: str) -> tuple[int, int]:
    """(layer, head index) of ``head`` in ``model``'s image tower; ValueError when it has no such head."""
    layer, h = parse_head_name(head)
    shape = tower_shape(model)
    if not (0 <= layer < shape.layers and 0 <= h < shape.n_heads):
        raise ValueError(f"no head {head_name(layer, h)} in the image tower: heads L0.H0 .. "
                         f"L{shape.layers - 1}.H{shape.n_heads - 1}")
    return layer, h


def token_contributions(model, head: str, images: torch.Tensor, convention: str = "centered") -> torch.Tensor:
    """Each token's share ``c_j`` of ``head``'s contribution to the image embedding (module docstring).

    Args:
        model: an open_clip CLIP that :func:`ccs_ray.models.check_supported` accepts.
        head: ``L{layer}.H{head}``, e.g. ``"L11.H5"``.
        images: [B, 3, S, S] preprocessed images (any dtype; cast to the model's).
        convention: ``"centered"`` or ``"textspan"``.

    Returns:
        [B, T, D] on the model's device (float32, float64 for a float64 model); ``[:, 0]`` is the class token's
        term, ``[:, 1:]`` the patches' in row-major grid order; the sum over T is the head's contribution.
    """
    layer, h = _head(model, head)
    with torch.no_grad():
        inputs, final, embedding = _tower_pass(model, images, [layer])
        qkv = head_qkv(model.visual.transformer.resblocks[layer], inputs[layer], cls_only=True)
        return _token_terms(model.visual, layer, h, qkv, final, embedding, convention, model.visual.proj)


def _tower_pass(model, images: torch.Tensor, layers: Sequence[int]):
    """One pass through the image tower: ({l: the residual stream [B, T, W] entering block l} for ``layers``, the
    final residual stream [B, T, W], the embedding [B, D])."""
    blocks = model.visual.transformer.resblocks
    inputs: dict[int, torch.Tensor] = {}
    at, x = 0, None
    for layer in sorted(set(layers)):
        x = decomposed_forward(model, images if x is None else None, layers=[], start=None if x is None else (at, x),
                               stop_at=layer)
        inputs[layer], at = x, layer
    final = decomposed_forward(model, images if x is None else None, layers=[], start=None if x is None else (at, x),
                               stop_at=len(blocks))
    return inputs, final, model.visual._pool(final)[0] @ model.visual.proj


def _token_terms(visual, layer: int, h: int, qkv, final: torch.Tensor, embedding: torch.Tensor, convention: str,
                 proj: torch.Tensor) -> torch.Tensor:
    """[B, T, N]: each token's term ``c_j`` of head ``h`` of block ``layer`` (module docstring) with the tower's
    ``proj`` [W, D] replaced by ``proj`` [W, N] (the tower's own: ``c`` itself; ``proj @ d``: ``c_j . d``).
    ``qkv``: :func:`~ccs_ray.decompose.head_qkv` of the block's input (class-token query alone); ``final`` and
    ``embedding``: :func:`_tower_pass`'s."""
    block = visual.transformer.resblocks[layer]
    acc = torch.float64 if visual.proj.dtype == torch.float64 else torch.float32
    q, k, v = (t[:, h].to(acc) for t in qkv)  # [B, 1, d], [B, T, d], [B, T, d]
    d = q.shape[-1]
    attention = torch.softmax((q @ k.transpose(1, 2))[:, 0] / d ** 0.5, dim=-1)  # [B, T]
    w_o = block.attn.out_proj.weight.to(acc)[:, h * d:(h + 1) * d]  # [W, d]
    r = attention[..., None] * (v @ w_o.T)  # [B, T, W]
    gamma = _layer_scale(block.ls_1)
    if gamma is not None:
        r = r * gamma.to(acc)
    tower = SimpleNamespace(ln_post=visual.ln_post, transformer=visual.transformer, proj=proj.to(acc))
    c = _to_embedding_space(tower, final[:, 0].to(acc), r[:, None], [layer], convention, embedding.to(acc),
                            share=attention[:, None, :, None])
    return c[:, 0]


def span_maps(model, images: torch.Tensor, directions: Mapping[str, torch.Tensor | np.ndarray],
              convention: str = "centered") -> dict[str, torch.Tensor]:
    """The maps of several heads, each along its own directions, from one pass through the tower.

    Args:
        model: a loaded open_clip CLIP.
        images: [B, 3, S, S] preprocessed images.
        directions: head (``L{layer}.H{head}``) -> [m, D] its directions (e.g. its spans' ``spans.direction``).
        convention: the directions' ``spans.convention``.

    Returns:
        head -> [B, m, gh, gw] on the model's device, as :func:`head_map` of each head and direction, float32
        (float64 for a float64 model).
    """
    heads = {head: _head(model, head) for head in directions}
    visual = model.visual
    gh, gw = visual.grid_size
    out = {}
    with torch.no_grad():
        inputs, final, embedding = _tower_pass(model, images, [l for l, _ in heads.values()])
        proj = visual.proj.to(embedding.dtype if embedding.dtype == torch.float64 else torch.float32)
        for layer, x in inputs.items():
            qkv = head_qkv(visual.transformer.resblocks[layer], x, cls_only=True)
            for head, (l, h) in heads.items():
                if l == layer:
                    d = torch.as_tensor(directions[head]).to(proj)  # [m, D]
                    terms = _token_terms(visual, l, h, qkv, final, embedding, convention, proj @ d.T)
                    out[head] = terms[:, 1:].transpose(1, 2).reshape(len(images), -1, gh, gw)
    return out


def _open(image: ImageLike) -> Image.Image:
    """A PIL image from a PIL image (as it is), a local path or an fsspec URI (decoded as a source's images are,
    :func:`~ccs_ray.sources.decode.decode_image`; one that cannot be used is a UserError naming it), in its own mode:
    :class:`~ccs_ray.preprocess.Pixels` converts it to RGB after resizing, as open_clip does."""
    if isinstance(image, Image.Image):
        return image
    with fsspec.open(str(image), "rb") as f:
        data = f.read()
    try:
        return decode_image(data)[0]
    except DecodeError as e:
        raise UserError(f"{image}: {e}") from None


def _preprocess_cfg(model) -> dict:
    cfg = getattr(model.visual, "preprocess_cfg", None)
    if not cfg:
        raise ValueError("the model's image tower has no preprocess_cfg (not built by open_clip): pass images "
                         "preprocessed as a [B, 3, S, S] tensor")
    return cfg


def model_input_of(model, images: torch.Tensor | ImageLike | Sequence[ImageLike]) -> torch.Tensor:
    """[B, 3, S, S] float32 input of ``model`` on its device: a tensor as it is, else each image (PIL, local path or
    fsspec URI; one or a sequence) through the model's open_clip eval preprocessing (:mod:`ccs_ray.preprocess`)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images tensor has shape {tuple(images.shape)}, not [B, 3, S, S]")
        return images
    items = [images] if isinstance(images, (Image.Image, str, os.PathLike)) else list(images)
    cfg = _preprocess_cfg(model)
    pixels = Pixels(cfg)
    return model_input(np.stack([pixels(_open(i)) for i in items]), cfg, model.visual.proj.device)


def head_map(model, head: str, images: torch.Tensor | ImageLike | Sequence[ImageLike],
             direction: torch.Tensor | np.ndarray | str | Sequence[str], convention: str = "centered") -> torch.Tensor:
    """Where ``head`` looks: its per-patch contributions projected on ``direction`` (module docstring).

    Args:
        model: a model key (loaded with :func:`ccs_ray.load_model`) or a loaded open_clip CLIP.
        head: ``L{layer}.H{head}``, e.g. ``"L11.H5"``.
        images: a preprocessed tensor [B, 3, S, S], or PIL images, local paths or fsspec URIs (one or a sequence),
            preprocessed as the model's open_clip transform does.
        direction: [D] (or [n, D]) vectors, e.g. a span's ``spans.direction`` (unit vectors: the map is then in
            embedding units); or a text (or n texts), encoded by the model's text tower and L2-normalised.
        convention: ``"centered"`` or ``"textspan"``; a span's direction belongs to its ``spans.convention``.

    Returns:
        [B, gh, gw] (or [B, n, gh, gw] for n directions) on the model's device, float32 (float64 for a float64
        model): ``m_p = c_p . d`` per patch. The class token's own term is not included.
    """
    if isinstance(model, str):
        from .models import load_model

        model = load_model(model)[0]
    x = model_input_of(model, images)
    if isinstance(direction, str) or (isinstance(direction, Sequence) and all(isinstance(t, str) for t in direction)):
        from .texts import text_embeddings

        d = text_embeddings(model, [direction] if isinstance(direction, str) else list(direction))
        d = d[0] if isinstance(direction, str) else d
    else:
        d = torch.as_tensor(direction)
    dim = model.visual.proj.shape[1]
    if d.shape[-1] != dim or d.ndim not in (1, 2):
        raise ValueError(f"direction has shape {tuple(d.shape)}, not [{dim}] or [n, {dim}] (the embedding dim)")
    label = head_name(*_head(model, head))
    maps = span_maps(model, x, {label: d.reshape(-1, dim)}, convention)[label]  # [B, n, gh, gw]
    return maps[:, 0] if d.ndim == 1 else maps


def model_view(cfg: dict, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom), in pixels of an image of ``size`` (width, height), that the model sees
    after the resize and centre crop (or pad) of preprocessing settings ``cfg``; it extends past the image where
    the model's view is padded."""
    w0, h0 = size
    view = Pixels(cfg)
    h, w, _, _ = view.resize_of(w0, h0)
    th, tw = view.size
    pad_left, pad_top, _, top, left = _crop_box(h, w, th, tw)
    sx, sy = w0 / w, h0 / h
    x, y = left - pad_left, top - pad_top
    return x * sx, y * sy, (x + tw) * sx, (y + th) * sy


def span_direction(results: str, model: str, head: str, run_id: str | None = None,
                   rank: int = 1) -> tuple[np.ndarray, dict]:
    """Span ``rank`` of ``head`` of ``model`` from the ``spans`` table under ``results``: its direction [D] and its
    row. Subset ``all``; data spans where the run has them, else weights spans; run ``run_id``, default the latest
    run (largest id) with spans of the head. UserError naming what there is when it has none."""
    from . import tables

    label = head_name(*parse_head_name(head))
    rows = [r for r in tables.read_table(results, "spans", run_id, model).to_pylist()
            if r["head_label"] == label and r["subset"] == "all"]
    if not rows:
        raise UserError(f"no spans of {label} of {model}" + (f" in run {run_id}" if run_id else "")
                        + f" under {results}: give --text, or run the spans stage")
    latest = max(r["run_id"] for r in rows)
    rows = [r for r in rows if r["run_id"] == latest]
    data = [r for r in rows if (r["method"] or "data") == "data"]
    rows = sorted(data or rows, key=lambda r: r["rank"])
    found = [r for r in rows if r["rank"] == rank]
    if not found or found[0]["direction"] is None:
        raise UserError(f"{label} of {model} in run {latest} has no span {rank} with a direction; spans: "
                        + ", ".join(str(r["rank"]) for r in rows if r["direction"] is not None))
    return np.asarray(found[0]["direction"], dtype=np.float64), found[0]


def write_head_map(model: str, head: str, image: str, out: str | None = None, text: str | None = None,
                   results: str | None = None, run_id: str | None = None, span: int = 1,
                   convention: str | None = None) -> str:
    """``ccs-ray head MODEL HEAD --image PATH``: draw where ``head`` looks in ``image`` as a PNG of the image's size.

    The direction is ``text``'s embedding (in ``convention``, default ``"centered"``) when given, else span
    ``span`` of the head (:func:`span_direction` under ``results``; in the spans' convention). The map is drawn over
    the part of the image the model sees (:func:`model_view`); the PNG's text chunk
    :data:`~ccs_ray.heatmap.PNG_KEY` holds the values (:func:`~ccs_ray.heatmap.overlay_png`). Written to ``out``
    (default ``<image name>-<head>.png`` in the working folder); returns its path.
    """
    label = head_name(*parse_head_name(head))
    about: dict = {"model": model, "head": label, "image": str(image)}
    direction: np.ndarray | str
    if text is not None:
        direction, about["text"] = text, text
        convention = convention or "centered"
    else:
        if results is None:
            raise UserError("the head's span directions are read from --results ROOT (or give --text)")
        direction, row = span_direction(results, model, label, run_id, span)
        if convention is not None and convention != row["convention"]:
            raise UserError(f"the spans of {label} of {model} are in convention {row['convention']!r}, not "
                            f"{convention!r}")
        convention = row["convention"]
        about.update(run_id=row["run_id"], span_rank=row["rank"], text=row["text"])
    about["convention"] = convention
    picture = _open(image)
    from .models import load_model

    loaded = load_model(model)[0]
    values = head_map(loaded, label, picture, direction, convention)[0].double().cpu().numpy()
    path = Path(out or f"{Path(str(image)).stem}-{label}.png").resolve()
    path.write_bytes(overlay_png(picture, values, model_view(_preprocess_cfg(loaded), picture.size), about=about))
    return str(path)
