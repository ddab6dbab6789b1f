"""Mergeable per-head moments: all TextSpan needs, in O(heads x k^2) memory whatever the image count.

A head's contribution to image i's embedding is x_i = c_i B_h (:mod:`ccs_ray.decompose`, "Compact coordinates"):
k coefficients c_i (k = d in the ``centered`` convention, d + 3 in ``textspan``) times the head's basis B_h [k, D],
fixed by the weights. Per head (``L{l}.H{h}``, in ``HeadMoments.heads`` order, NH = len(layers) x H of them) and
per fold f the moments keep ``n[f]`` images, ``total[f, h]`` = sum_i c_i (k) and ``outer[f, h]`` = sum_i c_i c_i^T
(k x k), float64, and :meth:`HeadMoments.head` gives the moments of x exactly: sum_i x_i = total B_h and
sum_i x_i x_i^T = B_h^T outer B_h (D x D). *Full* moments keep x itself (k = D, no basis), as files of formats 1
and 2 do. Optionally ``z_sum[h]`` (T x d): the sum of the head's attention output over images, for mean ablation
(``mean_z``). Merging is addition. Letters as in :mod:`ccs_ray.decompose` (:class:`~ccs_ray.decompose.TowerShape`).

File format (``to_bytes``/``save``/``load``): one safetensors file (no pickled code, by design of the format) with
tensors ``n`` [F] int64, ``total`` [F, NH, k], ``outer`` [F, NH, k, k] and, when kept, ``z_sum`` [NH, T, d]
float64, and the JSON metadata of ``HeadMoments.meta`` under the key ``"ccs_ray"``: ``format``, ``model``,
``layers`` (the decomposed layers), ``n_heads`` (H), ``embed_dim`` (D), ``tokens`` (T), ``head_dim`` (d),
``tower_layers`` (L), ``folds``, ``convention``, ``coefficients`` (k; null for full moments), ``mean_outputs``
(whether ``z_sum`` is kept), ``basis`` (the basis file's name beside this one, :func:`basis_uri`; null in a
checkpoint) and ``shards``. The basis file holds ``basis`` [NH, k, D] float64, written once per scan and model.

Format history: 2 kept full moments and always ``z_sum``; 1 also named H ``heads`` and did not record L (taken as
``max(layers) + 1``, exact for the default "last layers" selection). Both still load, as full moments.
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .decompose import TowerShape
from .files import atomic_write, exists
from .heads import parse_head_name

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
BASIS_SUFFIX = ".basis.safetensors"


def basis_uri(uri: str) -> str:
    """Where the basis of the moments file ``uri`` (``<name>.safetensors``) lives: ``<name>.basis.safetensors``."""
    return uri.removesuffix(".safetensors") + BASIS_SUFFIX


def _current_keys(meta: dict) -> dict:
    """File metadata under the current key names (format 1: ``heads`` -> ``n_heads``, ``tower_layers`` added;
    formats 1 and 2: full moments with ``z_sum``)."""
    if meta.get("format") not in (1, 2):
        return meta
    meta = dict(meta)
    if "heads" in meta:
        meta["n_heads"] = meta.pop("heads")
    meta.setdefault("tower_layers", max(meta.get("layers") or [-1]) + 1)
    return meta | {"coefficients": None, "mean_outputs": True, "basis": None}


def _shape_of(meta: dict) -> TowerShape:
    """The :class:`TowerShape` recorded in (current-key) metadata."""
    return TowerShape(layers=meta["tower_layers"], n_heads=meta["n_heads"], width=meta["n_heads"] * meta["head_dim"],
                      head_dim=meta["head_dim"], embed_dim=meta["embed_dim"], tokens=meta["tokens"])


def _layout(meta: dict) -> dict:
    """What two moments must share to merge: the metadata less the shards, the tower's depth and where the basis
    is kept."""
    return {k: v for k, v in meta.items() if k not in ("shards", "tower_layers", "basis")}


class HeadMoments:
    """Accumulates n, sum and sum of outer products of per-head contributions, per fold.

    Args:
        model: model key the moments belong to.
        layers: decomposed layers (each in ``0..shape.layers-1``).
        shape: the image tower's :class:`~ccs_ray.decompose.TowerShape` (H, D, T and d size the arrays).
        folds: number of data folds kept apart (a shard goes to fold ``index % folds``).
        convention: decomposition convention the contributions used.
        basis: [NH, k, D] the heads' bases (:func:`~ccs_ray.decompose.head_basis` flattened over layers): compact
            moments of coefficients; None: full moments of the contributions (k = D).
        mean_outputs: keep ``z_sum`` (what mean ablation needs).
        device: where the arrays live.

    Attributes:
        heads: names of the NH = len(layers) x H heads, layer-major (the arrays' head axis).
        n [F], total [F, NH, k], outer [F, NH, k, k], z_sum [NH, T, d] or None: the moments (module docstring).
        coefficients: k for compact moments, None for full ones.
        shards: shard id -> record of every shard counted.
    """

    def __init__(self, model: str, layers: list[int], shape: TowerShape, *, folds: int = 2,
                 convention: str = "centered", basis: torch.Tensor | None = None, mean_outputs: bool = True,
                 device="cpu"):
        bad = [l for l in layers if not 0 <= l < shape.layers]
        if bad:
            raise ValueError(f"layers {bad} out of range: the image tower has layers 0..{shape.layers - 1}")
        self.model, self.layers, self.shape = model, list(layers), shape
        self.folds, self.convention = folds, convention
        self.heads = shape.head_names(self.layers)
        NH, D = len(self.heads), shape.embed_dim
        if basis is not None and (basis.ndim != 3 or basis.shape[0] != NH or basis.shape[2] != D):
            raise ValueError(f"basis has shape {tuple(basis.shape)}, expected [{NH}, k, {D}] (heads, k, D)")
        self.coefficients = int(basis.shape[1]) if basis is not None else None
        self._basis = basis.to(device=device, dtype=torch.float64) if basis is not None else None
        self._basis_file: str | None = None  # where a loaded file's basis is, read on first use
        k = self.coefficients or D
        f64 = dict(dtype=torch.float64, device=device)
        self.n = torch.zeros(folds, dtype=torch.int64, device=device)
        self.total = torch.zeros(folds, NH, k, **f64)
        self.outer = torch.zeros(folds, NH, k, k, **f64)
        self.z_sum = torch.zeros(NH, shape.tokens, shape.head_dim, **f64) if mean_outputs else None
        self.shards: dict[str, dict] = {}

    @classmethod
    def for_model(cls, model_key: str, model, layers: list[int], *, folds: int = 2, convention: str = "centered",
                  mean_outputs: bool = True, device="cpu") -> HeadMoments:
        """Empty compact moments of ``layers`` of ``model``'s image tower (its shape from
        :func:`~ccs_ray.decompose.tower_shape`, its bases from :func:`~ccs_ray.decompose.head_basis`); add
        ``Decomposition.coefficients`` of the same layers and convention."""
        from .decompose import head_basis, tower_shape

        basis = head_basis(model, layers, convention).flatten(0, 1)
        return cls(model_key, layers, tower_shape(model), folds=folds, convention=convention, basis=basis,
                   mean_outputs=mean_outputs, device=device)

    @property
    def embed_dim(self) -> int:
        """D."""
        return self.shape.embed_dim

    @property
    def mean_outputs(self) -> bool:
        """Whether the moments keep ``z_sum`` (mean ablation's head outputs)."""
        return self.z_sum is not None

    @property
    def meta(self) -> dict:
        """The file metadata (module docstring): layout and covered shards."""
        s = self.shape
        return {
            "format": FORMAT_VERSION, "model": self.model, "layers": self.layers, "n_heads": s.n_heads,
            "embed_dim": s.embed_dim, "folds": self.folds, "convention": self.convention,
            "tokens": s.tokens, "head_dim": s.head_dim, "tower_layers": s.layers, "coefficients": self.coefficients,
            "mean_outputs": self.mean_outputs, "basis": None, "shards": self.shards,
        }

    @property
    def basis(self) -> torch.Tensor:
        """[NH, k, D] float64: the heads' bases of compact moments (read from the basis file on first use)."""
        if self.coefficients is None:
            raise ValueError("full moments have no basis: they keep the contributions themselves")
        if self._basis is None:
            if self._basis_file is None:
                raise ValueError(f"these compact moments of {self.model} were read without their basis (a "
                                 f"checkpoint): load the saved moments file, which names its basis file")
            self._basis = _read_basis(self._basis_file, self, self.total.device)
        return self._basis

    def update(self, values: torch.Tensor, fold: int = 0, z_sum: torch.Tensor | None = None) -> None:
        """Add a batch. values: [B, len(layers), H, k] per-head values in these moments' coordinates
        (``Decomposition.coefficients`` for compact moments, ``Decomposition.contributions`` for full ones);
        z_sum: [len(layers), H, T, d] batch sum of attention outputs (``Decomposition.z_sum``), when kept."""
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a [B, len(layers), H, k] tensor (Decomposition.coefficients, or "
                            f"Decomposition.contributions for full moments), got {type(values).__name__}")
        k = self.total.shape[-1]
        if values.shape[-1] != k:
            what = "coefficients (Decomposition.coefficients)" if self.coefficients else "contributions"
            raise ValueError(f"values have {values.shape[-1]} per head, but these moments add {k} {what}")
        if z_sum is not None and self.z_sum is None:
            raise ValueError("z_sum given, but these moments keep no mean outputs (mean_outputs=False)")
        x = values.to(device=self.total.device, dtype=torch.float64).flatten(1, 2).transpose(0, 1)  # [NH, B, k]
        self.n[fold] += x.shape[1]
        self.total[fold] += x.sum(1)
        self.outer[fold].baddbmm_(x.transpose(1, 2), x)
        if self.z_sum is not None and z_sum is not None:
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
        if self.z_sum is not None and other.z_sum is not None:
            self.z_sum += other.z_sum.to(self.z_sum.device)
        if self._basis is None and self._basis_file is None:
            self._basis, self._basis_file = other._basis, other._basis_file
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
        """``(n, total [D], outer [D, D])`` of one head's contributions over the given folds (default all),
        float64 (module docstring: from the coefficients and the basis for compact moments)."""
        i, f = self.head_index(name), folds if folds is not None else list(range(self.folds))
        n, total, outer = int(self.n[f].sum()), self.total[f, i].sum(0), self.outer[f, i].sum(0)
        if self.coefficients is None:
            return n, total, outer
        B = self.basis[i]  # [k, D]
        return n, total @ B, B.T @ outer @ B

    def span_bases(self, keys: list[tuple[str, list[int] | None]], rank: int) -> list[tuple[torch.Tensor, int]]:
        """:func:`~ccs_ray.textspan.span_bases` of the heads and folds ``keys`` ((name, folds) as for :meth:`head`) in
        one batched eigh: of k x k problems for compact moments (its factored form), of D x D ones for full ones."""
        from .textspan import span_bases

        index = [(self.head_index(name), folds if folds is not None else list(range(self.folds)))
                 for name, folds in keys]
        outers = torch.stack([self.outer[f, i].sum(0) for i, f in index]) if index else self.outer[0, :0]
        factors = torch.stack([self.basis[i] for i, _ in index]) if index and self.coefficients else None
        return span_bases(outers, rank, factors)

    def mean_z(self) -> dict[int, torch.Tensor]:
        """Per layer, [H, T, d] mean attention output of each head, for ``HeadAblation(mode="mean")``."""
        n = int(self.n.sum())
        if n == 0:
            raise ValueError("no images in these moments")
        if self.z_sum is None:
            raise ValueError(f"the moments of {self.model} keep no mean head outputs: the scan keeps them only when "
                             f"the spec ablates in mean mode (prune.mode or prune.single_modes); scan again with it")
        z = (self.z_sum / n).view(len(self.layers), self.shape.n_heads, *self.z_sum.shape[1:])
        return {l: z[i] for i, l in enumerate(self.layers)}

    def _tensors(self) -> dict[str, torch.Tensor]:
        arrays = {"n": self.n, "total": self.total, "outer": self.outer}
        return arrays | ({"z_sum": self.z_sum} if self.z_sum is not None else {})

    def nbytes(self) -> int:
        """Bytes of the arrays a file holds (the basis, kept once per scan, not counted)."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def to_bytes(self, shards: bool = True, basis: str | None = None) -> bytes:
        """The file's bytes (module docstring), for :meth:`save` or a checkpoint (:func:`~ccs_ray.files.commit_write`);
        ``shards=False``: without the shard records (a checkpoint keeps them in its shard log,
        :mod:`ccs_ray.checkpoints`); ``basis``: the basis file's name to record (none in a checkpoint)."""
        meta = self.meta if shards else {k: v for k, v in self.meta.items() if k != "shards"}
        meta["basis"] = basis
        return st_save({k: t.cpu() for k, t in self._tensors().items()}, metadata={"ccs_ray": json.dumps(meta)})

    def save(self, uri: str) -> None:
        """Write atomically to any fsspec URI (written to a temporary name, then moved). Compact moments name their
        basis file (:func:`basis_uri`), written here when the basis is in memory and else checked to exist."""
        name = None
        if self.coefficients is not None:
            target = basis_uri(uri)
            if self._basis is not None:
                save_basis(target, self)
            elif not exists(target):
                raise ValueError(f"{target}: the basis of these moments is missing (written by the scan's actors)")
            name = target.rsplit("/", 1)[-1]
        atomic_write(uri, self.to_bytes(basis=name))

    @staticmethod
    def read_meta(uri: str) -> dict:
        """The metadata of a saved file (layout and covered shards) without reading its arrays, under the
        current key names whatever the file's format."""
        with fsspec.open(uri, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            return _current_keys(json.loads(json.loads(f.read(size)).get("__metadata__", {})["ccs_ray"]))

    @classmethod
    def load(cls, uri: str, device="cpu") -> HeadMoments:
        """Read moments written by :meth:`save` (of this or an earlier format, see the module docstring); a compact
        file's basis is read from the file it names on first use."""
        with fsspec.open(uri, "rb") as f:
            blob = f.read()
        tensors = st_load(blob)
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["ccs_ray"])
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{uri}: moments format {meta.get('format')} is not one of {READABLE_FORMATS}")
        meta = _current_keys(meta)
        moments = cls(meta["model"], meta["layers"], _shape_of(meta), folds=meta["folds"],
                      convention=meta["convention"], mean_outputs=meta["mean_outputs"], device=device)
        moments.coefficients = meta["coefficients"]
        moments.n, moments.total, moments.outer = (tensors[k].to(device) for k in ("n", "total", "outer"))
        moments.z_sum = tensors["z_sum"].to(device) if meta["mean_outputs"] else None
        if meta["basis"]:
            moments._basis_file = f"{uri.rsplit('/', 1)[0]}/{meta['basis']}"
        moments.shards = meta.get("shards", {})  # none in a checkpoint: they are in its shard log
        return moments


def _basis_meta(moments: HeadMoments) -> dict:
    return {"model": moments.model, "layers": moments.layers, "convention": moments.convention,
            "coefficients": moments.coefficients, "embed_dim": moments.embed_dim}


def save_basis(uri: str, moments: HeadMoments) -> None:
    """Write the basis of compact ``moments`` to ``uri`` (tensor ``basis`` [NH, k, D] float64, module docstring)."""
    atomic_write(uri, st_save({"basis": moments.basis.cpu().contiguous()},
                              metadata={"ccs_ray": json.dumps(_basis_meta(moments))}))


def _read_basis(uri: str, moments: HeadMoments, device) -> torch.Tensor:
    """The basis in ``uri``, checked to belong to ``moments`` (same model, layers, convention and shape)."""
    try:
        with fsspec.open(uri, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise ValueError(f"{uri}: the basis file of the moments of {moments.model} is missing") from None
    size = int.from_bytes(blob[:8], "little")
    meta = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["ccs_ray"])
    if meta != _basis_meta(moments):
        raise ValueError(f"{uri}: basis of {meta}, but the moments are of {_basis_meta(moments)}")
    return st_load(blob)["basis"].to(device)
