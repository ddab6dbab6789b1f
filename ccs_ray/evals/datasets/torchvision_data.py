"""``torchvision://<Dataset>[?arg=value&..]`` sources: a ``torchvision.datasets`` class as a classification set.

The class is constructed with ``root`` (default ``$CCS_RAY_CACHE/datasets``, else
``~/.cache/ccs-ray/datasets``), ``download=True``, ``train=False`` and ``split="test"`` where it takes
them, overridden by the URI's query arguments and then by the entry's ``options``; a dataset that cannot
be constructed (no internet, a bad argument) is a DatasetError with the advice. Datasets are cached per
process. Shards are index ranges; an item is ``<source>#<index>`` and its label the class index as text.
Offline, a preset reads its dataset's folder as the release unpacks it instead (:mod:`.layouts`).
"""

from __future__ import annotations

import functools
import inspect
import json
from urllib.parse import parse_qsl, urlparse

from ... import sources
from ...files import cache_dir
from ...sources.base import fingerprint
from .entries import DatasetError


def plan(source: str, root: str | None, options: dict, shard_size: int, limit: int | None) -> list[sources.Shard]:
    """Shards of ``shard_size`` indices (kind ``torchvision``) over the first ``limit`` items."""
    n = len(_dataset(source, root, json.dumps(options, sort_keys=True)))
    n = min(n, limit or n)
    return [sources.Shard(f"s{i:06d}", i, "torchvision", source, (start, min(n, start + shard_size)),
                          fingerprint(source, options, start, n))
            for i, start in enumerate(range(0, n, shard_size))]


def load(source: str, root: str | None, options: dict, indices: tuple[int, int]) -> tuple[list[str], list, list[str]]:
    """(item names, PIL RGB images, labels) of the items in the index range ``indices`` (start, stop)."""
    ds = _dataset(source, root, json.dumps(options, sort_keys=True))
    items, images, labels = [], [], []
    for i in range(*indices):
        image, label = ds[i]
        items.append(f"{source}#{i}")
        images.append(image.convert("RGB"))
        labels.append(str(int(label)))
    return items, images, labels


@functools.lru_cache(maxsize=4)
def _dataset(source: str, root: str | None, options_json: str):
    import torchvision.datasets as tvd

    url = urlparse(source)
    name = url.netloc or url.path.strip("/")
    cls = getattr(tvd, name, None)
    if not inspect.isclass(cls):
        names = sorted(n for n in dir(tvd) if inspect.isclass(getattr(tvd, n)) and n[0].isupper())
        raise DatasetError(f"torchvision has no dataset {name!r}; e.g. {', '.join(names[:30])}")
    params = inspect.signature(cls).parameters
    query = dict(parse_qsl(url.query))
    root = root or str(cache_dir("datasets"))
    defaults = {"root": root, "download": True, "train": False, "split": "test"}
    kwargs = {**{k: v for k, v in defaults.items() if k in params}, **query, **json.loads(options_json)}
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001 - network, integrity or argument errors all need the same advice
        raise DatasetError(f"torchvision dataset {name} could not be loaded with {kwargs}: {type(e).__name__}: {e}. "
                           f"Without internet, download it elsewhere into 'root', or give the dataset's folder as its "
                           f"release unpacks it (e.g. cifar-10-batches-py), an ImageFolder or a manifest as the "
                           f"source") from e
