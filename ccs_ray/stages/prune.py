"""Stage ``prune``: (dataset shard) units on model actors, every ablation configuration per unit.

Section: ``[prune]`` and ``[evals]`` (:class:`PruneSection`). Per model; needs ``judge`` (the ``ccs``
table; ``explicit`` head lists and the ``paper-*`` strategies, which prune the paper's published heads of
``prune.reference_model``, need none) and, for ``prune.mode = "mean"`` or ``"mean"`` in ``prune.single_modes``
with the ``single`` strategy, ``scan`` (the moments).
:func:`run` reads the ``ccs`` table, builds the ablation configurations
(:func:`ccs_ray.ablate.prune_strategies`, baseline ``none`` included), computes the text side once on
the driver (classifier weights, caption and occupation-prompt embeddings: the text tower is never
ablated), and sends one unit per dataset shard to long-lived actors (GPU when the cluster has GPUs, else
CPU). An actor encodes the shard's images under all configurations at once with
:func:`ccs_ray.ablate.encode_ablations` (shared prefixes run once) and writes the unit's result under
``ROOT/_units/prune/...`` (classification: top-5 predictions; video and bias: embeddings) with a
fingerprint of every configuration (id, mode, heads, the mean head outputs it uses, precision, the
classifier weights). With ``ctx.resume`` a unit is skipped only when its saved fingerprints equal the
current ones. The driver then computes the metrics and writes the ``ablations``, ``evals``, ``bias``,
``head_effects`` and ``correctness`` tables, and each unit's ``errors`` rows to a file named after the unit
(stable file names: re-running replaces them). The text side is encoded through the run's text cache
(:func:`~ccs_ray.stages.base.text_cache_dir`), which the spans and judge stages share.

Each configuration ablates in its own mode (``Ablation.mode``; the single strategy's ``single:zero:L11.H5`` and
``single:mean:L11.H5`` in one run) or, without one, in ``prune.mode``. ``head_effects``: every ``evals`` row of a
single configuration next to the baseline ``none`` row of the same dataset and metric (change = value -
baseline). ``correctness``: per classification configuration and dataset, the per-image top-1 and top-5 hits
as bits (images in the same order for every configuration), from which paired differences between
configurations follow.

The tables hold one row per configuration (each random seed its own ``ablation_id``, ``random:s<seed>``)
and, in ``bias``, per occupation: no summary rows. A strategy that selected no head is an ``ablations`` row
without heads whose ``reason`` says why (e.g. "no head with CCS = 5"), and has no ``evals`` or ``bias`` rows.
Statistics over them are SQL views (``sql/macros.sql``):
``evals_random`` / ``bias_random`` (the random strategy's mean and sample std over seeds) and
``bias_totals`` (MaxSkew summed, as in the paper, and averaged over occupations).
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import fsspec
import numpy as np
import ray
import torch
from ray.actor import ActorHandle

from ..ablate import Ablation, all_heads, encode_ablations, head_ablation, is_paper_strategy, prune_strategies
from ..cluster import actor_layout, node_cpus, use_held_cpus
from ..decompose import select_layers
from ..evals import datasets as ds
from ..evals.bias import occupation_max_skew
from ..evals.video import pool_frames, retrieval_metrics
from ..evals.zeroshot import accuracy_metrics, classifier_weights, top_hits, top_predictions, zeroshot_logits
from ..files import atomic_write
from ..heads import parse_head_name
from ..models import load_model, shared_model
from ..moments import HeadMoments
from ..progress import Progress
from ..reference import paper_random_layers, paper_reference, reference_key
from ..sources.base import fingerprint
from ..spec import EvalsConfig, PruneConfig, Spec
from ..tables import read_table, replace_file, write_table
from ..texts import TextEncoder
from .base import Context, Stage, text_cache_dir
from .scan import moments_uri


def _encode(model, images: torch.Tensor, ablations, batch_size: int) -> torch.Tensor:
    """[C, N, D] float32 embeddings of ``images`` under every configuration, in batches."""
    device = model.visual.proj.device
    parts = [encode_ablations(model, images[i:i + batch_size].to(device), ablations).float().cpu()
             for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts, 1) if parts else torch.zeros(len(ablations), 0, model.visual.proj.shape[1])


@dataclass(frozen=True)
class PruneSection:
    """``prune``: which heads to ablate and how; ``evals``: the datasets and actors that evaluate them;
    ``m``: the spans a CCS counts (``spans.m``), which names the reason a strategy selected no head."""

    prune: PruneConfig
    evals: EvalsConfig
    m: int


def section(spec: Spec) -> PruneSection:
    return PruneSection(spec.prune, spec.evals, spec.spans.m)


def _save_npz(uri: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(uri, buf.getvalue())


def _load_npz(uri: str) -> dict:
    with fsspec.open(uri, "rb") as f:
        return dict(np.load(io.BytesIO(f.read()), allow_pickle=False))


class EvalWorker:
    """Holds one model and the ablation configurations; runs units (a dataset shard each)."""

    def __init__(self, model_key: str, precision: str, ablations: list[tuple[list[str], str]], mean_z,
                 batch_size: int):
        use_held_cpus()
        self.model, self.preprocess = load_model(model_key, precision)
        self.ablations = [head_ablation(self.model, heads, mode, mean_z) if heads else None
                          for heads, mode in ablations]
        self.batch_size = batch_size

    def run(self, unit: dict) -> dict:
        """Compute one unit and write its result file; returns its error rows and counts."""
        t0 = time.perf_counter()
        kind, data, shard = unit["kind"], unit["data"], unit["shard"]
        errors, payload = [], {}
        if kind == "classification":
            images, labels, errors = ds.load_classification(data, shard, self.preprocess)
            emb = _encode(self.model, images, self.ablations, self.batch_size)
            top = torch.stack([top_predictions(zeroshot_logits(e, unit["weights"])) for e in emb]) if len(labels) else \
                torch.zeros(len(self.ablations), 0, min(5, unit["weights"].shape[1]), dtype=torch.long)
            payload = dict(top=top.numpy().astype(np.int32), labels=labels.numpy())
        elif kind == "video":
            clips, ids = [], []
            for video_id in shard.items:
                try:
                    clips.append(ds.load_video(data, video_id, self.preprocess))
                    ids.append(video_id)
                except Exception as e:  # noqa: BLE001 - a broken video is an error row, the stage goes on
                    errors.append(dict(stage="prune", source=data.source, item=video_id, reason="video",
                                       detail=f"{type(e).__name__}: {e}"[:2000]))
            frames = torch.cat(clips) if clips else torch.zeros(0)
            emb = _encode(self.model, frames, self.ablations, self.batch_size)
            videos = torch.stack([pool_frames(e, [len(c) for c in clips]) for e in emb]) if clips else emb
            payload = dict(embeddings=videos.numpy(), items=np.array(ids, dtype=str))
        elif kind == "bias":
            loaded = ds.sources.load_shard(shard, self.preprocess)
            errors = loaded.errors
            assert isinstance(loaded.images, torch.Tensor)  # open_clip's preprocess gives tensors
            emb = _encode(self.model, loaded.images, self.ablations, self.batch_size)
            payload = dict(embeddings=emb.numpy(), items=np.array(loaded.items, dtype=str))
        _save_npz(unit["uri"], ablations=np.array(unit["ablation_ids"], dtype=str),
                  configs=np.array(unit["configs"], dtype=str), **payload)
        now = datetime.now(UTC)
        return {"errors": [{**e, "stage": "prune", "at": e.get("at", now)} for e in errors],
                "seconds": time.perf_counter() - t0}


def _unit_uri(root: str, run_id: str, model_key: str, kind: str, name: str, shard) -> str:
    return (f"{root.rstrip('/')}/_units/prune/run_id={quote(run_id, safe='')}/model={quote(model_key, safe='')}/"
            f"{kind}/{quote(name, safe='')}/{shard.shard_id}-{shard.fingerprint}.npz")


def _digest(tensor: torch.Tensor) -> str:
    """sha256 (16 hex) of a tensor's values and shape."""
    t = tensor.detach().cpu().contiguous()
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]


