"""Top images per head and span: bounded, mergeable top-k lists over a pass of the images.

For a head with contribution x_i [D] on image i, and its TextSpan spans r = 1..m with unit directions d_r [D]
(``spans.direction``: the text as TextSpan chose it, deflated by the earlier choices), an image's scores are

- span r, direction ``top``: s = x_i . d_r (the k largest), direction ``bottom``: the same s (the k smallest);
- the head overall (span_rank null, ``top``): s = |x_i| (the k largest).

Because each d_r is orthogonal to the earlier directions, x_i . d_r is also the projection of the deflated data
TextSpan saw at step r. :class:`TopImages` keeps, per head, these 2m + 1 lists of at most k images (slots
0..m-1: top of span 1..m, m..2m-1: bottom of span 1..m, 2m: overall), as keys in descending order (the key is
the score, or minus the score for ``bottom``), with each listed image's URI, shard and thumbnail. Memory is
O(heads x m x k) whatever the image count. Merging two lists and keeping the k best is the same as taking the
k best of everything (top-k is mergeable); ties are ordered by image URI, the rule :func:`best_k` applies.

Where the head looks: with the pass's per-token projections (``Decomposition.token_projections``: for each head and
span, the projection on d_r of the part of x_i read from each token, :mod:`ccs_ray.headmap`), an image that enters
the top list of a span keeps its map there, the patch tokens' projections (float32, the patch grid's row-major
order; ``top_images.patch_map``): computed in the pass that ranks the images, never by decoding them again.

Thumbnails show the image as the model saw it: its pixels after resizing and cropping (uint8 [3, H, W],
:class:`~ccs_ray.preprocess.Pixels`, before normalisation), downscaled so that the longest side is ``thumb_px`` and
JPEG-encoded (:func:`thumbnail`), made only for images that enter a list.

File format (``to_bytes`` / ``load``): one Parquet table, one row per listed image (``head``, ``slot``, ``key``,
``image_uri``, ``shard``, ``thumbnail``, ``patch_map``: null outside the spans' top lists), with the JSON metadata
(``format``, ``heads``, ``m``, ``k``, ``thumb_px``, ``grid``: the patch grid's rows, 0 without maps, and ``shards``)
under the schema key ``ccs_ray``. Format 1 had no maps (its entries read with none).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from .heads import parse_head_name

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
JPEG_QUALITY = 85
_FILE_SCHEMA = pa.schema([("head", pa.string()), ("slot", pa.int32()), ("key", pa.float64()),
                          ("image_uri", pa.string()), ("shard", pa.string()), ("thumbnail", pa.binary()),
                          ("patch_map", pa.list_(pa.float32()))])


def thumbnail(pixels, px: int) -> bytes:
    """JPEG bytes of an image's pixels (uint8 [3, H, W], numpy or torch), downscaled to longest side ``px``."""
    pixels = pixels.cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)  # decoded on a GPU
    pil = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    pil.thumbnail((px, px), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def best_k(entries: Iterable[tuple], k: int) -> list[tuple]:
    """The k entries ``(key, image_uri, ...)`` with the largest key, best first; equal keys in URI order."""
    return sorted(entries, key=lambda e: (-e[0], e[1]))[:k]


class TopImages:
    """The 2m + 1 top-k lists of every head (module docstring).

    Args:
        heads: the NH head names, in the order of ``Decomposition.heads`` (contributions flattened [B, NH, D]).
        directions: [NH, m, D] unit span directions; a head with fewer than m spans has NaN rows there.
        k: images per list; thumb_px: the thumbnails' longest side (pixels).
        grid: the rows of the patch grid of the maps (0: no maps are kept).
    """

    def __init__(self, heads: list[str], directions, k: int, thumb_px: int, grid: int = 0):
        self.heads, self.k, self.thumb_px, self.grid = list(heads), k, thumb_px, grid
        self.maps: dict[tuple[int, int, int], np.ndarray] = {}  # (image id, head, span slot) -> its map [gh gw]
        self.token_directions: torch.Tensor | None = None  # what the pass's forward maps along (explain sets it)
        d = torch.as_tensor(np.asarray(directions), dtype=torch.float64)
        self.valid = ~torch.isnan(d).any(-1)  # [NH, m]
        self.directions = torch.nan_to_num(d)
        self.m = d.shape[1]
        n_slots = 2 * self.m + 1
        self.keys = torch.full((len(self.heads), n_slots, k), -torch.inf, dtype=torch.float64)
        self.ids = torch.full((len(self.heads), n_slots, k), -1, dtype=torch.int64)
        self.images: dict[int, tuple[str, str, bytes]] = {}  # id -> (image_uri, shard, thumbnail)
        self.next_id = 0
        self.shards: dict[str, dict] = {}

    def update(self, contributions: torch.Tensor, uris: list[str], shard: str, pixels,
               token_maps: torch.Tensor | None = None) -> None:
        """Add a batch: contributions [B, NH, D], the images' URIs, their shard, their pixels (uint8 [B, 3, H, W]) and
        (when the lists keep maps) ``token_maps`` [B, NH, m, gh gw], each image's map along each head's spans."""
        x = contributions.to(dtype=torch.float64, device="cpu")
        if x.shape[0] != len(uris):
            raise ValueError(f"{x.shape[0]} contributions but {len(uris)} image URIs")
        proj = torch.einsum("bnd,nmd->nmb", x, self.directions)  # [NH, m, B]
        proj = proj.masked_fill(~self.valid[..., None], -torch.inf)
        bottom = (-proj).masked_fill(~self.valid[..., None], -torch.inf)
        keys = torch.cat([proj, bottom, x.norm(dim=-1).T[:, None]], 1)  # [NH, 2m+1, B]
        ids = torch.arange(self.next_id, self.next_id + len(uris)).expand_as(keys)
        best, at = torch.cat([self.keys, keys], -1).topk(self.k, dim=-1)
        self.keys, self.ids = best, torch.cat([self.ids, ids], -1).gather(-1, at)
        self.ids[torch.isinf(self.keys)] = -1
        for i in set(self.ids[self.ids >= self.next_id].tolist()):
            b = i - self.next_id
            self.images[i] = (uris[b], shard, thumbnail(pixels[b], self.thumb_px))
        if token_maps is not None:
            h, s, j = torch.nonzero(self.ids[:, :self.m] >= self.next_id).T  # entered a span's top list
            ids = self.ids[h, s, j]
            found = token_maps.to(device="cpu", dtype=torch.float32)[ids - self.next_id, h, s].numpy()
            self.maps.update(zip(zip(ids.tolist(), h.tolist(), s.tolist(), strict=True), found, strict=True))
        self.next_id += len(uris)
        if len(self.images) > 2 * self.ids.numel():
            self._forget_unlisted()

    def _forget_unlisted(self) -> None:
        listed = set(self.ids[self.ids >= 0].tolist())
        self.images = {i: v for i, v in self.images.items() if i in listed}
        h, s, j = torch.nonzero(self.ids[:, :self.m] >= 0).T
        mapped = set(zip(self.ids[h, s, j].tolist(), h.tolist(), s.tolist(), strict=True))
        self.maps = {key: v for key, v in self.maps.items() if key in mapped}

    def mark_covered(self, shard_id: str, record: dict | None = None) -> None:
        """Record that every image of ``shard_id`` has been added (as :meth:`HeadMoments.mark_covered`)."""
        if shard_id in self.shards:
            raise ValueError(f"shard {shard_id!r} is already counted in these top images")
        self.shards[shard_id] = record or {}

    def entries(self) -> list[tuple]:
        """Every listed image: ``(key, image_uri, shard, thumbnail, head index, slot, map or None)``."""
        out = []
        for h, s, j in torch.nonzero(self.ids >= 0).tolist():
            i = int(self.ids[h, s, j])
            out.append((float(self.keys[h, s, j]), *self.images[i], h, s, self.maps.get((i, h, s))))
        return out

    def _set_entries(self, entries: list[tuple]) -> None:
        """Rebuild the lists from entries (any number per list; the k best of each are kept)."""
        per_list: dict[tuple[int, int], list[tuple]] = {}
        for e in entries:
            per_list.setdefault((e[4], e[5]), []).append(e)
        self.keys.fill_(-torch.inf)
        self.ids.fill_(-1)
        self.images, self.maps, self.next_id = {}, {}, 0
        for (h, s), listed in per_list.items():
            for j, (key, uri, shard, thumb, _, _, patch_map) in enumerate(best_k(listed, self.k)):
                self.keys[h, s, j], self.ids[h, s, j] = key, self.next_id
                self.images[self.next_id] = (uri, shard, thumb)
                if patch_map is not None:
                    self.maps[self.next_id, h, s] = patch_map
                self.next_id += 1

    def merge(self, other: TopImages) -> TopImages:
        """In place: the k best of both, per list; both must list the same heads and spans and cover disjoint shards."""
        if (self.heads, self.m, self.k, self.grid) != (other.heads, other.m, other.k, other.grid):
            raise ValueError("cannot merge top images of different heads, span counts, k or map grids")
        overlap = self.shards.keys() & other.shards.keys()
        if overlap:
            raise ValueError(f"shards counted twice when merging top images: {sorted(overlap)[:5]}")
        self._set_entries(self.entries() + other.entries())
        self.shards.update(other.shards)
        return self

    def rows(self, texts: dict[tuple[str, int], str] | None = None, maps: bool = True) -> list[dict]:
        """Rows of the ``top_images`` table (less run and model), best first per list; ``texts``:
        (head, span_rank) -> the span's text; ``maps``: with the kept maps (``patch_map``, ``patch_grid``)."""
        rows = []
        for h, name in enumerate(self.heads):
            layer, head = parse_head_name(name)
            for s in range(2 * self.m + 1):
                rank = None if s == 2 * self.m else s % self.m + 1
                direction = "bottom" if self.m <= s < 2 * self.m else "top"
                for position, (key, uri, shard, thumb, found) in enumerate(self.entries_of(h, s), 1):
                    found = found if maps else None
                    rows.append(dict(layer=layer, head=head, head_label=name, span_rank=rank,
                                     text=(texts or {}).get((name, rank)) if rank else None, direction=direction,
                                     position=position, image_uri=uri, shard=shard,
                                     score=-key if direction == "bottom" else key, thumbnail=thumb,
                                     patch_map=found.tolist() if found is not None else None,
                                     patch_grid=self.grid if found is not None else None))
        return rows

    def entries_of(self, h: int, s: int) -> list[tuple]:
        """List ``s`` of head ``h``: ``(key, image_uri, shard, thumbnail, map or None)``, best first."""
        return [(float(self.keys[h, s, j]), *self.images[int(self.ids[h, s, j])],
                 self.maps.get((int(self.ids[h, s, j]), h, s))) for j in range(self.k) if self.ids[h, s, j] >= 0]

    @property
    def meta(self) -> dict:
        return {"format": FORMAT_VERSION, "heads": self.heads, "m": self.m, "k": self.k, "thumb_px": self.thumb_px,
                "grid": self.grid, "shards": self.shards}

    def to_bytes(self, shards: bool = True) -> bytes:
        """The file's bytes (module docstring); ``shards=False``: without the shard records (a checkpoint keeps them
        in its shard log, :mod:`ccs_ray.checkpoints`)."""
        e = self.entries()
        table = pa.table([[self.heads[x[4]] for x in e], [x[5] for x in e], [x[0] for x in e], [x[1] for x in e],
                          [x[2] for x in e], [x[3] for x in e], [x[6] for x in e]], schema=_FILE_SCHEMA)
        meta = self.meta if shards else {k: v for k, v in self.meta.items() if k != "shards"}
        table = table.replace_schema_metadata({"ccs_ray": json.dumps(meta)})
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()

    @staticmethod
    def read_meta(uri: str) -> dict:
        """The metadata of a saved file (heads, m, k and the shards it covers) without reading its rows."""
        with fsspec.open(uri, "rb") as f:
            return json.loads(pq.read_schema(f).metadata[b"ccs_ray"])

    @classmethod
    def load(cls, uri: str) -> TopImages:
        """Read a file written from :meth:`to_bytes`; the directions are not stored (NaN: add nothing more)."""
        with fsspec.open(uri, "rb") as f:
            table = pq.read_table(f)
        meta = json.loads(table.schema.metadata[b"ccs_ray"])
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{uri}: top images format {meta.get('format')} is not one of {READABLE_FORMATS}")
        heads = meta["heads"]
        top = cls(heads, np.full((len(heads), meta["m"], 1), np.nan), meta["k"], meta["thumb_px"], meta.get("grid", 0))
        index = {name: i for i, name in enumerate(heads)}
        cols = table.to_pydict()
        maps = [None if m is None else np.asarray(m, np.float32) for m in cols.get("patch_map", [None] * len(table))]
        top._set_entries([(key, uri_, shard, thumb, index[h], s, found) for h, s, key, uri_, shard, thumb, found in zip(
            cols["head"], cols["slot"], cols["key"], cols["image_uri"], cols["shard"], cols["thumbnail"], maps,
            strict=True)])
        top.shards = meta.get("shards", {})  # none in a checkpoint: they are in its shard log
        return top
