"""Model loading: `load_model(key)` for a model key (:mod:`ccs_ray.model_keys`), its weight files read and
checked by :mod:`ccs_ray.weights`.

Only the image tower is analysed. Supported towers are open_clip ``VisionTransformer`` s that pool the
class token and use the stock ``nn.MultiheadAttention`` blocks (OpenAI CLIP, LAION, DataComp ViTs).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import fsspec
import open_clip
import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from .choices import PRECISIONS
from .files import cache_dir
from .model_keys import ModelKey, UnsupportedModelError
from .preprocess import CONFIG_DIRS
from .towers import supported_models
from .weights import folder_weights, is_torchscript, load_weights, local_path

#: Seed of random initialisation (``NAME/none``), so that all actors of a cluster hold the same weights.
RANDOM_INIT_SEED = 0

#: The torch dtype of each precision name.
DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.float16, torch.bfloat16), strict=True))

for _cfg in sorted(CONFIG_DIRS[0].glob("*.json")):  # our configs (ccs-tiny), next to open_clip's
    open_clip.add_model_config(_cfg)


def check_supported(model: torch.nn.Module, key: str = "model") -> VisionTransformer:
    """Return ``model.visual`` if the decomposition supports it, else raise UnsupportedModelError."""
    visual = getattr(model, "visual", None)
    problem = None
    if not isinstance(visual, VisionTransformer):
        problem = f"image tower is {type(visual).__name__}, not an open_clip VisionTransformer"
    elif isinstance(model, open_clip.CoCa):
        problem = "CoCa models embed images through an attention pooler"
    elif visual.attn_pool is not None or visual.pool_type != "tok":
        problem = "image tower pools with attention or averaging, not the class token"
    elif not all(isinstance(b, ResidualAttentionBlock) and not hasattr(b, "ln_1_kv")
                 for b in visual.transformer.resblocks):
        problem = "image tower uses custom attention blocks"
    elif not all(b.attn._qkv_same_embed_dim and b.attn.in_proj_bias is not None for b in visual.transformer.resblocks):
        problem = "attention has separate q/k/v projections or no bias"
    elif visual.proj is None:
        problem = "image tower has no output projection"
    if problem:
        examples = ", ".join(n for n in supported_models() if n.startswith("ViT-B") or n.startswith("ViT-L"))
        raise UnsupportedModelError(f"{key}: {problem}. Supported: open_clip ViTs with class-token pooling, "
                                    f"e.g. {examples}")
    return visual


def _fetch_checkpoint(uri: str) -> str:
    """A local path for a checkpoint URI, copying remote files into a cache folder once."""
    path = local_path(uri)
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint not found: {uri}")
        return path
    fs, path = fsspec.core.url_to_fs(uri)
    cache = cache_dir("checkpoints")
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / (hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + Path(path).name)
    if not local.exists():
        if not fs.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {uri}")
        tmp = local.with_suffix(".part")
        fs.get(path, str(tmp))
        tmp.rename(local)
    return str(local)


def quick_gelu(parsed: ModelKey, weights: str | None = None) -> bool:
    """Whether the weights were trained with QuickGELU, so that the model is built with it whatever NAME's config
    says: pretrained weights whose open_clip tag says so (OpenAI's: ``ViT-B-32/openai`` is OpenAI's CLIP as
    released), and OpenAI's TorchScript archives (``weights``: the local weight file of a ``NAME@PATH`` key)."""
    if weights is not None:
        return is_torchscript(weights)
    if parsed.weights is None or parsed.name.startswith(("hf-hub:", "local-dir:")):
        return False
    return bool(open_clip.get_pretrained_cfg(parsed.name, parsed.weights).get("quick_gelu", False))


@contextlib.contextmanager
def _quiet_random_init(quiet: bool):
    """Without open_clip's warning that the model is initialised randomly, where ccs-ray loads its weights next or
    the key asked for random init (``/none``)."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    if quiet:
        root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_model(key: str, precision: str = "fp32", device: str | torch.device | None = None):
    """Load an open_clip model and its image preprocessing.

    Args:
        key: a model key or a preset name from ``PAPER_MODELS`` (:mod:`ccs_ray.model_keys`).
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``; every parameter is cast to it.
        device: ``None`` picks CUDA when present, else CPU.

    Returns:
        ``(model, preprocess)``; the model is in eval mode, its image tower is checked to be supported,
        and ``model.tokenizer`` is its open_clip tokenizer.
    """
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    parsed = ModelKey.parse(key)
    if not parsed.name.startswith(("hf-hub:", "local-dir:")) and parsed.name not in open_clip.list_models():
        raise UnsupportedModelError(
            f"unknown model {parsed.name!r} in key {key!r}. Supported ViTs: {', '.join(supported_models())}"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = None  # a weight file that ccs-ray reads (weights.py); open_clip reads pretrained tags
    if parsed.checkpoint:
        assert parsed.weights is not None  # a checkpoint key names its URI
        weights = _fetch_checkpoint(parsed.weights)
    elif parsed.folder is not None:
        weights = folder_weights(parsed.folder)
    try:
        with torch.random.fork_rng(devices=[]), _quiet_random_init(weights is not None or parsed.weights is None):
            torch.manual_seed(RANDOM_INIT_SEED)  # "/none": every worker builds the same random model
            model, _, preprocess = open_clip.create_model_and_transforms(
                parsed.name, pretrained=None if parsed.checkpoint else parsed.weights, load_weights=weights is None,
                pretrained_text=weights is None, force_quick_gelu=quick_gelu(parsed, weights))
    except RuntimeError as e:
        if "download" not in str(e).lower():
            raise
        raise RuntimeError(
            f"could not fetch the weights of {key!r} (no network?): {e}. Offline, pass a local checkpoint "
            f"as '{parsed.name}@/path/to/checkpoint.pt', or random init as '{parsed.name}/none'"
        ) from None
    if weights is not None:
        load_weights(model, weights, parsed.name)
    check_supported(model, key)
    model = model.to(device=device, dtype=DTYPES[precision]).eval()
    model.tokenizer = open_clip.get_tokenizer(parsed.name)
    return model, preprocess


_SHARED: dict[tuple[str, str], object] = {}


def shared_model(key: str, precision: str = "fp32"):
    """The model of ``key`` for read-only use in this process (text encoding, head names, weights' covariances),
    loaded once (:func:`load_model`, default device) and kept: the driver's stages (judge, prune) share it
    instead of loading it per stage. The last model only is kept; callers must not change it."""
    if (key, precision) not in _SHARED:
        _SHARED.clear()
        _SHARED[key, precision] = load_model(key, precision)[0]
    return _SHARED[key, precision]
