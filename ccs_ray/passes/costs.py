"""What decoding costs next to the models, and where a pass decodes JPEGs.

On a CPU-only cluster with the default layout a pass shares each node's CPUs between its model actors and its
decoders in proportion to their costs (:func:`decode_share`, measured once per run and model by
:func:`measure_costs`); :func:`decode_on_actors` says whether the actors decode JPEGs on their own device. The
driver imports torch and open_clip only inside :func:`measure_costs`, and only when a cost is still to measure.
"""

from __future__ import annotations

import json
import time
from functools import partial

import fsspec

from ..jsonout import dumps
from ..preprocess import Pixels, model_input, preprocess_config
from ..shard_plan import ShardPlan
from ..sources import Shard, load_shard
from ..spec import ModelsConfig, ScanConfig
from .kinds import PassKind

COST_IMAGES = 8  # images of the first shard one model's pass is timed on


def decode_on_actors(cfg: ScanConfig, gpus_per_actor: float) -> bool:
    """Whether a pass leaves JPEGs for its actors to decode on their device (``scan.decode``: ``"actors"``, or
    ``"auto"`` with actors that hold a GPU), the decoders only reading them and checking their headers."""
    return cfg.decode == "actors" or (cfg.decode == "auto" and gpus_per_actor > 0)


def measure_costs(shard: Shard, preprocess: dict, model_key: str, models: ModelsConfig, convention: str,
                  keep_z_sum: bool, coefficients: bool = False) -> dict:
    """CPU seconds per image, at one thread, of decoding ``shard`` and of one model's decomposed forward on up to
    :data:`COST_IMAGES` of its images (after a one-image warm-up): ``{"decode_s", "model_s"}``. Runs in the
    calling process (the pass's driver), which loads the model on its CPU for it and restores its torch threads."""
    import numpy as np
    import torch

    from ..decompose import decomposed_forward, select_layers
    from ..models import load_model

    pixels = Pixels(preprocess)
    loaded = load_shard(shard, pixels)
    assert isinstance(loaded.images, np.ndarray)  # Pixels decode to uint8 numpy
    decode_s = loaded.seconds / max(1, len(loaded.images) + loaded.n_failed)
    model, _ = load_model(model_key, models.precision, "cpu")
    layers = select_layers(model, models.layers, models.last_layers)
    blank = np.zeros((COST_IMAGES, 3, *pixels.size), np.uint8)
    images = model_input(loaded.images[:COST_IMAGES] if len(loaded.images) else blank, preprocess)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        forward = partial(decomposed_forward, model, layers=layers, convention=convention, keep_z_sum=keep_z_sum,
                          coefficients=coefficients)
        forward(images[:1])
        t0 = time.perf_counter()
        forward(images)
        model_s = (time.perf_counter() - t0) / len(images)
    finally:
        torch.set_num_threads(threads)
    return {"decode_s": decode_s, "model_s": model_s}


def decode_share(ctx, kind: PassKind, cfg: ScanConfig, plan: ShardPlan, models: list[str]) -> float:
    """The share of CPU time decoding needs next to the models' passes: sum over preprocessing groups of decode
    seconds per image / (that + the sum over models of model seconds per image), measured once per run and model
    (:func:`measure_costs` on the first shard, in the driver, whose node also runs the pass's first decoder; kept as
    ``_state/<run>/<model>/costs.json`` for later passes)."""
    costs, first = {}, None
    for key in models:
        uri = f"{ctx.state.model_dir(key)}/costs.json"
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.exists(path):
            costs[key] = json.loads(fs.cat_file(path))
            continue
        first = first or plan.first()  # read from the source only when a cost is still to measure
        costs[key] = measure_costs(first, preprocess_config(key), key, ctx.models, cfg.convention, kind.keep_z_sum,
                                   kind.coefficients)
        with fsspec.open(uri, "w") as f:
            f.write(dumps(costs[key]))
    decode = {repr(sorted(preprocess_config(k).items())): costs[k]["decode_s"] for k in models}
    total_decode = sum(decode.values())
    return total_decode / (total_decode + sum(costs[k]["model_s"] for k in models))
