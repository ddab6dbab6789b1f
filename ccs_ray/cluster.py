"""The Ray cluster: connecting to it, and laying model actors out over its GPUs and CPUs.

Both the scan and the pruning stage run long-lived model actors; :func:`actor_layout` is the one rule
that sizes them from a stage's section (``actors``, ``gpus_per_actor``, ``cpus_per_actor``) and the
cluster's resources, and refuses a layout that could never be scheduled instead of waiting forever.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, NamedTuple

import ray

from .errors import UserError


class LayoutError(UserError, ValueError):
    """Actors that the cluster can never schedule at once; the message names the keys to change."""


class ActorLayout(NamedTuple):
    """How a stage's model actors are placed: resources each actor holds, and actors per model."""

    gpus_per_actor: float
    cpus_per_actor: float
    actors: int


def ensure_ray(num_cpus: int | None = None, env: dict[str, str] | None = None) -> None:
    """Connect to the cluster at ``RAY_ADDRESS``, or start a local one (with ``num_cpus``) in this process.

    ``env``: environment variables the cluster's workers need (a local cluster's workers inherit this
    process's environment; a remote one gets them through the job's runtime env)."""
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


_NAMED: dict[tuple[str, str], object] = {}  # (Ray job, name) -> handle: the actor lives as long as this driver


def named_actor(cls: type, name: str, *args, **options):
    """The one actor ``name`` of this Ray job, an instance of ``cls(*args)`` holding no CPU (and Ray's actor
    ``options``), created on first use; other processes of the job (the actors it starts) find it by name."""
    key = (ray.get_runtime_context().get_job_id(), name)
    if key not in _NAMED:
        _NAMED[key] = ray.remote(num_cpus=0)(cls).options(name=name, get_if_exists=True, **options).remote(*args)
    return _NAMED[key]


def node_cycle(gpus: float, cpus: float) -> Iterator:
    """Scheduling strategies that place successive actors on the cluster's alive nodes in turn, among the nodes
    that can hold one actor (``gpus``, ``cpus``); soft, so that Ray places an actor elsewhere when its node is
    full. Ray's own SPREAD is best effort and may put every actor on one node; on one node it is used as is."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) >= gpus
                   and n["Resources"].get("CPU", 0) >= cpus)
    if len(nodes) < 2:
        return itertools.repeat("SPREAD")
    return (NodeAffinitySchedulingStrategy(node, soft=True) for node in itertools.cycle(nodes))


def actor_layout(section, n_models: int, resources: dict | None = None, keep_cpus: int = 1,
                 key: str = "scan") -> ActorLayout:
    """The layout of ``n_models`` models' actors on a cluster with ``resources`` (default: Ray's).

    ``section`` has ``actors``, ``gpus_per_actor`` and ``cpus_per_actor`` (None: the defaults below);
    ``keep_cpus`` CPUs stay free for other tasks (the scan's decoding); ``key`` names the section in errors.
    Defaults: one actor per GPU and model, sharing GPUs fractionally when models outnumber GPUs; one
    actor per model without GPUs; one CPU per actor, none where that would take the kept CPUs.
    """
    resources = ray.cluster_resources() if resources is None else resources
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    per_actor = section.gpus_per_actor
    if per_actor is None:
        per_actor = min(1.0, gpus / n_models) if gpus else 0.0
    n_actors = section.actors or (max(1, int(gpus / per_actor / n_models)) if per_actor else 1)
    held = n_actors * n_models
    if held * per_actor > gpus + 1e-9:
        raise LayoutError(f"{held} {key} actors ({n_models} models x {n_actors}) x {key}.gpus_per_actor={per_actor:g} "
                          f"need {held * per_actor:g} GPUs but the cluster has {gpus:g}; lower {key}.actors or "
                          f"{key}.gpus_per_actor (fractions share a GPU)")
    cpus_per_actor = section.cpus_per_actor
    if cpus_per_actor is None:
        cpus_per_actor = 1.0 if cpus - held >= keep_cpus else 0.0
    elif cpus - held * cpus_per_actor < keep_cpus:
        raise LayoutError(f"{key}.cpus_per_actor={cpus_per_actor} x {held} actors leaves fewer than {keep_cpus} "
                          f"CPU for other tasks (the cluster has {cpus:g}); lower it or {key}.actors")
    return ActorLayout(per_actor, cpus_per_actor, n_actors)
