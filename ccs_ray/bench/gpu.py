"""``ccs-ray bench gpu``: every GPU figure in one command, in at most 8 minutes on one H100-class GPU.

Models are random-init (``ViT-B-16/none``, ``ViT-L-14/none``): speed, memory and rounding do not depend on trained
weights, so nothing is downloaded. For each model in fp16 and bf16, on one random batch:

- throughput of plain ``encode_image``, the decomposed forward alone, the decomposed forward + the moments' update
  (``HeadMoments.for_model`` and ``moments.update`` as the scan calls them) and the other paths that
  :func:`ccs_ray.bench.decompose.measure` times, interleaved rep by rep after a fixed warm-up (3 reps), in a loop
  time-boxed to 15 s. ``ratio``: decomposed (with moments) / plain images/s, target at least 0.95;
  ``moments_overhead``: (decomposed forward + moments update) time / plain ``encode_image`` time, what the
  compact-moment scan pays per batch over the plain model;
- peak GPU memory of each path (``torch.cuda.max_memory_allocated``, weights included);
- the sum-back error (:func:`sum_back_error`): how far the ``"centered"`` components of the embedding, summed, are
  from ``encode_image`` in the same precision (tests/test_decompose.py bounds it by 1e-2 in fp16 and 3e-2 in bf16).

Then the scan of ``ViT-B-16`` in fp16 over generated JPEGs on a local Ray cluster: end to end (``run_scan``, whose
actors decode the JPEGs on the GPU: ``scan.decode = "auto"``; steady-state images/s,
:func:`ccs_ray.bench.scan.end_to_end`) vs model-only (one scan actor fed the images decoded beforehand, images/s over
all of them, :func:`ccs_ray.bench.scan.model_only`), target at least 0.8.

Budget: four model loads and four 15-s loops with their warm-ups and sum-backs, then 8192 JPEGs written, decoded and
scanned twice (Ray start and two model loads included), sized to take about half of the 8 minutes; ``wall_s`` reports
the whole and ``targets_met`` whether it fit. Without a GPU the command says so in one line and measures nothing.
"""

from __future__ import annotations

import tempfile
import time

import torch

# open_clip and Ray are imported where they are used: without a GPU the command answers after importing torch alone
MODELS = ("ViT-B-16/none", "ViT-L-14/none")
NO_GPU = "no GPU here (torch.cuda.is_available() is False): nothing measured"
BUDGET_S = 480  # the whole command on one H100-class GPU
TARGET_RATIO = 0.95  # decomposed + moments vs plain encode_image, images/s
TARGET_SCAN_RATIO = 0.8  # scan end to end vs model-only, images/s


