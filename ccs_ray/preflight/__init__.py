"""Preflight: everything a run needs that is knowable without computing, checked at once, in seconds.

``preflight(spec) -> Plan`` runs on the driver before any stage starts (``ccs-ray run``, ``ccs-ray submit``,
:func:`ccs_ray.pipeline.run`) and raises one :class:`PreflightError` that lists every problem of a phase, one line
each, naming the key, the value and the fix. Two phases:

1. Without the engine (no torch, open_clip, scipy or Ray; about a second): every URI the spec names (data and
   eval sources, results root, judge cache, text pool, checkpoints) is no shipped placeholder (``YOUR-...``, one
   line each naming the key and what to set it to) and its scheme's fsspec package is installed (one line per
   scheme with the ``pip install`` that adds it); ``models.keys`` resolve to model
   configs whose image tower we decompose (:mod:`ccs_ray.towers`; an unknown name lists the closest ones),
   ``models.layers`` are layers of the tower; the ``explicit`` strategy has ``prune.heads`` lists whose heads lie in
   every model's tower (and, for ``prune.mode = "mean"``, its decomposed layers), the heads the prune stage would
   refuse; each enabled stage's needs are in the run, or done in the resumed
   run (:func:`ccs_ray.stages.contract.unmet_needs`); every LLM judge has ``base_url`` and ``model`` and, unless
   planning only, its ``api_key_env`` is set (:mod:`ccs_ray.judges.config`); ``spans.pool`` loads or, for
   ``textspan-general``, is cached or downloadable; the results root is writable (a probe file is created and
   removed) and the run resolves (:func:`ccs_ray.runs.resolve_run`: for ``--resume``, the run exists with the
   same result settings). Problems here are reported without going on (:data:`ENGINE_CHECKS` names the rest).
2. The environment the engine reads: a pretrained tag exists for each model and its weights are in the local
   cache or the download host answers a bounded probe (:func:`ccs_ray.files.unreachable`), ``NAME@URI``
   checkpoints are readable; ``data.source`` and every ``[[evals.*]]`` source exist and are listable (the plan
   counts their images and shards; a tar source's first tar opens as one); the paper-* strategies have published
   head sets for each model's reference model, inside its tower; a ``RAY_ADDRESS`` cluster accepts a connection
   within :data:`ccs_ray.cluster.CONNECT_TIMEOUT_S` (``ray.init`` would retry for minutes); on a cluster of several
   alive nodes the results root is not a local folder unless ``results.shared`` declares it mounted on every node
   (:func:`check_shared_root`); the cluster has the CPUs and GPUs the scan's and the evals' actor layouts need.

Network probes run concurrently, so each phase is bounded by one probe's timeout. With ``progress`` on a terminal,
each group of checks says what it checks, with its elapsed seconds (:class:`ccs_ray.progress.Steps`). The returned
:class:`Plan` is
what ``--dry-run`` prints: models, layers and heads, images and shards per source, the stages, the actor layouts,
the judge estimate (calls, tokens and cost per judge, with no spans needed: the number of heads comes from the
model config) and the run it starts or resumes.
"""

from __future__ import annotations

import os

from ..files import use_storage
from ..planning import Plan
from ..progress import Steps
from ..runs import RUN_SCOPE, RunState
from ..spec import Spec
from ..stages.contract import BY_NAME, unmet_needs
from . import model_checks
from .cluster_checks import check_layouts, check_nodes_reach_root, check_shared_root, cluster_resources, ray_connected
from .head_checks import check_explicit_heads, check_published_heads
from .judge_checks import check_judges, estimate_judges
from .problems import Checks, PreflightError
from .source_checks import check_sources
from .storage_checks import check_results, check_uris

__all__ = ["ENGINE_CHECKS", "PreflightError", "check_nodes_reach_root", "check_shared_root", "preflight"]

#: What the second phase of :func:`preflight` checks, named when the first found problems.
ENGINE_CHECKS = "weights, sources, datasets, published head sets and the cluster are checked"


def check_stages(checks: Checks, spec: Spec, state: RunState | None, resume: bool) -> None:
    """Each enabled stage's needs (:func:`~ccs_ray.stages.contract.unmet_needs`): in the spec's stages or, with
    ``--resume``, done in the resumed run ``state`` (None: it could not be resolved, another problem says why)."""

    def done(stage: str) -> bool:
        if not resume:
            return False
        if state is None:
            return True
        scopes = spec.models.keys if BY_NAME[stage].per_model else [RUN_SCOPE]
        return all(state.done(stage, scope) for scope in scopes)

    checks.problems += unmet_needs(spec, done)


