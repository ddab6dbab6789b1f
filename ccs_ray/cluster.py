"""The Ray cluster: connecting to it, and laying model actors out over its GPUs and CPUs.

Both the scan and the pruning stage run long-lived model actors; :func:`actor_layout` is the one rule
that sizes them from a stage's section (``actors``, ``gpus_per_actor``, ``cpus_per_actor``) and the
cluster's resources, and refuses a layout that could never be scheduled instead of waiting forever.

On CPU-only clusters model actors get every core that decoding does not need: with a measured decode share
f (the fraction of a core's time decoding takes per image, next to the model's, :mod:`ccs_ray.passes`), an actor
holds (1 - f) x the smallest node's CPUs / actors per node, fractional CPUs included, and runs that many torch
threads (:func:`use_held_cpus`, rounded, at least 1); the pass's decoders share the rest, one per CPU the actors
leave free on each node (:func:`decoder_layout`), so a cluster's CPU-only nodes decode for its GPU nodes.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

import ray

from .errors import UserError
from .threads import THREAD_ENV, passive_waits, set_threads
from .watchdog import watch


class LayoutError(UserError, ValueError):
    """Actors that the cluster can never schedule at once; the message names the keys to change."""


class ActorLayout(NamedTuple):
    """How a stage's model actors are placed: resources each actor holds, and actors per model."""

    gpus_per_actor: float
    cpus_per_actor: float
    actors: int


def ensure_ray(num_cpus: int | None = None, env: dict[str, str] | None = None) -> None:
    """Connect to the cluster at ``RAY_ADDRESS``, or start a local one (with ``num_cpus``) in this process, which
    ends with this process even when it is killed (:mod:`ccs_ray.watchdog`).

    ``env``: environment variables the cluster's workers need (a local cluster's workers inherit this
    process's environment; a remote one gets them through the job's runtime env), besides
    :data:`~ccs_ray.threads.THREAD_ENV`."""
    passive_waits()
    env = {**THREAD_ENV, **(env or {})}
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            check_address(os.environ["RAY_ADDRESS"])  # ray.init would retry for minutes
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        else:  # no dashboard shows a local cluster's own Ray metrics: none are collected, which spares each of its
            # processes a metrics exporter thread (one that has crashed busy drivers); a set value is kept
            os.environ.setdefault("RAY_enable_metrics_collection", "0")
            watch()  # none of the cluster's processes outlives this driver, even killed, by more than a second
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


_NAMED: dict[tuple[str, str], object] = {}  # (Ray job, name) -> handle: the actor lives as long as this driver


def named_actor(cls: type, name: str, *args, **options):
    """The one actor ``name`` of this Ray job, an instance of ``cls(*args)`` holding no CPU (and Ray's actor
    ``options``), created on first use; other processes of the job (the actors it starts) find it by name."""
    key = (ray.get_runtime_context().get_job_id(), name)
    if key not in _NAMED:
        _NAMED[key] = ray.remote(num_cpus=0)(cls).options(name=name, get_if_exists=True, **options).remote(*args)
    return _NAMED[key]


def alive_nodes() -> dict[str, dict]:
    """Node id -> resources (``CPU``, ``GPU``, ...) of each alive node of the connected cluster."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}


def actor_nodes(nodes: dict[str, dict], gpus: float, cpus: float) -> list[str]:
    """The nodes that can hold one actor (``gpus``, ``cpus``), in the order :func:`node_cycle` fills them."""
    return sorted(n for n, r in nodes.items() if r.get("GPU", 0) >= gpus and r.get("CPU", 0) >= cpus)


def on_node(node: str):
    """A scheduling strategy that places on ``node`` when it has room, else where Ray finds some (soft)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node, soft=True)


def node_cycle(gpus: float, cpus: float) -> Iterator:
    """Scheduling strategies that place successive actors on the cluster's alive nodes in turn, among the nodes
    that can hold one actor (``gpus``, ``cpus``); soft, so that Ray places an actor elsewhere when its node is
    full. Ray's own SPREAD is best effort and may put every actor on one node; on one node it is used as is."""
    nodes = actor_nodes(alive_nodes(), gpus, cpus)
    if len(nodes) < 2:
        return itertools.repeat("SPREAD")
    return (on_node(node) for node in itertools.cycle(nodes))


def decoder_layout(nodes: dict[str, dict], gpus: float, cpus: float, n_actors: int, first: str | None,
                   ) -> list[tuple[str, float]]:
    """(node id, CPUs held) of each decoder a pass adds to its first one (which holds :data:`CPU_STEP` on node
    ``first``), given ``n_actors`` actors of (``gpus``, ``cpus``) placed by :func:`node_cycle`: on every node,
    one decoder per CPU the actors (and the first decoder) leave free, each holding an equal part of a whole
    decoder's share of that node's free CPUs. So CPU-only nodes of a cluster whose actors hold its GPUs decode, and
    no decoder asks a node for more than it has."""
    order = actor_nodes(nodes, gpus, cpus)
    free = {n: r.get("CPU", 0.0) for n, r in nodes.items()}
    for i in range(n_actors):
        if order:
            free[order[i % len(order)]] -= cpus
    out = []
    for node in sorted(free):
        left = free[node] - (CPU_STEP if node == first else 0.0)
        count = math.ceil(left - 1e-9) if left >= CPU_STEP - 1e-9 else 0
        each = round(math.floor(left / max(1, count) / CPU_STEP + 1e-9) * CPU_STEP, 2)
        out += [(node, each)] * ((count - (node == first)) if each >= CPU_STEP else 0)
    return out