def sum_back_error(net, images: torch.Tensor) -> float:
    """Relative error ``|sum - e| / |e|`` for the images [B, 3, S, S] (model dtype, on its device), where ``e`` [B, D]
    is open_clip's ``encode_image`` and ``sum`` adds every head of every layer (:func:`decomposed_forward`,
    ``"centered"``) to the rest of the class token's residual stream as open_clip computes it (the ``ln_pre`` output
    and every MLP output, read by hooks; every out_proj bias), each mapped through ``ln_post`` and ``proj``, plus
    ``beta @ proj``."""
    from ..decompose import _layer_scale, _to_embedding_space, decomposed_forward

    visual = net.visual
    blocks = visual.transformer.resblocks
    cls: dict[str, torch.Tensor] = {}  # class-token rows [B, W] of open_clip's own forward

    def keep(name):
        return lambda module, inputs, output: cls.__setitem__(name, output[:, 0])

    hooks = [visual.ln_pre.register_forward_hook(keep("pre")), blocks[-1].register_forward_hook(keep("final"))]
    hooks += [block.ls_2.register_forward_hook(keep(f"mlp{l}")) for l, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            e = net.encode_image(images)
    finally:
        for hook in hooks:
            hook.remove()
    d = decomposed_forward(net, images, layers=list(range(len(blocks))))
    assert d.contributions is not None  # every layer was decomposed
    acc = d.contributions.dtype
    with torch.no_grad():
        biases = []
        for block in blocks:
            b, gamma = block.attn.out_proj.bias.to(acc), _layer_scale(block.ls_1)
            biases.append((b * gamma.to(acc) if gamma is not None else b).expand(len(images), -1))
        rest = torch.stack([cls["pre"].to(acc), *(cls[f"mlp{l}"].to(acc) for l in range(len(blocks))), *biases], 1)
        mapped = _to_embedding_space(visual, cls["final"].to(acc), rest[:, None], [], "centered", e.to(acc))
        total = d.contributions.sum((1, 2)) + mapped.sum((1, 2)) + visual.ln_post.bias.to(acc) @ visual.proj.to(acc)
    return ((total.double() - e.double()).norm() / e.double().norm()).item()


def _model_figures(key: str, precision: str, device: str, batch_size: int, reps: int, warmup: int,
                   seconds: float | None, sum_back_images: int) -> dict:
    from ..models import load_model
    from .decompose import measure

    torch.manual_seed(0)
    net, _ = load_model(key, precision, device)
    f = measure(net, key, batch_size, reps, warmup, "centered", seconds)
    size = net.visual.image_size[0]
    images = torch.randn(sum_back_images, 3, size, size, device=device).to(net.visual.proj.dtype)
    f["moments_overhead"] = round(f["plain_images_per_s"] / f["decomposed_images_per_s"], 4)
    f["sum_back_rel_error"] = sum_back_error(net, images)
    return f


def _scan_figures(model: str, precision: str, images: int, batch_size: int, shard_size: int, image_px: int) -> dict:
    import ray

    from ..cluster import ensure_ray
    from ..passes import decode_task
    from ..preprocess import preprocess_config
    from ..sources import plan_shards
    from .scan import end_to_end, jpeg_spec, model_only

    ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        spec = jpeg_spec(tmp, model, images, image_px, shard_size, batch_size, precision)
        shards = plan_shards(spec.data)
        decoded = ray.get([decode_task.remote(s, preprocess_config(model)) for s in shards])
        model_ips, _, gpus, _ = model_only(spec, shards, decoded, f"{tmp}/unused")
        del decoded
        summary, e2e_ips, wall = end_to_end(spec, f"{tmp}/results")
    return {"model": model, "precision": precision, "images": images, "batch_size": batch_size, "actor_gpus": gpus,
            "decode_on_actors": summary.decode_on_actors, "model_only_images_per_s": round(model_ips, 2),
            "end_to_end_images_per_s": round(e2e_ips, 2), "ratio": round(e2e_ips / model_ips, 4),
            "end_to_end_wall_s": round(wall, 2)}


def run(models: tuple[str, ...] = MODELS, precisions: tuple[str, ...] = ("fp16", "bf16"), batch_size: int = 256,
        reps: int = 10_000, warmup: int = 3, seconds: float | None = 15.0, sum_back_images: int = 16,
        scan_model: str = "ViT-B-16/none", scan_precision: str = "fp16", scan_images: int = 8192,
        scan_batch_size: int = 256, shard_size: int = 512, image_px: int = 256, device: str = "cuda") -> dict:
    """Figures per ``"<model> <precision>"`` (images/s, ratios, peak GPU MB, sum-back error), the scan's (images/s,
    ratio), the lowest decomposed / plain ratio, which targets were met, and the wall seconds; without CUDA
    ``{"skipped": NO_GPU}``.

    ``seconds`` time-boxes each model's throughput loop (at most ``reps`` timed reps after ``warmup``). ``device``
    ``"cpu"`` runs the same measurements on the CPU (tests, with a tiny model); the scan runs where Ray places its
    actors; ``scan_images=0`` leaves it out.
    """
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": NO_GPU}
    t0 = time.perf_counter()
    figures: dict = {"bench": "gpu", "device": (torch.cuda.get_device_name() if device == "cuda"
                                                else f"cpu ({torch.get_num_threads()} threads)")}
    for key in models:
        for precision in precisions:
            f = _model_figures(key, precision, device, batch_size, reps, warmup, seconds, sum_back_images)
            del f["device"]
            figures[f"{key} {precision}"] = f
            if device == "cuda":
                torch.cuda.empty_cache()
    ratios = [figures[f"{key} {p}"]["ratio"] for key in models for p in precisions]
    figures["min_ratio"] = min(ratios)
    met = {"ratio": figures["min_ratio"] >= TARGET_RATIO}
    if scan_images:
        figures["scan"] = _scan_figures(scan_model, scan_precision, scan_images, scan_batch_size, shard_size,
                                        image_px)
        met["scan_ratio"] = figures["scan"]["ratio"] >= TARGET_SCAN_RATIO
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    met["wall_s"] = figures["wall_s"] <= BUDGET_S
    figures["targets_met"] = met
    return figures