def config_fingerprints(ablations: list[Ablation], mode: str, mean_z, precision: str,
                        weights: torch.Tensor | None = None) -> list[str]:
    """One fingerprint per configuration of a unit: what its saved result depends on besides the shard.

    Covers the ablation id, its heads, its mode (its own ``Ablation.mode``, else ``mode``, the stage's
    ``prune.mode``), for mean ablation the mean head outputs (``mean_z``) of the layers it touches, the
    model precision and, for classification, the classifier weights.
    """
    common = (precision, _digest(weights) if weights is not None else None)
    layer_digest = {l: _digest(z) for l, z in (mean_z or {}).items()}
    out = []
    for a in ablations:
        own = a.mode or mode
        layers = sorted({parse_head_name(h)[0] for h in a.heads})
        means = [layer_digest.get(l) for l in layers] if own == "mean" else None
        out.append(fingerprint(a.ablation_id, a.heads, own if a.heads else None, means, common))
    return out


def _done(uri: str, configs: list[str]) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path) and list(_load_npz(uri).get("configs", [])) == configs


def _unit_name(unit: dict) -> str:
    """The file name of a unit's error rows: stable across runs, so a re-run replaces them."""
    return f"prune-{unit['kind']}-{quote(unit['data'].name, safe='')}-{unit['shard'].shard_id}"


