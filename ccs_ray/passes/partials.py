"""A pass's saved partials: finding each actor's newest committed checkpoint (its *partial*), the shards it covers,
and merging a model's partials into one accumulator that partitions the plan. Runs in the driver; torch-free
(the accumulators a :class:`~ccs_ray.passes.kinds.PassKind` loads may import torch themselves).

Layout: ``_state/<run_id>/<model>/<kind.folder>/<12 hex>/NNNNNNNN<kind.suffix>`` (one folder per actor).
"""

from __future__ import annotations

import fsspec

from ..checkpoints import read_log, sweep_log
from ..files import fs_uri, latest_committed, sweep_commits, sweep_tmp
from ..shard_plan import ShardPlan
from .kinds import PassError, PassKind


def worker_folders(state, kind: PassKind, model: str) -> list[str]:
    """URIs of the commit folders of a model's actors in a run (every actor that ever checkpointed)."""
    fs, path = fsspec.core.url_to_fs(f"{state.model_dir(model)}/{kind.folder}")
    fs.invalidate_cache(path)
    return [fs_uri(fs, p) for p in sorted(fs.glob(f"{path}/*/"))]


def partials(state, kind: PassKind, model: str) -> list[str]:
    """URIs of a model's partials in a run: the newest committed checkpoint of each actor's folder."""
    return [uri for uri in (latest_committed(f, kind.suffix) for f in worker_folders(state, kind, model)) if uri]


def partial_shards(kind: PassKind, uri: str) -> dict[str, dict]:
    """Shard id -> record of every shard the partial ``uri`` covers: from its shard log, or from the file itself
    for a partial written by an earlier version."""
    records = read_log(uri)
    return kind.read_shards(uri) if records is None else records


def covered_shards(ctx, kind: PassKind, model: str, plan: ShardPlan) -> dict[str, dict]:
    """Shards already held by saved partials of this run, checked against the current (indexed) plan."""
    covered = {}
    for uri in partials(ctx.state, kind, model):
        for shard_id, record in partial_shards(kind, uri).items():
            if plan.fingerprints.get(shard_id) != record.get("fingerprint"):
                raise PassError(f"run {ctx.run_id}: shard {shard_id} in {uri} no longer matches the data source "
                                f"(the data changed since the run started); start a new run instead of --resume")
            covered[shard_id] = record
    return covered


def merge_partials(ctx, kind: PassKind, model: str, plan: ShardPlan):
    """A model's partials merged into one accumulator, checked to partition ``plan``; then the model's
    superseded or uncommitted checkpoints and the pass's temporary files are removed."""
    merged = None
    for uri in partials(ctx.state, kind, model):
        part = kind.load(uri)
        part.shards = partial_shards(kind, uri)
        try:
            merged = part if merged is None else merged.merge(part)
        except ValueError as e:
            raise PassError(f"{model}: partial {uri} does not merge with the others: {e}") from e
    covered = set(merged.shards) if merged else set()
    planned = plan.ids()
    if covered != planned:
        missing, extra = sorted(planned - covered), sorted(covered - planned)
        raise PassError(f"{model}: {kind.name} partials do not partition the shard plan (missing {missing[:5]}, "
                        f"unknown {extra[:5]})")
    for folder in worker_folders(ctx.state, kind, model):
        sweep_commits(folder)
        newest = latest_committed(folder, kind.suffix)
        if newest:
            sweep_log(newest)
    sweep_tmp(f"{ctx.state.model_dir(model)}/{kind.folder}")
    return merged
