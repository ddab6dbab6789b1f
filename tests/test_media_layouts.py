"""The bias and video presets read their datasets' official layouts (miniature copies from tests/miniature_media.py):
the attributes and captions in the release's encodings, and the same MaxSkew and R@k as a hand-built source of the
same images or videos; a wrong or partial layout is a DatasetError (and one preflight line) naming what it
expected."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from miniature_media import write_didemo, write_fairface, write_msrvtt, write_msvd, write_socialcounterfactuals

from ccs_ray.ablate import Ablation
from ccs_ray.evals.datasets import DatasetError, plan_dataset
from ccs_ray.evals.kinds import EVAL_KINDS
from ccs_ray.evals.maxskew import FAIRFACE_LABELS, FAIRFACE_RACE_GROUPS, SOCIALCOUNTERFACTUALS_LABELS
from ccs_ray.texts import TextEncoder

OCCUPATIONS = ["doctor", "nurse", "pilot"]


def evaluate(kind: str, entry: dict, tiny_model) -> tuple:
    """(inputs the dataset's plan read, its table rows) through the prune stage's evaluation of ``kind``, with the
    tiny random-init model unablated."""
    model, preprocess = tiny_model
    eval_kind = EVAL_KINDS[kind]
    data, shards, inputs = plan_dataset(kind, entry)
    with torch.no_grad():
        text = eval_kind.text_side(model, TextEncoder("ccs-tiny/none", "fp32", model=model), data, inputs)
        results = [eval_kind.encode(data, s, eval_kind.unit_text(text), preprocess,
                                    lambda x: model.encode_image(x)[None])[0] for s in shards]
    return inputs, eval_kind.rows([Ablation("none", "none")], data, results, text)


def skews(rows) -> list[tuple]:
    return [(r["attribute"], r["occupation"], r["maxskew"], r["max_group"]) for r in rows.bias]


def test_fairface_folder_and_csv_give_the_hand_built_manifest_results(tmp_path, tiny_model):
    images = write_fairface(tmp_path / "fairface")
    assert all(labels[a] in FAIRFACE_LABELS[a] for _, labels in images for a in labels)
    assert {labels["race"] for _, labels in images} == set(FAIRFACE_LABELS["race"])  # all seven
    expected = {str(p): {"race": FAIRFACE_RACE_GROUPS[lab["race"]], "gender": lab["gender"]} for p, lab in images}
    hand = tmp_path / "manifest.csv"
    hand.write_text("uri,race,gender\n" + "".join(f"{p},{a['race']},{a['gender']}\n" for p, a in expected.items()))
    settings = dict(occupations=OCCUPATIONS, k=5, shard_size=4)
    by_hand = evaluate("bias", dict(name="by-hand", source=str(hand), **settings), tiny_model)
    assert by_hand[0]["attributes"] == expected
    for source in (tmp_path / "fairface", tmp_path / "fairface" / "fairface_label_val.csv"):
        inputs, rows = evaluate("bias", dict(name="fairface", source=str(source), **settings), tiny_model)
        assert inputs["attributes"] == expected
        assert skews(rows) == skews(by_hand[1]) and len(rows.bias) == 2 * len(OCCUPATIONS)


def test_socialcounterfactuals_parquet_shards_give_the_hand_built_manifest_results(tmp_path, tiny_model):
    images = write_socialcounterfactuals(tmp_path / "sc")
    for _, labels in images:
        assert all(labels[a] in SOCIALCOUNTERFACTUALS_LABELS[a] for a in ("race", "gender") if a in labels)
    folder = tmp_path / "by-hand"
    folder.mkdir()
    lines = ["uri,race,gender,physical"]
    for i, (data, labels) in enumerate(images):
        (folder / f"{i}.jpg").write_bytes(data)
        lines.append(",".join([str(folder / f"{i}.jpg")] + [labels.get(a, "") for a in ("race", "gender", "physical")]))
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    settings = dict(occupations=OCCUPATIONS, k=10, shard_size=20, attributes=["race", "gender", "physical"])
    by_hand = evaluate("bias", dict(name="by-hand", source=str(folder / "manifest.csv"), **settings), tiny_model)
    shards = sorted((tmp_path / "sc" / "data").glob("*.parquet"))
    names = [[row["path"] for row in pq.read_table(s).column("image").to_pylist()] for s in shards]
    items = [f"{s}#{name}" for s, rows in zip(shards, names, strict=True) for name in rows]  # the reader's names
    for source in (tmp_path / "sc", tmp_path / "sc" / "data"):
        inputs, rows = evaluate("bias", dict(name="socialcounterfactuals", source=str(source), **settings), tiny_model)
        assert inputs["attributes"] == {item: labels for item, (_, labels) in zip(items, images, strict=True)}
        assert skews(rows) == skews(by_hand[1]) and len(rows.bias) == 3 * len(OCCUPATIONS)
    one = plan_dataset("bias", {"name": "socialcounterfactuals", "source": str(shards[1])})[2]["attributes"]
    assert list(one) == [f"{shards[1]}#{name}" for name in names[1]]


VIDEO_SETS = {  # preset -> (writer, its keyword arguments, the preset's frames per video)
    "msrvtt": (write_msrvtt, {}, 12), "msrvtt-clip4clip": (write_msrvtt, {"folder": "MSRVTT_Videos"}, 12),
    "msvd": (write_msvd, {}, 12), "didemo": (write_didemo, {}, 32),
    "didemo-mp4": (write_didemo, {"transcoded": True}, 32),
}


@pytest.mark.parametrize("case", VIDEO_SETS)
def test_video_preset_gives_the_captions_and_recall_of_a_hand_built_folder(tmp_path, tiny_model, case):
    writer, kwargs, frames = VIDEO_SETS[case]
    preset = case.split("-")[0]
    videos = writer(tmp_path / preset, **kwargs)
    folder = tmp_path / "by-hand"
    folder.mkdir()
    lines = ["video,caption"]
    for path, caption in videos:
        video_id = path.name.removesuffix(".mp4") if case == "didemo-mp4" else path.stem if preset != "didemo" \
            else path.name
        shutil.copy(path, folder / (video_id + ("" if preset == "didemo" else path.suffix)))
        lines.append(f"{video_id},{caption}")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    by_hand = evaluate("video", {"name": "by-hand", "source": str(folder), "captions": "captions.csv", "frames": 4},
                       tiny_model)
    assert plan_dataset("video", {"name": preset, "source": str(tmp_path / preset)})[0].frames == frames
    inputs, rows = evaluate("video", {"name": preset, "source": str(tmp_path / preset), "frames": 4, "shard_size": 2},
                            tiny_model)
    assert inputs["captions"] == by_hand[0]["captions"] == [(line.split(",")[0], line.split(",", 1)[1])
                                                           for line in lines[1:]]
    assert {r["metric"]: r["value"] for r in rows.evals} == {r["metric"]: r["value"] for r in by_hand[1].evals}
    assert {r["metric"] for r in rows.evals} >= {"R@1", "R@5"} and rows.evals[0]["n"] == len(videos)


def _drop_column(csv_path, column: str) -> None:
    lines = csv_path.read_text().splitlines()
    i = lines[0].split(",").index(column)
    csv_path.write_text("\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != i) for line in lines))


def _relabel(csv_path) -> None:
    csv_path.write_text(csv_path.read_text().replace(",White,", ",white,"))


def _drop_parquet_column(shard_folder, column: str) -> None:
    for shard in shard_folder.glob("*.parquet"):
        pq.write_table(pq.read_table(shard).drop_columns([column]), shard)


BROKEN = {  # case -> (kind, preset, writer, what to break, the error's text)
    "fairface: no label CSV": ("bias", "fairface", write_fairface,
                               lambda r: (r / "fairface_label_val.csv").unlink(),
                               "fairface: no fairface_label_val.csv in {root} (expected FairFace: the label CSV"),
    "fairface: no val/": ("bias", "fairface", write_fairface, lambda r: shutil.rmtree(r / "val"),
                          "fairface: no image {root}/val/1.jpg (the first of {root}/fairface_label_val.csv"),
    "fairface: no race column": ("bias", "fairface", write_fairface,
                                 lambda r: _drop_column(r / "fairface_label_val.csv", "race"),
                                 "fairface: {root}/fairface_label_val.csv has no column 'race'"),
    "fairface: a label not FairFace's": ("bias", "fairface", write_fairface,
                                         lambda r: _relabel(r / "fairface_label_val.csv"),
                                         "race 'white' is not one of the release's labels (White, Black"),
    "socialcounterfactuals: no data/": ("bias", "socialcounterfactuals", write_socialcounterfactuals,
                                        lambda r: shutil.rmtree(r / "data"),
                                        "socialcounterfactuals: no data in {root} (expected SocialCounterfactuals"),
    "socialcounterfactuals: no a2_type": ("bias", "socialcounterfactuals", write_socialcounterfactuals,
                                          lambda r: _drop_parquet_column(r / "data", "a2_type"),
                                          "has no column 'a2_type'"),
    "msrvtt: no CSV": ("video", "msrvtt", write_msrvtt, lambda r: (r / "MSRVTT_JSFUSION_test.csv").unlink(),
                       "msrvtt: no MSRVTT_JSFUSION_test.csv in {root} (expected MSR-VTT"),
    "msrvtt: no videos": ("video", "msrvtt", write_msrvtt, lambda r: shutil.rmtree(r / "videos"),
                          "msrvtt: no videos/all/ or MSRVTT_Videos/ in {root}"),
    "msrvtt: no sentence column": ("video", "msrvtt", write_msrvtt,
                                   lambda r: _drop_column(r / "MSRVTT_JSFUSION_test.csv", "sentence"),
                                   "{root}/MSRVTT_JSFUSION_test.csv: rows need columns 'video_id' and 'sentence'"),
    "msvd: no test list": ("video", "msvd", write_msvd, lambda r: (r / "test_list.txt").unlink(),
                           "msvd: no test_list.txt in {root} (expected MSVD"),
    "msvd: no captions": ("video", "msvd", write_msvd, lambda r: (r / "raw-captions.pkl").unlink(),
                          "msvd: no raw-captions.pkl in {root}"),
    "msvd: no YouTubeClips": ("video", "msvd", write_msvd, lambda r: shutil.rmtree(r / "YouTubeClips"),
                              "msvd: no YouTubeClips/ in {root}"),
    "didemo: no test_data.json": ("video", "didemo", write_didemo, lambda r: (r / "test_data.json").unlink(),
                                  "didemo: no test_data.json in {root} (expected DiDeMo"),
    "didemo: no description": ("video", "didemo", write_didemo,
                               lambda r: (r / "test_data.json").write_text(json.dumps(
                                   [{k: v for k, v in m.items() if k != "description"}
                                    for m in json.loads((r / "test_data.json").read_text())])),
                               "rows need columns 'video' and 'description'"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_wrong_or_partial_layout_names_what_it_expected(tmp_path, case):
    kind, preset, writer, breaks, message = BROKEN[case]
    root = tmp_path / preset
    root.mkdir()
    writer(root, **({"n": 3} if writer is write_msrvtt else {}))
    plan_dataset(kind, {"name": preset, "source": str(root)})  # complete, it plans
    breaks(root)
    with pytest.raises(DatasetError) as e:
        plan_dataset(kind, {"name": preset, "source": str(root)})
    assert message.format(root=root) in str(e.value)


def test_a_partial_layout_is_one_preflight_line(tmp_path, monkeypatch):
    from test_preflight import SMOKE

    from ccs_ray.preflight import PreflightError, preflight
    from ccs_ray.spec import load_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_msrvtt(tmp_path / "msrvtt", n=2)
    (tmp_path / "msrvtt" / "MSRVTT_JSFUSION_test.csv").unlink()
    spec = load_spec(SMOKE, [f"evals.video=[{{name = \"msrvtt\", source = {json.dumps(str(tmp_path / 'msrvtt'))}}}]",
                             f"results.root={json.dumps(str(tmp_path / 'results'))}"])
    with pytest.raises(PreflightError) as e:
        preflight(spec, dry_run=True, cluster=False)
    assert e.value.problems == [f"evals.video[0] 'msrvtt': msrvtt: no MSRVTT_JSFUSION_test.csv in {tmp_path}/msrvtt "
                                "(expected MSR-VTT: MSRVTT_JSFUSION_test.csv (the 1k-A test split) and the videos in "
                                "videos/all/ or MSRVTT_Videos/)"]
