"""CLIP text embeddings: the truncated context equals open_clip's encode_text on full tokens; TextEncoder encodes
each text once per (template, normalize) and persists what it encoded for later encoders on the same folder."""

import uuid

import fsspec
import pytest
import torch

import ccs_ray.texts as texts_module
from ccs_ray import load_model
from ccs_ray.texts import TextEncoder, text_embeddings
from conftest import guarded

#: float32 rounding between a truncated, length-sorted batch and the stock full-context call.
ATOL = 1e-5
TINY = "ccs-tiny/none"
CONTEXT = 77
#: Mixed lengths (one over the 77-token context, cut by the tokenizer) and duplicates.
TEXTS = ["dog", "a photo of a very small red car parked next to an old stone wall in the rain", "dog", "cat",
         "a diagram", "sky", " ".join(["word"] * 90), "cat", "three yellow circles on a blue square"]


@pytest.fixture(scope="module")
def b32(request):
    return guarded(load_model("ViT-B-32/none", device="cpu")[0], request)


def _stock(model, texts, template, normalize):
    """open_clip's own call on the full 77-token context."""
    with torch.no_grad():
        out = model.encode_text(model.tokenizer([template.format(t) for t in texts])).float()
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _lengths_seen(model):
    """Sequence lengths the text transformer is called with (a list filled as it runs), and the hook handle."""
    seen = []
    handle = model.transformer.register_forward_pre_hook(lambda _, args, kwargs: seen.append(args[0].shape[1]),
                                                         with_kwargs=True)
    return seen, handle


@pytest.mark.parametrize("key, template, normalize", [(TINY, "{}", True), (TINY, "a photo of {}.", False),
                                                      ("ViT-B-32/none", "a photo of {}.", True)])
def test_truncated_context_equals_encode_text_on_full_tokens(key, template, normalize, tiny_model, b32):
    model = tiny_model[0] if key == TINY else b32
    seen, handle = _lengths_seen(model)
    try:
        got = text_embeddings(model, TEXTS, template, normalize, batch_size=3)
    finally:
        handle.remove()
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape[0] == len(TEXTS)
    torch.testing.assert_close(got, _stock(model, TEXTS, template, normalize), atol=ATOL, rtol=0)
    assert len(seen) == 3 and min(seen) < 10 and max(seen) == CONTEXT  # short batches cut, the long text is not
    torch.testing.assert_close(got[0], got[2], atol=ATOL, rtol=0)  # duplicates, in their input places
    assert text_embeddings(model, [], template).shape == (0, got.shape[1])


@pytest.mark.parametrize("precision, atol", [("fp16", 2e-3), ("bf16", 1e-2)])  # a few roundings of each format
def test_truncated_context_runs_in_the_models_precision(precision, atol):
    model = load_model(TINY, precision, "cpu")[0]
    got = text_embeddings(model, TEXTS)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, _stock(model, TEXTS, "{}", True), atol=atol, rtol=0)


@pytest.mark.parametrize("attribute, value", [("text_pool_type", "last"), ("attn_mask", None)])
def test_other_text_paths_encode_full_tokens(tiny_model_copy, attribute, value):
    model = tiny_model_copy[0]
    setattr(model, attribute, value)
    seen, handle = _lengths_seen(model)
    try:
        got = text_embeddings(model, TEXTS[:4], "a photo of {}.")
    finally:
        handle.remove()
    assert seen == [CONTEXT]
    torch.testing.assert_close(got, _stock(model, TEXTS[:4], "a photo of {}.", True), atol=ATOL, rtol=0)


def _cache_roots(tmp_path):
    return [str(tmp_path / "texts"), f"memory://texts-{uuid.uuid4().hex}"]


