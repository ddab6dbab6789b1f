"""Re-runs reuse: a later run whose inputs match copies a finished scan, spans or explain output instead of computing
it again.

A reusable stage (:attr:`~ccs_ray.stages.Stage.reusable`) names its output of each model by a *reuse key*, a hash of
everything that output depends on (:func:`stage_keys`):

- scan: the model key and its weights' identity (:func:`weights_identity`), the decomposed layers, the precision,
  the convention, the preprocessing, how transparency is converted (``data.alpha``), the folds, whether the moments
  keep the heads' mean outputs, the moments file format and the source's fingerprint (:func:`source_fingerprint`:
  the planned shards' ids and fingerprints, from the plan preflight made; the source is not listed again);
- spans: the key of this run's scan of the model (for spans from the weights alone, the model's identity), the
  ``[spans]`` settings, the spans per head (held-out spans included) and a hash of the pool's texts;
- explain: the key of this run's spans of the model and the ``[explain]`` settings.

The key is stored in the stage's ``done`` marker (its summary's ``reuse_key``). Before the stage runs, :func:`find`
looks through the markers of the finished runs under each root of :attr:`~ccs_ray.stages.RunContext.reuse_from`
(this run's root, then each ``--reuse-from`` root; newest run first) for the same key, and :func:`adopt` copies that
run's output into this run: the rows of the stage's ``<stage>.parquet`` file of each table it writes, under this
run's id, and into this run's state for the scan the moments file with the basis file its metadata names, for spans
the text-embedding cache, so that the new run needs nothing of the old root afterwards. The stage is then marked done
as usual, its summary saying where the output came from (``reused``); :func:`recorded` gives that per stage for the
``runs`` table. A per-run stage (scan, explain) reuses model by model and runs for the models left. Runs of versions
that stored no keys are never reused. Imported by the pipeline only; no stage imports it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import Any
from urllib.parse import quote, unquote

import fsspec
import pyarrow as pa

from .. import tables
from ..choices import alpha_colour
from ..files import atomic_write
from ..model_keys import ModelKey
from ..preprocess import preprocess_config
from ..progress import say
from ..runs import RUN_SCOPE, RunError, RunState
from ..shard_plan import ShardPlan
from ..sources.base import file_version
from ..spec import ModelsConfig
from .context import ModelContext, RunContext
from .contract import BY_NAME, STAGES, Stage
from .summaries import StageSummary, per_model_fields, restored


def _digest(value: Any) -> str:
    """sha256 (32 hex) of ``value``'s canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def weights_identity(key: str) -> dict:
    """What identifies the weights of model key ``key`` without reading them: a checkpoint's (or ``local-dir:``
    folder's files') size and version from its storage's metadata (modification time, etag, ...); random init
    (``NAME/none``) by its fixed seed, and pretrained weights by their tag (or ``hf-hub:`` name) and, for OpenAI's,
    the QuickGELU they run with, each with the open_clip version that builds them."""
    parsed = ModelKey.parse(key)
    if parsed.checkpoint or parsed.folder is not None:
        uri = parsed.weights if parsed.checkpoint else parsed.folder
        assert uri is not None  # a checkpoint key names its URI
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            found = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
        except OSError as e:
            raise RunError(f"models.keys: {key!r}: cannot read the size and version of {uri} ({e})") from None
        return {"files": {p: file_version(info) for p, info in sorted(found.items())}}
    open_clip = version("open_clip_torch")
    if parsed.weights is None and not parsed.name.startswith("hf-hub:"):
        from ..models import RANDOM_INIT_SEED

        return {"random_init_seed": RANDOM_INIT_SEED, "open_clip": open_clip}
    from ..models import quick_gelu

    activation = {"activation": "quick_gelu"} if quick_gelu(parsed) else {}  # OpenAI's, as trained
    return {"pretrained": parsed.weights or parsed.name, "open_clip": open_clip, **activation}


def _layers(models: ModelsConfig, key: str) -> list[int] | dict:
    """The layers the scan decomposes for ``key`` (the settings as written for a tower outside our configs)."""
    from ..towers import choose_layers, supported_models, tower_config

    name = ModelKey.parse(key).name
    if name in supported_models():
        return choose_layers(tower_config(name).layers, models.layers, models.last_layers)
    return {"layers": models.layers, "last_layers": models.last_layers}


def _model_identity(models: ModelsConfig, key: str) -> dict:
    return {"model": key, "weights": weights_identity(key), "layers": _layers(models, key),
            "precision": models.precision}


def source_fingerprint(plan: ShardPlan) -> str:
    """A hash of the planned shards' ids and fingerprints, in plan order: what the source held when it was planned."""
    h = hashlib.sha256()
    for shard_id, fingerprint in plan.fingerprints.items():
        h.update(f"{shard_id}\t{fingerprint}\n".encode())
    return h.hexdigest()[:32]


