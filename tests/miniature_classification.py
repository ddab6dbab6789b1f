"""Miniature copies of the classification datasets' official releases, for tests: the same file names, folders,
columns and label encodings, a few 32-pixel pictures (smooth gradients with a shape) in a few classes, the
first and the last class among them.

Each ``write_*(root, ...)`` writes the release's top folder under ``root`` and returns ``(source, images)``:
the folder a dataset entry's ``source`` names, and ``(image, class index)`` per test-split image, the image a
file path (its pixels as the release stores them, JPEG where the release has JPEG) or, for CIFAR, a uint8
[32, 32, 3] array; the class index is the release's own label encoding.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ccs_ray.evals import classnames as cn

# The breed part of Oxford-IIIT Pets' image names, in class id order (cats capitalised, dogs in lower case).
PET_BREEDS = [
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal", "Birman",
    "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel",
    "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
    "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll",
    "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx",
    "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
]
CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]


def picture(seed: int, size: int = 32) -> np.ndarray:
    """A uint8 [size, size, 3] picture: a two-colour gradient with an ellipse or a rectangle on it."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[None, :, None] * 0.6 + np.linspace(0, 1, size)[:, None, None] * 0.4
    image = Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))
    x0, y0 = rng.integers(2, size // 2, 2)
    box = (int(x0), int(y0), int(x0 + rng.integers(6, size // 2)), int(y0 + rng.integers(6, size // 2)))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if seed % 2 else draw.rectangle)(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image)


def _save(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(seed)).save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else \
        Image.fromarray(picture(seed)).save(path)
    return path


def _spread(n: int, n_classes: int, middle: int | None = None) -> list[int]:
    """``n`` class indices cycling over the first, a middle and the last class."""
    classes = [0, n_classes // 2 if middle is None else middle, n_classes - 1]
    return [classes[i % 3] for i in range(n)]


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root, n: int = 6) -> tuple[Path, list[tuple[np.ndarray, int]]]:
    """CIFAR-10's python version: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``, ``batches.meta`` and ``readme.html``. A batch is a pickled dict with byte-string keys (Python 2
    wrote it): ``data`` uint8 [N, 3072], each row the red plane, then the green, then the blue of a 32x32 image,
    row by row; ``labels`` 0-9; ``filenames``; ``batch_label``. ``batches.meta``: ``label_names`` in label order,
    ``num_cases_per_batch``, ``num_vis`` (3072)."""
    top = Path(root) / "cifar-10-batches-py"
    top.mkdir(parents=True)
    names = [c.encode() for c in cn.CIFAR10]
    _pickle(top / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072})
    (top / "readme.html").write_text("<meta HTTP-EQUIV='REFRESH' content='0; url=https://www.cs.toronto.edu/~kriz/"
                                     "cifar.html'>\n")
    for k, batch in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        labels = _spread(n, 10)
        images = [picture(100 * k + i) for i in range(n)]
        _pickle(top / batch, {
            b"batch_label": (f"training batch {k + 1} of 5" if k < 5 else "testing batch 1 of 1").encode(),
            b"labels": labels, b"data": np.stack([x.transpose(2, 0, 1).reshape(-1) for x in images]),
            b"filenames": [f"{cn.CIFAR10[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)]})
    return top, list(zip(images, labels, strict=True))


def write_cifar100(root, n: int = 6) -> tuple[Path, list[tuple[np.ndarray, int]]]:
    """CIFAR-100's python version: ``cifar-100-python/`` with ``train``, ``test`` and ``meta``; dicts as CIFAR-10's
    with ``fine_labels`` (0-99) and ``coarse_labels`` (0-19, the superclass) for ``labels``; ``meta``:
    ``fine_label_names`` (words joined by ``_``) and ``coarse_label_names``. The test images are of apple (0,
    fruit and vegetables), train (90, vehicles 1) and worm (99, non-insect invertebrates)."""
    top = Path(root) / "cifar-100-python"
    top.mkdir(parents=True)
    fine_names = [c.replace(" ", "_") for c in cn.CIFAR100]
    _pickle(top / "meta", {b"fine_label_names": [c.encode() for c in fine_names],
                           b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE]})
    coarse = {0: 4, 90: 18, 99: 13}
    for k, split in enumerate(["train", "test"]):
        fine = _spread(n, 100, middle=90)
        images = [picture(100 * k + i) for i in range(n)]
        _pickle(top / split, {
            b"batch_label": f"{split}ing batch 1 of 1".encode(), b"fine_labels": fine,
            b"coarse_labels": [coarse[y] for y in fine],
            b"data": np.stack([x.transpose(2, 0, 1).reshape(-1) for x in images]),
            b"filenames": [f"{fine_names[y]}_s_{i:06d}.png".encode() for i, y in enumerate(fine)]})
    return top, list(zip(images, fine, strict=True))


def write_food101(root, n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """Food-101: ``food-101/images/<class>/<id>.jpg``; ``meta/classes.txt`` (the 101 class folder names, sorted:
    the label order), ``meta/labels.txt`` (display names, same order), ``meta/train.txt`` and ``meta/test.txt``
    (``<class>/<id>`` per image, no extension) and ``meta/train.json``, ``meta/test.json`` (class -> those)."""
    top = Path(root) / "food-101"
    classes = [c.replace(" ", "_") for c in cn.FOOD101]
    (top / "meta").mkdir(parents=True)
    (top / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    (top / "meta" / "labels.txt").write_text("\n".join(c.capitalize() for c in cn.FOOD101) + "\n")
    out = []
    for k, split in enumerate(["train", "test"]):
        listed: dict[str, list[str]] = {}
        for i, y in enumerate(_spread(n, 101)):
            image_id = str(1000000 + 1000 * k + i)
            path = _save(top / "images" / classes[y] / f"{image_id}.jpg", 10 * k + i)
            listed.setdefault(classes[y], []).append(f"{classes[y]}/{image_id}")
            if split == "test":
                out.append((path, y))
        (top / "meta" / f"{split}.txt").write_text("\n".join(x for v in listed.values() for x in v) + "\n")
        (top / "meta" / f"{split}.json").write_text(json.dumps(listed))
    return top, out


def write_country211(root, n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """Country-211: ``country211/train/``, ``valid/`` and ``test/``, each with one folder per country named by
    its ISO 3166-1 alpha-2 code (211), of ``<id>.jpg`` photos; the label order is the sorted codes."""
    top = Path(root) / "country211"
    out = []
    for k, split in enumerate(["train", "valid", "test"]):
        for code in cn.COUNTRY211_CODES:
            (top / split / code).mkdir(parents=True)
        for i, y in enumerate(_spread(n, 211)):
            path = _save(top / split / cn.COUNTRY211_CODES[y] / f"{1000 * k + i:06d}.jpg", 10 * k + i)
            if split == "test":
                out.append((path, y))
    return top, out


def write_oxford_pets(root, n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """Oxford-IIIT Pets: ``oxford-iiit-pet/images/<Breed>_<n>.jpg`` (cat breeds capitalised, dog breeds lower
    case) beside a few other files (``.mat``), and ``annotations/``: ``trainval.txt`` and ``test.txt``, a line
    ``<image name> <class id 1-37> <species 1 cat, 2 dog> <breed id within its species>`` per image, and
    ``list.txt`` (all of them after ``#`` comment lines). Class ids follow the breeds sorted ignoring case; the
    returned class index is the class id - 1."""
    top = Path(root) / "oxford-iiit-pet"
    (top / "annotations").mkdir(parents=True)
    (top / "images").mkdir()
    (top / "images" / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    cats = [b for b in PET_BREEDS if b[0].isupper()]
    dogs = [b for b in PET_BREEDS if b[0].islower()]
    out, lines = [], {"trainval": [], "test": []}
    for k, split in enumerate(["trainval", "test"]):
        for i, y in enumerate(_spread(n, 37)):
            breed = PET_BREEDS[y]
            name = f"{breed}_{10 * k + i + 1}"
            path = _save(top / "images" / f"{name}.jpg", 10 * k + i)
            species, breed_id = (1, cats.index(breed) + 1) if breed in cats else (2, dogs.index(breed) + 1)
            lines[split].append(f"{name} {y + 1} {species} {breed_id}")
            if split == "test":
                out.append((path, y))
        (top / "annotations" / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    header = ("#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
              "#BREED ID: 1-25:Cat 1:12:Dog\n")
    (top / "annotations" / "list.txt").write_text(header + "\n".join(lines["trainval"] + lines["test"]) + "\n")
    return top, out


def _wnid_folders(top: Path, wnids: list[str], n: int, seed: int, name: str) -> list[tuple[Path, int]]:
    out = []
    for w in wnids:
        (top / w).mkdir(parents=True)
    for i, y in enumerate(_spread(n, len(wnids))):
        out.append((_save(top / wnids[y] / name.format(i=i + 1), seed + i), y))
    return out


def write_imagenet_a(root, n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """ImageNet-A: ``imagenet-a/<WordNet id>/<name>.jpg``, 200 class folders, and ``README.txt``; the returned
    class index is the position of the WordNet id among the 200 (sorted, ImageNet's order)."""
    top = Path(root) / "imagenet-a"
    out = _wnid_folders(top, cn.IMAGENET_A_WNIDS, n, 0, "0.{i:06d}_natural_adversarial.jpg")
    (top / "README.txt").write_text("ImageNet-A: 7500 natural adversarial examples of 200 ImageNet classes.\n")
    return top, out


def write_imagenet_r(root, n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """ImageNet-R: ``imagenet-r/<WordNet id>/<style>_<i>.jpg``, 200 class folders, and ``README.txt``."""
    top = Path(root) / "imagenet-r"
    out = _wnid_folders(top, cn.IMAGENET_R_WNIDS, n, 50, "art_{i}.jpg")
    (top / "README.txt").write_text("ImageNet-R: 30000 renditions (art, cartoons, ...) of 200 ImageNet classes.\n")
    return top, out


IMAGENET_VAL_LAYOUTS = ("folders", "flat-csv", "flat-txt", "devkit")


def write_imagenet_val(root, layout: str = "folders", n: int = 6) -> tuple[Path, list[tuple[Path, int]]]:
    """ImageNet-1k's validation images ``ILSVRC2012_val_<8 digits>.JPEG`` (image k of 50 000), kept as:

    - ``folders``: ``val/<WordNet id>/ILSVRC2012_val_00000001.JPEG``, the 1000 class folders;
    - ``flat-csv``: Kaggle's, ``ILSVRC/Data/CLS-LOC/val/<file>`` and, at the top, ``LOC_val_solution.csv`` with
      columns ``ImageId`` (the file name without extension) and ``PredictionString`` (``<WordNet id> x0 y0 x1 y1``
      per box, the first word the class);
    - ``flat-txt``: ``val/<file>`` and ``val.txt`` beside ``val/``, lines ``<file name> <class index>``;
    - ``devkit``: ``val/<file>`` and ``ILSVRC2012_devkit_t12/data/`` with ``ILSVRC2012_validation_ground_truth.txt``
      (line k: the ILSVRC2012 id, 1-1000, of image k) and ``meta.mat`` (``synsets``: ``ILSVRC2012_ID``, ``WNID``,
      ``words``, ...; ids 1-1000 are the classes, in an order of their own, not the WordNet ids').

    The class index is the position of the WordNet id among the 1000, sorted."""
    root = Path(root)
    wnids = cn.IMAGENET_WNIDS
    classes = _spread(n, 1000)
    if layout == "folders":
        top = root / "val"
        for w in wnids:
            (top / w).mkdir(parents=True)
        return top, [(_save(top / wnids[y] / f"ILSVRC2012_val_{i + 1:08d}.JPEG", 200 + i), y)
                     for i, y in enumerate(classes)]
    top = root / ("ILSVRC/Data/CLS-LOC/val" if layout == "flat-csv" else "val")
    out = [(_save(top / f"ILSVRC2012_val_{i + 1:08d}.JPEG", 200 + i), y) for i, y in enumerate(classes)]
    if layout == "flat-csv":
        with open(root / "LOC_val_solution.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "PredictionString"])
            for path, y in out:
                w.writerow([path.stem, f"{wnids[y]} 10 12 200 180 {wnids[y]} 30 30 90 90 "])
    elif layout == "flat-txt":
        (root / "val.txt").write_text("".join(f"{path.name} {y}\n" for path, y in out))
    elif layout == "devkit":
        from scipy.io import savemat

        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        order = np.random.default_rng(0).permutation(1000)  # ILSVRC2012 id k + 1 is wnids[order[k]]
        ilsvrc = {int(c): k + 1 for k, c in enumerate(order)}
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ilsvrc[y]}\n" for _, y in out))
        dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
        synsets = np.array([(k + 1, wnids[c], cn.IMAGENET[c], 0) for k, c in enumerate(order)]
                           + [(1001, "n00001740", "entity", 2)], dtype=dtype)
        savemat(data / "meta.mat", {"synsets": synsets})
    else:
        raise ValueError(f"layout {layout!r}: one of {IMAGENET_VAL_LAYOUTS}")
    return top, out