MIN_DECODE_SHARE = 0.02  # share of a CPU-only node the scan leaves to decoding however cheap it measured
CPU_STEP = 0.01  # fractional CPUs are held in steps of this


def node_cpus() -> list[float]:
    """CPUs of each alive node of the connected cluster."""
    return [r.get("CPU", 0.0) for r in alive_nodes().values()]


def use_held_cpus() -> int:
    """Size this Ray worker's torch, BLAS and OpenMP pools to the CPUs it holds (rounded, at least 1;
    :func:`ccs_ray.threads.set_threads`); returns the count."""
    return set_threads(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)))


def held_device() -> str:
    """``"cuda"`` in a Ray worker that holds a GPU on a node where CUDA works, else ``"cpu"``: a node that advertises
    GPUs it cannot use (a misconfigured or simulated one) runs its actors on CPU, with a warning, instead of failing."""
    import torch

    gpus = ray.get_gpu_ids()
    if not gpus:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    logging.getLogger(__name__).warning("this worker holds GPUs %s but CUDA is not available here: running on CPU",
                                        gpus)
    return "cpu"


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB: ``VmHWM`` of ``/proc/self/status``, which starts afresh at exec
    (``ru_maxrss`` keeps the peak of the process it was forked from, such as a large parent that started a driver
    subprocess); ``ru_maxrss`` where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def actor_layout(section, n_models: int, resources: dict | None = None, decode_share: float | None = None,
                 key: str = "scan", nodes: list[float] | None = None) -> ActorLayout:
    """The layout of ``n_models`` models' actors on a cluster with ``resources`` (default: Ray's).

    ``section`` has ``actors``, ``gpus_per_actor`` and ``cpus_per_actor`` (None: the defaults below);
    ``decode_share``: the share of CPU time the stage's separate decode tasks need (the scan's, measured; None:
    not measured yet, :data:`MIN_DECODE_SHARE`); 0 for a stage whose actors decode themselves (prune);
    ``key`` names the section in errors; ``nodes``: each node's CPUs (default: Ray's when ``resources`` is
    None, else one node with all of them).
    Defaults: one actor per GPU and model, sharing GPUs fractionally when models outnumber GPUs; one actor per
    model without GPUs. GPU actors hold one CPU each (none where that would leave decoding no whole CPU);
    CPU-only actors hold the CPUs decoding does not need (module docstring).
    """
    if resources is None:
        resources, nodes = ray.cluster_resources(), nodes or node_cpus()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    nodes = [n for n in (nodes or [cpus]) if n > 0] or [0.0]
    decodes = decode_share != 0
    share = max(MIN_DECODE_SHARE, decode_share or 0.0) if decodes else 0.0
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
    keep = (1.0 if per_actor else share * cpus) if decodes else 0.0  # CPUs decoding keeps
    if cpus_per_actor is None and per_actor:
        cpus_per_actor = 1.0 if cpus - held >= keep else 0.0
    elif cpus_per_actor is None:
        per_node = math.ceil(held / len(nodes))
        cpus_per_actor = max(CPU_STEP, math.floor(min(nodes) * (1 - share) / per_node / CPU_STEP + 1e-9) * CPU_STEP)
        cpus_per_actor = round(cpus_per_actor, 2)
    elif cpus - held * cpus_per_actor < keep - 1e-9:
        raise LayoutError(f"{key}.cpus_per_actor={cpus_per_actor} x {held} actors leaves "
                          f"{cpus - held * cpus_per_actor:g} CPUs for decoding, which needs {keep:g} (the cluster has "
                          f"{cpus:g}); lower it or {key}.actors")
    return ActorLayout(per_actor, cpus_per_actor, n_actors)


#: Seconds :func:`unreachable_address` waits for a connection (a cluster on the network answers in milliseconds).
CONNECT_TIMEOUT_S = 3.0
#: Ports a Ray address without one means: the GCS of ``host``, Ray Client's ``ray://``, the dashboard's ``http(s)://``.
_DEFAULT_PORTS = {"": 6379, "ray": 10001, "http": 80, "https": 443}


def unreachable_address(address: str, timeout: float | None = None) -> str | None:
    """Why nothing accepts a TCP connection at the Ray ``address`` within ``timeout`` seconds (default
    :data:`CONNECT_TIMEOUT_S`), else None.

    ``address`` is what ``RAY_ADDRESS`` or ``--address`` holds: ``host:port`` (the head's GCS), ``ray://host:port``
    (Ray Client) or ``http(s)://host:port`` (the dashboard, for jobs). ``auto`` and ``local`` name no remote cluster
    (None). The connection is tried in a daemon thread, so a hanging name lookup cannot hold the caller longer.
    """
    if address in ("", "auto", "local"):
        return None
    wait = CONNECT_TIMEOUT_S if timeout is None else timeout
    scheme = address.split("://", 1)[0] if "://" in address else ""
    try:
        parts = urlsplit(address if scheme else f"//{address}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError as e:
        return f"not a host:port address: {e}"
    if not host or port is None:
        return "not a host:port address"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), wait).close()
            outcome.append(None)
        except TimeoutError:
            outcome.append(f"no answer within {wait:g} s")
        except OSError as e:
            outcome.append(str(e.strerror or e))

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(wait)
    return outcome[0] if outcome else f"no answer within {wait:g} s"


def check_address(address: str) -> None:
    """A UserError when no Ray cluster accepts a connection at ``address`` (``RAY_ADDRESS``) within
    :data:`CONNECT_TIMEOUT_S` (:func:`unreachable_address`)."""
    why = unreachable_address(address)
    if why:
        raise UserError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({why}); start it (ray start --head) "
                        f"or unset RAY_ADDRESS to run on a local cluster")
