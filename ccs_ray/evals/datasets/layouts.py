"""Classification datasets in the layouts their publishers release them, read offline from the dataset's folder.

A preset with a layout (:attr:`~.presets.ClassificationPreset.layout`, a key of :data:`CLASSIFICATION_LAYOUTS`)
reads its source folder as the release lays it out when the folder is the release's top folder (named as the
release names it, e.g. ``cifar-10-batches-py``), holds that folder (torchvision's ``root``), or holds one of the
layout's own files or folders (e.g. ``test_batch``); any other source is read as :mod:`ccs_ray.sources` reads it
(an ImageFolder of class names, a manifest, ...). The test split is read (the split zero-shot results are
reported on), with labels in the layout's class order, which is its preset's class order
(:mod:`ccs_ray.evals.classnames`). Nothing is downloaded or checksummed. A folder meant as a layout that lacks one
of its files or folders, or holds an unknown class folder, is a :class:`~.entries.DatasetError` naming what was
expected.

Layouts (``<top>/`` is the release's top folder):

- ``cifar10``: CIFAR-10's python version, ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta`` and ``readme.html``. Each batch is a dict pickled by Python 2 (byte-string
  keys): ``data``, uint8 [N, 3072], a row per 32x32 image holding its 1024 red, then 1024 green, then 1024 blue
  values, each plane row by row; ``labels``, the class indices 0-9; ``filenames``; ``batch_label``.
  ``batches.meta``'s ``label_names`` are the 10 class names in index order. Read: ``test_batch``.
- ``cifar100``: CIFAR-100's python version, ``cifar-100-python/`` with ``train``, ``test`` and ``meta``, dicts as
  CIFAR-10's with ``fine_labels`` (0-99) and ``coarse_labels`` (0-19) for ``labels``; ``meta``'s
  ``fine_label_names`` (100, words joined by ``_``) and ``coarse_label_names`` (20). Read: ``test``, fine labels.
- ``food101``: ``food-101/`` with ``images/<class>/<id>.jpg`` (101 class folders, e.g. ``apple_pie``),
  ``meta/classes.txt`` (the class folder names in label order, which is sorted), ``meta/labels.txt`` (their
  display names), ``meta/train.txt`` and ``meta/test.txt`` (a line ``<class>/<id>`` per image, no extension) and
  ``meta/train.json``, ``meta/test.json`` (class -> those lines). Read: ``meta/test.txt``.
- ``country211``: ``country211/`` with ``train/``, ``valid/`` and ``test/``, each holding one folder per country
  named by its ISO 3166-1 alpha-2 code (211 folders, e.g. ``AD``) of ``<id>.jpg`` photos; the label order is the
  sorted codes (:data:`~ccs_ray.evals.classnames.COUNTRY211_CODES`). Read: ``test/``.
- ``oxford_pets``: ``oxford-iiit-pet/`` with ``images/<Breed>_<n>.jpg`` (cat breeds capitalised, e.g.
  ``Abyssinian_100.jpg``, dog breeds in lower case, e.g. ``american_bulldog_10.jpg``; a few other files too) and
  ``annotations/trainval.txt`` and ``annotations/test.txt``: a line ``<image name without .jpg> <class id 1-37>
  <species: 1 cat, 2 dog> <breed id within its species>`` per image (``annotations/list.txt``: every image, after
  ``#`` comment lines). Class ids follow the breeds sorted ignoring case. Read: ``annotations/test.txt``.
- ``imagenet_a``, ``imagenet_r``: ``imagenet-a/``, ``imagenet-r/``, one folder per class named by its WordNet id
  (200 each, e.g. ``n01498041``) of ``<name>.jpg`` images, and ``README.txt``; label order: ImageNet's (the sorted
  WordNet ids of the classes kept).
- ``imagenet``: ImageNet-1k's validation set as users keep it, in a folder of any name: one folder per class
  named by its WordNet id (1000, e.g. ``n01440764/ILSVRC2012_val_00000293.JPEG``), or the 50 000 files
  ``ILSVRC2012_val_00000001.JPEG`` .. directly in it and a label file, looked for in it, then in each folder
  above it up to 4 levels (the first found in the nearest folder, in this order): ``LOC_val_solution.csv``
  (Kaggle's, 4 levels above its ``ILSVRC/Data/CLS-LOC/val/``: columns ``ImageId`` (the file name without
  extension) and ``PredictionString`` (boxes ``<WordNet id> x0 y0 x1 y1``, the first word the class));
  ``val.txt`` (lines ``<file name> <class index>``, the index in sorted-WordNet-id order); the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (line ``k``: the ILSVRC2012 id, 1-1000, of image ``k``), directly
  or in the devkit's ``ILSVRC2012_devkit_t12/data/``, with the devkit's ``meta.mat`` beside it (its ``synsets``
  map ILSVRC2012 ids to WordNet ids). Label order: the sorted WordNet ids.

Shards: a pickled batch is cut into index ranges (kind ``cifar``, items the row indices, an item
``<batch file>#<row>``); an image-file layout into ``(image URI, class index)`` pairs, read as folder shards. Labels
are class indices as text. CIFAR's batches are Python pickles, which can run code when loaded: read only copies
from a source you trust (torchvision reads them the same way).
"""

