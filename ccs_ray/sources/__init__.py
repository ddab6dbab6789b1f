"""Image sources: plan a source into shards, read a shard's raw records, decode and preprocess a shard.

Kinds (``DataConfig.kind``; ``"auto"`` detects it from the URI): ``folder`` (a folder or glob of image
files), ``tar`` (WebDataset tar shards), ``parquet`` (an image-bytes column), ``manifest`` (CSV/TSV/Parquet
of image URIs) and ``probe`` (the generated probe set, ``probe://...``). Every URI is an fsspec URI.

    shards = plan_shards(cfg)                      # deterministic; one Shard per unit of scan work
    for shard in iter_shards(cfg): ...             # the same shards, streamed (sources of any size)
    loaded = load_shard(shards[0], preprocess)     # images [n, 3, S, S], labels, error and conversion rows
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType

import fsspec
import numpy as np
from PIL import Image

from ..choices import SOURCE_KINDS
from . import folder, manifest, parquet, probe, tar
from .base import IMAGE_EXTENSIONS, Record, Shard, SourceError, list_files
from .decode import DecodeError, decode_image, decode_jpegs, deferrable_jpeg
from .probe import probe_class_texts, probe_classes

READERS: dict[str, ModuleType] = dict(zip(SOURCE_KINDS, (folder, tar, parquet, manifest, probe), strict=True))


@dataclass
class LoadedShard:
    """A decoded, preprocessed shard. ``errors`` are rows for the ``errors`` table (stage ``"decode"``), one
    per input lost; ``conversions`` are rows for the ``conversions`` table, one per image kept but converted
    to RGB from another mode or with its transparency dropped or composited (:mod:`~ccs_ray.sources.decode`).
    ``encoded``: JPEGs left for a model's device to decode (:func:`load_shard` with
    ``defer_jpeg``; :func:`decode_deferred` adds them to the images)."""

    shard: Shard
    images: object  # [n, 3, H, W], n = good images, stacked as the preprocess gives them: uint8 numpy from
    # ccs_ray.preprocess.Pixels (the passes' decoders), float32 torch from an open_clip transform
    items: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    conversions: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time to read, decode and preprocess
    encoded: list[tuple[str, str | None, bytes, str]] = field(default_factory=list)  # (item, label, JPEG, mode)

    @property
    def n_failed(self) -> int:
        """Inputs lost."""
        return len(self.errors)

    @property
    def n_converted(self) -> int:
        """Images kept but converted to RGB."""
        return len(self.conversions)

    def error(self, item: str, reason: str, detail: str) -> None:
        """An input lost: an ``errors`` row."""
        self.errors.append(dict(stage="decode", source=self.shard.uri, item=item, reason=reason, detail=detail[:2000],
                                logged_at=datetime.now(UTC)))

    def converted(self, item: str, conversion: dict) -> None:
        """An image kept but converted to RGB (``conversion``: ``from_mode`` and ``alpha``, as :func:`decode_image`
        gives them): a ``conversions`` row."""
        self.conversions.append(dict(source=self.shard.uri, item=item, **conversion, logged_at=datetime.now(UTC)))

    def preprocessed(self, item: str, data: bytes, preprocess, alpha: str = "drop"):
        """``preprocess`` of the image ``data`` decoded on CPU (:func:`decode_image` with ``alpha``), or None with an
        error row."""
        try:
            image, converted = decode_image(data, alpha)
            out = preprocess(image)
        except DecodeError as e:
            return self.error(item, e.reason, e.detail)
        except Exception as e:  # noqa: BLE001 - preprocess of an odd but decodable image: the scan goes on
            return self.error(item, "corrupt", f"preprocess failed: {type(e).__name__}: {e}")
        if converted:
            self.converted(item, converted)
        return out


def detect_kind(source: str, image_column: str = "image", uri_column: str = "uri") -> str:
    """The kind of a source URI, from its scheme, its extension or, for a folder or glob, the files in it."""
    if source.startswith("probe://"):
        return "probe"
    low = source.lower().rstrip("/")
    if low.endswith(tar.TAR_EXTENSIONS):
        return "tar"
    if low.endswith((".csv", ".tsv")):
        return "manifest"
    if low.endswith(parquet.PARQUET_EXTENSIONS):
        return _parquet_kind(source, image_column, uri_column)
    fs, path = fsspec.core.url_to_fs(source)
    is_glob = any(c in path for c in "*?[")
    if not is_glob and not fs.exists(path):
        raise SourceError(f"data source not found: {source!r}")
    names = [n.lower() for n in (fs.glob(path) if is_glob else fs.find(path))]
    for kind, exts in (("tar", tar.TAR_EXTENSIONS), ("parquet", parquet.PARQUET_EXTENSIONS),
                       ("folder", IMAGE_EXTENSIONS)):
        if any(n.endswith(exts) for n in names):
            return _parquet_kind(source, image_column, uri_column) if kind == "parquet" else kind
    raise SourceError(f"cannot tell what {source!r} holds: no image files, tars or parquet files found "
                      f"(set data.kind to one of {', '.join(READERS)})")


def _parquet_kind(source: str, image_column: str, uri_column: str) -> str:
    first = next(iter(list_files(source, parquet.PARQUET_EXTENSIONS)), None)
    if first is None:
        raise SourceError(f"no parquet files at {source!r}")
    schema = parquet.read_metadata(first).schema.to_arrow_schema()
    if parquet.image_column(schema, image_column) is not None:
        return "parquet"
    if uri_column in schema.names:
        return "manifest"
    raise SourceError(f"{first}: neither an image column {image_column!r} nor a URI column {uri_column!r} "
                      f"(set data.image_column or data.uri_column); columns: {schema.names}")


def iter_shards(cfg) -> Iterator[Shard]:
    """The shards of a :class:`~ccs_ray.spec.DataConfig`'s source, in their deterministic order, planned as they
    are read: a listing, a tar's keys or a batch of manifest rows at a time, never the whole source in memory.
    The kind is checked when called; the source is read as the shards are taken."""
    kind = detect_kind(cfg.source, cfg.image_column, cfg.uri_column) if cfg.kind == "auto" else cfg.kind
    if kind not in READERS:
        raise SourceError(f"unknown source kind {kind!r}; kinds: auto, {', '.join(READERS)}")
    return _shards(kind, READERS[kind].plan(cfg), cfg.source)


def _shards(kind: str, planned: Iterator[tuple], source: str) -> Iterator[Shard]:
    i = -1
    for i, (uri, items, fp) in enumerate(planned):
        yield Shard(f"s{i:06d}", i, kind, uri, items, fp)
    if i < 0:
        raise SourceError(f"data source {source!r} holds no images")


def plan_shards(cfg) -> list[Shard]:
    """Every shard of :func:`iter_shards`, in a list."""
    return list(iter_shards(cfg))


def read_shard(shard: Shard) -> Iterator[Record]:
    """The shard's raw records, in a fixed order. May raise when the whole shard cannot be read."""
    return READERS[shard.kind].read(shard)