def _ablation_keys(a: Ablation) -> dict:
    return {"ablation_id": a.ablation_id, "strategy": a.strategy, "seed": a.seed}


def _classification_rows(ablations, data, results) -> tuple[list[dict], list[dict]]:
    """(evals rows, correctness rows) of a classification dataset; the images in shard order."""
    top = np.concatenate([r["top"] for r in results], 1)
    labels = torch.from_numpy(np.concatenate([r["labels"] for r in results]))
    if labels.numel() == 0:
        raise ds.DatasetError(f"classification dataset {data.name!r}: no image could be used (see the errors table)")
    rows, bits = [], []
    n = int(labels.numel())
    for c, a in enumerate(ablations):
        predictions = torch.from_numpy(top[c]).long()
        for metric, value in accuracy_metrics(predictions, labels, data.classnames).items():
            rows.append({**_ablation_keys(a), "dataset": data.name, "metric": metric, "value": value, "n": n})
        for metric, hits in top_hits(predictions, labels).items():
            bits.append({**_ablation_keys(a), "dataset": data.name, "metric": metric, "n": n,
                         "bits": np.packbits(hits.numpy().astype(bool), bitorder="little").tobytes()})
    return rows, bits


def _head_effects(ablations: list[Ablation], evals_rows: list[dict]) -> list[dict]:
    """``head_effects`` rows: each single configuration's evals rows with the baseline ``none`` value of the
    same dataset and metric (change = value - baseline, in the metric's units)."""
    baseline = {(r["dataset"], r["metric"]): r["value"] for r in evals_rows if r["ablation_id"] == "none"}
    single = {a.ablation_id: a for a in ablations if a.strategy == "single"}
    rows = []
    for r in evals_rows:
        a, key = single.get(r["ablation_id"]), (r["dataset"], r["metric"])
        if a is None or key not in baseline:
            continue
        (head_label,) = a.heads
        layer, head = parse_head_name(head_label)
        rows.append(dict(layer=layer, head=head, head_label=head_label, ablation_id=a.ablation_id, mode=a.mode,
                         dataset=r["dataset"], metric=r["metric"], value=r["value"], baseline=baseline[key],
                         change=r["value"] - baseline[key], n=r["n"]))
    return rows


def _video_rows(ablations, data, results, captions: dict[str, torch.Tensor]) -> list[dict]:
    videos = torch.from_numpy(np.concatenate([r["embeddings"] for r in results], 1))
    ids = [str(i) for r in results for i in r["items"]]
    if not ids:
        raise ds.DatasetError(f"video dataset {data.name!r}: no video could be read (see the errors table)")
    texts = torch.stack([captions[i] for i in ids])
    return [{**_ablation_keys(a), "dataset": data.name, "metric": metric, "value": value, "n": len(ids)}
            for c, a in enumerate(ablations) for metric, value in retrieval_metrics(texts, videos[c]).items()]


def _bias_rows(ablations, data, results, attributes: dict, prompts: torch.Tensor) -> list[dict]:
    emb = torch.from_numpy(np.concatenate([r["embeddings"] for r in results], 1))
    items = [str(i) for r in results for i in r["items"]]
    rows = []
    for attribute in data.attributes:
        keep = [i for i, item in enumerate(items) if attribute in attributes.get(item, {})]
        if len(keep) < data.k:
            raise ds.DatasetError(f"bias dataset {data.name!r}: {len(keep)} images with a {attribute!r} value, "
                                  f"fewer than k = {data.k}")
        groups = [attributes[items[i]][attribute] for i in keep]
        for c, a in enumerate(ablations):
            for o, occupation in enumerate(data.occupations):
                skew, group = occupation_max_skew(emb[c, keep], groups, prompts[o], data.k, data.combine)
                rows.append({**_ablation_keys(a), "dataset": data.name, "attribute": attribute,
                             "occupation": occupation, "k": data.k, "maxskew": skew, "max_group": group,
                             "combine": data.combine, "templates": data.templates})
    return rows