from __future__ import annotations

import csv
import functools
import io
import pickle
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image

from ... import sources
from ...files import fs_uri
from ...sources.base import IMAGE_EXTENSIONS, chunks, file_version, fingerprint, list_files
from .. import classnames as cn
from .entries import DatasetError

#: Shard kind of a pickled array batch (CIFAR): items are row indices.
ARRAY_KIND = "cifar"


@dataclass(frozen=True)
class Arrays:
    """A layout's images as rows of a pickled batch: the batch file and its number of images."""

    uri: str
    n: int
    version: tuple  # the file's version (size, modification time, ...)


class _Root:
    """A layout's top folder: paths in it, and the errors that name what is missing."""

    def __init__(self, fs, path: str, name: str, layout: ClassificationLayout):
        self.fs, self.path, self.name, self.layout = fs, path.rstrip("/"), name, layout

    def uri(self, rel: str = "") -> str:
        return fs_uri(self.fs, posixpath.join(self.path, rel).rstrip("/"))

    def error(self, what: str) -> DatasetError:
        return DatasetError(f"{self.name}: {what} (expected {self.layout.title}: {self.layout.expects})")

    def need(self, rel: str, folder: bool = False) -> str:
        """The full path of ``rel`` in the root, a file (or a folder): a DatasetError naming it when missing."""
        path = posixpath.join(self.path, rel)
        if not (self.fs.isdir(path) if folder else self.fs.isfile(path)):
            raise self.error(f"{self.uri()} has no {rel}{'/' * folder}")
        return path

    def lines(self, rel: str) -> list[str]:
        """The stripped, non-empty lines of the text file ``rel``."""
        with self.fs.open(self.need(rel), "rt", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]

    def images(self, rel: str, listed: list[tuple[str, int]], listing: str) -> list[tuple[str, int]]:
        """``(URI, class index)`` of each (path relative to the root, class index) that the label file ``listing``
        lists, checked to exist (one listing of the image folder ``rel``)."""
        self.need(rel, folder=True)
        have = set(list_files(self.uri(rel), None))
        for path, _ in listed:
            if self.uri(path) not in have:
                raise self.error(f"{self.uri(path)}, listed in {listing}, is missing")
        return [(self.uri(path), label) for path, label in listed]

    def class_folders(self, rel: str, keys: list[str], what: str) -> list[tuple[str, int]]:
        """``(URI, class index)`` of every image in the class folders of ``rel`` (one per key of ``keys``, the label
        order): an unknown or a missing class folder is an error."""
        top = self.need(rel, folder=True) if rel else self.path
        index = {k: i for i, k in enumerate(keys)}
        folders = {posixpath.basename(e["name"].rstrip("/")) for e in self.fs.ls(top, detail=True)
                   if e["type"] == "directory"}
        unknown = sorted(folders - index.keys())
        if unknown:
            raise self.error(f"{self.uri(posixpath.join(rel, unknown[0]))} is not one of the {len(keys)} {what} "
                             "folders")
        missing = [k for k in keys if k not in folders]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise self.error(f"{self.uri(rel)} has {len(folders)} of the {len(keys)} {what} folders; missing "
                             f"{', '.join(missing[:3])}{more}")
        out = []
        for uri in list_files(self.uri(rel), IMAGE_EXTENSIONS):
            inside = fsspec.core.url_to_fs(uri)[1][len(top) + 1:]
            if "/" in inside:  # an image beside the class folders has no class
                out.append((uri, index[inside.split("/")[0]]))
        return out


