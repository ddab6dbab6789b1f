"""Miniature copies of the bias and video evaluation sets, in their official layouts.

Each ``write_*`` writes a few small images (JPEG, 32-48 px: smooth gradients with a shape on them) or short videos
(PyAV, a few frames of 32 px) under ``root`` with the file names, folders, columns and label encodings of the
official release, and returns what a test needs to build the same set by hand: (image path or bytes,
attributes) or (video path, caption) per item, in the order the release's loader reads them.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from ccs_ray.evals.maxskew import FAIRFACE_LABELS, SOCIALCOUNTERFACTUALS_LABELS


def picture(i: int, size: int = 40) -> Image.Image:
    """A smooth two-colour gradient with an ellipse ("a face") on it; distinct for each ``i``."""
    rng = np.random.default_rng(i)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    pixels = (a * (1 - t) + b * t).repeat(size, axis=1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    c = int(rng.integers(size // 3, 2 * size // 3))
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.ellipse((c - size // 4, size // 5, c + size // 4, 4 * size // 5), fill=fill)
    return image


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def write_video(path: Path, seed: int, frames: int = 4, size: int = 32, fmt: str | None = None) -> Path:
    """A short mpeg4 video of ``frames`` frames whose picture drifts from one :func:`picture` to another."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    start, end = (np.asarray(picture(seed * 2 + j, size), dtype=np.float32) for j in range(2))
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("mpeg4", rate=6)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(frames):
            t = f / max(frames - 1, 1)
            frame = Image.fromarray((start * (1 - t) + end * t).astype(np.uint8))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_fairface(root: Path, n: int = 14, n_train: int = 3) -> list[tuple[Path, dict[str, str]]]:
    """FairFace (margin 0.25 images): ``fairface_label_val.csv`` and ``fairface_label_train.csv`` beside the image
    folders ``val/`` and ``train/``. Each CSV has the columns ``file,age,gender,race,service_test``; ``file`` is the
    image's path relative to the CSV's folder (``val/1.jpg``, numbered from 1), ``age`` one of nine bins (``0-2`` ..
    ``more than 70``), ``gender`` ``Male``/``Female``, ``race`` one of the seven labels (``White``, ``Black``,
    ``Latino_Hispanic``, ``East Asian``, ``Southeast Asian``, ``Indian``, ``Middle Eastern``), ``service_test``
    ``True``/``False``. Returns (image path, {age, gender, race}) per row of the val CSV."""
    root.mkdir(parents=True, exist_ok=True)
    races, genders, ages = FAIRFACE_LABELS["race"], FAIRFACE_LABELS["gender"], FAIRFACE_LABELS["age"]
    val: list[tuple[Path, dict[str, str]]] = []
    for split, count, offset in (("val", n, 0), ("train", n_train, 1000)):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = ["file,age,gender,race,service_test"]
        for i in range(count):
            labels = {"age": ages[(i * 5) % len(ages)], "gender": genders[i % 2], "race": races[i % len(races)]}
            path = root / split / f"{i + 1}.jpg"
            picture(offset + i, 48).save(path, "JPEG", quality=90)
            lines.append(f"{split}/{i + 1}.jpg,{labels['age']},{labels['gender']},{labels['race']},{i % 3 == 0}")
            if split == "val":
                val.append((path, labels))
        (root / f"fairface_label_{split}.csv").write_text("\n".join(lines) + "\n")
    return val


#: The counterfactual sets written: (attribute types, occupation, prompt prefix).
SOCIAL_SETS = [(("race", "gender"), "doctor", "A photo of"), (("physical", "gender"), "nurse", "A picture of"),
               (("physical", "race"), "pilot", "An image of")]
PHYSICAL = ["skinny", "young", "obese", "tattooed", "old"]


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def write_socialcounterfactuals(root: Path, shards: int = 2) -> list[tuple[bytes, dict[str, str]]]:
    """SocialCounterfactuals as published on Hugging Face (``Intel/SocialCounterfactuals``): the parquet shards
    ``data/train-000NN-of-000MM-<16 hex>.parquet`` (the release has 61), one row per image with the columns
    ``image`` (a struct of the JPEG ``bytes`` and its file name ``path``), ``a1_type``, ``a1``, ``a2_type``,
    ``a2`` (the two attributes the image's counterfactual set varies: ``race`` with ``White``, ``Black``,
    ``Indian``, ``Asian``, ``Middle Eastern``, ``Latino``; ``gender`` with ``male``, ``female``; ``physical`` with
    traits like ``skinny`` or ``tattooed``), ``counterfactual_set`` (the set's id: prompt, attribute types,
    occupation and seed rank) and ``caption`` (e.g. ``A photo of a Black female doctor``). Here three sets: race x
    gender, physical x gender and physical x race. Returns (JPEG bytes, {attribute type: value}) per row, in
    shard order."""
    root.mkdir(parents=True, exist_ok=True)
    values = {"race": SOCIALCOUNTERFACTUALS_LABELS["race"], "gender": SOCIALCOUNTERFACTUALS_LABELS["gender"],
              "physical": PHYSICAL}
    rows = []
    for (t1, t2), occupation, prefix in SOCIAL_SETS:
        set_id = f"{prefix.lower().replace(' ', '_')}_{t1}_{t2}_{occupation}_0"
        for a1 in values[t1]:
            for a2 in values[t2]:
                data = jpeg(picture(len(rows) + 500, 32))
                caption = f"{prefix} {_article(a1)} {a1} {a2} {occupation}"
                rows.append({"image": {"bytes": data, "path": f"{set_id}_{len(rows)}.jpg"}, "a1_type": t1, "a1": a1,
                             "a2_type": t2, "a2": a2, "counterfactual_set": set_id, "caption": caption})
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), *[(c, pa.string()) for c in ("a1_type", "a1", "a2_type", "a2",
                                                                          "counterfactual_set", "caption")]])
    (root / "data").mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // shards)
    for s in range(shards):
        part = rows[s * per:(s + 1) * per]
        pq.write_table(pa.Table.from_pylist(part, schema=schema),
                       root / "data" / f"train-{s:05d}-of-{shards:05d}-{s:016x}.parquet")
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    return [(r["image"]["bytes"], {r["a1_type"]: r["a1"], r["a2_type"]: r["a2"]}) for r in rows]