def preflight(spec: Spec, resume: bool = False, run_id: str | None = None, dry_run: bool = False,
              cluster: bool = True, progress: bool = False) -> Plan:
    """Check everything ``spec`` needs before computing anything; returns the run's :class:`Plan`, whose
    ``run_id`` is the run to work in (resolved once, here: :func:`~ccs_ray.runs.resolve_run`).

    Two phases. The first loads no torch, open_clip, scipy or Ray and takes about a second: model keys and
    towers (from the configs), layers, what each stage needs (:mod:`~ccs_ray.stages.contract`), the judges'
    endpoints and keys, the text pool, the results root and the run. Its problems are reported at once, without
    loading the engine. The second checks weights, sources and datasets, the published head sets and the cluster,
    and estimates the judges' calls. ``dry_run``: plan only (API keys need not be set; nothing is created under the
    results root). ``cluster``: also check the Ray cluster's resources (``ccs-ray submit`` leaves that to the job).
    ``progress``: say what each group of checks checks, on a terminal (:class:`~ccs_ray.progress.Steps`).
    Raises :class:`PreflightError` listing every problem of the phase that found any.
    """
    with Steps(progress) as steps:
        return _preflight(spec, resume, run_id, dry_run, cluster, steps)


def _preflight(spec: Spec, resume: bool, run_id: str | None, dry_run: bool, cluster: bool, steps: Steps) -> Plan:
    """:func:`preflight`, each group of checks a step of ``steps``."""
    use_storage(spec.storage)
    checks = Checks()
    plan = Plan(spec.name, spec.results_root, list(spec.stages), {})
    pool_ok, judges = _spec_phase(checks, spec, plan, resume, run_id, dry_run, steps)
    checks.finish(ENGINE_CHECKS)
    _environment_phase(checks, spec, plan, cluster, steps)
    if judges is not None:
        steps.next("estimating the judges' calls and cost ...")
        estimate_judges(spec, plan, judges, pool_ok)
    steps.next("checking that the weights can be downloaded ..." if checks.probes else "finishing the checks ...")
    checks.finish()
    return plan


def _spec_phase(checks: Checks, spec: Spec, plan: Plan, resume: bool, run_id: str | None, dry_run: bool,
                steps: Steps) -> tuple[bool, list | None]:
    """The first phase (no engine): URIs, models and layers, the text pool, judges, the results root and the run,
    stage needs and explicit heads. Fills ``plan.models`` and ``plan.run_id``; returns (whether the text pool loads,
    the judges or None)."""
    steps.next(f"checking the spec {spec.name}: URIs, models, stages, text pool, judges and results root ...")
    unusable = check_uris(checks, spec)
    for key in spec.models.keys:
        model = model_checks.check_model(checks, key, spec.models.layers, spec.models.last_layers)
        if model is not None:
            plan.models.append(model)
    pool_ok = False
    if "spans" in spec.stages and "spans.pool" not in unusable:
        from ..pools import check_pool

        def pool_loads() -> bool:
            check_pool(spec.spans.pool)
            return True

        pool_ok = checks.run("spans.pool", pool_loads) is not None
    judges = check_judges(checks, spec, dry_run) if "judge" in spec.stages else None
    state = check_results(checks, spec, resume, run_id, dry_run) if "results.root" not in unusable else None
    plan.run_id = state.run_id if state is not None else None
    check_stages(checks, spec, state, resume)
    check_explicit_heads(checks, spec, plan.models)
    return pool_ok, judges


def _environment_phase(checks: Checks, spec: Spec, plan: Plan, cluster: bool, steps: Steps) -> None:
    """The second phase: weights, the cluster (``cluster``: its address, resources and a shared results root),
    sources and datasets, the published head sets and the actor layouts. Fills the rest of ``plan``."""
    steps.next(f"checking the weights of {len(plan.models)} model{'s' * (len(plan.models) > 1)} ...")
    for model in plan.models:
        model_checks.check_model_weights(checks, model)
    address = os.environ.get("RAY_ADDRESS", "") if cluster else ""
    if address and not ray_connected():
        steps.next(f"checking that a Ray cluster answers at {address} ...")
        from ..cluster import check_address

        known = len(checks.problems)
        checks.run("RAY_ADDRESS", check_address, address)
        cluster = len(checks.problems) == known  # else ray.init would hang
    if cluster:
        steps.next("checking the cluster's resources ...")
        plan.resources = checks.run("cluster (RAY_ADDRESS)", cluster_resources) or {}
        if plan.resources:
            checks.run("results.root", check_nodes_reach_root, spec)
    check_sources(checks, spec, plan, steps)
    if "prune" in spec.stages:
        steps.next("checking the published head sets ...")
        check_published_heads(checks, spec, plan)
    if cluster and plan.resources:
        steps.next("checking the actor layouts ...")
        check_layouts(checks, spec, plan)
