"""Preflight of the cluster: its resources (Ray's when connected, else this machine's), a local results root on
several nodes only when declared shared, and the scan's and evals' actor layouts."""

from __future__ import annotations

import os

import fsspec

from ..errors import UserError
from ..files import is_local
from ..planning import Plan
from ..spec import Spec
from .problems import Checks


def check_shared_root(root: str, shared: bool, nodes: int) -> None:
    """A UserError when the results ``root`` is a folder of one machine on a cluster of ``nodes`` alive nodes and
    the spec does not declare it shared (``results.shared``): each node's actors would write their part to their
    own disk, and the run would not find them."""
    if nodes > 1 and not shared and is_local(fsspec.core.url_to_fs(root)[0]):
        raise UserError(f"results.root: {root!r} is a folder of one machine, but the cluster has {nodes} nodes, each "
                        f"of which would write its part to its own disk; pass --results with a URI every node "
                        f"reaches (s3://..., gs://...), or set results.shared = true if it is a file system every "
                        f"node mounts at the same path (NFS, Lustre)")


def cluster_resources() -> dict:
    """The cluster's resources: Ray's when connected (or ``RAY_ADDRESS`` is set), else this machine's."""
    import ray

    from ..cluster import ensure_ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        ensure_ray()
        return dict(ray.cluster_resources())
    import torch
    from ray._private.utils import get_num_cpus

    return {"CPU": float(get_num_cpus()), "GPU": float(torch.cuda.device_count())}


def ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster."""
    import ray

    return ray.is_initialized()


def check_nodes_reach_root(spec: Spec) -> None:
    """:func:`check_shared_root` on the connected cluster's alive nodes."""
    from ..cluster import alive_nodes

    if ray_connected():
        check_shared_root(spec.results_root, spec.results.shared, len(alive_nodes()))


def check_layouts(checks: Checks, spec: Spec, plan: Plan) -> None:
    from ..cluster import actor_layout, node_cpus

    n = len(spec.models.keys)
    nodes = node_cpus() if ray_connected() else None
    uses = {"scan": {"scan", "explain"}, "prune": {"prune"}}  # explain runs on the scan's actors
    # the scan decodes in separate tasks (its share measured when it starts); prune's actors decode themselves
    for stage, section, n_models, share in (("scan", spec.scan, n, None), ("prune", spec.evals, 1, 0.0)):
        if uses[stage] & set(spec.stages):
            key = "evals" if stage == "prune" else stage
            layout = checks.run(f"{key}.actors", actor_layout, section, n_models, plan.resources, share, key, nodes)
            if layout is not None:
                plan.layouts[stage] = layout._asdict()
