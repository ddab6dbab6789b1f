"""Model keys, presets, checkpoints and unsupported towers."""

import pytest
import torch

from ccs_ray import PAPER_MODELS, UnsupportedModelError, load_model
from ccs_ray.model_keys import ModelKey
from ccs_ray.models import supported_models


def test_keys_parse():
    assert ModelKey.parse("ViT-B-16/openai") == ModelKey("ViT-B-16/openai", "ViT-B-16", "openai")
    assert ModelKey.parse("ViT-B-16/none").weights is None
    ck = ModelKey.parse("ViT-B-32@s3://bucket/ck.pt")
    assert (ck.name, ck.weights, ck.checkpoint) == ("ViT-B-32", "s3://bucket/ck.pt", True)
    assert ModelKey.parse("b16-openai").key == "ViT-B-16/openai"
    assert len(PAPER_MODELS) == 6
    with pytest.raises(UnsupportedModelError, match="NAME/TAG"):
        ModelKey.parse("ViT-B-16")


def test_checkpoint_the_test_saves_itself(tmp_path):
    model, _ = load_model("ccs-tiny/none")
    with torch.no_grad():
        model.visual.proj.mul_(2)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    torch.manual_seed(2)
    loaded, preprocess = load_model(f"ccs-tiny@{path}")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    other, _ = load_model("ccs-tiny/none")
    assert not torch.equal(other.visual.proj, model.visual.proj)
    assert torch.equal(other.visual.proj, load_model("ccs-tiny/none")[0].visual.proj)  # random init is seeded
    assert preprocess(__import__("PIL.Image").Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_checkpoint_from_fsspec_uri(tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("CCS_RAY_CACHE", str(tmp_path / "cache"))
    model, _ = load_model("ccs-tiny/none")
    with torch.no_grad():
        model.visual.proj.add_(1)
    with fsspec.open("memory://ck/tiny.pt", "wb") as f:
        torch.save(model.state_dict(), f)
    loaded, _ = load_model("ccs-tiny@memory://ck/tiny.pt")
    assert torch.equal(loaded.visual.proj, model.visual.proj)


def test_precision_and_errors(tmp_path):
    model, _ = load_model("ccs-tiny/none", precision="bf16")
    assert model.visual.proj.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        load_model("ccs-tiny/none", precision="fp8")
    with pytest.raises(UnsupportedModelError, match="unknown model 'ViT-Q-99'.*Supported ViTs:.*ViT-B-16"):
        load_model("ViT-Q-99/none")
    with pytest.raises(UnsupportedModelError, match="ModifiedResNet.*Supported"):
        load_model("RN50/none")
    with pytest.raises(UnsupportedModelError, match="attention pooler.*Supported"):
        load_model("coca_ViT-B-32/none")
    assert not [n for n in supported_models() if n.startswith("coca")] and "ViT-L-14" in supported_models()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(f"ccs-tiny@{tmp_path}/missing.pt")
