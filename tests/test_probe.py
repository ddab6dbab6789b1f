"""The generated probe set: deterministic, correctly labelled, sharded like any other source."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ccs_ray.sources import SourceError, load_shard, plan_shards, probe_class_texts, probe_classes, read_shard
from ccs_ray.sources.probe import COLORS, TASKS, parse_probe_uri, probe_image
from ccs_ray.spec import DataConfig


def records(uri: str, shard_size: int = 256, limit=None):
    return [r for s in plan_shards(DataConfig(source=uri, shard_size=shard_size, limit=limit)) for r in read_shard(s)]


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = records("probe://?n=12&seed=3&size=48")
    assert [r.data for r in a] == [r.data for r in records("probe://?n=12&seed=3&size=48")]
    b = records("probe://?n=12&seed=4&size=48")
    assert all(x.data != y.data for x, y in zip(a, b, strict=True))
    assert [r.label for r in a] == [r.label for r in b]  # labels depend on the index only


def test_sharding_does_not_change_the_images():
    whole = records("probe://shapes?n=10&seed=1&size=32")
    sharded = records("probe://shapes?n=10&seed=1&size=32", shard_size=3)
    assert [(r.item, r.data, r.label) for r in whole] == [(r.item, r.data, r.label) for r in sharded]
    shards = plan_shards(DataConfig(source="probe://shapes?n=10&seed=1&size=32", shard_size=3))
    assert [s.items for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert len({s.fingerprint for s in shards}) == 4
    assert len(records("probe://shapes?n=10&size=32", limit=4)) == 4


@pytest.mark.parametrize("task", list(TASKS))
def test_task_labels_are_balanced_classes(task):
    classes = probe_classes(task)
    recs = records(f"probe://{task}?n={2 * len(classes)}&seed=0&size=32")
    assert [r.label for r in recs] == classes * 2
    assert len(probe_class_texts(task)) == len(classes) and len(set(probe_class_texts(task))) == len(classes)


def test_mixed_labels_name_task_and_class():
    recs = records("probe://?n=10&size=32")
    assert [r.label for r in recs[:5]] == [f"{t}:{c[0]}" for t, c in TASKS.items()]
    assert set(r.label for r in recs) <= set(probe_classes("mixed"))


def test_colors_are_the_labelled_color():
    """The most common non-background pixel color is the labelled one (background is kept far from it)."""
    for i, name in enumerate(COLORS):
        image, label = probe_image("colors", i, seed=0, size=64)
        arr = np.asarray(image).reshape(-1, 3).astype(int)
        dist = np.linalg.norm(arr - np.array(COLORS[name]), axis=1)
        assert label == name and (dist < 30).mean() > 0.03, name


def count_blobs(mask: np.ndarray) -> int:
    """Connected regions of True pixels, after a 1-pixel dilation joins diagonal-only neighbours."""
    grown = mask.copy()
    for dy, dx in [(-1, 0), (1, 0), (0, -1), (0, 1)]:
        grown |= np.roll(mask, (dy, dx), axis=(0, 1))
    image = Image.fromarray(grown.astype(np.uint8) * 255).copy()  # a writable copy, not a view
    n = 0
    while (ys := np.flatnonzero(np.asarray(image))).size:
        y, x = divmod(int(ys[0]), mask.shape[1])
        ImageDraw.floodfill(image, (x, y), 0)
        n += 1
    return n


def test_counts_draw_that_many_objects():
    """Blobs of pixels far from the background (the median border color) = the labelled count."""
    for i in range(18):
        image, label = probe_image("counts", i, seed=2, size=96)
        arr = np.asarray(image).astype(int)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        far = np.linalg.norm(arr - np.median(border, axis=0), axis=-1) > 70
        assert count_blobs(far) == ["one", "two", "three", "four", "five", "six"].index(label) + 1, (i, label)


def test_probe_images_decode_like_files(tiny_model):
    _, preprocess = tiny_model
    (shard,) = plan_shards(DataConfig(source="probe://letters?n=5&size=40&format=jpeg"))
    loaded = load_shard(shard, preprocess)
    assert loaded.errors == [] and loaded.labels == list("ABCDE") and loaded.images.shape == (5, 3, 32, 32)
    first = Image.open(io.BytesIO(next(iter(read_shard(shard))).data))
    assert first.format == "JPEG" and first.size == (40, 40)


def test_bad_probe_uris():
    for uri, msg in [("probe://planets?n=3", "unknown probe task 'planets'"), ("probe://?n=x", "must be integers"),
                     ("probe://?n=3&colour=1", "unknown probe parameter"), ("probe://?n=0", "n >= 1")]:
        with pytest.raises(SourceError, match=msg):
            parse_probe_uri(uri)
    with pytest.raises(ValueError, match="unknown probe task"):
        probe_classes("planets")
    assert parse_probe_uri("probe://mixed?n=3").uri == "probe://?n=3&seed=0&size=224&format=png"
