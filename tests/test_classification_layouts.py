"""Classification presets read their datasets' official release layouts (miniatures: tests/miniature_classification.py)
offline: the right class per image, the same images, labels and zero-shot accuracy as an ImageFolder of the same
images, and an error naming what a wrong or partial layout lacks."""

import shutil

import numpy as np
import pytest
import torch
from miniature_classification import (
    IMAGENET_VAL_LAYOUTS,
    write_cifar10,
    write_cifar100,
    write_country211,
    write_food101,
    write_imagenet_a,
    write_imagenet_r,
    write_imagenet_val,
    write_oxford_pets,
)
from PIL import Image

from ccs_ray.evals import classnames as cn
from ccs_ray.evals.datasets import DatasetError, load_classification, plan_dataset
from ccs_ray.evals.zeroshot import accuracy_metrics, classifier_weights, top_predictions, zeroshot_logits

WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "food101": write_food101,
           "country211": write_country211, "oxford_pets": write_oxford_pets, "imagenet_a": write_imagenet_a,
           "imagenet_r": write_imagenet_r,
           **{f"imagenet:{layout}": (lambda root, layout=layout: write_imagenet_val(root, layout))
              for layout in IMAGENET_VAL_LAYOUTS}}

# The first and last class of each release, by its own key (class folder, label name, breed, code, WordNet id),
# and the name ccs-ray ships for it.
OFFICIAL = {
    "cifar10": [(0, "airplane", "airplane"), (9, "truck", "truck")],
    "cifar100": [(0, "apple", "apple"), (90, "train", "train"), (99, "worm", "worm")],
    "food101": [(0, "apple_pie", "apple pie"), (100, "waffles", "waffles")],
    "country211": [(0, "AD", "Andorra"), (210, "ZW", "Zimbabwe")],
    "oxford_pets": [(0, "Abyssinian", "Abyssinian"), (36, "yorkshire_terrier", "Yorkshire Terrier")],
    "imagenet_a": [(0, "n01498041", "stingray"), (199, "n12267677", "acorn")],
    "imagenet_r": [(0, "n01443537", "goldfish"), (199, "n12267677", "acorn")],
    "imagenet": [(0, "n01440764", "tench"), (999, "n15075141", "toilet paper")],
}


def _official_key(preset, image):
    """The release's own name of an image's class, read from where the release keeps it."""
    if preset == "food101" or preset.startswith("imagenet_") or preset == "country211":
        return image.parent.name
    if preset == "oxford_pets":
        return image.stem.rsplit("_", 1)[0]
    return None  # CIFAR: the class is the batch's label; ImageNet val: the label file


def _pixels(image) -> np.ndarray:
    return image if isinstance(image, np.ndarray) else np.asarray(Image.open(image).convert("RGB"))


def _load(entry, preprocess):
    data, shards, _ = plan_dataset("classification", entry)
    loaded = [load_classification(data, s, preprocess) for s in shards]
    assert not [e for _, _, errors in loaded for e in errors]
    return data, shards, torch.cat([x for x, _, _ in loaded]), torch.cat([y for _, y, _ in loaded])


def _match(images, labels, expected_images, expected_labels):
    """Each loaded (image, label) is one expected pair: the same preprocessed pixels and label, one to one."""
    assert len(images) == len(expected_images)
    left = list(range(len(expected_images)))
    for x, y in zip(images, labels.tolist(), strict=True):
        k = min(left, key=lambda j: (x - expected_images[j]).abs().max().item())
        assert (x - expected_images[k]).abs().max().item() == 0 and y == expected_labels[k]
        left.remove(k)


def _accuracy(model, weights, data, images, labels):
    """Zero-shot metrics as the prune stage computes them, with the classifier ``weights``."""
    with torch.no_grad():
        return accuracy_metrics(top_predictions(zeroshot_logits(model.encode_image(images), weights)), labels,
                                data.classnames)


