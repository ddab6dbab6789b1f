"""Mergeable per-head moments: all TextSpan needs, in O(heads x D^2) memory whatever the image count.

Per head (``L{l}.H{h}``, in ``HeadMoments.heads`` order, NH = len(layers) x H of them) and per fold f:
``n[f]`` images, ``total[f, h]`` = sum_i x_i (D), ``outer[f, h]`` = sum_i x_i x_i^T (D x D), float64,
where x_i is the head's contribution to image i's embedding. Also ``z_sum[h]`` (T x d): the sum of the
head's attention output over images, for mean ablation (``mean_z``). Merging is addition. Letters as in
:mod:`ccs_ray.decompose` (:class:`~ccs_ray.decompose.TowerShape`).

File format (``to_bytes``/``save``/``load``): one safetensors file (no pickled code, by design of the format) with
tensors ``n`` [F] int64, ``total`` [F, NH, D], ``outer`` [F, NH, D, D], ``z_sum`` [NH, T, d] float64 and
the JSON metadata of ``HeadMoments.meta`` under the key ``"ccs_ray"``: ``format``, ``model``, ``layers``
(the decomposed layers), ``n_heads`` (H), ``embed_dim`` (D), ``tokens`` (T), ``head_dim`` (d),
``tower_layers`` (L), ``folds``, ``convention``, ``shards``.

Format history: 1 named H ``heads`` and did not record L; such files still load (L is then taken as
``max(layers) + 1``, which is exact for the default "last layers" selection).
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .decompose import TowerShape
from .files import atomic_write
from .heads import parse_head_name

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


def _current_keys(meta: dict) -> dict:
    """File metadata under the current key names (format 1: ``heads`` -> ``n_heads``, ``tower_layers`` added)."""
    if meta.get("format") != 1:
        return meta
    meta = dict(meta)
    if "heads" in meta:
        meta["n_heads"] = meta.pop("heads")
    meta.setdefault("tower_layers", max(meta.get("layers") or [-1]) + 1)
    return meta


def _shape_of(meta: dict) -> TowerShape:
    """The :class:`TowerShape` recorded in (current-key) metadata."""
    return TowerShape(layers=meta["tower_layers"], n_heads=meta["n_heads"], width=meta["n_heads"] * meta["head_dim"],
                      head_dim=meta["head_dim"], embed_dim=meta["embed_dim"], tokens=meta["tokens"])


def _layout(meta: dict) -> dict:
    """What two moments must share to merge: the metadata less the shards and the tower's depth."""
    return {k: v for k, v in meta.items() if k not in ("shards", "tower_layers")}