def _mean_z(ctx: Context, setting: str, fix: str):
    """The scan's mean head outputs; ``setting`` (the spec key asking for mean ablation) and ``fix`` name the
    way out in the error when there are none."""
    assert ctx.model is not None  # a per-model stage
    try:
        return HeadMoments.load(moments_uri(ctx, ctx.model)).mean_z()
    except ValueError as e:
        raise ValueError(f"{setting} needs the scan's moments ({e}); or use {fix}") from None


def run(ctx: Context, section: PruneSection) -> dict:
    """Evaluate every pruning configuration of ``ctx.model`` on every dataset of ``section.evals``.

    Returns a summary: configurations, units run and skipped, rows written per table, error count, seconds.
    """
    t0 = time.perf_counter()
    prune, evals = section.prune, section.evals
    root, run_id, model_key, precision = ctx.root, ctx.run_id, ctx.model, ctx.models.precision
    assert model_key is not None  # a per-model stage
    model = shared_model(model_key, precision)  # the text side and head checks (the judge's too)
    layers = select_layers(model, ctx.models.layers, ctx.models.last_layers)
    ccs_rows = read_table(root, "ccs", run_id, model_key).to_pylist()
    if not ccs_rows and [s for s in prune.strategies if s != "explicit" and not is_paper_strategy(s)]:
        raise ValueError(f"no ccs rows for {model_key} in run {run_id} under {root}: run the judge stage first "
                         f"(or use only prune.strategies = ['explicit'] and the paper-* strategies)")
    reference_model = reference_key(prune.reference_model or model_key)
    reference, paper_pool = None, None
    if any(map(is_paper_strategy, prune.strategies)):
        reference = paper_reference().heads_of(reference_model)
        paper_pool = all_heads(model, paper_random_layers(prune.paper_random_pool, reference_model, layers,
                                                          len(model.visual.transformer.resblocks)))
    chosen = prune_strategies(
        ccs_rows, prune.strategies, judge=prune.judge, seeds=prune.seeds,
        random_pool=all_heads(model) if prune.random_pool == "all" else None, concepts=prune.concepts,
        synonyms=prune.synonyms, explicit=prune.heads, sweep_k=prune.sweep_k, reference=reference,
        paper_random_pool=paper_pool, m=section.m, single_modes=prune.single_modes)
    ablations = [a for a in chosen if a.reason is None]  # the configurations evaluated
    mean_z = None
    if prune.mode == "mean":
        mean_z = _mean_z(ctx, "prune.mode = 'mean'", "prune.mode = 'zero'")
    elif any(a.mode == "mean" for a in ablations):
        mean_z = _mean_z(ctx, f"prune.single_modes = {prune.single_modes}", "prune.single_modes = ['zero']")
    for a in ablations:  # validate every head list against the model before starting actors
        if a.heads:
            head_ablation(model, a.heads, a.mode or prune.mode, mean_z)
    ids = [a.ablation_id for a in ablations]
    write_table(root, "ablations", [{**_ablation_keys(a), "mode": a.mode or prune.mode, "k": a.k,
                                     "concept": a.concept, "heads": a.heads, "n_heads": len(a.heads),
                                     "reference_model": reference_model,
                                     "judge": prune.judge if a.by_ccs else None, "paper_strategy": a.paper_strategy,
                                     "reason": a.reason}
                                    for a in chosen],
                run_id, model_key, name="prune")

    # the text side, once per model, through the run's text cache
    units, plans = [], []
    encoder = TextEncoder(model_key, precision, cache_dir=text_cache_dir(ctx), model=model)
    with torch.no_grad():
        for kind in ds.KINDS:
            for entry in getattr(evals, kind):
                data, shards, inputs = ds.plan_dataset(kind, entry)
                extra: dict[str, Any]  # what a dataset kind's evaluation reads: tensors, captions, attributes
                if kind == "classification":
                    extra = {"weights": classifier_weights(model, data.class_texts, data.templates, encoder)}
                elif kind == "video":
                    videos, captions = zip(*inputs["captions"], strict=True)
                    extra = {"captions": dict(zip(videos, encoder(list(captions)), strict=True))}
                else:
                    prompts = encoder([t.format(o) for t in data.templates for o in data.occupations])
                    extra = {"prompts": prompts.reshape(len(data.templates), len(data.occupations), -1)
                             .transpose(0, 1), **inputs}
                plans.append((kind, data, shards, extra))
    skipped = 0
    for kind, data, shards, extra in plans:
        configs = config_fingerprints(ablations, prune.mode, mean_z, precision, extra.get("weights"))
        for shard in shards:
            uri = _unit_uri(root, run_id, model_key, kind, data.name, shard)
            if ctx.resume and _done(uri, configs):
                skipped += 1
                continue
            units.append({"kind": kind, "data": data, "shard": shard, "uri": uri, "ablation_ids": ids,
                          "configs": configs, "weights": extra.get("weights")})

    unit_errors, failed = _run_units(ctx, section, ablations, mean_z, units)
    for unit, rows in zip(units, unit_errors, strict=True):
        replace_file(root, "errors", rows, run_id, model_key, _unit_name(unit))
    errors = [row for rows in unit_errors for row in rows]

    evals_rows, bias_rows, correctness_rows = [], [], []
    for kind, data, shards, extra in plans:
        results = [_load_npz(_unit_uri(root, run_id, model_key, kind, data.name, s)) for s in shards
                   if (kind, data.name, s.shard_id) not in failed]
        if len(results) < len(shards):
            continue
        if kind == "classification":
            rows, bits = _classification_rows(ablations, data, results)
            evals_rows += rows
            correctness_rows += bits
        elif kind == "video":
            evals_rows += _video_rows(ablations, data, results, extra["captions"])
        else:
            bias_rows += _bias_rows(ablations, data, results, extra["attributes"], extra["prompts"])
    write_table(root, "evals", evals_rows, run_id, model_key, name="prune")
    write_table(root, "bias", bias_rows, run_id, model_key, name="prune")
    head_effects = _head_effects(ablations, evals_rows)
    replace_file(root, "head_effects", head_effects, run_id, model_key, "prune")
    replace_file(root, "correctness", correctness_rows, run_id, model_key, "prune")
    if failed:
        raise RuntimeError(f"{len(failed)} pruning units failed (first: {sorted(failed.items())[0]}); finished units "
                           f"are kept: re-run with resume to redo only the failed ones")
    return {"model": model_key, "configurations": len(ablations), "ablation_ids": ids, "layers": layers,
            "empty_strategies": [a.ablation_id for a in chosen if a.reason is not None],
            "units_run": len(units), "units_skipped": skipped, "evals_rows": len(evals_rows),
            "bias_rows": len(bias_rows), "head_effects_rows": len(head_effects),
            "correctness_rows": len(correctness_rows), "errors": len(errors), "seconds": time.perf_counter() - t0}