def _scan_keys(ctx: RunContext, section: Any, models: list[str]) -> dict[str, str]:
    from ..moments import FORMAT_VERSION

    data = section.data
    common = {"source": source_fingerprint(ctx.shard_plan(data)), "folds": data.folds,
              "alpha": alpha_colour(data.alpha), "convention": section.scan.convention,
              "mean_outputs": section.mean_outputs, "moments_format": FORMAT_VERSION}
    return {key: _digest({"stage": "scan", **common, **_model_identity(ctx.models, key),
                          "preprocess": preprocess_config(key)}) for key in models}


def _spans_keys(ctx: RunContext, section: Any, models: list[str]) -> dict[str, str]:
    from ..pools import load_pool

    cfg = section.spans
    settings = {"stage": "spans", "spans": cfg.model_dump(), "n_spans": section.n_spans,
                "convention": section.convention, "texts": _digest(load_pool(cfg.pool))}
    upstream = {model: _digest(_model_identity(ctx.models, model)) if cfg.method == "weights" else
                _stored(BY_NAME["scan"], ctx.state, model, "reuse_key") for model in models}
    return {model: _digest({**settings, "upstream": key}) for model, key in upstream.items() if key is not None}


def _explain_keys(ctx: RunContext, section: Any, models: list[str]) -> dict[str, str]:
    upstream = {model: _stored(BY_NAME["spans"], ctx.state, model, "reuse_key") for model in models}
    return {model: _digest({"stage": "explain", "explain": section.explain.model_dump(), "upstream": key})
            for model, key in upstream.items() if key is not None}


_KEYS = {"scan": _scan_keys, "spans": _spans_keys, "explain": _explain_keys}


def stage_keys(stage: Stage, ctx: RunContext, section: Any, models: list[str]) -> dict[str, str]:
    """Model -> the reuse key of ``stage``'s output of each of ``models`` in ``ctx`` with ``section`` (module
    docstring); a model whose upstream stage has no key in this run (an earlier version finished it) has none."""
    return _KEYS[stage.name](ctx, section, models)


def _for_model(stage: Stage, info: dict, name: str, model: str) -> Any:
    """Field ``name`` of ``model`` in a stored summary of ``stage`` (a per-run stage keeps ``{model: value}``)."""
    value = info.get(name)
    return value if stage.per_model else (value or {}).get(model)


def _stored(stage: Stage, state: RunState, model: str, name: str) -> Any:
    """Field ``name`` of ``model`` in the summary of ``stage`` finished in ``state``'s run (None: not finished)."""
    scope = model if stage.per_model else RUN_SCOPE
    return _for_model(stage, state.info(stage.name, scope), name, model) if state.done(stage.name, scope) else None


@dataclass(frozen=True)
class Found:
    """A finished run whose output of a stage and model has the key asked for: where, and the stage's summary."""

    root: str
    run_id: str
    info: dict

    @property
    def record(self) -> dict[str, str]:
        """Where the output came from, as summaries and the ``runs`` table record it."""
        return {"run_id": self.run_id, "root": self.root}


def find(stage: Stage, model: str, key: str, roots: tuple[str, ...]) -> Found | None:
    """A finished run whose ``stage`` output of ``model`` has reuse key ``key`` and is still there, or None: under the
    first of ``roots`` that has one, the one whose run id sorts last (the newest, for the time-stamped ids runs
    get)."""
    scope = model if stage.per_model else RUN_SCOPE
    for root in roots:
        fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/_state")
        markers = sorted(fs.glob(f"{path}/*/done/{stage.name}.{quote(scope, safe='')}"), reverse=True)
        for marker in markers:
            state = RunState(root, unquote(marker.rsplit("/", 3)[-3]))
            try:
                info = state.info(stage.name, scope)
            except ValueError:  # a marker another run is writing now: not finished for us
                continue
            if _for_model(stage, info, "reuse_key", model) == key and _has_output(stage, state, model):
                return Found(root, state.run_id, info)
    return None


def _has_output(stage: Stage, state: RunState, model: str) -> bool:
    """Whether ``state``'s run still holds ``stage``'s output of ``model``: its first table's file and, for the scan,
    the moments file."""
    fs, path = fsspec.core.url_to_fs(tables.partition_path(state.root, stage.writes[0], state.run_id, model))
    if not fs.exists(f"{path}/{stage.name}.parquet"):
        return False
    if stage.name != "scan":
        return True
    moments_fs, moments_path = fsspec.core.url_to_fs(state.moments_uri(model))
    return moments_fs.exists(moments_path)