def load_shard(shard: Shard, preprocess, defer_jpeg: bool = False, alpha: str = "drop") -> LoadedShard:
    """Read, decode and preprocess a shard; never raises for bad inputs, which become error rows (images
    converted to RGB become conversion rows).

    ``preprocess``: a :class:`~ccs_ray.preprocess.Pixels` or open_clip's transform, which take an image in any mode
    and convert it to RGB last; ``alpha``: how an image with transparency is converted (``data.alpha``,
    :mod:`~ccs_ray.sources.decode`; the default, ``"drop"``, gives open_clip's ``preprocess(Image.open(f))``).

    A failure of the whole shard (e.g. a tar that cannot be opened) is one row with item ``"*"``;
    records read before it are kept. ``defer_jpeg``: complete RGB or grayscale JPEGs are left encoded
    (``LoadedShard.encoded``, :func:`~ccs_ray.sources.decode.deferrable_jpeg`) for :func:`decode_deferred`.
    """
    t0 = time.perf_counter()
    out = LoadedShard(shard, None)
    images = []
    try:
        for rec in read_shard(shard):
            if rec.data is None:
                out.error(rec.item, "unreadable", rec.error or "no data")
                continue
            mode = deferrable_jpeg(rec.data) if defer_jpeg else None
            if mode:
                out.encoded.append((rec.item, rec.label, rec.data, mode))
                continue
            image = out.preprocessed(rec.item, rec.data, preprocess, alpha)
            if image is not None:
                images.append(image)
                out.items.append(rec.item)
                out.labels.append(rec.label)
    except Exception as e:  # noqa: BLE001 - a whole-shard failure is data, not a crash
        out.error("*", "unreadable", f"{type(e).__name__}: {e}")
    out.images = _stack(images) if images else preprocess(Image.new("RGB", (8, 8)))[None][:0]
    out.seconds = time.perf_counter() - t0
    return out


def decode_deferred(loaded: LoadedShard, pixels, device) -> LoadedShard:
    """``loaded`` with the JPEGs it left encoded decoded on ``device`` in one batch
    (:func:`~ccs_ray.sources.decode.decode_jpegs`) and preprocessed there (``pixels``: a
    :class:`~ccs_ray.preprocess.Pixels`, :meth:`~ccs_ray.preprocess.Pixels.on_device`): images uint8
    [n, 3, H, W] on ``device``, the CPU-decoded ones first. A JPEG the device cannot decode is decoded on CPU and
    kept or classified as :func:`load_shard` does; a grayscale one is a conversion row, as on CPU."""
    import torch

    t0 = time.perf_counter()
    encoded, loaded.encoded = loaded.encoded, []
    kept = []  # (item, label, pixels [3, H, W] on device)
    for (item, label, data, mode), x in zip(encoded, decode_jpegs([e[2] for e in encoded], device), strict=True):
        if x is None:
            x = loaded.preprocessed(item, data, pixels)
            if x is not None:
                kept.append((item, label, torch.from_numpy(x).to(device)))
            continue
        if mode != "RGB":
            loaded.converted(item, {"from_mode": mode, "alpha": None})
        kept.append((item, label, pixels.on_device([x])[0]))
    loaded.images = torch.cat([torch.as_tensor(loaded.images).to(device), *(x[None] for _, _, x in kept)])
    loaded.items += [item for item, _, _ in kept]
    loaded.labels += [label for _, label, _ in kept]
    loaded.seconds += time.perf_counter() - t0
    return loaded


def _stack(images: list):
    """[n, 3, H, W] from n preprocessed images: numpy arrays stack with numpy, tensors with torch."""
    if isinstance(images[0], np.ndarray):
        return np.stack(images)
    import torch

    return torch.stack(images)


__all__ = [
    "READERS", "DecodeError", "LoadedShard", "Record", "Shard", "SourceError", "decode_deferred", "decode_image",
    "detect_kind", "iter_shards", "load_shard", "plan_shards", "probe_class_texts", "probe_classes", "read_shard",
]
