"""Model keys: what names a model and its weights (``ModelKey.parse``), and the paper's presets. No torch.

A model key names an open_clip ViT and its weights:

- ``"ViT-B-16/openai"``: an open_clip model name and a pretrained tag;
- ``"ViT-B-16/none"``: random initialisation (what the tests use);
- ``"ViT-B-16@/path/or/uri/to/checkpoint.pt"``: NAME's architecture with the weights of a local file or any fsspec
  URI: an open_clip state dict (``torch.save`` or safetensors), a training checkpoint that nests it (``state_dict``,
  DDP's ``module.`` prefix, ...), or an OpenAI TorchScript archive (:mod:`ccs_ray.weights`);
- ``"hf-hub:org/repo"``: open_clip's Hugging Face schema;
- ``"local-dir:/path"``: a folder laid out like an ``hf-hub:`` repository, ``open_clip_config.json`` (``model_cfg``,
  ``preprocess_cfg``) next to ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``.

The weights must fit the architecture exactly: preflight names the first key or shape that does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

#: The config file of a ``local-dir:`` folder (as in open_clip's ``hf-hub:`` repositories).
FOLDER_CONFIG = "open_clip_config.json"

#: The six models of the paper (docs/architecture.md, "Models"), by short preset name.
PAPER_MODELS = {
    "b32-openai": "ViT-B-32/openai",
    "b32-datacomp": "ViT-B-32/datacomp_m_s128m_b4k",
    "b16-openai": "ViT-B-16/openai",
    "b16-laion": "ViT-B-16/laion2b_s34b_b88k",
    "l14-openai": "ViT-L-14/openai",
    "l14-laion": "ViT-L-14/laion2b_s32b_b82k",
}


class UnsupportedModelError(UserError, ValueError):
    """The key names no model we can load, or a tower the decomposition cannot handle."""


@dataclass(frozen=True)
class ModelKey:
    """A parsed model key. ``weights`` is a pretrained tag, ``None`` (random init), or a checkpoint URI."""

    key: str
    name: str
    weights: str | None
    checkpoint: bool = False

    @classmethod
    def parse(cls, key: str) -> ModelKey:
        key = PAPER_MODELS.get(key, key)
        if key.startswith(("hf-hub:", "local-dir:")):
            return cls(key, key, None)
        if "@" in key:
            name, uri = key.split("@", 1)
            return cls(key, name, uri, checkpoint=True)
        if "/" not in key:
            raise UnsupportedModelError(
                f"model key {key!r} has no weights part: use 'NAME/TAG' (e.g. 'ViT-B-16/openai'), "
                f"'NAME/none' for random init, 'NAME@CHECKPOINT', or a preset: {', '.join(PAPER_MODELS)}"
            )
        name, tag = key.split("/", 1)
        return cls(key, name, None if tag == "none" else tag)

    @property
    def folder(self) -> str | None:
        """The folder of a ``local-dir:`` key, else None."""
        return self.name.split(":", 1)[1] if self.name.startswith("local-dir:") else None


def folder_config(folder: str) -> dict:
    """The open_clip model config (``model_cfg``) of a ``local-dir:`` folder's :data:`FOLDER_CONFIG`."""
    path = Path(folder) / FOLDER_CONFIG
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"folder {folder!r} not found")
    if not path.is_file():
        raise FileNotFoundError(f"folder {folder!r} has no {FOLDER_CONFIG}")
    try:
        cfg = json.loads(path.read_text()).get("model_cfg")
    except (ValueError, AttributeError) as e:
        raise UnsupportedModelError(f"{path} is not an open_clip config: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vision_cfg"), dict):
        raise UnsupportedModelError(f"{path} has no model_cfg with a vision_cfg")
    return cfg
