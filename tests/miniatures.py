"""A reproduction's folder in miniature: every dataset the paper evaluates on in its official layout, and what a
user keeps besides the data (the models' weights in the Hugging Face cache, TextSpan's pool in ccs-ray's cache,
a model folder in Hugging Face's open_clip layout).

- :func:`write_paper_datasets`: under one folder, each dataset in the folder its release unpacks to, named as
  ``jobs/paper.toml`` and ``jobs/paper-pruning.toml`` give them relative to ``evals.data_root``; and ImageNet's
  validation images (``data.source``).
- :func:`write_hf_cache`: a Hugging Face cache (``HF_HOME``) holding a weights file for each hub repository.
- :func:`write_pool_cache`: a ccs-ray cache (``CCS_RAY_CACHE``) holding TextSpan's general pool.
- :func:`write_standin`: a ``local-dir:`` model folder (``open_clip_config.json`` and
  ``open_clip_model.safetensors``) of a small random-init tower with ViT-B-32's 12 layers of 12 heads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import miniature_classification as mc
import miniature_media as mm

SHARED_POOL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "textspan-general"


def _paper_model_hubs() -> list[str]:
    from open_clip import pretrained

    from ccs_ray.model_keys import PAPER_MODELS

    return [pretrained.get_pretrained_cfg(*key.split("/", 1))["hf_hub"] for key in PAPER_MODELS.values()]


#: The Hugging Face repositories of the six paper models' weights (``org/name/``, as open_clip names them).
PAPER_MODEL_HUBS = _paper_model_hubs()


def write_paper_datasets(root: Path) -> tuple[Path, Path, dict, int]:
    """``(evals.data_root, ImageNet validation folder, {(kind, dataset name): (items in the source, items evaluated)},
    ImageNet validation images)``: the paper's 13 evaluation sets under ``root/datasets`` (CIFAR-10 objects
    evaluates the CIFAR-10 images of its four classes), and ImageNet validation images as class folders."""
    data = root / "datasets"
    counts: dict = {}
    for name, write in (("cifar10", mc.write_cifar10), ("cifar100", mc.write_cifar100),
                        ("food101", mc.write_food101), ("country211", mc.write_country211),
                        ("oxford_pets", mc.write_oxford_pets), ("imagenet_a", mc.write_imagenet_a),
                        ("imagenet_r", mc.write_imagenet_r)):
        _, images = write(data)  # each in the folder its release unpacks to
        counts["classification", name] = (len(images), len(images))
        if name == "cifar10":  # airplane, automobile, ship, truck
            kept = sum(label in (0, 1, 8, 9) for _, label in images)
            counts["classification", "cifar10_objects"] = (len(images), kept)
    for name, write in (("msrvtt", mm.write_msrvtt), ("msvd", mm.write_msvd), ("didemo", mm.write_didemo),
                        ("fairface", mm.write_fairface), ("socialcounterfactuals", mm.write_socialcounterfactuals)):
        n = len(write(data / name))
        counts["bias" if name in ("fairface", "socialcounterfactuals") else "video", name] = (n, n)
    val, images = mc.write_imagenet_val(root / "imagenet", layout="folders")
    return data, val, counts, len(images)


def write_hf_cache(home: Path, repos: list[str]) -> Path:
    """A Hugging Face home (``HF_HOME``) whose hub cache holds ``open_clip_pytorch_model.bin`` of each repository
    ``org/name/`` at revision ``main``, as a download leaves it (the files hold no weights: a dry run does not read
    them). Returns ``home``."""
    revision = "0" * 40
    for repo in repos:
        folder = home / "hub" / ("models--" + repo.strip("/").replace("/", "--"))
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(revision)
        snapshot = folder / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"stand-in weights")
    return home


def write_pool_cache(cache: Path) -> Path:
    """A ccs-ray cache (``CCS_RAY_CACHE``) holding TextSpan's general pool where ccs-ray keeps it once downloaded,
    copied from the published file beside the repository. Returns ``cache``."""
    from ccs_ray.pools import TEXTSPAN_GENERAL_FILE

    (cache / "pools").mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED_POOL / TEXTSPAN_GENERAL_FILE, cache / "pools" / TEXTSPAN_GENERAL_FILE)
    return cache


#: A small tower with ViT-B-32's head layout (12 layers of 12 heads, head width 8) and a small text tower.
STANDIN_CONFIG = {
    "embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 12, "width": 96, "patch_size": 8, "head_width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def write_standin(folder: Path, seed: int = 0) -> Path:
    """A Hugging Face style open_clip folder (``open_clip_config.json``: ``model_cfg`` and ``preprocess_cfg``;
    ``open_clip_model.safetensors``) of a random-init :data:`STANDIN_CONFIG` model. Returns ``folder``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**STANDIN_CONFIG)
    preprocess = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": STANDIN_CONFIG,
                                                              "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
