"""Mergeable per-head moments: all TextSpan needs, in O(heads x D^2) memory whatever the image count.

Per head (``L{l}.H{h}``, in ``HeadMoments.heads`` order, NH of them) and per fold f:
``n[f]`` images, ``total[f, h]`` = sum_i x_i (D), ``outer[f, h]`` = sum_i x_i x_i^T (D x D), float64,
where x_i is the head's contribution to image i's embedding. Also ``z_sum[h]`` (T x d): the sum of the
head's attention output over images, for mean ablation (``mean_z``). Merging is addition.

File format (``save``/``load``): one safetensors file (no pickled code, by design of the format) with
tensors ``n`` [F] int64, ``total`` [F, NH, D], ``outer`` [F, NH, D, D], ``z_sum`` [NH, T, d] float64 and
the JSON metadata of ``HeadMoments.meta`` under the key ``"ccs_ray"``.
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .decompose import head_name, parse_head_name
from .files import atomic_write

FORMAT_VERSION = 1


class HeadMoments:
    """Accumulates n, sum and sum of outer products of per-head contributions, per fold.

    Args:
        model: model key the moments belong to.
        layers: decomposed layers; heads: heads per layer; embed_dim: D.
        folds: number of data folds kept apart (a shard goes to fold ``index % folds``).
        tokens, head_dim: T and d, for the mean attention outputs.
        convention: decomposition convention the contributions used.
    """

    def __init__(self, model: str, layers: list[int], heads: int, embed_dim: int, folds: int = 2,
                 tokens: int = 0, head_dim: int = 0, convention: str = "centered", device="cpu"):
        self.model, self.layers, self.n_heads_per_layer = model, list(layers), heads
        self.embed_dim, self.folds, self.convention = embed_dim, folds, convention
        self.heads = [head_name(l, h) for l in self.layers for h in range(heads)]
        NH, D = len(self.heads), embed_dim
        f64 = dict(dtype=torch.float64, device=device)
        self.n = torch.zeros(folds, dtype=torch.int64, device=device)
        self.total = torch.zeros(folds, NH, D, **f64)
        self.outer = torch.zeros(folds, NH, D, D, **f64)
        self.z_sum = torch.zeros(NH, tokens, head_dim, **f64)
        self.shards: dict[str, dict] = {}

    @classmethod
    def for_model(cls, model_key: str, model, layers: list[int], folds: int = 2, convention: str = "centered", device="cpu"):
        from .decompose import tower_shape

        s = tower_shape(model)
        return cls(model_key, layers, s["heads"], s["embed_dim"], folds, s["tokens"], s["head_dim"], convention, device)

    @property
    def meta(self) -> dict:
        return {
            "format": FORMAT_VERSION, "model": self.model, "layers": self.layers, "heads": self.n_heads_per_layer,
            "embed_dim": self.embed_dim, "folds": self.folds, "convention": self.convention,
            "tokens": self.z_sum.shape[1], "head_dim": self.z_sum.shape[2], "shards": self.shards,
        }

    def update(self, contributions: torch.Tensor, fold: int = 0, z_sum: torch.Tensor | None = None) -> None:
        """Add a batch. contributions: [B, len(layers), heads, D] (as from ``head_contributions``);
        z_sum: [len(layers), heads, T, d] batch sum of attention outputs (``Decomposition.z_sum``)."""
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

    def merge(self, other: "HeadMoments") -> "HeadMoments":
        """In-place sum with ``other``; both must describe the same heads and cover disjoint shards."""
        mine, theirs = dict(self.meta), dict(other.meta)
        mine.pop("shards"), theirs.pop("shards")
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
        if layer not in self.layers or not 0 <= head < self.n_heads_per_layer:
            raise KeyError(f"head {name} is not in these moments (layers {self.layers}, {self.n_heads_per_layer} heads)")
        return self.layers.index(layer) * self.n_heads_per_layer + head

    def head(self, name: str, folds: list[int] | None = None) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(n, total [D], outer [D, D])`` of one head over the given folds (default all)."""
        i, f = self.head_index(name), folds if folds is not None else list(range(self.folds))
        return int(self.n[f].sum()), self.total[f, i].sum(0), self.outer[f, i].sum(0)

    def mean_z(self) -> dict[int, torch.Tensor]:
        """Per layer, [heads, T, d] mean attention output of each head, for ``HeadAblation(mode="mean")``."""
        n = int(self.n.sum())
        if n == 0:
            raise ValueError("no images in these moments")
        z = (self.z_sum / n).view(len(self.layers), self.n_heads_per_layer, *self.z_sum.shape[1:])
        return {l: z[i] for i, l in enumerate(self.layers)}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.n, self.total, self.outer, self.z_sum))

    def save(self, uri: str) -> None:
        """Write atomically to any fsspec URI (written to a temporary name, then moved)."""
        blob = st_save(
            {"n": self.n.cpu(), "total": self.total.cpu(), "outer": self.outer.cpu(), "z_sum": self.z_sum.cpu()},
            metadata={"ccs_ray": json.dumps(self.meta)},
        )
        atomic_write(uri, blob)

    @staticmethod
    def read_meta(uri: str) -> dict:
        """The metadata of a saved file (layout and covered shards) without reading its arrays."""
        with fsspec.open(uri, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            return json.loads(json.loads(f.read(size)).get("__metadata__", {})["ccs_ray"])

    @classmethod
    def load(cls, uri: str, device="cpu") -> "HeadMoments":
        """Read moments written by :meth:`save`."""
        with fsspec.open(uri, "rb") as f:
            blob = f.read()
        tensors = st_load(blob)
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["ccs_ray"])
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{uri}: moments format {meta.get('format')} is not {FORMAT_VERSION}")
        m = cls(meta["model"], meta["layers"], meta["heads"], meta["embed_dim"], meta["folds"],
                meta["tokens"], meta["head_dim"], meta["convention"], device)
        m.n, m.total, m.outer, m.z_sum = (tensors[k].to(device) for k in ("n", "total", "outer", "z_sum"))
        m.shards = meta["shards"]
        return m

