"""``ccs-ray bench scan``: end-to-end scan throughput from JPEG files next to decode-only and model-only.

All three run in one process on the same Ray cluster over the same JPEGs:

- decode-only: the scan's decode tasks (read, decode, preprocess) over every shard, nothing else;
- decode on the GPU, where there is one: the JPEGs of every shard decoded and resized on it
  (:func:`~ccs_ray.sources.decode_deferred`, what scan actors holding a GPU do with ``scan.decode = "auto"``);
- plain: stock ``encode_image`` of the same model, precision and batch size on the same decoded images, in one
  Ray task holding every core of the node (or its GPU), as fast as the model itself runs here;
- model-only: one scan actor fed already-decoded images (decomposition + moments);
- end-to-end: ``run_scan`` over the folder;
- explain: the stage ``explain`` over the same folder after the spans (the same actors and decode path, ranking
  images along each head's span directions instead of accumulating moments).

Steady-state throughput counts images finished after the first shard, over the time from the first
shard's end to the last one's (start-up, i.e. model loading, is reported apart). The scan is then run
again over 10x the images and the peak RSS of the scan actors and of the driver is compared.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from datetime import datetime

import numpy as np
import ray
import torch
from PIL import Image

from ..cluster import actor_layout, ensure_ray, node_cpus, peak_rss_mb
from ..moments import HeadMoments
from ..passes import ModelActor, decode_task, partial_shards, partials
from ..preprocess import Pixels, model_input, preprocess_config
from ..runs import RunState
from ..sources import decode_deferred, plan_shards
from ..spec import Spec, load_spec
from ..stages import RunContext, run_stage
from ..stages.explain import TopImagesPass
from ..stages.scan import MomentsPass, run_scan, section
from ..stages.summaries import ScanSummary


def _write_jpegs(folder: str, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(n):
        tile = np.roll(base, i, axis=(0, 1)) ^ np.uint8(i % 256)
        img = Image.fromarray(tile).resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        with open(f"{folder}/img{i:07d}.jpg", "wb") as f:
            f.write(buf.getvalue())


def _steady_ips(records: list[dict]) -> float:
    ends = sorted((datetime.fromisoformat(r["finished_at"]), r["n_images"]) for r in records)
    span = (ends[-1][0] - ends[0][0]).total_seconds()
    return sum(n for _, n in ends[1:]) / span if span > 0 else float("nan")


def _plain_ips(model_key: str, precision: str, batches: list, gpus: float) -> float:
    """Images/s of stock ``encode_image`` over ``batches`` of decoded images (after one warm-up batch), in a Ray
    task holding the GPU (``gpus``) or every CPU of the largest node."""
    @ray.remote
    def plain(batches):
        from ..cluster import held_device, use_held_cpus
        from ..models import load_model

        use_held_cpus()
        device = held_device()
        model, _ = load_model(model_key, precision, device)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            model.encode_image(batches[0].to(device, dtype))
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for x in batches:
                model.encode_image(x.to(device, dtype))
            if device == "cuda":
                torch.cuda.synchronize()
        return sum(len(x) for x in batches) / (time.perf_counter() - t0)

    cpus = 1 if gpus else max(node_cpus())
    return ray.get(plain.options(num_cpus=cpus, num_gpus=1 if gpus else 0).remote(batches))


def _device_decode_ips(shards, preprocess: dict, device: str = "cuda") -> float:
    """Images/s of decoding and resizing the shards' JPEGs on ``device`` (read and header-checked by the decode tasks
    first), after one warm-up shard, in a Ray task holding the GPU when ``device`` is ``"cuda"``."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    @ray.remote(num_gpus=int(device == "cuda"))
    def decode(loaded):
        pixels = Pixels(preprocess)
        decode_deferred(loaded[0], pixels, device)
        sync()
        t0 = time.perf_counter()
        n = 0
        for x in loaded[1:]:
            images = decode_deferred(x, pixels, device).images
            assert isinstance(images, torch.Tensor)  # decode_deferred stacks them on the device
            n += len(images)
        sync()
        return n / (time.perf_counter() - t0)

    return ray.get(decode.remote(ray.get([decode_task.remote(s, preprocess, True) for s in shards])))


def jpeg_spec(folder: str, model: str, images: int, image_px: int, shard_size: int, batch_size: int,
              precision: str = "fp32") -> Spec:
    """Writes ``images`` JPEGs (``image_px`` square) to ``folder``/images; returns the spec scanning them."""
    os.makedirs(f"{folder}/images")
    _write_jpegs(f"{folder}/images", images, image_px)
    return load_spec({"name": "bench-scan", "models": {"keys": [model], "precision": precision},
                      "data": {"source": f"{folder}/images", "shard_size": shard_size},
                      "scan": {"batch_size": batch_size}})


def model_only(spec: Spec, shards: list, decoded: list, folder: str) -> tuple[float, int, float, float]:
    """Images/s of one scan actor of the spec's model, placed as the scan places it (on the GPU when there is one),
    fed the already-decoded ``decoded`` shards (decomposition + moments; model loading not counted); its torch
    threads, GPUs and CPUs."""
    gpus, cpus, _ = actor_layout(spec.scan, 1)
    kind = MomentsPass(spec.data.folds, spec.scan.convention)  # its basis kept in the actor
    # mypy does not apply class decorators (python/mypy#3135): ray.remote made ModelActor an ActorClass
    actor = ModelActor.options(num_gpus=gpus, num_cpus=cpus).remote(  # type: ignore[attr-defined]
        spec.models.keys[0], spec.models, spec.scan, kind, folder)
    ray.get(actor.checkpoint.remote())  # model loaded
    refs = [ray.put(d) for d in decoded]
    t0 = time.perf_counter()
    threads = ray.get([actor.process.remote(s, r, 0) for s, r in zip(shards, refs, strict=True)])[0]["threads"]
    ips = sum(len(d.images) for d in decoded) / (time.perf_counter() - t0)
    ray.kill(actor)
    return ips, threads, gpus, cpus


