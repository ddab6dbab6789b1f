"""Weight files as users have them: each format written here from a random-init model and loaded back through its
model key with identical outputs; a file that does not fit the architecture, or is no checkpoint, is one preflight
line naming the first difference."""

import copy
import json
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from ccs_ray import load_model
from ccs_ray.preflight import PreflightError, preflight
from ccs_ray.spec import load_spec
from ccs_ray.weights import CheckpointError

SMOKE = str(Path(__file__).resolve().parents[1] / "jobs" / "smoke.toml")
TINY = "ccs-tiny"


@pytest.fixture(scope="module")
def saved():
    """A ccs-tiny model initialised with another seed than ``ccs-tiny/none``, its state dict, and its image and text
    embeddings of fixed inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = open_clip.create_model(TINY).eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = open_clip.get_tokenizer(TINY)(["a photo of a dog", "a cat", "x"])
    with torch.no_grad():
        outputs = model.encode_image(images), model.encode_text(texts)
    return model, {k: v.clone() for k, v in model.state_dict().items()}, (images, texts), outputs


def assert_same_outputs(key: str, saved) -> None:
    model, _, (images, texts), (image_emb, text_emb) = saved
    loaded, _ = load_model(key, device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), image_emb)
        assert torch.equal(loaded.encode_text(texts), text_emb)
    random_init = load_model(f"{TINY}/none", device="cpu")[0]
    assert not torch.equal(random_init.visual.proj, loaded.visual.proj)  # the weights came from the file


def torchscript_archive(model: torch.nn.Module, path: Path) -> None:
    """An archive like OpenAI's CLIP release: a traced CLIP whose state dict has the model's keys, its non-persistent
    attention mask and the metadata entries input_resolution, context_length and vocab_size."""
    clip = copy.deepcopy(model)
    for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        clip.__dict__.pop(name, None)  # open_clip keeps the last two as plain attributes, OpenAI as entries
        clip.register_buffer(name, torch.tensor(value))
    images, texts = torch.ones(2, 3, 32, 32), torch.zeros(2, 77, dtype=torch.int)
    with warnings.catch_warnings():  # tracing's notes on constants and on its own deprecation
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace_module(clip, {"encode_image": (images,), "encode_text": (texts,)}, check_trace=False)
    assert {"input_resolution", "attn_mask"} <= set(traced.state_dict())
    traced.save(str(path))


WRITERS = {
    "state dict .pt": ("tiny.pt", lambda sd, m, p: torch.save(sd, p)),
    "state dict .bin": ("pytorch_model.bin", lambda sd, m, p: torch.save(sd, p)),
    "state dict, legacy torch.save": ("tiny.pth", lambda sd, m, p: torch.save(sd, p,
                                                                              _use_new_zipfile_serialization=False)),
    "safetensors": ("tiny.safetensors", lambda sd, m, p: save_file(sd, str(p))),
    "nested state_dict": ("ft.pt", lambda sd, m, p: torch.save({"state_dict": sd}, p)),
    "DDP training checkpoint": ("ddp.pt", lambda sd, m, p: torch.save(
        {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}}, p)),
    "model/module nesting, torch.compile prefix": ("compiled.pt", lambda sd, m, p: torch.save(
        {"model": {"module": {f"_orig_mod.{k}": v for k, v in sd.items()}}, "step": 10}, p)),
}


@pytest.mark.parametrize("fmt", WRITERS)
def test_each_format_loads_through_name_at_path_with_identical_outputs(saved, tmp_path, fmt):
    filename, write = WRITERS[fmt]
    path = tmp_path / filename
    write(saved[1], saved[0], path)
    assert_same_outputs(f"{TINY}@{path}", saved)
    plan = preflight(spec_of(f"{TINY}@{path}", tmp_path), dry_run=True, cluster=False)
    assert [(m.name, m.weights, m.tower_layers) for m in plan.models] == [(TINY, str(path), 4)]


def test_an_openai_archive_loads_with_quick_gelu_as_openai_trained_it(saved, tmp_path):
    """OpenAI's models were trained with QuickGELU: an OpenAI TorchScript archive loaded as ``NAME@PATH`` runs with it
    (as ``NAME/openai`` does: its tag says so), whatever NAME's config says, with the outputs of the model saved."""
    from open_clip.transformer import QuickGELU

    from ccs_ray.model_keys import ModelKey
    from ccs_ray.models import quick_gelu

    original = open_clip.create_model(TINY, force_quick_gelu=True).eval()
    original.load_state_dict(saved[1])
    path = tmp_path / "ViT-tiny.pt"
    torchscript_archive(original, path)
    loaded, _ = load_model(f"{TINY}@{path}", device="cpu")
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    images, texts = saved[2]
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), original.encode_image(images))
        assert torch.equal(loaded.encode_text(texts), original.encode_text(texts))
    torch.save(saved[1], tmp_path / "state.pt")  # a state dict runs with NAME's activation
    plain, _ = load_model(f"{TINY}@{tmp_path / 'state.pt'}", device="cpu")
    assert not isinstance(plain.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert [quick_gelu(ModelKey.parse(k)) for k in ("ViT-B-32/openai", "ViT-L-14/openai", "ViT-B-16/laion2b_s34b_b88k",
                                                     "ViT-B-32/none")] == [True, True, False, False]
    plan = preflight(spec_of(f"{TINY}@{path}", tmp_path), dry_run=True, cluster=False)
    assert [(m.name, m.tower_layers) for m in plan.models] == [(TINY, 4)]


def spec_of(key: str, tmp_path: Path):
    return load_spec(SMOKE, [f"models.keys={json.dumps([key])}", f"results.root={json.dumps(str(tmp_path / 'r'))}"])


def hf_folder(folder: Path, state: dict, weights: str, preprocess_cfg: dict) -> None:
    """A folder laid out like an open_clip ``hf-hub:`` repository."""
    folder.mkdir()
    cfg = open_clip.get_model_config(TINY)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess_cfg}))
    if weights.endswith(".safetensors"):
        save_file(state, str(folder / weights))
    else:
        torch.save(state, folder / weights)


