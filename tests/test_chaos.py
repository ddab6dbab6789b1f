"""One run under every fault at once (``ccs-ray bench chaos``) ends exactly as an undisturbed run."""

import pytest


@pytest.mark.slow
def test_chaos_run_equals_an_undisturbed_run(ray_cluster):
    import os

    from ccs_ray.bench import chaos

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the chaos run kills processes of a local cluster started by this session")

    fig = chaos.run(images=160, seed=0)
    unequal = [k for k in fig if k.startswith("equal_") and not fig[k]]
    assert not unequal, fig
    assert fig["scan_actor_kills"] >= 1 and fig["judge_actor_kills"] == 1 and fig["driver_kills"] == 1, fig
    assert fig["shards_scanned"] == fig["shards_planned"] + fig["shards_rescanned_after_actor_kills"], fig
    assert 0 < fig["requests_before_driver_kill"] < fig["requests_sent"], fig
    assert fig["lost_judgments"] == 0 and fig["paid_twice"] == 0, fig
    assert fig["tmp_files_left"] == 0 and fig["orphan_partials_left"] == 0, fig
    assert fig["last_request_after_driver_kill_s"] <= 10, fig
    assert fig["run_processes_at_driver_kill"] > 0 and fig["run_processes_gone_after_s"] is not None, fig
    assert fig["run_processes_gone_after_s"] <= 30, fig
