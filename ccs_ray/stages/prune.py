"""Stage ``prune``: every ablation configuration of a model evaluated on (dataset shard) units.

Section: ``[prune]`` and ``[evals]`` (:class:`PruneSection`). Per model; needs ``judge`` (the ``ccs``
table; ``explicit`` head lists and the ``paper-*`` strategies, which prune the paper's published heads of
``prune.reference_model``, need none) and, for ``prune.mode = "mean"`` or ``"mean"`` in ``prune.single_modes``
with the ``single`` strategy, ``scan`` (the moments).
:func:`run` reads the ``ccs`` table, builds the ablation configurations
(:func:`ccs_ray.ablate.prune_strategies`, baseline ``none`` included), computes each dataset's text side once on
the driver (:func:`ccs_ray.evals.kinds.plan_datasets`: classifier weights, caption and occupation-prompt
embeddings; the text tower is never ablated) and runs one unit per dataset shard on long-lived eval workers
(:mod:`ccs_ray.evals.units`: GPU when the cluster has GPUs, else CPU; a dead worker's units run again on a fresh
one), each unit saved under ``ROOT/_units/prune/...`` with a fingerprint of every configuration (id, mode,
heads, the mean head outputs it uses, precision, the classifier weights). With ``ctx.resume`` a unit is skipped
only when its saved fingerprints equal the current ones. The driver then computes the metrics (each dataset
kind's entry of :data:`ccs_ray.evals.kinds.EVAL_KINDS`) and writes the ``ablations``, ``evals``, ``bias``,
``head_effects`` and ``correctness`` tables, and each unit's ``errors`` rows to a file named after the unit
(stable file names: re-running replaces them). The text side is encoded through the run's text cache
(:meth:`~ccs_ray.runs.RunState.text_cache`), which the spans and judge stages share. If a unit fails, the
tables are written for the datasets whose units all finished and the stage raises: a re-run with resume redoes
only the failed units. On a terminal each step before the units' bar (loading the model, choosing the heads,
encoding the text side) says what it does.

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

import time
from dataclasses import dataclass

from ..ablate import Ablation, all_heads, head_ablation, prune_strategies
from ..choices import ccs_strategies, is_paper_strategy
from ..decompose import select_layers
from ..evals.kinds import DatasetPlan, EvalRows, ablation_keys, plan_datasets
from ..evals.units import (
    EvalUnit,
    UnitOutcome,
    WorkerSetup,
    config_fingerprints,
    load_results,
    plan_units,
    run_units,
    units_dir,
)
from ..heads import parse_head_name
from ..models import shared_model
from ..moments import HeadMoments
from ..progress import Steps
from ..reference import paper_random_layers, paper_reference, reference_key
from ..spec import EvalsConfig, PruneConfig, Spec
from ..tables import read_table, replace_file, write_table
from ..texts import TextEncoder
from .context import ModelContext
from .summaries import PruneSummary


@dataclass(frozen=True)
class PruneSection:
    """``prune``: which heads to ablate and how; ``evals``: the datasets and actors that evaluate them;
    ``m``: the spans a CCS counts (``spans.m``), which names the reason a strategy selected no head."""

    prune: PruneConfig
    evals: EvalsConfig
    m: int


def section(spec: Spec) -> PruneSection:
    return PruneSection(spec.prune, spec.evals, spec.spans.m)


def _choose(ctx: ModelContext, section: PruneSection, model, layers: list[int]) -> tuple[list[Ablation], str]:
    """(every configuration of ``prune.strategies``, those that selected no head included; the reference model
    of the paper's published heads)."""
    prune, model_key = section.prune, ctx.model
    by_ccs = ccs_strategies(prune.strategies)  # explicit and paper-* need no ccs table (no judge stage)
    ccs_rows = read_table(ctx.root, "ccs", ctx.run_id, model_key).to_pylist() if by_ccs else []
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
    return chosen, reference_model


def _mean_z(ctx: ModelContext, prune: PruneConfig, ablations: list[Ablation]):
    """The scan's mean head outputs when a configuration ablates in mean mode, else None (the stage's declared needs
    put the moments in the run before it runs: :mod:`ccs_ray.stages.contract`)."""
    if prune.mode == "mean" or any(a.mode == "mean" for a in ablations):
        return HeadMoments.load(ctx.moments_uri()).mean_z()
    return None


def _ablation_rows(section: PruneSection, chosen: list[Ablation], reference_model: str) -> list[dict]:
    """The ``ablations`` table: one row per configuration, those that selected no head (with the reason) too."""
    prune = section.prune
    return [{**ablation_keys(a), "mode": a.mode or prune.mode, "k": a.k, "concept": a.concept, "heads": a.heads,
             "n_heads": len(a.heads), "reference_model": reference_model,
             "judge": prune.judge if a.by_ccs else None, "paper_strategy": a.paper_strategy, "reason": a.reason}
            for a in chosen]


def _units(ctx: ModelContext, prune: PruneConfig, plans: list[DatasetPlan], ablations: list[Ablation],
           mean_z) -> tuple[list[EvalUnit], int]:
    """(units to run, units skipped on resume) of every planned dataset."""
    folder, ids = units_dir(ctx.root, ctx.run_id, ctx.model), [a.ablation_id for a in ablations]
    units, skipped = [], 0
    for plan in plans:
        configs = config_fingerprints(ablations, prune.mode, mean_z, ctx.models.precision,
                                      plan.kind.unit_text(plan.text))
        todo, done = plan_units(plan, folder, ids, configs, ctx.resume)
        units += todo
        skipped += done
    return units, skipped


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


def _write_results(ctx: ModelContext, ablations: list[Ablation], plans: list[DatasetPlan], units: list[EvalUnit],
                   outcome: UnitOutcome) -> dict:
    """Write each unit's ``errors`` file and the ``evals``, ``bias``, ``head_effects`` and ``correctness`` tables
    of the datasets whose units all finished; returns the rows written per table."""
    root, run_id, model_key = ctx.root, ctx.run_id, ctx.model
    for unit, errors in zip(units, outcome.errors, strict=True):
        replace_file(root, "errors", errors, run_id, model_key, unit.error_file)
    rows, failed = EvalRows(), {key[:2] for key in outcome.failed}
    folder = units_dir(root, run_id, model_key)
    for plan in plans:
        if (plan.kind.name, plan.data.name) not in failed:
            rows += plan.kind.rows(ablations, plan.data, load_results(plan, folder), plan.text)
    write_table(root, "evals", rows.evals, run_id, model_key, name="prune")
    write_table(root, "bias", rows.bias, run_id, model_key, name="prune")
    head_effects = _head_effects(ablations, rows.evals)
    replace_file(root, "head_effects", head_effects, run_id, model_key, "prune")
    replace_file(root, "correctness", rows.correctness, run_id, model_key, "prune")
    return {"evals_rows": len(rows.evals), "bias_rows": len(rows.bias), "head_effects_rows": len(head_effects),
            "correctness_rows": len(rows.correctness)}


def run(ctx: ModelContext, section: PruneSection) -> PruneSummary:
    """Evaluate every pruning configuration of ``ctx.model`` on every dataset of ``section.evals``.

    Returns a summary: configurations, units run and skipped, rows written per table, error count, seconds.
    """
    t0 = time.perf_counter()
    prune, model_key, precision = section.prune, ctx.model, ctx.models.precision
    with Steps(ctx.progress) as steps:
        steps.next(f"prune {model_key}: loading the model ...")
        model = shared_model(model_key, precision)  # the text side and head checks (the judge's too)
        layers = select_layers(model, ctx.models.layers, ctx.models.last_layers)
        steps.next(f"prune {model_key}: choosing the heads of {len(prune.strategies)} strategies ...")
        chosen, reference_model = _choose(ctx, section, model, layers)
        ablations = [a for a in chosen if a.reason is None]  # the configurations evaluated
        mean_z = _mean_z(ctx, prune, ablations)
        for a in ablations:  # validate every head list against the model before starting actors
            if a.heads:
                head_ablation(model, a.heads, a.mode or prune.mode, mean_z)
        write_table(ctx.root, "ablations", _ablation_rows(section, chosen, reference_model), ctx.run_id, model_key,
                    name="prune")
        evals = section.evals
        steps.next(f"prune {model_key}: encoding the text side of "
                   f"{len(evals.classification) + len(evals.video) + len(evals.bias)} datasets ...")
        encoder = TextEncoder(model_key, precision, cache_dir=ctx.text_cache, model=model)
        planned = ctx.plan.datasets if ctx.plan is not None else None  # preflight listed the datasets
        plans = plan_datasets(evals, model, encoder, planned)  # the text side, once per model
        units, skipped = _units(ctx, prune, plans, ablations, mean_z)
    setup = WorkerSetup(model_key, precision, tuple((tuple(a.heads), a.mode or prune.mode) for a in ablations),
                        mean_z, section.evals.batch_size, ctx.guard)
    outcome = run_units(units, setup, section.evals, ctx.cluster_resources, ctx.progress)
    written = _write_results(ctx, ablations, plans, units, outcome)
    if outcome.failed:
        key, why = sorted(outcome.failed.items())[0]
        raise RuntimeError(f"{len(outcome.failed)} pruning units failed (first: {' '.join(key)}: {why}); finished "
                           f"units are kept: --resume redoes only the failed ones")
    return PruneSummary(model_key, len(ablations), [a.ablation_id for a in ablations], layers,
                        [a.ablation_id for a in chosen if a.reason is not None], len(units), skipped, **written,
                        errors=sum(map(len, outcome.errors)), seconds=time.perf_counter() - t0)