@pytest.mark.parametrize("where", ["local", "memory"])
def test_encoder_encodes_each_text_once_and_a_second_encoder_reads_the_cache(tiny_model, tmp_path, where):
    model = tiny_model[0]
    root = _cache_roots(tmp_path)[where == "memory"]
    first = TextEncoder(TINY, "fp32", cache_dir=root, model=model)
    out = first(TEXTS, "a photo of {}.")
    unique = list(dict.fromkeys(TEXTS))
    assert first.encoded == len(unique)
    torch.testing.assert_close(out, text_embeddings(model, TEXTS, "a photo of {}."), atol=ATOL, rtol=0)
    assert torch.equal(first(TEXTS[::-1], "a photo of {}."), out.flip(0)) and first.encoded == len(unique)

    second = TextEncoder(TINY, "fp32", cache_dir=root)
    assert torch.equal(second(TEXTS, "a photo of {}."), out)
    assert second.encoded == 0 and second.model is None

    third = TextEncoder(TINY, "fp32", cache_dir=root, model=model)  # a partial hit encodes only the misses
    more = third(["sky", "a new text", "a new text", "dog"], "a photo of {}.")
    assert third.encoded == 1
    torch.testing.assert_close(more, text_embeddings(model, ["sky", "a new text", "a new text", "dog"],
                                                     "a photo of {}."), atol=ATOL, rtol=0)
    plain = third(["sky", "dog"], "a photo of {}.", normalize=False)  # another (template, normalize): its own entries
    assert third.encoded == 3
    torch.testing.assert_close(plain, _stock(model, ["sky", "dog"], "a photo of {}.", False), atol=ATOL, rtol=0)
    third(["sky", "dog"])
    assert third.encoded == 5

    fs, path = fsspec.core.url_to_fs(root)
    assert len(fs.ls(path)) == 3  # one folder per (template, normalize)
    fourth = TextEncoder(TINY, "fp32", cache_dir=root)
    assert torch.equal(fourth(["sky", "dog"], "a photo of {}.", normalize=False), plain)
    assert torch.equal(fourth(["a new text"], "a photo of {}."), more[1:2]) and fourth.encoded == 0
    assert fourth.model is None


def test_encoder_skips_torn_files_and_loads_the_model_on_a_miss(tiny_model, tmp_path):
    model = tiny_model[0]
    root = tmp_path / "texts"
    out = TextEncoder(TINY, "fp32", cache_dir=str(root), model=model)(TEXTS[:4])
    (folder,) = root.iterdir()
    (part,) = folder.iterdir()
    data = part.read_bytes()
    (folder / f".{part.name}.{uuid.uuid4().hex}.tmp").write_bytes(data[:len(data) // 2])  # a writer killed mid-write
    (folder / f"part-{uuid.uuid4().hex}.npz").write_bytes(data[:len(data) // 2])  # a copy cut short
    again = TextEncoder(TINY, "fp32", cache_dir=str(root))
    assert torch.equal(again(TEXTS[:4]), out) and again.encoded == 0 and again.model is None
    other = TextEncoder(TINY, "fp16", cache_dir=str(root))  # parts of another precision are not its own
    assert other.load() is other.load() and other.model.visual.proj.dtype == torch.float16
    assert other(TEXTS[:1]).dtype == torch.float32 and other.encoded == 1

    fresh = TextEncoder(TINY, "fp32", cache_dir=str(tmp_path / "empty"))  # loads the model on the CPU itself
    torch.testing.assert_close(fresh(TEXTS[:4]), out, atol=ATOL, rtol=0)
    assert fresh.model is not None and fresh.encoded == 3 and fresh([]).shape == (0, out.shape[1])


def test_judge_stage_reuses_the_runs_text_cache(tmp_path, monkeypatch):
    from ccs_ray.runs import RunState
    from ccs_ray.spec import load_spec
    from ccs_ray.stages import run_stage
    from ccs_ray.tables import write_table

    colors = ["a red car", "blue sky", "green grass", "a yellow flower", "purple dress"]
    write_table(str(tmp_path), "spans", [{"layer": 3, "head": 0, "head_label": "L3.H0", "subset": "all", "rank": i,
                                          "text": t} for i, t in enumerate(colors, 1)], "r1", TINY)
    (tmp_path / "pool.txt").write_text("\n".join(colors + ["a dog", "a cat"]) + "\n")
    spec = load_spec({"name": "t", "stages": ["spans", "judge"],
                      "judge": {"heldout": False, "vocabulary": {"color": ["red", "blue"]}},
                      "spans": {"pool": str(tmp_path / "pool.txt"), "method": "weights", "rank": 4}})
    encoded = []
    real = texts_module.text_embeddings
    monkeypatch.setattr(texts_module, "text_embeddings",
                        lambda model, texts, *a, **k: encoded.append(len(texts)) or real(model, texts, *a, **k))
    first = run_stage("judge", spec, str(tmp_path), "r1", TINY)
    assert sum(encoded) > 0 and first["label_fidelity"] == "weights"
    encoded.clear()
    second = run_stage("judge", spec, str(tmp_path), "r1", TINY)
    assert sum(encoded) == 0 and second["label_percentile_median"] == first["label_percentile_median"]
    cache = RunState(str(tmp_path), "r1").text_cache(TINY)
    assert cache == f"{tmp_path}/_state/r1/ccs-tiny%2Fnone/texts" and any((tmp_path / cache).rglob("part-*.npz"))
