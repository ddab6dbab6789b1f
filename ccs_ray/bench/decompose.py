"""``ccs-ray bench decompose``: plain ``encode_image`` vs decomposition + moment accumulation.

Four paths run on the same random batch, interleaved rep by rep (so that load on the machine hits them alike): plain
``encode_image``, the decomposed forward alone (compact coefficients), the decomposed forward + the compact moments'
update (what the scan does per batch), and the forward to full contributions + full D x D moments (what the scan did
before moments were compact; ``ratio_compact`` is compact over full). Throughput is the batch size over the median
time of a rep; on a GPU each path's peak memory (``torch.cuda.max_memory_allocated``, weights included) is reported
too.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..decompose import decomposed_forward, select_layers
from ..models import load_model
from ..moments import HeadMoments


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(net, model: str, batch_size: int = 16, reps: int = 10, warmup: int = 2, convention: str = "centered",
            seconds: float | None = None) -> dict:
    """Images/s of the four paths (module docstring) on the loaded model ``net`` of key ``model`` and the ratios to
    plain (1.0 means no overhead); the timed reps stop early once they have taken ``seconds``."""
    dev = net.visual.proj.device
    size = net.visual.image_size[0]
    images = torch.randn(batch_size, 3, size, size, device=dev, dtype=net.visual.proj.dtype)
    layers = select_layers(net)
    moments = HeadMoments.for_model(model, net, layers, folds=1, convention=convention, device=dev)
    full = HeadMoments(model, layers, moments.shape, folds=1, convention=convention, device=dev)

    def plain():
        with torch.no_grad():
            net.encode_image(images)

    def forward():
        return decomposed_forward(net, images, layers=layers, convention=convention, keep_z_sum=True,
                                  coefficients=True)

    def decomposed():
        d = forward()
        assert d.coefficients is not None  # layers were decomposed
        moments.update(d.coefficients, 0, d.z_sum)

    def decomposed_full():
        d = decomposed_forward(net, images, layers=layers, convention=convention, keep_z_sum=True)
        assert d.contributions is not None
        full.update(d.contributions, 0, d.z_sum)

    paths = {"plain": plain, "forward": forward, "decomposed": decomposed, "full": decomposed_full}
    times: dict[str, list[float]] = {name: [] for name in paths}
    peak = dict.fromkeys(paths, 0)
    start = None
    for rep in range(warmup + reps):
        if rep == warmup:
            start = time.perf_counter()
        elif start is not None and seconds is not None and time.perf_counter() - start > seconds:
            break
        for name, fn in paths.items():
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            if rep >= warmup:
                times[name].append(time.perf_counter() - t0)
            if dev.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(dev))
    ips = {name: batch_size / statistics.median(t) for name, t in times.items()}
    figures = {
        "batch_size": batch_size, "reps": len(times["plain"]),
        "device": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "n_decomposed_heads": len(moments.heads), "plain_images_per_s": round(ips["plain"], 2),
        "forward_images_per_s": round(ips["forward"], 2), "decomposed_images_per_s": round(ips["decomposed"], 2),
        "full_images_per_s": round(ips["full"], 2),
        "ratio": round(ips["decomposed"] / ips["plain"], 4), "ratio_forward": round(ips["forward"] / ips["plain"], 4),
        "ratio_compact": round(ips["decomposed"] / ips["full"], 4),
        "moments_bytes": moments.nbytes(), "full_moments_bytes": full.nbytes(),
    }
    if dev.type == "cuda":
        figures["peak_gpu_mb"] = {name: round(b / 2**20, 1) for name, b in peak.items()}
    return figures


def run(model: str = "ViT-B-32/none", precision: str = "fp32", batch_size: int = 16, reps: int = 10,
        warmup: int = 2, convention: str = "centered", device: str | None = None) -> dict:
    """:func:`measure` on ``model`` loaded in ``precision`` on ``device`` (default: CUDA when present)."""
    torch.manual_seed(0)
    net, _ = load_model(model, precision, device)
    return {"bench": "decompose", "model": model, "precision": precision,
            **measure(net, model, batch_size, reps, warmup, convention)}