@pytest.mark.parametrize("weights", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_local_dir_folder_loads_with_its_config_and_plans(saved, tmp_path, weights):
    folder = tmp_path / "tiny-hf"
    hf_folder(folder, saved[1], weights, {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    key = f"local-dir:{folder}"
    assert_same_outputs(key, saved)
    _, preprocess = load_model(key, device="cpu")
    from PIL import Image

    x = preprocess(Image.new("RGB", (32, 32), (255, 0, 128)))
    assert torch.allclose(x[:, 0, 0], (torch.tensor([255.0, 0.0, 128.0]) / 255 - 0.5) / 0.25)  # the folder's norm
    (model,) = preflight(spec_of(key, tmp_path), dry_run=True, cluster=False).models
    assert (model.layers, model.n_heads, model.heads, model.embed_dim) == ([0, 1, 2, 3], 4, 16, 32)


def one_problem(key: str, tmp_path: Path) -> str:
    with pytest.raises(PreflightError) as e:
        preflight(spec_of(key, tmp_path), dry_run=True, cluster=False)
    (line,) = e.value.problems
    assert line.startswith(f"models.keys: {key!r}: ")
    return line[len(f"models.keys: {key!r}: "):]


def test_mismatched_checkpoints_are_one_preflight_line_naming_the_first_difference(saved, tmp_path):
    state = saved[1]
    # another architecture: the same tower with 2 layers instead of 4
    cfg = open_clip.get_model_config(TINY)
    cfg["vision_cfg"]["layers"] = 2
    shallow = open_clip.CLIP(**cfg).state_dict()
    path = tmp_path / "shallow.pt"
    torch.save(shallow, path)
    missing = [k for k in state if k.startswith(("visual.transformer.resblocks.2.", "visual.transformer.resblocks.3."))]
    expected = f"checkpoint {path} does not fit {TINY}: missing key {missing[0]} (and {len(missing) - 1} more)"
    assert one_problem(f"{TINY}@{path}", tmp_path) == expected
    with pytest.raises(CheckpointError) as e:
        load_model(f"{TINY}@{path}", device="cpu")
    assert str(e.value) == expected

    # another patch size: a shape differs
    patched = dict(state, **{"visual.conv1.weight": torch.zeros(64, 3, 16, 16)})
    torch.save(patched, path := tmp_path / "p16.pt")
    assert one_problem(f"{TINY}@{path}", tmp_path) == (
        f"checkpoint {path} does not fit {TINY}: visual.conv1.weight has shape [64, 3, 16, 16], {TINY} needs "
        f"[64, 3, 8, 8]")

    # keys of another model
    save_file(dict(state, **{"visual.head.weight": torch.zeros(2)}), str(path := tmp_path / "extra.safetensors"))
    assert one_problem(f"{TINY}@{path}", tmp_path) == (
        f"checkpoint {path} does not fit {TINY}: unexpected key visual.head.weight")

    # the same mismatch in a local-dir folder: its weight file is named
    folder = tmp_path / "hf"
    hf_folder(folder, {k: v for k, v in state.items() if k != "visual.proj"}, "open_clip_model.safetensors", {})
    assert one_problem(f"local-dir:{folder}", tmp_path) == (
        f"checkpoint {folder / 'open_clip_model.safetensors'} does not fit local-dir:{folder}: missing key visual.proj")


def test_files_that_are_no_checkpoint_and_folders_without_weights(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    assert one_problem(f"{TINY}@{text}", tmp_path).startswith(
        f"{text} is not a checkpoint (torch.save, safetensors or TorchScript): ")
    torch.save([1, 2, 3], listed := tmp_path / "list.pt")
    assert one_problem(f"{TINY}@{listed}", tmp_path).startswith(f"{listed} holds no state dict of tensors (found list")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_model(f"{TINY}@{text}", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_problem(f"local-dir:{empty}", tmp_path) == f"folder {str(empty)!r} has no open_clip_config.json"
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config(TINY)}))
    assert one_problem(f"local-dir:{empty}", tmp_path).startswith(f"folder {str(empty)!r} holds no weights")
    assert one_problem(f"local-dir:{tmp_path / 'nope'}", tmp_path) == f"folder {str(tmp_path / 'nope')!r} not found"
