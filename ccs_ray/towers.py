"""Image towers from their open_clip configs, without torch: which model names exist, which towers ccs-ray
decomposes, and a tower's shape (layers, heads per layer, embedding width).

The configs are the JSON files of :data:`ccs_ray.preprocess.CONFIG_DIRS` (ours, then open_clip's), read without
importing open_clip, so that preflight checks a spec's models in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .preprocess import CONFIG_DIRS, model_config

#: Keys of a vision config that change attention in ways the decomposition does not model.
_ATTENTION_VARIANTS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


@cache
def model_names() -> tuple[str, ...]:
    """Every open_clip model name (``open_clip.list_models()``), ours included, sorted."""
    return tuple(sorted({p.stem for folder in CONFIG_DIRS for p in folder.glob("*.json")}))


def supported_models() -> list[str]:
    """Model names whose config is a ViT image tower we can decompose: class-token pooling, the stock attention
    blocks, no attention pooler (CoCa) and no timm tower."""
    names = []
    for name in model_names():
        cfg = model_config(name)
        vision = cfg.get("vision_cfg", {})
        if (
            isinstance(vision.get("layers"), int)
            and "multimodal_cfg" not in cfg  # CoCa: its image embedding comes from an attention pooler
            and "timm_model_name" not in vision
            and not vision.get("attentional_pool")
            and vision.get("pool_type", "tok") == "tok"
            and not any(vision.get(k) for k in _ATTENTION_VARIANTS)
            and vision.get("block_type") in (None, "default")
        ):
            names.append(name)
    return names


def choose_layers(n: int, layers: list[int] | None = None, last: int = 4) -> list[int]:
    """The one layer-selection rule, for a tower of ``n`` layers: ``layers`` (sorted) when given, else the last
    ``last`` layers (the paper analyses the last 4). An explicit ``[]`` selects none; a repeated layer is a
    ValueError (it would repeat that layer's block of heads)."""
    if layers is None:
        return list(range(max(0, n - last), n))
    repeated = sorted({l for l in layers if list(layers).count(l) > 1})
    if repeated:
        raise ValueError(f"layers {list(layers)} repeat {repeated}: name each layer once")
    return sorted(layers)


@dataclass(frozen=True)
class TowerConfig:
    """The shape of a model's image tower, from its config: ``layers`` residual blocks of ``n_heads`` heads each,
    image embeddings of ``embed_dim``."""

    layers: int
    n_heads: int
    embed_dim: int


def tower_config(name: str) -> TowerConfig:
    """The image tower of model ``name`` (a KeyError for a name without a config)."""
    cfg = model_config(name)
    if not cfg:
        raise KeyError(f"no open_clip model config {name!r}")
    return tower_of(cfg)


def tower_of(cfg: dict) -> TowerConfig:
    """The image tower an open_clip model config (``embed_dim``, ``vision_cfg``) describes."""
    vision = cfg["vision_cfg"]
    return TowerConfig(vision["layers"], vision["width"] // vision.get("head_width", 64), cfg["embed_dim"])
