"""Preflight of the sources a run reads: ``data.source`` indexed once into the shard plan the scan and explain pass
run, and every ``[[evals.*]]`` dataset planned, each counted as it is listed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..planning import Plan, SourcePlan
from ..progress import Steps
from ..spec import Spec
from .problems import Checks

if TYPE_CHECKING:
    from ..sources.base import Shard


def _source(key: str, uri: str, shards: Iterable[Shard]) -> SourcePlan | None:
    """What an eval source holds, its shards counted as they stream (None when it has none)."""
    kind: str | None = None
    images: int | None = 0
    n = 0
    for shard in shards:
        n += 1
        kind = shard.kind
        images = None if images is None or shard.size is None else images + shard.size
    if kind is None:  # no shards
        return None
    return SourcePlan(key, uri, kind, images, n)


def check_sources(checks: Checks, spec: Spec, plan: Plan, steps: Steps) -> None:
    """Every source the run reads is listed (once: the scan and explain pass run the indexed plan) and counted."""
    from ..shard_plan import ShardPlan

    if {"scan", "explain"} & set(spec.stages):
        steps.next(f"checking the data source {spec.data.source} ...")
        shards = checks.run("data.source", lambda: ShardPlan(spec.data).index())
        if shards:  # counted as it was indexed: the spool is not read again
            plan.shard_plans["data.source"] = shards
            plan.sources.append(SourcePlan("data.source", spec.data.source, shards.data.kind, shards.images,
                                           len(shards)))
    if "prune" not in spec.stages:
        return
    from ..evals import datasets as ds

    for kind in ds.KINDS:
        for i, entry in enumerate(getattr(spec.evals, kind)):
            key = f"evals.{kind}[{i}] {entry.name!r}"
            steps.next(f"checking the {kind} dataset {entry.name} ...")
            planned = checks.run(key, ds.plan_dataset, kind, entry)
            if planned:
                plan.datasets[kind, entry.name] = planned
            if planned and planned[1]:
                shards = planned[1]
                source = _source(key, entry.source or shards[0].uri, shards)
                if source:
                    plan.sources.append(source)
