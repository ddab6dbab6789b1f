"""Stage ``scan``: shards -> CPU decode tasks -> model actors that accumulate HeadMoments -> one merge.

Section: ``[data]`` and ``[scan]`` (:class:`ScanSection`); per run (all models at once, so that models
with the same preprocessing share each decoded shard). Writes ``shards``, ``moments``, ``errors`` (images not
scanned) and ``conversions`` (images scanned after a conversion to RGB).

The scan is a pass over the shards (:mod:`ccs_ray.passes`: topology, checkpoints and resume) whose
accumulator is each model's :class:`~ccs_ray.moments.HeadMoments` (:class:`MomentsPass`). Its partials
are ``_state/<run_id>/<model>/partials/<12 hex>/NNNNNNNN.safetensors`` (one folder per actor); the merged
moments are ``_state/<run_id>/<model>/moments.safetensors`` (listed in the ``moments`` table), compact, with their
basis beside them (``moments.basis.safetensors``, written once by the first actor that starts). Once the merged
moments are written the partials are removed: a finished scan keeps one copy of its moments, and a scan resumed
after that point takes its shards from the merged file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from .. import tables
from ..files import exists, remove
from ..moments import HeadMoments, basis_uri, save_basis
from ..passes import PassError, PassKind, covered_shards, merge_partials, run_pass
from ..shard_plan import ShardPlan
from ..sources import Shard
from ..spec import DataConfig, ScanConfig, Spec
from .context import RunContext
from .summaries import ScanSummary


@dataclass(frozen=True)
class ScanSection:
    """The scan's part of a spec: the images (``[data]``), how to scan them (``[scan]``) and whether the moments
    keep the heads' mean outputs (``mean_outputs``: the prune stage ablates in mean mode)."""

    data: DataConfig
    scan: ScanConfig
    mean_outputs: bool


def section(spec: Spec) -> ScanSection:
    prune = spec.prune
    return ScanSection(spec.data, spec.scan,
                       "prune" in spec.stages and (prune.mode == "mean" or "mean" in prune.single_modes))


@dataclass(frozen=True)
class MomentsPass(PassKind):
    """The scan's accumulator: per-head compact moments over ``folds`` data folds, in ``convention``, with the heads'
    summed outputs when ``keep_z_sum``; ``bases``: (model key, where its basis goes) of each model whose basis a
    scan writes."""

    folds: int
    convention: str
    keep_z_sum: bool = True
    bases: tuple[tuple[str, str], ...] = ()
    name = "scan"
    folder = "partials"
    suffix = ".safetensors"
    coefficients = True

    def start(self, model_key, model, layers, device):
        acc = HeadMoments.for_model(model_key, model, layers, folds=self.folds, convention=self.convention,
                                    mean_outputs=self.keep_z_sum, device=device)
        uri = dict(self.bases).get(model_key)
        if uri is not None and not exists(uri):  # every actor of the model computes the same basis; one writes it
            save_basis(uri, acc)
        return acc

    def add(self, acc, d, loaded, batch, fold):
        acc.update(d.coefficients, fold, d.z_sum)

    def read_shards(self, uri):
        return HeadMoments.read_meta(uri)["shards"]

    def load(self, uri):
        return HeadMoments.load(uri)


DONE_COLUMNS = ("shard_id", "source", "fingerprint", "fold", "n_images", "n_errors", "node", "worker", "seconds")


def _planned_rows(shards: list[Shard], folds: int) -> list[dict]:
    return [dict(shard_id=s.shard_id, source=s.uri, fingerprint=s.fingerprint, fold=s.fold(folds), status="planned")
            for s in shards]


def _done_rows(records) -> list[dict]:
    """Shard rows of scan records (:meth:`~ccs_ray.passes.ModelActor.process`)."""
    return [dict({k: r[k] for k in DONE_COLUMNS}, status="done", finished_at=datetime.fromisoformat(r["finished_at"]))
            for r in records]


