"""Prefix sharing of ablation configurations: each configuration alone vs one shared pass.

``ccs-ray bench prune``: C configurations, each ablating a random set of heads of the last ``last_layers``
layers, encode one batch of random images (a) one configuration at a time with
``decompose.encode_images`` and (b) all together with ``ablate.encode_ablations``; both in the same run,
best of ``repeats`` wall-clock timings each. The target is a speedup >= 2 for 15 configurations over the
last 4 layers of a 12-layer ViT-B-32.
"""

from __future__ import annotations

import random
import time

import torch

from ..ablate import all_heads, encode_ablations, head_ablation
from ..decompose import select_layers, encode_images
from ..models import load_model


def _best_of(repeats: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(model: str = "ViT-B-32/none", configs: int = 15, batch_size: int = 8, heads_per_config: int = 8,
        last_layers: int = 4, repeats: int = 3, precision: str = "fp32", device: str | None = None,
        seed: int = 0) -> dict:
    """Time ``configs`` ablation configurations alone vs prefix-shared; returns seconds and the speedup."""
    torch.manual_seed(seed)
    net, _ = load_model(model, precision, device=device)
    pool = all_heads(net, select_layers(net, last=last_layers))
    rng = random.Random(seed)
    ablations = [head_ablation(net, rng.sample(pool, min(heads_per_config, len(pool)))) for _ in range(configs)]
    size = net.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(batch_size, 3, size, size, device=net.visual.proj.device)

    alone_s, alone = _best_of(repeats, lambda: torch.stack([encode_images(net, images, a) for a in ablations]))
    shared_s, shared = _best_of(repeats, lambda: encode_ablations(net, images, ablations))
    return {
        "model": model, "configs": configs, "batch_size": batch_size, "heads_per_config": heads_per_config,
        "last_layers": last_layers, "layers": len(net.visual.transformer.resblocks), "repeats": repeats,
        "device": str(images.device), "threads": torch.get_num_threads(),
        "alone_s": alone_s, "shared_s": shared_s, "speedup": alone_s / shared_s,
        "images_per_s_alone": configs * batch_size / alone_s, "images_per_s_shared": configs * batch_size / shared_s,
        "max_abs_diff": float((alone.float() - shared.float()).abs().max()),
    }