@pytest.mark.parametrize("case", list(WRITERS))
def test_preset_reads_its_official_layout_as_an_image_folder_of_the_same_images(case, tmp_path, tiny_model):
    model, preprocess = tiny_model
    preset = case.split(":")[0]
    source, written = WRITERS[case](tmp_path / "data")
    entry = {"name": preset, "source": str(source), "shard_size": 4, "templates": ["a photo of a {}."]}
    data, shards, images, labels = _load(entry, preprocess)
    assert len(shards) == 2 and {s.kind for s in shards} == {"cifar" if preset.startswith("cifar") else "folder"}
    shipped = getattr(cn, preset.upper())
    assert data.classnames == shipped  # the official label order is the shipped class list's
    expected = [preprocess(Image.fromarray(_pixels(image))) for image, _ in written]
    _match(images, labels, expected, [c for _, c in written])
    official = {index: (key, name) for index, key, name in OFFICIAL[preset]}
    assert set(official) >= {c for _, c in written} - {len(shipped) // 2}  # first and last classes are written
    for image, c in written:
        if c in official:
            key, name = official[c]
            assert data.classnames[c] == name
            assert _official_key(preset, image) in (key, None)

    folder = tmp_path / "folder"  # the same images as an ImageFolder of the shipped class names
    for i, (image, c) in enumerate(written):
        (folder / shipped[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(image)).save(folder / shipped[c] / f"{i}.png")
    by_folder, _, folder_images, folder_labels = _load({**entry, "source": str(folder)}, preprocess)
    _match(folder_images, folder_labels, list(images), labels.tolist())
    assert (by_folder.class_texts, by_folder.templates) == (data.class_texts, data.templates)
    with torch.no_grad():  # the classifier of the dataset's class texts, as the prune stage's text side
        weights = classifier_weights(model, data.class_texts, data.templates)
    metrics = _accuracy(model, weights, data, images, labels)
    assert metrics == _accuracy(model, weights, by_folder, folder_images, folder_labels) and "top1" in metrics


def test_a_folder_holding_the_release_and_a_class_subset(tmp_path, tiny_model):
    """torchvision's ``root`` (the folder holding ``cifar-10-batches-py``) works too; ``cifar10_objects`` keeps
    its four classes, renumbered, and drops the others silently."""
    _, written = write_cifar10(tmp_path)
    data, _, _, labels = _load({"name": "cifar10_objects", "source": str(tmp_path)}, tiny_model[1])
    kept = [c for _, c in written if cn.CIFAR10[c] in data.classnames]
    assert [data.classnames[y] for y in labels.tolist()] == [cn.CIFAR10[c] for c in kept] and len(kept) == 4


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _rename_label_names(top):
    import pickle

    (top / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2))


BROKEN = [  # (case, damage to the release's top folder, the start of the error given the top folder)
    ("cifar10", lambda top: _remove(top / "test_batch"), lambda top:
     f"cifar10: {top} has no test_batch (expected CIFAR-10's python version: test_batch and batches.meta)"),
    ("cifar10", _rename_label_names,
     lambda top: f"cifar10: {top}/batches.meta's label_names are not the 10 classes in order"),
    ("cifar100", lambda top: _remove(top / "meta"), lambda top: f"cifar100: {top} has no meta (expected CIFAR-100's"),
    ("food101", lambda top: _remove(top / "meta" / "test.txt"),
     lambda top: f"food101: {top} has no meta/test.txt (expected Food-101"),
    ("food101", lambda top: _remove(top / "images" / "waffles" / "1001002.jpg"),
     lambda top: f"food101: {top}/images/waffles/1001002.jpg, listed in meta/test.txt, is missing"),
    ("country211", lambda top: _remove(top / "test" / "ZW"), lambda top:
     f"country211: {top}/test has 210 of the 211 country code folders; missing ZW (expected Country-211"),
    ("country211", lambda top: (top / "test" / "Zimbabwe").mkdir(),
     lambda top: f"country211: {top}/test/Zimbabwe is not one of the 211 country code folders"),
    ("oxford_pets", lambda top: _remove(top / "annotations" / "test.txt"),
     lambda top: f"oxford_pets: {top} has no annotations/test.txt (expected Oxford-IIIT Pets"),
    ("oxford_pets", lambda top: _remove(top / "images"), lambda top: f"oxford_pets: {top} has no images/"),
    ("imagenet_a", lambda top: _remove(top / "n01498041"), lambda top:
     f"imagenet_a: {top} has 199 of the 200 WordNet id folders; missing n01498041 (expected ImageNet-A"),
    ("imagenet_r", lambda top: _remove(top / "n01443537"),
     lambda top: f"imagenet_r: {top} has 199 of the 200 WordNet id folders"),
    ("imagenet:flat-txt", lambda top: _remove(top.parent / "val.txt"),
     lambda top: f"imagenet: {top} has neither WordNet-id class folders nor a label file"),
    ("imagenet:devkit", lambda top: _remove(top.parent / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"),
     lambda top: f"imagenet: {top.parent}/ILSVRC2012_devkit_t12/data has no meta.mat beside "
                 "ILSVRC2012_validation_ground_truth.txt"),
    ("imagenet:flat-csv", lambda top: _remove(top / "ILSVRC2012_val_00000006.JPEG"),
     lambda top: f"imagenet: {top}/ILSVRC2012_val_00000006.JPEG, labelled in {top.parents[3]}/LOC_val_solution.csv, "
                 "is missing"),
]


@pytest.mark.parametrize("case,damage,message", BROKEN, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BROKEN)])
def test_a_wrong_or_partial_layout_names_what_it_expected(case, damage, message, tmp_path):
    top, _ = WRITERS[case](tmp_path)
    damage(top)
    with pytest.raises(DatasetError) as e:
        plan_dataset("classification", {"name": case.split(":")[0], "source": str(top)})
    assert str(e.value).startswith(message(top)), str(e.value)


def test_preflight_names_the_missing_file(tmp_path):
    from ccs_ray.preflight import PreflightError, preflight
    from ccs_ray.spec import load_spec

    top, _ = write_cifar10(tmp_path / "data")
    _remove(top / "batches.meta")
    spec = load_spec({"name": "p", "stages": ["prune", "report"], "models": {"keys": ["ViT-B-32/none"]},
                      "prune": {"strategies": ["paper-high"], "reference_model": "b32-openai"},
                      "evals": {"classification": [{"name": "cifar10", "source": str(top)}]},
                      "results": {"root": str(tmp_path / "res")}})
    with pytest.raises(PreflightError) as e:
        preflight(spec, dry_run=True, cluster=False)
    assert e.value.problems == [
        f"evals.classification[0] 'cifar10': cifar10: {top} has no batches.meta (expected CIFAR-10's python "
        "version: test_batch and batches.meta)"]


def test_shipped_class_lists_agree():
    """Country-211's codes are sorted (its label order) and ImageNet-A/R's classes are ImageNet-1k's."""
    assert cn.COUNTRY211_CODES == sorted(set(cn.COUNTRY211_CODES)) and len(cn.COUNTRY211_CODES) == 211
    assert cn.IMAGENET_WNIDS == sorted(set(cn.IMAGENET_WNIDS)) and len(cn.IMAGENET) == 1000
    names = dict(zip(cn.IMAGENET_WNIDS, cn.IMAGENET, strict=True))
    for wnids, classes in ((cn.IMAGENET_A_WNIDS, cn.IMAGENET_A), (cn.IMAGENET_R_WNIDS, cn.IMAGENET_R)):
        assert wnids == sorted(wnids) and [names[w] for w in wnids] == classes