@dataclass(frozen=True)
class ClassificationLayout:
    """An official release layout: its title and top folder, the entries that mark a folder as meant for it, what
    it expects (said in errors) and its reader (the test split as :class:`Arrays` or ``(URI, class index)``
    pairs)."""

    title: str
    folder: str | None  # the release's top folder name; None: any
    markers: tuple[str, ...]  # entries of a folder that mean the layout is meant ("name/": a folder)
    expects: str
    read: Callable[[_Root], Arrays | list[tuple[str, int]]]


def _unpickle(fs, path: str) -> dict:
    """A CIFAR batch: a dict pickled by Python 2, its keys as text."""
    with fs.open(path, "rb") as f:
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in pickle.load(f, encoding="bytes").items()}


def _cifar(test: str, meta: str, names_key: str, classnames: list[str]) -> Callable[[_Root], Arrays]:
    def read(root: _Root) -> Arrays:
        path = root.need(test)
        names = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(root.fs, root.need(meta))[names_key]]
        if [n.replace("_", " ") for n in names] != classnames:
            raise root.error(f"{root.uri(meta)}'s {names_key} are not the {len(classnames)} classes in order "
                             f"(got {names[:3]}...)")
        version = _version(root.fs, path)
        return Arrays(root.uri(test), len(_batch(root.uri(test), version)[1]), version)

    return read


def _version(fs, path: str) -> tuple:
    return tuple(map(tuple, file_version(fs.info(path))))


@functools.lru_cache(maxsize=2)
def _batch(uri: str, version: tuple) -> tuple[np.ndarray, list[int]]:
    """(images uint8 [N, 32, 32, 3], class indices) of a CIFAR batch file (cached per process and file version)."""
    fs, path = fsspec.core.url_to_fs(uri)
    batch = _unpickle(fs, path)
    labels = batch.get("labels", batch.get("fine_labels"))
    if labels is None or "data" not in batch:
        raise DatasetError(f"{uri}: not a CIFAR batch (no data and labels or fine_labels)")
    data = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, [int(x) for x in labels]


def _food101(root: _Root) -> list[tuple[str, int]]:
    classes = root.lines("meta/classes.txt")
    if len(classes) != len(cn.FOOD101):
        raise root.error(f"{root.uri('meta/classes.txt')} lists {len(classes)} classes, not {len(cn.FOOD101)}")
    index = {c: i for i, c in enumerate(classes)}
    listed = []
    for line in root.lines("meta/test.txt"):
        cls = line.split("/")[0]
        if cls not in index:
            raise root.error(f"{root.uri('meta/test.txt')}: {line!r} is not <class>/<id> of a class in classes.txt")
        listed.append((f"images/{line}.jpg", index[cls]))
    return root.images("images", listed, "meta/test.txt")


def _oxford_pets(root: _Root) -> list[tuple[str, int]]:
    listed = []
    for line in root.lines("annotations/test.txt"):
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(cn.OXFORD_PETS):
            raise root.error(f"{root.uri('annotations/test.txt')}: {line!r} is not '<image> <class id 1-37> "
                             "<species> <breed id>'")
        listed.append((f"images/{parts[0]}.jpg", int(parts[1]) - 1))
    return root.images("images", listed, "annotations/test.txt")


def _country211(root: _Root) -> list[tuple[str, int]]:
    return root.class_folders("test", cn.COUNTRY211_CODES, "country code")


def _wnid_folders(wnids: list[str]) -> Callable[[_Root], list[tuple[str, int]]]:
    return lambda root: root.class_folders("", wnids, "WordNet id")


_IMAGENET_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
_IMAGENET_LABEL_FILES = ("LOC_val_solution.csv", "val.txt", "ILSVRC2012_validation_ground_truth.txt",
                         "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")


