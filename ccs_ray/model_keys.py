"""Model keys: what names a model and its weights (``ModelKey.parse``), and the paper's presets. No torch.

A model key names an open_clip ViT and its weights:

- ``"ViT-B-16/openai"``: an open_clip model name and a pretrained tag;
- ``"ViT-B-16/none"``: random initialisation (what the tests use);
- ``"ViT-B-16@/path/or/uri/to/checkpoint.pt"``: weights from a local file or any fsspec URI;
- ``"hf-hub:org/repo"`` or ``"local-dir:/path"``: open_clip's own schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError

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
