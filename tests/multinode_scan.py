"""Run a scan on a simulated heterogeneous Ray cluster: two GPU nodes (2 CPUs and 1 GPU each; the GPUs are Ray's
logical resources, so their actors run on CPU) and one CPU-only node (1 CPU). Print one JSON line (used by
test_scan.py): the nodes, the nodes the scan actors ran on and the nodes the decoders ran on."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

REPO = Path(__file__).resolve().parents[1]


@ray.remote(num_cpus=1)
def _node() -> str:
    time.sleep(0.1)
    return ray.get_runtime_context().get_node_id()


def main(root: str) -> None:
    from ccs_ray.errors import UserError
    from ccs_ray.preflight import check_nodes_reach_root
    from ccs_ray.spec import load_spec
    from ccs_ray.stages import RunContext
    from ccs_ray.stages.scan import run_scan, section

    # Both simulated nodes are this one machine: each node's memory monitor would see the whole machine's
    # memory (the test session's included) as its own and kill workers; real nodes have their own memory.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cpu_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    # SPREAD places work among the nodes the scheduler already sees, and a node's resources reach the head's
    # scheduler after they reach the GCS: wait until SPREAD probes land on every node.
    deadline = time.monotonic() + 60
    while len(set(ray.get([_node.options(scheduling_strategy="SPREAD").remote() for _ in range(6)]))) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler never placed work on every node")
        time.sleep(0.2)
    spec = load_spec(REPO / "jobs" / "smoke.toml", [
        f'results.root="{root}"', 'data.source="probe://?n=64&seed=3&size=48"', "data.shard_size=8",
        "scan.batch_size=5", "scan.checkpoint_every=2"])
    # preflight's rule on this cluster of three nodes: a local results root only when it is declared shared
    with pytest.raises(UserError, match="but the cluster has 3 nodes"):
        check_nodes_reach_root(spec)
    check_nodes_reach_root(load_spec(REPO / "jobs" / "smoke.toml", [f'results.root="{root}"', "results.shared=true"]))
    summary = run_scan(RunContext.of(spec, "r1", root, progress=False), section(spec))
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    decoders = [a.node_id for a in list_actors(filters=[("class_name", "=", "Decoder")], limit=1000)]
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"gpu_nodes": sorted(n for n, r in nodes.items() if r.get("GPU")), "cpu_node": cpu_node.node_id,
                      "nodes": len(nodes), "shard_nodes": sorted(summary.nodes), "decoder_nodes": decoders,
                      "moments": summary.moments["ccs-tiny/none"], "gpu_node": gpu_node.node_id}))


if __name__ == "__main__":
    main(sys.argv[1])