def _imagenet(root: _Root) -> list[tuple[str, int]]:
    """ImageNet-1k validation: WordNet-id class folders, else flat files and a label file (module docstring)."""
    entries = root.fs.ls(root.path, detail=True)
    if any(e["type"] == "directory" and re.fullmatch(r"n\d{8}", posixpath.basename(e["name"].rstrip("/")))
           for e in entries):
        return _wnid_folders(cn.IMAGENET_WNIDS)(root)
    files = {posixpath.basename(e["name"]): e["name"] for e in entries if e["type"] == "file"}
    wnid_index = {w: i for i, w in enumerate(cn.IMAGENET_WNIDS)}
    folders = [root.path]
    while len(folders) < 5 and posixpath.dirname(folders[-1]) != folders[-1]:
        folders.append(posixpath.dirname(folders[-1]))  # Kaggle's: the CSV 4 levels up, at ILSVRC/'s side
    for folder in folders:
        for rel in _IMAGENET_LABEL_FILES:
            path = posixpath.join(folder, rel)
            if root.fs.isfile(path):
                labels = _imagenet_labels(root, path, wnid_index)
                missing = sorted(set(labels) - set(files))
                if missing:
                    raise root.error(f"{root.uri(missing[0])}, labelled in {fs_uri(root.fs, path)}, is missing")
                return [(root.uri(f), labels[f]) for f in sorted(labels)]
    raise root.error(f"{root.uri()} has neither WordNet-id class folders nor a label file "
                     f"({', '.join(_IMAGENET_LABEL_FILES)}) in it or in a folder up to 4 levels above it")


def _imagenet_labels(root: _Root, path: str, wnid_index: dict[str, int]) -> dict[str, int]:
    """Image file name -> class index, from one of ImageNet's label files (module docstring)."""
    uri = fs_uri(root.fs, path)
    name = posixpath.basename(path)
    with root.fs.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    out: dict[str, int] = {}
    if name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
            raise root.error(f"{uri} has no ImageId and PredictionString columns")
        for row in rows:
            wnid = (row["PredictionString"] or "").split(" ")[0]
            if wnid not in wnid_index:
                raise root.error(f"{uri}: {row['ImageId']}'s class {wnid!r} is not an ImageNet-1k WordNet id")
            out[f"{row['ImageId']}.JPEG"] = wnid_index[wnid]
        return out
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if name == "val.txt":
        for parts in lines:
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(wnid_index):
                raise root.error(f"{uri}: {' '.join(parts)!r} is not '<file name> <class index 0-999>'")
            out[parts[0]] = int(parts[1])
        return out
    meta = posixpath.join(posixpath.dirname(path), "meta.mat")
    if not root.fs.isfile(meta):
        raise root.error(f"{fs_uri(root.fs, posixpath.dirname(path))} has no meta.mat beside {name} (the "
                         "devkit's data/ folder holds both)")
    from scipy.io import loadmat

    with root.fs.open(meta, "rb") as f:
        synsets = loadmat(f, squeeze_me=True)["synsets"]
    ilsvrc = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["ILSVRC2012_ID"]) <= 1000}
    for k, parts in enumerate(lines, 1):
        if len(parts) != 1 or not parts[0].isdigit() or int(parts[0]) not in ilsvrc:
            raise root.error(f"{uri}: line {k} is not an ILSVRC2012 id 1-1000 of meta.mat")
        out[f"ILSVRC2012_val_{k:08d}.JPEG"] = wnid_index[ilsvrc[int(parts[0])]]
    return out