class HeadMoments:
    """Accumulates n, sum and sum of outer products of per-head contributions, per fold.

    Args:
        model: model key the moments belong to.
        layers: decomposed layers (each in ``0..shape.layers-1``).
        shape: the image tower's :class:`~ccs_ray.decompose.TowerShape` (H, D, T and d size the arrays).
        folds: number of data folds kept apart (a shard goes to fold ``index % folds``).
        convention: decomposition convention the contributions used.
        device: where the arrays live.

    Attributes:
        heads: names of the NH = len(layers) x H heads, layer-major (the arrays' head axis).
        n [F], total [F, NH, D], outer [F, NH, D, D], z_sum [NH, T, d]: the moments (module docstring).
        shards: shard id -> record of every shard counted.
    """

    def __init__(self, model: str, layers: list[int], shape: TowerShape, *, folds: int = 2,
                 convention: str = "centered", device="cpu"):
        bad = [l for l in layers if not 0 <= l < shape.layers]
        if bad:
            raise ValueError(f"layers {bad} out of range: the image tower has layers 0..{shape.layers - 1}")
        self.model, self.layers, self.shape = model, list(layers), shape
        self.folds, self.convention = folds, convention
        self.heads = shape.head_names(self.layers)
        NH, D = len(self.heads), shape.embed_dim
        f64 = dict(dtype=torch.float64, device=device)
        self.n = torch.zeros(folds, dtype=torch.int64, device=device)
        self.total = torch.zeros(folds, NH, D, **f64)
        self.outer = torch.zeros(folds, NH, D, D, **f64)
        self.z_sum = torch.zeros(NH, shape.tokens, shape.head_dim, **f64)
        self.shards: dict[str, dict] = {}

    @classmethod
    def for_model(cls, model_key: str, model, layers: list[int], *, folds: int = 2, convention: str = "centered",
                  device="cpu") -> HeadMoments:
        """Empty moments of ``layers`` of ``model``'s image tower (its shape from
        :func:`~ccs_ray.decompose.tower_shape`)."""
        from .decompose import tower_shape

        return cls(model_key, layers, tower_shape(model), folds=folds, convention=convention, device=device)

    @property
    def embed_dim(self) -> int:
        """D."""
        return self.shape.embed_dim

    @property
    def meta(self) -> dict:
        """The file metadata (module docstring): layout and covered shards."""
        s = self.shape
        return {
            "format": FORMAT_VERSION, "model": self.model, "layers": self.layers, "n_heads": s.n_heads,
            "embed_dim": s.embed_dim, "folds": self.folds, "convention": self.convention,
            "tokens": s.tokens, "head_dim": s.head_dim, "tower_layers": s.layers, "shards": self.shards,
        }

    def update(self, contributions: torch.Tensor, fold: int = 0, z_sum: torch.Tensor | None = None) -> None:
        """Add a batch. contributions: [B, len(layers), H, D] (``head_contributions``, ``Decomposition.contributions``);
        z_sum: [len(layers), H, T, d] batch sum of attention outputs (``Decomposition.z_sum``)."""
        if not isinstance(contributions, torch.Tensor):
            raise TypeError(f"contributions must be a [B, len(layers), H, D] tensor (Decomposition.contributions), "
                            f"got {type(contributions).__name__}")
        x = contributions.to(device=self.total.device, dtype=torch.float64).flatten(1, 2).transpose(0, 1)  # [NH, B, D]
        self.n[fold] += x.shape[1]
        self.total[fold] += x.sum(1)
        self.outer[fold].baddbmm_(x.transpose(1, 2), x)
        if z_sum is not None:
            self.z_sum += z_sum.to(self.z_sum).flatten(0, 1)

    def mark_covered(self, shard_id: str, record: dict | None = None) -> None:
        """Record that every image of ``shard_id`` has been added, with an optional JSON-able record of
        it (counts, timings, bad inputs), so that a checkpoint is one file that says what it covers."""
        if shard_id in self.shards:
            raise ValueError(f"shard {shard_id!r} is already counted in these moments")
        self.shards[shard_id] = record or {}

    def merge(self, other: HeadMoments) -> HeadMoments:
        """In-place sum with ``other``; both must describe the same heads and cover disjoint shards."""
        # The tower's depth follows from the model key (and format-1 files did not record it).
        mine, theirs = (_layout(m.meta) for m in (self, other))
        if mine != theirs:
            raise ValueError(f"cannot merge moments of different layouts: {mine} vs {theirs}")
        overlap = self.shards.keys() & other.shards.keys()
        if overlap:
            raise ValueError(f"shards counted twice when merging moments: {sorted(overlap)[:5]}")
        self.n += other.n.to(self.n.device)
        self.total += other.total.to(self.total.device)
        self.outer += other.outer.to(self.outer.device)
        self.z_sum += other.z_sum.to(self.z_sum.device)
        self.shards.update(other.shards)
        return self

    def head_index(self, name: str) -> int:
        """Position of head ``L{l}.H{h}`` in the arrays."""
        layer, head = parse_head_name(name)
        n_heads = self.shape.n_heads
        if layer not in self.layers or not 0 <= head < n_heads:
            raise KeyError(f"head {name} is not in these moments (layers {self.layers}, {n_heads} heads per layer)")
        return self.layers.index(layer) * n_heads + head

    def head(self, name: str, folds: list[int] | None = None) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(n, total [D], outer [D, D])`` of one head over the given folds (default all)."""
        i, f = self.head_index(name), folds if folds is not None else list(range(self.folds))
        return int(self.n[f].sum()), self.total[f, i].sum(0), self.outer[f, i].sum(0)

    def mean_z(self) -> dict[int, torch.Tensor]:
        """Per layer, [H, T, d] mean attention output of each head, for ``HeadAblation(mode="mean")``."""
        n = int(self.n.sum())
        if n == 0:
            raise ValueError("no images in these moments")
        z = (self.z_sum / n).view(len(self.layers), self.shape.n_heads, *self.z_sum.shape[1:])
        return {l: z[i] for i, l in enumerate(self.layers)}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.n, self.total, self.outer, self.z_sum))

    def to_bytes(self, shards: bool = True) -> bytes:
        """The file's bytes (module docstring), for :meth:`save` or a checkpoint (:func:`~ccs_ray.files.commit_write`);
        ``shards=False``: without the shard records (a checkpoint keeps them in its shard log,
        :mod:`ccs_ray.checkpoints`)."""
        meta = self.meta if shards else {k: v for k, v in self.meta.items() if k != "shards"}
        return st_save(
            {"n": self.n.cpu(), "total": self.total.cpu(), "outer": self.outer.cpu(), "z_sum": self.z_sum.cpu()},
            metadata={"ccs_ray": json.dumps(meta)},
        )

    def save(self, uri: str) -> None:
        """Write atomically to any fsspec URI (written to a temporary name, then moved)."""
        atomic_write(uri, self.to_bytes())

    @staticmethod
    def read_meta(uri: str) -> dict:
        """The metadata of a saved file (layout and covered shards) without reading its arrays, under the
        current key names whatever the file's format."""
        with fsspec.open(uri, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            return _current_keys(json.loads(json.loads(f.read(size)).get("__metadata__", {})["ccs_ray"]))

    @classmethod
    def load(cls, uri: str, device="cpu") -> HeadMoments:
        """Read moments written by :meth:`save` (of this or an earlier format, see the module docstring)."""
        with fsspec.open(uri, "rb") as f:
            blob = f.read()
        tensors = st_load(blob)
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["ccs_ray"])
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{uri}: moments format {meta.get('format')} is not one of {READABLE_FORMATS}")
        meta = _current_keys(meta)
        moments = cls(meta["model"], meta["layers"], _shape_of(meta), folds=meta["folds"],
                      convention=meta["convention"], device=device)
        moments.n, moments.total, moments.outer, moments.z_sum = (
            tensors[k].to(device) for k in ("n", "total", "outer", "z_sum"))
        moments.shards = meta.get("shards", {})  # none in a checkpoint: they are in its shard log
        return moments