def end_to_end(spec: Spec, root: str) -> tuple[ScanSummary, float, float]:
    """``run_scan`` of the spec under ``root``: its summary, steady-state images/s and wall seconds."""
    t0 = time.perf_counter()
    summary = run_scan(RunContext.of(spec, "bench", root, progress=False), section(spec))
    wall = time.perf_counter() - t0
    records = list(HeadMoments.read_meta(summary.moments[spec.models.keys[0]])["shards"].values())
    return summary, _steady_ips(records), wall


def _explain_ips(spec, root: str) -> float:
    """Steady-state throughput of the stage explain over the scanned run ``bench`` under ``root``."""
    model = spec.models.keys[0]
    run_stage("spans", spec, root, "bench", model, progress=False)
    run_stage("explain", spec, root, "bench", progress=False)
    kind = TopImagesPass({}, spec.explain.k, spec.explain.thumb_px)
    return _steady_ips([r for uri in partials(RunState(root, "bench"), kind, model)
                        for r in partial_shards(kind, uri).values()])


def run(model: str = "ViT-B-32/none", images: int = 384, batch_size: int = 32, shard_size: int = 32,
        image_px: int = 256, memory_scale: int = 10, memory_images: int = 64,
        memory_model: str = "ccs-tiny/none") -> dict:
    """Throughputs (images/s), their ratio, and peak memory at 1x and ``memory_scale`` x images."""
    ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        spec = jpeg_spec(tmp, model, images, image_px, shard_size, batch_size)
        shards = plan_shards(spec.data)
        pp = preprocess_config(model)

        ray.get([decode_task.remote(s, pp) for s in shards[:4]])  # warm up the CPU workers (imports)
        t0 = time.perf_counter()
        decoded = ray.get([decode_task.remote(s, pp) for s in shards])
        decode_ips = images / (time.perf_counter() - t0)
        decode_gpu_ips = _device_decode_ips(shards, pp) if ray.cluster_resources().get("GPU") else None

        model_ips, threads, gpus, cpus = model_only(spec, shards, decoded, f"{tmp}/unused")
        all_images = model_input(np.concatenate([d.images for d in decoded]), pp)  # as a DataLoader gives them
        plain_ips = _plain_ips(model, spec.models.precision, list(all_images.split(batch_size)), gpus)
        del decoded, all_images

        summary, e2e_ips, wall = end_to_end(spec, f"{tmp}/results")
        explain_ips = _explain_ips(spec, f"{tmp}/results")

        memory = {}
        for scale in (1, memory_scale):
            n = memory_images * scale
            folder = f"{tmp}/mem{scale}"
            os.makedirs(folder)
            _write_jpegs(folder, n, image_px, seed=scale)
            mspec = load_spec({"name": "bench-mem", "models": {"keys": [memory_model]},
                               "data": {"source": folder, "shard_size": shard_size},
                               "scan": {"batch_size": batch_size, "checkpoint_every": 4}})
            s = run_scan(RunContext.of(mspec, "bench", f"{tmp}/mem-results{scale}", progress=False), section(mspec))
            recs = HeadMoments.read_meta(s.moments[memory_model])["shards"].values()
            memory[scale] = {"images": n, "actor_peak_rss_mb": round(max(r["max_rss_mb"] for r in recs), 1),
                             "driver_peak_rss_mb": round(peak_rss_mb(), 1)}
    bound = min(decode_ips, model_ips)
    return {
        "bench": "scan", "model": model, "images": images, "image_px": image_px, "batch_size": batch_size,
        "cpus": ray.cluster_resources().get("CPU"), "gpus": ray.cluster_resources().get("GPU", 0),
        "actor_cpus": cpus, "actor_torch_threads": threads, "decode_share": summary.decode_share,
        "end_to_end_cpus_per_actor": summary.cpus_per_actor,
        "decode_only_images_per_s": round(decode_ips, 2), "model_only_images_per_s": round(model_ips, 2),
        "decode_gpu_images_per_s": decode_gpu_ips and round(decode_gpu_ips, 2),
        "end_to_end_decode_on_actors": summary.decode_on_actors,
        "plain_encode_images_per_s": round(plain_ips, 2), "ratio_end_to_end_vs_plain": round(e2e_ips / plain_ips, 4),
        "ratio_model_only_vs_plain": round(model_ips / plain_ips, 4),
        "end_to_end_images_per_s": round(e2e_ips, 2), "end_to_end_wall_s": round(wall, 2),
        "end_to_end_images_per_s_with_startup": round(images / wall, 2),
        "ratio_end_to_end_vs_min": round(e2e_ips / bound, 4),
        "explain_images_per_s": round(explain_ips, 2), "ratio_explain_vs_scan": round(explain_ips / e2e_ips, 4),
        "memory_model": memory_model, "memory_1x": memory[1], f"memory_{memory_scale}x": memory[memory_scale],
        "actor_peak_rss_growth_mb": round(memory[memory_scale]["actor_peak_rss_mb"]
                                          - memory[1]["actor_peak_rss_mb"], 1),
    }
