"""Zero-shot classification: classifier, metrics, presets and dataset loaders."""

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray.evals import classnames as cn
from ccs_ray.evals.datasets import (
    CLASSIFICATION_PRESETS,
    DatasetError,
    classification_data,
    load_classification,
    plan_classification,
)
from ccs_ray.evals.zeroshot import accuracy_metrics, classifier_weights, top_predictions, zeroshot_logits


def test_classifier_weights_are_renormalised_template_means(tiny_model):
    model = tiny_model[0]
    classes, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a drawing of a {}."]
    w = classifier_weights(model, classes, templates)
    with torch.no_grad():
        per = [model.encode_text(model.tokenizer([t.format(c) for c in classes])) for t in templates]
    mean = sum(p / p.norm(dim=-1, keepdim=True) for p in per) / len(per)
    torch.testing.assert_close(w, (mean / mean.norm(dim=-1, keepdim=True)).T, rtol=1e-5, atol=1e-6)
    images = torch.randn(5, w.shape[0])
    torch.testing.assert_close(zeroshot_logits(images, w), 100 * torch.nn.functional.normalize(images, dim=-1) @ w)
    with pytest.raises(ValueError, match="exactly one"):
        classifier_weights(model, classes, ["no slot"])


def test_accuracy_metrics_by_hand():
    # 6 images, 6 classes; true labels and logits built so the ranks are known
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    logits = torch.zeros(6, 6)
    logits[0, 0] = 9  # rank 1: top1 hit
    logits[1, [1, 2, 3, 4, 0]] = torch.tensor([9., 8, 7, 6, 5])  # rank 5: top5 hit only
    logits[2, [0, 2, 3, 4, 5, 1]] = torch.tensor([9., 8, 7, 6, 5, 4])  # rank 6: miss
    logits[3, 2] = 9  # hit
    logits[4, [0, 2]] = torch.tensor([9., 8])  # rank 2
    logits[5, 2] = 9  # hit
    m = accuracy_metrics(top_predictions(logits), labels, ["a", "b", "c", "d", "e", "f"])
    assert m["top1"] == pytest.approx(100 * 3 / 6)
    assert m["top5"] == pytest.approx(100 * 5 / 6)
    assert m["acc:a"] == pytest.approx(50) and m["acc:b"] == 0 and m["acc:c"] == pytest.approx(100 * 2 / 3)
    assert "acc:d" not in m  # no image of class d
    # fewer than 5 classes: top5 covers every class
    assert accuracy_metrics(top_predictions(logits[:, :3]), labels, list("abc"))["top5"] == 100


def test_presets():
    assert len(cn.CIFAR10) == 10 and len(cn.CIFAR100) == 100 and len(cn.FOOD101) == 101
    assert len(cn.COUNTRY211) == 211 and len(cn.OXFORD_PETS) == 37
    assert len(cn.IMAGENET_A) == len(cn.IMAGENET_A_WNIDS) == 200 and len(cn.IMAGENET_R) == 200
    assert len(cn.CIFAR_TEMPLATES) == 18 and len(cn.IMAGENET_TEMPLATES) == 80
    assert all(t.count("{}") == 1 for p in CLASSIFICATION_PRESETS.values() for t in p.templates)
    d = classification_data({"name": "CIFAR-10-objects"})
    assert d.classnames == ["airplane", "automobile", "ship", "truck"] and d.source == "torchvision://CIFAR10"
    assert d.label_index["8"] == 2 and "3" in d.excluded  # CIFAR index 8 is ship; 3 (cat) is left out
    a = classification_data({"name": "imagenet-a", "source": "/data/imagenet-a"})
    assert a.label_index["n01498041"] == 0 and a.classnames[0] == "stingray"
    with pytest.raises(DatasetError, match="presets"):
        classification_data({"name": "x", "source": "/d", "preset": "mnist"})
    with pytest.raises(DatasetError, match="sorce: unknown key; allowed here: classnames"):
        classification_data({"name": "cifar10", "sorce": "/d"})
    with pytest.raises(DatasetError, match="no class names"):
        classification_data({"name": "mine", "source": "/d"})


# The prompt templates the paper used, as published with CLIP (openai/CLIP data/prompts.md for CIFAR,
# Food-101 and Country211; notebooks/Prompt_Engineering_for_ImageNet.ipynb for ImageNet-A/R).
PUBLISHED_CIFAR = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
]
PUBLISHED_FOOD101 = ["a photo of {}, a type of food."]
PUBLISHED_COUNTRY211 = [
    "a photo i took in {}.", "a photo i took while visiting {}.", "a photo from my home country of {}.",
    "a photo from my visit to {}.", "a photo showing the country of {}.",
]
PUBLISHED_IMAGENET = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]


@pytest.mark.parametrize("preset,published", [
    ("cifar10", PUBLISHED_CIFAR), ("cifar100", PUBLISHED_CIFAR), ("cifar10_objects", PUBLISHED_CIFAR),
    ("food101", PUBLISHED_FOOD101), ("country211", PUBLISHED_COUNTRY211),
    ("imagenet_a", PUBLISHED_IMAGENET), ("imagenet_r", PUBLISHED_IMAGENET),
])
def test_preset_templates_are_the_published_ones(preset, published):
    counts = {"cifar10": 18, "cifar100": 18, "cifar10_objects": 18, "food101": 1, "country211": 5, "imagenet_a": 80,
              "imagenet_r": 80}  # as the paper states them
    assert len(published) == len(set(published)) == counts[preset]
    assert CLASSIFICATION_PRESETS[preset].templates == published


def write_image_folder(root, counts):
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_image_folder_subset_and_unknown_labels(tmp_path, tiny_model):
    preprocess = tiny_model[1]
    write_image_folder(tmp_path, {"ship": 2, "airplane": 3, "cat": 2, "spaceship": 1})
    d = classification_data({"name": "cifar10_objects", "source": str(tmp_path), "shard_size": 3})
    shards = plan_classification(d)
    assert len(shards) == 3  # 8 files / 3
    labels, errors = [], []
    for s in shards:
        images, y, e = load_classification(d, s, preprocess)
        assert images.shape[0] == len(y) and (len(y) == 0 or images.shape[1:] == (3, 32, 32))
        labels += y.tolist()
        errors += e
    assert sorted(labels) == [0, 0, 0, 2, 2]  # airplane x3, ship x2; cats dropped silently
    assert [e["reason"] for e in errors] == ["label"] and "spaceship" in errors[0]["detail"]


def test_probe_and_torchvision_by_name(tiny_model):
    preprocess = tiny_model[1]
    d = classification_data({"name": "shapes", "source": "probe://shapes?n=16&seed=1&size=32", "shard_size": 16})
    images, y, errors = load_classification(d, plan_classification(d)[0], preprocess)
    assert images.shape == (16, 3, 32, 32) and not errors
    assert [d.classnames[i] for i in y] == [d.classnames[i % len(d.classnames)] for i in range(16)]
    fake = classification_data({"name": "fake", "source": "torchvision://FakeData", "classnames": list("abcd"),
                                "options": {"size": 10, "image_size": [3, 24, 24], "num_classes": 4}, "shard_size": 6})
    shards = plan_classification(fake)
    assert [s.items for s in shards] == [(0, 6), (6, 10)]
    images, y, _ = load_classification(fake, shards[1], preprocess)
    assert images.shape == (4, 3, 32, 32) and all(0 <= i < 4 for i in y.tolist())
    with pytest.raises(DatasetError, match="no dataset"):
        plan_classification(classification_data({"name": "x", "source": "torchvision://NoSuchSet",
                                                 "classnames": ["a"]}))