def write_msrvtt(root: Path, n: int = 4, folder: str = "videos/all") -> list[tuple[Path, str]]:
    """MSR-VTT's 1k-A test split as retrieval work keeps it: ``MSRVTT_JSFUSION_test.csv`` (columns
    ``key,vid_key,video_id,sentence``: ``ret<i>``, ``msr<number>``, ``video<number>`` from ``video7010``, one caption)
    and the videos ``video<number>.mp4`` in ``videos/all/`` (the release's archive; ``MSRVTT_Videos/`` in
    CLIP4Clip's). Returns (video path, caption) per row."""
    root.mkdir(parents=True, exist_ok=True)
    lines, out = ["key,vid_key,video_id,sentence"], []
    for i in range(n):
        vid = f"video{7010 + i}"
        caption = f"a person is cooking dish number {i} in a kitchen"
        lines.append(f"ret{i},msr{7010 + i},{vid},{caption}")
        out.append((write_video(root / folder / f"{vid}.mp4", 100 + i), caption))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(lines) + "\n")
    return out


def write_msvd(root: Path, n: int = 3, n_train: int = 2) -> list[tuple[Path, str]]:
    """MSVD with the annotations retrieval work uses (CLIP4Clip): ``raw-captions.pkl`` (a pickled dict: video id ->
    its captions, each a list of words), ``train_list.txt``, ``val_list.txt`` and ``test_list.txt`` (video ids, one a
    line), and the release's ``YouTubeClips/<youtube id>_<start>_<end>.avi``. Returns (video path, first caption)
    per test id, in ``test_list.txt`` order."""
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"{chr(65 + i)}x{i}9-Q_{i * 7}_{i * 7 + 5}" for i in range(n + n_train)]
    captions = {v: [["a", "man", "plays", "instrument", str(i)], ["someone", "is", "playing", "music"]]
                for i, v in enumerate(ids)}
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    test, train = ids[n_train:], ids[:n_train]
    (root / "train_list.txt").write_text("\n".join(train) + "\n")
    (root / "val_list.txt").write_text(train[0] + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    for i, v in enumerate(ids):
        write_video(root / "YouTubeClips" / f"{v}.avi", 200 + i, fmt="avi")
    return [(root / "YouTubeClips" / f"{v}.avi", " ".join(captions[v][0])) for v in test]


def write_didemo(root: Path, n: int = 3, transcoded: bool = False) -> list[tuple[Path, str]]:
    """DiDeMo's test annotations ``test_data.json``: a JSON list of moments, each an object with ``annotation_id``,
    ``description``, ``video`` (the Flickr file name, e.g. ``<user>_<photo id>_<secret>.mov``), ``times`` (each
    annotator's [start, end] 5-second segment indices), ``download_link`` and ``num_segments``; a video has several
    moments. The videos are in ``videos/``, named as ``video`` (``transcoded``: ``<video>.mp4``, as kept after
    converting to MP4). Returns (video path, first description) per video, in file order."""
    root.mkdir(parents=True, exist_ok=True)
    moments, out = [], []
    for i in range(n):
        video = f"{1000 + i}@N0{i}_{5000 + i}_{i:010x}.mov"
        descriptions = [f"the dog jumps over log {i}", f"camera pans to the left {i}"]
        for j, description in enumerate(descriptions):
            moments.append({"annotation_id": len(moments), "description": description, "video": video,
                            "times": [[j, j], [j, j + 1], [j, j]], "download_link": f"https://www.flickr.com/{video}",
                            "num_segments": 6})
        name = f"{video}.mp4" if transcoded else video
        out.append((write_video(root / "videos" / name, 300 + i, fmt="mp4" if transcoded else "mov"), descriptions[0]))
    (root / "test_data.json").write_text(json.dumps(moments))
    return out
