"""Preflight of ``models.keys``: the spec phase reads the model configs (a tower ccs-ray decomposes, layers in
range; no open_clip), the environment phase the weights (a checkpoint that fits, a pretrained tag that exists and
whose weights are cached or downloadable)."""

from __future__ import annotations

import difflib
import os

from ..files import unreachable
from ..model_keys import ModelKey
from ..planning import ModelPlan
from .problems import Checks
from .storage_checks import readable


def _weights_source(name: str, tag: str) -> tuple[bool, str]:
    """(cached locally, download URL) of open_clip's pretrained weights ``name/tag``."""
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if hub and pretrained.has_hf_hub():
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename or pretrained.HF_WEIGHTS_NAME, pretrained.HF_SAFE_WEIGHTS_NAME]
        cached = any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
        return cached, f"{constants.ENDPOINT}/{repo}/resolve/main/{names[0]}"
    url = cfg.get("url", "")
    return os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))), url


def check_model(checks: Checks, key: str, layers: list[int] | None, last_layers: int) -> ModelPlan | None:
    """The spec phase of a model key: it parses, names a tower we decompose (from the configs, no open_clip; a
    ``local-dir:`` folder's from its config, whose tower the environment phase checks) and ``models.layers`` are
    its layers. The weights are checked in the environment phase (:func:`check_model_weights`)."""
    from ..model_keys import folder_config
    from ..towers import choose_layers, model_names, supported_models, tower_config, tower_of

    where = f"models.keys: {key!r}"
    parsed = checks.run(where, lambda: ModelKey.parse(key))
    if parsed is None or parsed.name.startswith("hf-hub:"):
        return None
    supported = supported_models()
    if parsed.folder is not None:
        cfg = checks.run(where, folder_config, parsed.folder)
        if cfg is None:
            return None
        vision = cfg["vision_cfg"]
        if not isinstance(vision.get("layers"), int):
            checks.problems.append(f"{where}: the image tower of {parsed.folder} is not a ViT whose heads ccs-ray "
                                   f"decomposes")
            return None
        tower = tower_of(cfg)
    elif parsed.name not in supported:
        close = difflib.get_close_matches(parsed.name, supported, n=4, cutoff=0.6)
        what = "not a ViT whose heads ccs-ray decomposes" if parsed.name in model_names() else "unknown model"
        checks.problems.append(f"{where}: {what} {parsed.name!r}; closest: {', '.join(close) or 'none'} "
                               f"(all {len(supported)}: python -c 'import ccs_ray.models as m; "
                               f"print(m.supported_models())')")
        return None
    else:
        tower = tower_config(parsed.name)
    bad = [layer for layer in layers or [] if layer >= tower.layers]
    if bad:
        checks.problems.append(f"models.layers: {bad} out of range for {parsed.name} (layers 0..{tower.layers - 1})")
        return None
    chosen = checks.run("models.layers", choose_layers, tower.layers, layers, last_layers)
    if chosen is None:
        return None
    weights = parsed.folder or ("none" if parsed.weights is None else parsed.weights)
    return ModelPlan(key, parsed.name, weights, chosen, tower.n_heads,
                     len(chosen) * tower.n_heads, tower.embed_dim, tower.layers)


def check_model_weights(checks: Checks, model: ModelPlan) -> None:
    """The environment phase of a model: a local checkpoint or ``local-dir:`` folder holds weights that fit the
    architecture (:mod:`ccs_ray.weights`, reading shapes only; a remote checkpoint is readable); a folder's tower is
    one we decompose; a pretrained tag exists for the model and its weights are in the local cache or the download
    host answers a bounded probe. Random init (``NAME/none``) has nothing to check and imports nothing."""
    parsed = ModelKey.parse(model.key)
    if parsed.checkpoint or parsed.folder is not None:
        _check_local_weights(checks, model.key, parsed)
    elif parsed.weights is not None:
        _check_pretrained(checks, model.key, parsed.name, parsed.weights)


def _check_pretrained(checks: Checks, key: str, name: str, tag: str) -> None:
    """open_clip's pretrained weights ``name/tag``: the tag exists, and the weights are cached or the download host
    answers a bounded probe (run concurrently with the other probes)."""
    import open_clip

    where = f"models.keys: {key!r}"
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        close = difflib.get_close_matches(tag, tags, n=3, cutoff=0.3) or tags[:3]
        checks.problems.append(f"{where}: no pretrained weights {tag!r} for {name}; e.g. {', '.join(close) or 'none'} "
                               f"({len(tags)} tags: open_clip.list_pretrained_tags_by_model({name!r})), or 'none' for "
                               f"random init")
        return
    cached, url = _weights_source(name, tag)
    if not cached:
        offline = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else None
        checks.probe(lambda: offline or unreachable(url),
                     f"{where}: weights are not in the local cache and cannot be downloaded ({{why}}); offline, use "
                     f"'{name}/none' (random init) or '{name}@/path/to/checkpoint.pt'")


def _check_local_weights(checks: Checks, key: str, parsed: ModelKey) -> None:
    """A checkpoint (``NAME@URI``) or ``local-dir:`` folder: its weights fit the architecture (shapes only); a
    remote checkpoint is readable (fetched and checked when the run loads the model); a folder's tower is one we
    decompose."""
    from ..models import check_supported
    from ..weights import architecture, check_weights, folder_weights, local_path

    where = f"models.keys: {key!r}"
    if parsed.folder is not None:
        folder = parsed.folder
        if checks.run(where, lambda: check_supported(architecture(parsed.name), key)) is not None:
            checks.run(where, lambda: check_weights(folder_weights(folder), parsed.name))
        return
    assert parsed.weights is not None  # a checkpoint key's weights are its URI
    path = local_path(parsed.weights)
    if path is None:
        checks.run(where, readable, parsed.weights, "checkpoint")
    else:
        checks.run(where, check_weights, path, parsed.name)
