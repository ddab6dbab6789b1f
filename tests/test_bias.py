"""MaxSkew@k: a hand-computed example, both ways of combining templates against numpy, and the loaders."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray import max_skew_at_k, max_skew_over_templates
from ccs_ray.evals.datasets import DatasetError, bias_attributes, bias_data, plan_bias
from ccs_ray.evals.maxskew import BIAS_TEMPLATES, OCCUPATIONS, occupation_max_skew, skew_at_k


def test_max_skew_hand_computed():
    # 10 images: 6 of group A, 4 of group B. Scores put images 0..4 on top: A, A, B, A, A.
    groups = ["A", "A", "B", "A", "A", "B", "A", "B", "A", "B"]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    # top-5 shares: A 4/5, B 1/5; dataset shares: A 6/10, B 4/10
    # skew_A = ln(0.8 / 0.6) = ln(4/3) ~ 0.2877; skew_B = ln(0.2 / 0.4) = ln(1/2)
    skews = skew_at_k(scores, groups, k=5)
    assert skews["A"] == pytest.approx(math.log(4 / 3)) and skews["B"] == pytest.approx(math.log(0.5))
    assert max_skew_at_k(scores, groups, k=5) == pytest.approx(0.28768207245178085)
    # top-2 are both A: skew_A = ln(1 / 0.6), B is absent (-inf) and is ignored
    assert skew_at_k(scores, groups, k=2)["B"] == -math.inf
    assert max_skew_at_k(scores, groups, k=2) == pytest.approx(math.log(1 / 0.6))
    # k = n: shares equal the dataset's, skew 0 for everyone
    assert max_skew_at_k(scores, groups, k=10) == pytest.approx(0.0)
    # ties keep image order: all scores equal -> top-2 are images 0 and 1 (both A)
    assert max_skew_at_k([1.0] * 10, groups, k=2) == pytest.approx(math.log(1 / 0.6))
    with pytest.raises(ValueError, match="between 1"):
        max_skew_at_k(scores, groups, k=11)
    with pytest.raises(ValueError, match="group labels"):
        max_skew_at_k(scores, groups[:3])


def test_occupation_skew_mean_over_templates():
    # 2-D embeddings at distinct angles (no score ties); cosine scores computed independently with numpy
    angles = np.array([0.1, 0.5, 0.9, 1.4, 1.7, 2.3, 2.8, 3.0])
    images = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1) * 3)
    groups = ["x", "y", "x", "x", "y", "y", "x", "y"]
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    value, group = occupation_max_skew(images, groups, prompts, k=3, combine="skew_mean")
    expected, winners = [], []
    for p in prompts.numpy():
        top = np.argsort(-np.cos(angles - np.arctan2(p[1], p[0])))[:3]
        skews = {g: np.log((sum(groups[i] == g for i in top) / 3) / 0.5)
                 for g in "xy" if any(groups[i] == g for i in top)}
        best = max(skews.values())
        expected.append(best)
        winners.append(min(g for g in skews if skews[g] == best))
    assert value == pytest.approx(np.mean(expected))
    assert all(v in (pytest.approx(np.log(4 / 3)), pytest.approx(np.log(2))) for v in expected)
    top_count = max(winners.count(g) for g in winners)
    assert group == min(g for g in winners if winners.count(g) == top_count)


def _numpy_max_skew(x: np.ndarray, groups: np.ndarray, text: np.ndarray, k: int) -> float:
    """MaxSkew@k of one [D] text direction, straight from the definition (Geyik et al., 2019)."""
    scores = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (text / np.linalg.norm(text))
    top = groups[np.argsort(-scores, kind="stable")[:k]]
    return max(np.log(np.mean(top == g) / np.mean(groups == g)) for g in np.unique(groups) if np.any(top == g))


@pytest.mark.parametrize("seed", range(5))
def test_max_skew_over_templates_both_combinations_against_numpy(seed):
    rng = np.random.default_rng(seed)
    n, d, t, k = 300, 16, 4, 10
    groups = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    offsets = {g: rng.normal(size=d) for g in "abc"}  # known groups that shift the embeddings apart
    x = np.stack([offsets[g] for g in groups]) + rng.normal(size=(n, d))
    texts = rng.normal(size=(t, d)) * rng.uniform(0.5, 3, size=(t, 1))  # unequal norms: normalising matters
    units = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    published = _numpy_max_skew(x, groups, units.mean(0), k)  # mean of normalised embeddings, renormalised
    per_template = np.mean([_numpy_max_skew(x, groups, u, k) for u in units])
    args = (torch.tensor(x), list(groups), torch.tensor(texts))
    assert max_skew_over_templates(*args, k=k) == pytest.approx(published, abs=1e-12)
    assert max_skew_over_templates(*args, k=k, combine="embedding_mean") == pytest.approx(published, abs=1e-12)
    assert max_skew_over_templates(*args, k=k, combine="skew_mean") == pytest.approx(per_template, abs=1e-12)
    assert max_skew_over_templates(torch.tensor(x), list(groups), torch.tensor(texts[:1]), k=k) == \
        pytest.approx(_numpy_max_skew(x, groups, texts[0], k), abs=1e-12)  # one template: both are the same
    with pytest.raises(ValueError, match="allowed: embedding_mean, skew_mean"):
        max_skew_over_templates(*args, k=k, combine="mean")


def test_the_two_combinations_differ():
    """Not a rounding difference: over many occupations the two combinations disagree."""
    rng = np.random.default_rng(7)
    groups = list(rng.choice(["a", "b"], size=200))
    x = torch.tensor(rng.normal(size=(200, 8)))
    values = [[max_skew_over_templates(x, groups, torch.tensor(rng.normal(size=(4, 8))), k=10, combine=c)
               for c in ("embedding_mean", "skew_mean")] for _ in range(20)]
    assert sum(abs(a - b) > 1e-9 for a, b in values) >= 10


def test_defaults():
    assert len(OCCUPATIONS) == 104 == len(set(OCCUPATIONS))
    assert BIAS_TEMPLATES == ["A {}", "A photo of {}", "A picture of {}", "An image of {}"]  # as published
    data = bias_data({"name": "b", "source": "probe://colors?n=20"})
    assert data.templates == BIAS_TEMPLATES and data.combine == "embedding_mean"
    assert bias_data({"name": "b", "source": "probe://colors?n=20", "combine": "skew_mean"}).combine == "skew_mean"
    with pytest.raises(DatasetError,
                       match="combine: 'average' is not allowed; expected 'embedding_mean' or 'skew_mean'"):
        bias_data({"name": "b", "source": "probe://colors?n=20", "combine": "average"})


def test_fairface_manifest_merges_asian_groups(tmp_path):
    (tmp_path / "val").mkdir()
    races = ["East Asian", "Southeast Asian", "White", "Black", "Indian", "Middle Eastern", "Latino_Hispanic"]
    lines = ["file,age,gender,race,service_test"]
    for i, race in enumerate(races):
        Image.new("RGB", (12, 12), (i * 30, 80, 120)).save(tmp_path / "val" / f"{i}.jpg")
        lines.append(f"val/{i}.jpg,20-29,{'Male' if i % 2 else 'Female'},{race},True")
    (tmp_path / "fairface_label_val.csv").write_text("\n".join(lines) + "\n")
    data = bias_data({"name": "fairface", "source": str(tmp_path / "fairface_label_val.csv"), "shard_size": 4})
    assert data.uri_column == "file" and data.attributes == ["race", "gender"]
    attrs = bias_attributes(data)
    assert len(attrs) == 7
    assert sorted({a["race"] for a in attrs.values()}) == ["Asian", "Black", "Indian", "Latino_Hispanic",
                                                            "Middle Eastern", "White"]
    assert sorted(a["gender"] for a in attrs.values()) == ["Female"] * 4 + ["Male"] * 3
    shards = plan_bias(data)
    assert [len(s.items) for s in shards] == [4, 3] and all(u in attrs for s in shards for u, _ in s.items)
    with pytest.raises(DatasetError, match="no values in column"):
        bias_attributes(bias_data({"name": "b", "source": str(tmp_path / "fairface_label_val.csv"),
                                   "uri_column": "file", "attributes": ["religion"]}))


def test_generated_bias_set_from_the_probe():
    from ccs_ray.sources import load_shard, probe_classes
    from ccs_ray.sources.probe import probe_image

    data = bias_data({"name": "gen", "source": "probe://colors?n=15&seed=3&size=16", "shard_size": 6, "k": 4})
    assert data.attributes == ["colors"]
    attrs = bias_attributes(data)
    shards = plan_bias(data)
    assert [s.items for s in shards] == [(0, 6), (6, 12), (12, 15)]
    to_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32))  # noqa: E731
    loaded = [load_shard(s, to_tensor) for s in shards]
    items = [i for shard in loaded for i in shard.items]
    assert len(items) == 15 and set(items) == set(attrs)  # every image the prune stage reads has its group
    classes = probe_classes("colors")
    for shard in loaded:
        for item, label, image in zip(shard.items, shard.labels, shard.images, strict=True):
            index = int(item.rsplit("#", 1)[1])
            assert attrs[item] == {"colors": label} and label == classes[index % len(classes)]
            assert torch.equal(image, to_tensor(probe_image("colors", index, 3, 16)[0]))
    with pytest.raises(DatasetError, match="one attribute 'colors'"):
        bias_data({"name": "gen", "source": "probe://colors?n=15", "attributes": ["race"]})
    with pytest.raises(DatasetError, match="one probe task"):
        bias_data({"name": "gen", "source": "probe://?n=15"})
