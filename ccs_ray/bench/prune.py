"""Prefix sharing of ablation configurations: each configuration alone vs one shared pass.

``ccs-ray bench prune``: C configurations, each ablating a random set of heads of the last ``last_layers``
layers, encode one batch of random images (a) one configuration at a time with
``decompose.encode_images`` and (b) all together with ``ablate.encode_ablations``; both in the same run,
best of ``repeats`` wall-clock timings each. The target is a speedup >= 2 for 15 configurations over the
last 4 layers of a 12-layer ViT-B-32.

The single strategy's cost on the same batch: ``single_head_cost_vs_unpruned`` = the time of one
``encode_ablations`` over the baseline ``none`` plus one configuration per head of the last ``last_layers``
layers, each ablating that head alone (``single_head_configs`` of them, 48 for ViT-B-32; the baseline is
included because the prune stage evaluates it in the same pass) / the time of one unpruned
``decompose.encode_images``; best of ``repeats`` each, in the same run. The target is <= 12 for ViT-B-32: a
naive loop costs 49, and with shared prefixes the first 12 - last_layers layers run once, then each head's
ablated layer and the layers after it (12 x (4 + 3 + 2 + 1) layer passes for ViT-B-32, plus the unablated
branch), about 11 full passes; about 8, since the last block computes the class token's row alone (a sixth of a
layer, :func:`~ccs_ray.decompose.last_block_cls_only`). ``single_head_max_abs_diff``: largest difference of those
embeddings from each configuration encoded alone.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from ..ablate import all_heads, encode_ablations, head_ablation
from ..decompose import encode_images, select_layers
from ..models import load_model

_T = TypeVar("_T")


def _best_of(repeats: int, *fns: Callable[[], _T]) -> list[tuple[float, _T]]:
    """(best wall-clock seconds, last result) of each function, timed in turn ``repeats`` times (interleaved, so
    that a change in the machine's load affects both sides of a ratio alike)."""
    best: list[float] = [float("inf")] * len(fns)
    results: list = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return list(zip(best, results, strict=True))


def run(model: str = "ViT-B-32/none", configs: int = 15, batch_size: int = 8, heads_per_config: int = 8,
        last_layers: int = 4, repeats: int = 3, precision: str = "fp32", device: str | None = None,
        seed: int = 0) -> dict:
    """Time ``configs`` ablation configurations alone vs prefix-shared, and the single strategy's configurations
    against one unpruned pass; returns seconds, the speedup and the cost ratio."""
    torch.manual_seed(seed)
    net, _ = load_model(model, precision, device=device)
    pool = all_heads(net, select_layers(net, last=last_layers))
    rng = random.Random(seed)
    ablations = [head_ablation(net, rng.sample(pool, min(heads_per_config, len(pool)))) for _ in range(configs)]
    size = net.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(batch_size, 3, size, size, device=net.visual.proj.device)

    (alone_s, alone), (shared_s, shared) = _best_of(
        repeats, lambda: torch.stack([encode_images(net, images, a) for a in ablations]),
        lambda: encode_ablations(net, images, ablations))
    singles = [None] + [head_ablation(net, [head]) for head in pool]
    (unpruned_s, _), (single_s, single) = _best_of(repeats, lambda: encode_images(net, images),
                                                   lambda: encode_ablations(net, images, singles))
    single_alone = torch.stack([encode_images(net, images, a) for a in singles])
    return {
        "model": model, "configs": configs, "batch_size": batch_size, "heads_per_config": heads_per_config,
        "last_layers": last_layers, "layers": len(net.visual.transformer.resblocks), "repeats": repeats,
        "device": str(images.device), "threads": torch.get_num_threads(),
        "alone_s": alone_s, "shared_s": shared_s, "speedup": alone_s / shared_s,
        "images_per_s_alone": configs * batch_size / alone_s, "images_per_s_shared": configs * batch_size / shared_s,
        "max_abs_diff": float((alone.float() - shared.float()).abs().max()),
        "single_head_configs": len(singles) - 1, "unpruned_s": unpruned_s, "single_head_s": single_s,
        "single_head_cost_vs_unpruned": single_s / unpruned_s,
        "single_head_max_abs_diff": float((single_alone.float() - single.float()).abs().max()),
    }
