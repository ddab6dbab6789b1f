"""MaxSkew@k: a hand-computed example, template averaging, and the FairFace-style loader."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray import max_skew_at_k
from ccs_ray.evals.bias import OCCUPATIONS, BIAS_TEMPLATES, occupation_max_skew, skew_at_k
from ccs_ray.evals.datasets import DatasetError, bias_attributes, bias_data, plan_bias


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


def test_occupation_average_over_templates():
    # 2-D embeddings at distinct angles (no score ties); cosine scores computed independently with numpy
    angles = np.array([0.1, 0.5, 0.9, 1.4, 1.7, 2.3, 2.8, 3.0])
    images = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1) * 3)
    groups = ["x", "y", "x", "x", "y", "y", "x", "y"]
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    value, group = occupation_max_skew(images, groups, prompts, k=3)
    expected, winners = [], []
    for p in prompts.numpy():
        top = np.argsort(-np.cos(angles - np.arctan2(p[1], p[0])))[:3]
        skews = {g: np.log((sum(groups[i] == g for i in top) / 3) / 0.5) for g in "xy" if any(groups[i] == g for i in top)}
        best = max(skews.values())
        expected.append(best)
        winners.append(min(g for g in skews if skews[g] == best))
    assert value == pytest.approx(np.mean(expected))
    assert all(v in (pytest.approx(np.log(4 / 3)), pytest.approx(np.log(2))) for v in expected)
    top_count = max(winners.count(g) for g in winners)
    assert group == min(g for g in winners if winners.count(g) == top_count)


def test_defaults():
    assert len(OCCUPATIONS) == 104 == len(set(OCCUPATIONS))
    assert BIAS_TEMPLATES == ["A {}", "A photo of a {}", "An image of a {}", "A picture of a {}"]


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
        for item, label, image in zip(shard.items, shard.labels, shard.images):
            index = int(item.rsplit("#", 1)[1])
            assert attrs[item] == {"colors": label} and label == classes[index % len(classes)]
            assert torch.equal(image, to_tensor(probe_image("colors", index, 3, 16)[0]))
    with pytest.raises(DatasetError, match="one attribute 'colors'"):
        bias_data({"name": "gen", "source": "probe://colors?n=15", "attributes": ["race"]})
    with pytest.raises(DatasetError, match="one probe task"):
        bias_data({"name": "gen", "source": "probe://?n=15"})