def run_scan(ctx: RunContext, section: ScanSection) -> ScanSummary:
    """Scan every model of ``ctx.models`` over the section's data on the connected Ray cluster; resumes
    from the run's partials.

    The shards table is written in parts while the scan runs (``planned-NNNNNN`` parts, one per part of the plan,
    a ``done-<uuid>`` part per actor checkpoint; the view ``shards`` shows each shard's newest state), then as one
    file ``scan`` from the merged records, which replaces the parts."""
    data = section.data
    models = list(ctx.models.keys)
    kind = MomentsPass(data.folds, section.scan.convention, section.mean_outputs,
                       tuple((key, basis_uri(_moments_uri(ctx, key))) for key in models))

    plan = ctx.shard_plan(data)  # preflight's, when it planned the run: the source's one listing
    for part, shards in enumerate(plan.parts()):  # the plan first, so that an interrupted run shows it
        for key in models:
            tables.write_table(ctx.root, "shards", _planned_rows(shards, data.folds), ctx.run_id, key,
                               name=f"planned-{part:06d}")
    covered = {key: _merged_shards(ctx, key, plan) or covered_shards(ctx, kind, key, plan) for key in models}
    todo = {key: plan.ids() - set(covered[key]) for key in models}

    def saved(model: str, records: list[dict]) -> None:
        tables.write_table(ctx.root, "shards", _done_rows(records), ctx.run_id, model,
                           name=f"done-{uuid.uuid4().hex}")

    stats = run_pass(ctx, kind, section.scan, plan, todo, data.folds, on_saved=saved)
    summary = ScanSummary(shards_decoded=stats.shards_decoded, shards_scanned=stats.shards_scanned,
                          shards_skipped=stats.shards_skipped, decode_share=stats.decode_share,
                          cpus_per_actor=stats.cpus_per_actor, decode_on_actors=stats.decode_on_actors)
    for key in models:
        _finish_model(ctx, kind, key, plan, summary)
    summary.seconds = stats.seconds
    return summary


def _moments_uri(ctx: RunContext, model: str) -> str:
    return f"{ctx.state.model_dir(model)}/moments.safetensors"


def _merged_shards(ctx: RunContext, model: str, plan: ShardPlan) -> dict[str, dict]:
    """The shards of the model's merged moments when the scan already wrote them (its partials are then gone),
    checked to be the plan's; none when there are no merged moments yet."""
    uri = _moments_uri(ctx, model)
    if not exists(uri):
        return {}
    shards = HeadMoments.read_meta(uri)["shards"]
    if {k: r.get("fingerprint") for k, r in shards.items()} != plan.fingerprints:
        raise PassError(f"run {ctx.run_id}: the scan of {model} in {uri} no longer matches the data source "
                        f"(the data changed since the run started); start a new run instead of --resume")
    return shards


def _finish_model(ctx: RunContext, kind: MomentsPass, model: str, plan: ShardPlan, summary: ScanSummary) -> None:
    """Merge a model's partials (checked to partition the plan) into its moments file unless it is written (and then
    checked against the plan by :func:`run_scan`), remove the partials, and write its moments, shards, errors and
    conversions tables."""
    uri = _moments_uri(ctx, model)
    if exists(uri):
        merged = HeadMoments.load(uri)
    else:
        merged = merge_partials(ctx, kind, model, plan)
        merged.save(uri)
    remove(f"{ctx.state.model_dir(model)}/{kind.folder}")
    records = [merged.shards[s] for s in plan.fingerprints]  # in plan order
    n_images = int(merged.n.sum())
    tables.write_table(ctx.root, "moments", [dict(
        uri=uri, convention=merged.convention, n_images=n_images, n_heads=len(merged.heads),
        embed_dim=merged.embed_dim, folds=merged.folds, n_shards=len(records))], ctx.run_id, model, name="scan")
    tables.write_table(ctx.root, "shards", _done_rows(records), ctx.run_id, model, name="scan")
    tables.remove_parts(ctx.root, "shards", ctx.run_id, model, ("planned-", "done-"))
    for table in ("errors", "conversions"):  # records of an earlier version hold no conversions
        rows = [tables.renamed(table, row) for r in records for row in r.get(table, ())]
        rows = [dict(row, logged_at=datetime.fromisoformat(row["logged_at"])) for row in rows]
        tables.write_table(ctx.root, table, rows, ctx.run_id, model, name="scan")
    summary.moments[model] = uri
    summary.n_images[model] = n_images
    summary.n_errors[model] = sum(r["n_errors"] for r in records)
    summary.n_converted[model] = sum(r["n_converted"] for r in records)
    summary.nodes = sorted(set(summary.nodes) | {r["node"] for r in records})


def run(ctx: RunContext, section: ScanSection) -> ScanSummary:
    return run_scan(ctx, section)

