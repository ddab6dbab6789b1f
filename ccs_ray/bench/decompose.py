"""``ccs-ray bench decompose``: plain ``encode_image`` vs decomposition + moment accumulation.

Both run on the same random batch, interleaved rep by rep (so that load on the machine hits both
alike); throughput is the batch size over the median time of a rep.
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


def run(model: str = "ViT-B-32/none", precision: str = "fp32", batch_size: int = 16, reps: int = 10,
        warmup: int = 2, convention: str = "centered", device: str | None = None) -> dict:
    """Images/s of both paths and their ratio (decomposed / plain; 1.0 means no overhead)."""
    torch.manual_seed(0)
    net, _ = load_model(model, precision, device)
    dev = net.visual.proj.device
    size = net.visual.image_size[0]
    images = torch.randn(batch_size, 3, size, size, device=dev, dtype=net.visual.proj.dtype)
    layers = select_layers(net)
    moments = HeadMoments.for_model(model, net, layers, folds=1, convention=convention, device=dev)

    def plain():
        with torch.no_grad():
            net.encode_image(images)

    def decomposed():
        d = decomposed_forward(net, images, layers=layers, convention=convention, keep_z_sum=True)
        assert d.contributions is not None  # layers were decomposed
        moments.update(d.contributions, 0, d.z_sum)

    times: dict[str, list[float]] = {"plain": [], "decomposed": []}
    for rep in range(warmup + reps):
        for name, fn in (("plain", plain), ("decomposed", decomposed)):
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            if rep >= warmup:
                times[name].append(time.perf_counter() - t0)
    plain_ips = batch_size / statistics.median(times["plain"])
    dec_ips = batch_size / statistics.median(times["decomposed"])
    return {
        "bench": "decompose", "model": model, "precision": precision, "batch_size": batch_size, "reps": reps,
        "device": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "n_decomposed_heads": len(moments.heads), "plain_images_per_s": round(plain_ips, 2),
        "decomposed_images_per_s": round(dec_ips, 2), "ratio": round(dec_ips / plain_ips, 4),
    }
