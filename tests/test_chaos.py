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
    assert fig["run_processes_at_driver_kill"] > 0 and fig["processes_alive_after_s"] is not None, fig
    assert fig["processes_alive_after_s"] <= 30, fig
    calls = fig["judge_calls_vs_server"]  # every request of both driver lifetimes is in judge_calls
    assert calls["equal"] and calls["requests_without_row"] == 0, fig
    assert calls["server_requests"] == fig["requests_sent"], fig
    assert calls["judge_calls_sent"] - calls["rows_without_request"] == calls["server_requests"], fig


def test_calls_vs_server_matches_rows_and_requests_by_key():
    from ccs_ray.bench.chaos import calls_vs_server

    def row(key, outcome, via="sent"):
        return {"cache_key": key, "outcome": outcome, "via": via}

    rows = [row("a", "ok"), row("a", "http_500"), row("b", "unknown"), row("c", "unknown"), row("a", "ok", "hit")]
    assert calls_vs_server(rows, ["a", "b", "a"]) == {  # c was journalled, then its sender died before it went out
        "judge_calls_sent": 4, "server_requests": 3, "outcome_unknown": 2, "requests_without_row": 0,
        "rows_without_request": 1, "equal": True}
    assert not calls_vs_server(rows, ["a", "a", "a", "b"])["equal"]  # a request without its row
    assert not calls_vs_server(rows, ["a", "b"])["equal"]  # a row with an outcome that the server never received
    for unanswered in ("timeout", "connection"):  # refused or timed out before the server took it: never received
        figures = calls_vs_server([*rows, row("d", unanswered)], ["a", "b", "a"])
        assert figures["equal"] and figures["rows_without_request"] == 2
    assert not calls_vs_server([*rows, row("d", "unparseable")], ["a", "b", "a"])["equal"]  # an answer: received