def _run_units(ctx: Context, section: PruneSection, ablations: list[Ablation], mean_z, units: list[dict]):
    """Run units on actors; returns (error rows per unit, in ``units`` order;
    {(kind, dataset, shard_id): reason} of failed units)."""
    if not units:
        return [], {}
    layout = actor_layout(section.evals, 1, ctx.cluster_resources(), decode_share=0.0, key="evals", nodes=node_cpus())
    n_actors = min(layout.actors, len(units))
    worker = ray.remote(num_cpus=layout.cpus_per_actor, num_gpus=layout.gpus_per_actor)(EvalWorker)
    args = (ctx.model, ctx.models.precision, [(a.heads, a.mode or section.prune.mode) for a in ablations], mean_z,
            section.evals.batch_size)
    # ray types worker.remote() as ActorHandle | type[EvalWorker], whose methods lack .remote unless @ray.method
    actors = [cast(ActorHandle, worker.remote(*args)) for _ in range(n_actors)]
    pending: dict[ray.ObjectRef, int] = {actors[i % n_actors].run.remote(unit): i for i, unit in enumerate(units)}
    errors: list[list[dict]] = [[] for _ in units]
    failed = {}
    progress = Progress(f"prune {ctx.model} ({len(ablations)} configurations)", len(units), "dataset shards",
                        ctx.progress)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            unit = units[i]
            key = (unit["kind"], unit["data"].name, unit["shard"].shard_id)
            try:
                errors[i] = ray.get(done[0])["errors"]
            except Exception as e:  # noqa: BLE001 - reported per unit; the others go on
                failed[key] = f"{type(e).__name__}: {e}"
                errors[i] = [dict(stage="prune", source=unit["shard"].uri, item=unit["shard"].shard_id,
                                  reason="unit_failed", detail=failed[key][:2000], at=datetime.now(UTC))]
            progress.update(1, failed=len(failed))
    finally:
        progress.close()
        for actor in actors:
            ray.kill(actor)
    return errors, failed


STAGE = Stage("prune", needs=("judge",), per_model=True, section=section, run=run)