def adopt(stage: Stage, found: Found, ctx: RunContext, model: str) -> dict[str, Any]:
    """Copy ``found``'s output of ``stage`` for ``model`` into ``ctx``'s run (module docstring); returns the
    per-model summary values that differ from ``found``'s (the scan's: its moments' URI, no image read)."""
    values: dict[str, Any] = {}
    source = RunState(found.root, found.run_id)
    if stage.name == "scan":
        values = {"moments": _copy_moments(source, ctx.state, model), "images_scanned": 0}
    if stage.name == "spans":
        _copy_text_cache(source, ctx.state, model)
    for table in stage.writes:
        rows = tables.read_table(found.root, table, found.run_id, model, name=stage.name)
        if table == "moments":
            rows = rows.set_column(rows.schema.get_field_index("uri"), "uri",
                                   pa.array([values["moments"]] * rows.num_rows, pa.string()))
        tables.replace_file(ctx.root, table, rows, ctx.run_id, model, stage.name)
    return values


def _copy_moments(source: RunState, here: RunState, model: str) -> str:
    """Copy ``model``'s merged moments of ``source``'s run, and the basis file their metadata names beside them, into
    ``here``'s state; returns the copy's URI."""
    from ..moments import HeadMoments

    uri = source.moments_uri(model)
    folder, name = uri.rsplit("/", 1)
    basis = HeadMoments.read_meta(uri).get("basis")
    for file in [name] + ([basis] if basis else []):
        with fsspec.open(f"{folder}/{file}", "rb") as f:
            atomic_write(f"{here.model_dir(model)}/{file}", f.read())
    return f"{here.model_dir(model)}/{name}"


def _copy_text_cache(source: RunState, here: RunState, model: str) -> None:
    """Copy the parts of ``model``'s text-embedding cache of ``source``'s run (the pool's embeddings, which the judge
    and prune stages read again) into ``here``'s."""
    fs, path = fsspec.core.url_to_fs(source.text_cache(model))
    for part in fs.glob(f"{path}/*/part-*.npz"):
        with fs.open(part, "rb") as f:
            atomic_write(f"{here.text_cache(model)}/{part[len(path) + 1:]}", f.read())


def run_stage(stage: Stage, ctx: RunContext, section: Any) -> StageSummary:
    """Run ``stage`` in ``ctx`` (for its model when per model), copying instead the output of a finished run with the
    same reuse key where ``ctx.reuse_from`` has one (model by model for a per-run stage, which runs for the models
    left); its summary records the reuse key of each model's output and where a reused one came from."""
    if not stage.reusable:
        return stage.run(ctx, section)
    models = [ctx.model] if isinstance(ctx, ModelContext) else list(ctx.models.keys)
    keys = stage_keys(stage, ctx, section, models)
    found: dict[str, Found] = {}
    for model in models:
        hit = find(stage, model, keys[model], ctx.reuse_from) if model in keys and ctx.reuse_from else None
        if hit is not None:
            say(f"{stage.name} {model}: reusing run {hit.run_id} under {hit.root}", ctx.progress)
            found[model] = hit
    values = {model: adopt(stage, hit, ctx, model) for model, hit in found.items()}
    todo = [model for model in models if model not in found]
    summary: Any
    if stage.per_model:
        summary = restored(stage.name, found[models[0]].info) if found else stage.run(ctx, section)
        summary.reuse_key = keys.get(models[0])
        summary.reused = found[models[0]].record if found else None
        return summary
    scoped = replace(ctx, models=ctx.models.model_copy(update={"keys": todo}))
    summary = stage.run(scoped, section) if todo else restored(stage.name, {})
    if stage.name == "scan":  # the images read here: those of the models scanned
        summary.images_scanned.update({model: summary.n_images.get(model, 0) for model in todo})
    for model, hit in found.items():
        for name in per_model_fields(summary):
            value = values[model].get(name, _for_model(stage, hit.info, name, model))
            if value is not None:
                getattr(summary, name)[model] = value
        summary.reused[model] = hit.record
    summary.reuse_key.update(keys)
    return summary


def recorded(state: RunState, model: str) -> dict[str, dict[str, str]] | None:
    """Stage -> the run (``run_id``, ``root``) whose output of ``model`` ``state``'s run copied, for each reusable
    stage finished there by reuse (the ``runs`` table's ``reused``); None when there is none."""
    reused = {stage.name: _stored(stage, state, model, "reused") for stage in STAGES if stage.reusable}
    return {stage: source for stage, source in reused.items() if source} or None


def search_roots(root: str, named: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The results roots a run searches for output to reuse: its own ``root``, then each of ``named``
    (``--reuse-from``); a RunError naming one that holds no runs."""
    for uri in named:
        fs, path = fsspec.core.url_to_fs(f"{uri.rstrip('/')}/_state")
        if not fs.isdir(path):
            raise RunError(f"--reuse-from {uri}: no runs there (no folder {uri.rstrip('/')}/_state); name a results "
                           f"root that ccs-ray run wrote")
    return tuple(dict.fromkeys([root, *named]))