#: Layouts by name (the :attr:`~.presets.ClassificationPreset.layout` of a preset).
CLASSIFICATION_LAYOUTS: dict[str, ClassificationLayout] = {
    "cifar10": ClassificationLayout(
        "CIFAR-10's python version", "cifar-10-batches-py", ("test_batch", "batches.meta", "data_batch_1"),
        "test_batch and batches.meta", _cifar("test_batch", "batches.meta", "label_names", cn.CIFAR10)),
    "cifar100": ClassificationLayout(
        "CIFAR-100's python version", "cifar-100-python", ("test", "meta", "train"), "test and meta",
        _cifar("test", "meta", "fine_label_names", cn.CIFAR100)),
    "food101": ClassificationLayout(
        "Food-101", "food-101", ("meta/", "images/"), "meta/classes.txt, meta/test.txt and images/<class>/<id>.jpg",
        _food101),
    "country211": ClassificationLayout(
        "Country-211", "country211", ("test/", "valid/", "train/"),
        "test/<ISO country code>/<id>.jpg, 211 country folders", _country211),
    "oxford_pets": ClassificationLayout(
        "Oxford-IIIT Pets", "oxford-iiit-pet", ("annotations/", "images/"),
        "annotations/test.txt and images/<Breed>_<n>.jpg", _oxford_pets),
    "imagenet_a": ClassificationLayout(
        "ImageNet-A", "imagenet-a", ("README.txt",), "<WordNet id>/<name>.jpg, 200 class folders",
        _wnid_folders(cn.IMAGENET_A_WNIDS)),
    "imagenet_r": ClassificationLayout(
        "ImageNet-R", "imagenet-r", ("README.txt",), "<WordNet id>/<name>.jpg, 200 class folders",
        _wnid_folders(cn.IMAGENET_R_WNIDS)),
    "imagenet": ClassificationLayout(
        "ImageNet-1k validation", None, (*_IMAGENET_LABEL_FILES[:3], "ILSVRC2012_devkit_t12/"),
        "1000 <WordNet id>/ class folders, or ILSVRC2012_val_*.JPEG files and a label file", _imagenet),
}


def find_root(layout: str, source: str) -> str | None:
    """The layout's top folder for ``source`` (module docstring), or None when ``source`` is not meant as it."""
    lay = CLASSIFICATION_LAYOUTS[layout]
    fs, path = fsspec.core.url_to_fs(source)
    path = path.rstrip("/")
    if any(c in path for c in "*?[") or not fs.isdir(path):
        return None
    if lay.folder and posixpath.basename(path) == lay.folder:
        return source
    if lay.folder and fs.isdir(posixpath.join(path, lay.folder)):
        return fs_uri(fs, posixpath.join(path, lay.folder))
    names = {posixpath.basename(e["name"].rstrip("/")) + ("/" if e["type"] == "directory" else "")
             for e in fs.ls(path, detail=True)}
    if names & set(lay.markers) or (layout == "imagenet" and any(_IMAGENET_FILE.match(n) for n in names)):
        return source
    if layout.startswith("imagenet") and any(re.fullmatch(r"n\d{8}/", n) for n in names):
        return source
    return None


def plan(layout: str, root: str, name: str, shard_size: int, limit: int | None) -> list[sources.Shard]:
    """The test split of the layout at ``root`` (:func:`find_root`) as shards of ``shard_size`` images; ``name``
    (the dataset's) leads every error."""
    fs, path = fsspec.core.url_to_fs(root)
    read = CLASSIFICATION_LAYOUTS[layout].read(_Root(fs, path, name, CLASSIFICATION_LAYOUTS[layout]))
    if isinstance(read, Arrays):
        n = min(read.n, limit or read.n)
        return [sources.Shard(f"s{i:06d}", i, ARRAY_KIND, read.uri, tuple(range(start, min(n, start + shard_size))),
                              fingerprint(read.uri, read.version, start, min(n, start + shard_size)))
                for i, start in enumerate(range(0, n, shard_size))]
    if not read:
        raise DatasetError(f"{name}: {root} holds no images of its test split")
    items = [(uri, str(label)) for uri, label in read[:limit]]
    return [sources.Shard(f"s{i:06d}", i, "folder", root, tuple(chunk), fingerprint(layout, chunk))
            for i, chunk in enumerate(chunks(items, shard_size))]


def load(shard: sources.Shard) -> tuple[list[str], list, list[str]]:
    """(item names, PIL RGB images, labels) of an :data:`ARRAY_KIND` shard."""
    fs, path = fsspec.core.url_to_fs(shard.uri)
    data, labels = _batch(shard.uri, _version(fs, path))
    return ([f"{shard.uri}#{i}" for i in shard.items], [Image.fromarray(data[i]) for i in shard.items],
            [str(labels[i]) for i in shard.items])
