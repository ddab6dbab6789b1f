"""Run a scan on a simulated two-node Ray cluster; print one JSON line (used by test_scan.py)."""

import json
import os
import sys
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[1]


@ray.remote(num_cpus=1)
def _node() -> str:
    time.sleep(0.1)
    return ray.get_runtime_context().get_node_id()


def main(root: str) -> None:
    from ccs_ray.spec import load_spec
    from ccs_ray.stages import Context
    from ccs_ray.stages.scan import run_scan, section

    # Both simulated nodes are this one machine: each node's memory monitor would see the whole machine's
    # memory (the test session's included) as its own and kill workers; real nodes have their own memory.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    # SPREAD places actors among the nodes the scheduler already sees, and a node's resources reach the head's
    # scheduler after they reach the GCS: wait until SPREAD probes land on both nodes.
    deadline = time.monotonic() + 60
    while len(set(ray.get([_node.options(scheduling_strategy="SPREAD").remote() for _ in range(4)]))) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler never placed work on both nodes")
        time.sleep(0.2)
    spec = load_spec(REPO / "jobs" / "smoke.toml", [
        f'results.root="{root}"', 'data.source="probe://?n=64&seed=3&size=48"', "data.shard_size=8",
        "scan.batch_size=5", "scan.checkpoint_every=2", "scan.actors=2"])
    summary = run_scan(Context.of(spec, "r1", root, progress=False), section(spec))
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"nodes": nodes, "shard_nodes": len(summary.nodes), "moments": summary.moments["ccs-tiny/none"]}))


if __name__ == "__main__":
    main(sys.argv[1])
