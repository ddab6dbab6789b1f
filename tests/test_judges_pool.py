"""The LLM judge through the real Ray pool and the real openai client against the loopback judge server."""

import asyncio
import re
from collections import Counter
from contextlib import nullcontext

import pytest
from test_judges import COLORS, MODEL, write_spans

from ccs_ray.judges.loopback import JudgeServer, fake_answer
from ccs_ray.spec import load_spec
from ccs_ray.stages import run_stage
from ccs_ray.stages.judge import JudgeFailed
from ccs_ray.tables import read_table

FAST = {"timeout_s": 0.5, "backoff_s": 0.02, "backoff_max_s": 0.2}


@pytest.fixture(scope="module")
def judge_server():
    """One loopback judge for the module (the pool's workers are reused across tests); reset per test."""
    with JudgeServer() as server:
        yield server


def spec_for(server, base_url=None, **judge):
    cfg = {"model": "fake", "rpm": 60_000, **FAST, **judge}
    return load_spec({"name": "t", "judge": cfg}, [f"judge.base_url={base_url or server.base_url}"])


def expected_label(texts):
    import json
    return json.loads(fake_answer([{"role": "user", "content": "\n".join(f"- {t}" for t in texts)}]))["label"]


HEADS = {"L3.H0": COLORS, "L3.H1": ["blue " + t for t in COLORS], "L3.H2": ["sky " + t for t in COLORS[::-1]]}
LATENCY_MARGIN_S = 0.4  # seconds a loaded machine may add to one request's arrival at the loopback server


@pytest.mark.parametrize("mode", ["per_span", "batched"])
def test_llm_judge_end_to_end_cache_and_rerun(ray_cluster, judge_server, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("CCS_TEST_JUDGE_KEY", "sk-test-secret-123")
    write_spans(tmp_path, HEADS)
    with nullcontext(judge_server.reset(latency_s=0.01)) as server:
        spec = spec_for(server, mode=mode, api_key_env="CCS_TEST_JUDGE_KEY", input_price=2.0, output_price=8.0)
        per_head = 1 + (2 if mode == "batched" else 10)
        summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        assert summary["calls"] == len(server.log) == 3 * per_head and summary["errors"] == 0
        assert server.max_in_flight <= spec.judge.concurrency
        assert all(r.get("response_format") for r in server.requests)  # structured output asked for

        ccs = {r["head_label"]: r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist() if r["judge"] == "fake"}
        for head, texts in HEADS.items():
            label = expected_label(texts[:5])
            assert ccs[head]["label"] == label and ccs[head]["heuristic"] is False
            assert ccs[head]["ccs"] == sum(label in t.lower() for t in texts[:5])
            assert ccs[head]["ccs_heldout"] == sum(label in t.lower() for t in texts[5:])
        calls = read_table(str(tmp_path), "judge_calls", "r1").to_pylist()
        assert (len(calls) == 3 * per_head
                and {(c["via"], c["attempt"], c["outcome"], c["final"]) for c in calls} == {("sent", 0, "ok", True)})
        assert sorted(h["idempotency-key"] for h in server.headers) == sorted(c["cache_key"] for c in calls)
        cost = sum(c["prompt_tokens"] * 2.0 + c["completion_tokens"] * 8.0 for c in calls) / 1e6
        assert summary["cost_usd"] == pytest.approx(cost) and cost > 0

        again = run_stage("judge", spec, str(tmp_path), "r1", MODEL)  # a finished stage re-run: zero calls
        assert again["calls"] == 0 and again["cached"] == 3 * per_head and len(server.log) == 3 * per_head
    for f in tmp_path.rglob("*"):  # the API key is never written anywhere
        assert not f.is_file() or b"sk-test-secret-123" not in f.read_bytes()


def test_every_fault_is_retried_to_a_valid_answer(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})
    with nullcontext(judge_server.reset(latency_s=0.0, slow_s=2.0)) as server:
        server.faults.extend(["429", "500", "drop", "slow", "garbage"])
        spec = spec_for(server, heldout=False, concurrency=1, actors=1)
        summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        assert server.outcomes()[:5] == ["429", "500", "drop", "slow", "garbage"]
        assert server.outcomes()[5:] == ["ok"] * 6 and summary["errors"] == 0
        calls = read_table(str(tmp_path), "judge_calls", "r1").to_pylist()
        label = [c for c in calls if c["kind"] == "label"]  # the label request met every fault
        assert [(c["attempt"], c["outcome"], c["final"]) for c in label] == [
            (0, "http_429", False), (1, "http_500", False), (2, "connection", False), (3, "timeout", False),
            (4, "unparseable", False), (5, "ok", True)]
        assert [c["retried_after_timeout"] for c in label] == [False] * 4 + [True] * 2
        assert len({h["idempotency-key"] for h in server.headers[:6]}) == 1 == len({c["cache_key"] for c in label})
        assert server.headers[0]["idempotency-key"] == label[0]["cache_key"]
        ccs = [r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist() if r["judge"] == "fake"][0]
        assert ccs["ccs"] == sum(expected_label(COLORS[:5]) in t for t in COLORS[:5])


def test_unparseable_answers_become_errors_never_zeros(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})
    with nullcontext(judge_server.reset(retry_after_s=0.1)) as server:
        server.always = "garbage"
        spec = spec_for(server, heldout=False, max_retries=2)
        with pytest.raises(JudgeFailed, match="^1 of 1 heads .* first error: unparseable"):  # the tables are written
            run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        assert len(server.log) == 3  # label tried 3 times, then an error
        judgments = [j for j in read_table(str(tmp_path), "judgments", "r1").to_pylist() if j["judge"] == "fake"]
        assert all(j["aligned"] is None and "unparseable" in j["error"] for j in judgments)
        ccs = [r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist() if r["judge"] == "fake"][0]
        assert ccs["ccs"] is None and ccs["level"] == "unscored"
        errors = read_table(str(tmp_path), "errors", "r1").to_pylist()
        assert len(errors) == 1 and errors[0]["reason"] == "judge request failed"
        assert "unparseable" in errors[0]["detail"]
        server.always = None  # nothing invalid was cached: the next run asks again and succeeds
        assert run_stage("judge", spec, str(tmp_path), "r1", MODEL)["errors"] == 0


def test_bounded_retries_on_500(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})
    with nullcontext(judge_server.reset(retry_after_s=0.1)) as server:
        server.always = "500"
        with pytest.raises(JudgeFailed, match="first error: HTTP 500"):
            run_stage("judge", spec_for(server, heldout=False, max_retries=3), str(tmp_path), "r1", MODEL)
        assert len(server.log) == 4
        assert ["HTTP 500" in e["detail"] for e in read_table(str(tmp_path), "errors", "r1").to_pylist()] == [True]


def test_retry_after_and_ratelimit_headers_pause_everyone(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})
    with nullcontext(judge_server.reset(retry_after_s=1.0)) as server:
        server.faults.extend(["429", "ok", "quota"])
        spec = spec_for(server, heldout=False, backoff_s=0.01, concurrency=1, actors=1)
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        times = [t for t, _ in server.log]
        assert times[1] - times[0] >= 0.95  # Retry-After: 1 s (retry-after-ms 1000)
        assert min(times[3:]) - times[2] >= 0.95  # x-ratelimit-remaining-requests 0, reset 1s: the next waits


def _rows(root, table):
    return sorted(read_table(str(root), table, "r1", MODEL).to_pylist(), key=lambda r: repr(sorted(r.items())))


def test_a_refusing_judge_fails_the_stage_and_a_rerun_sends_only_what_failed(ray_cluster, judge_server, tmp_path):
    """3 answers, then every call refused (401, never retried): the stage fails with the count and the first
    error, after writing its tables; run again (as --resume does), it sends only what was not answered, and its
    tables equal an undisturbed run's; judge_calls holds every call of both attempts."""
    clean, failing = tmp_path / "clean", tmp_path / "failing"
    heads = {h: HEADS[h] for h in ("L3.H0", "L3.H1")}
    for root in (clean, failing):
        write_spans(root, heads)
    spec = spec_for(judge_server.reset(), heldout=False)
    run_stage("judge", spec, str(clean), "r1", MODEL)
    needed = len(judge_server.log)  # 2 heads x (a label and 5 judgments), all distinct

    with nullcontext(judge_server.reset()) as server:
        server.faults.extend(["ok"] * 3)
        server.always = "401"
        with pytest.raises(JudgeFailed) as failed:
            run_stage("judge", spec, str(failing), "r1", MODEL)
        assert re.fullmatch(rf"2 of 2 heads of {MODEL} could not be judged by judge 'fake' \(judge.max_error_share = "
                            rf"0.1\): first error: HTTP 401: .*invalid API key.* from {re.escape(server.base_url)}",
                            str(failed.value)), str(failed.value)
        answered = {r.key for r in server.records if r.valid}
        first = [r.idempotency_key for r in server.records]
        assert len(answered) == 3 and len(first) == needed  # every label, then every judgment, asked once

        server.reset()
        summary = run_stage("judge", spec, str(failing), "r1", MODEL)
        assert summary["errors"] == 0 and summary["cached"] == 3
        assert len(server.log) == needed - 3 and not answered & {r.key for r in server.records}  # none paid twice
        second = [r.idempotency_key for r in server.records]
    for table in ("labels", "judgments", "ccs", "errors"):
        assert _rows(failing, table) == _rows(clean, table), table
    calls = _rows(failing, "judge_calls")
    sent = [c for c in calls if c["via"] == "sent"]
    assert sorted(c["cache_key"] for c in sent) == sorted(first + second)
    assert Counter(c["outcome"] for c in sent) == {"ok": needed, "http_401": needed - 3}
    assert all((c["prompt_tokens"] > 0) == (c["outcome"] == "ok") for c in sent)
    assert sum(c["via"] == "hit" for c in calls) == 3


def test_global_limiter_paces_all_actors(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, HEADS)  # 33 requests through 3 actors sharing one limiter at 1200/min, burst 0.5 s
    with nullcontext(judge_server.reset(retry_after_s=0.1)) as server:
        spec = spec_for(server, rpm=1200, burst_s=0.5, actors=3, concurrency=6)
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        times = sorted(t for t, _ in server.log)
        assert len(times) == 33
        # One shared limiter: 10 at once, then 20/s, so the sends span (33 - 10) / 20 = 1.15 s whatever the actor
        # count; one limiter per actor would send 30 at once and finish in about 0.05 s. The server's receive times
        # carry each request's own connection latency (a loaded machine delays a first connection by a tenth of a
        # second or more), hence the margin.
        assert times[-1] - times[0] >= (33 - 10) / 20 - LATENCY_MARGIN_S


def test_several_judges_majority_vote_and_agreement(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, HEADS)
    with nullcontext(judge_server.reset()) as server:
        spec = load_spec({"name": "t", "judge": {**FAST, "actors": 1, "judges": [
            {"kind": "offline"},
            {"name": "llm-a", "base_url": server.base_url, "model": "fake-a", "rpm": 60_000},
            {"name": "llm-b", "base_url": server.base_url, "model": "fake-b", "rpm": 60_000}]}})
        summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
    assert summary["judges"] == ["offline-heuristic", "llm-a", "llm-b", "combined"]
    assert summary["agreement"]["cohen"]["llm-a|llm-b"] == 1.0
    votes = {}
    for j in read_table(str(tmp_path), "judgments", "r1").to_pylist():
        votes.setdefault((j["head_label"], j["variant"], j["span_rank"]), {})[j["judge"]] = j["aligned"]
    for v in votes.values():
        assert v["combined"] == int(v["offline-heuristic"] + v["llm-a"] + v["llm-b"] >= 2)
    combined = [r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist() if r["judge"] == "combined"]
    assert all(r["heuristic"] for r in combined)  # one of its judges is the heuristic


def test_max_in_window_counts_half_open_windows():
    from ccs_ray.bench.judge import max_in_window

    assert max_in_window([0, 10, 59.9, 60, 61], 60) == 4  # [0.0, 60) holds 3, [10, 70) holds 4
    assert max_in_window([], 60) == 0


@pytest.mark.slow
def test_worker_pools_are_bounded(ray_cluster, judge_server, tmp_path, monkeypatch):
    """Judging against one endpoint more than ``MAX_POOLS`` stops the least recently used pool's workers
    instead of leaving them idle."""
    import ray

    from ccs_ray.judges import pool

    monkeypatch.setattr(pool, "MAX_POOLS", 1)
    started = []
    for model in ("fake-a", "fake-b"):
        write_spans(tmp_path / model, HEADS)
        spec = spec_for(judge_server.reset(), model=model, actors=2)
        assert run_stage("judge", spec, str(tmp_path / model), "r1", MODEL)["errors"] == 0
        started.append([w for p in pool._POOLS.values() for w in p.workers])
    assert len(started[0]) == len(started[1]) == 2 and not set(started[0]) & set(started[1])
    assert ray.get([w.__ray_ready__.remote() for w in started[1]]) == [True, True]
    for worker in started[0]:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(worker.__ray_ready__.remote(), timeout=30)


@pytest.mark.slow
def test_concurrency_cap_holds_when_actors_do_not_divide_it(ray_cluster, judge_server, tmp_path):
    heads = {f"L3.H{h}": [f"{h} {t}" for t in COLORS] for h in range(6)}
    for root in (tmp_path / "warm", tmp_path):  # a first run starts the 3 workers; the second is measured
        write_spans(root, heads)
    with nullcontext(judge_server.reset(latency_s=0.3)) as server:  # slow answers: every slot stays busy
        spec = spec_for(server, heldout=False, actors=3, concurrency=5)  # ceil(5 / 3) = 2 each would allow 6
        run_stage("judge", spec, str(tmp_path / "warm"), "r1", MODEL)
        server.reset(latency_s=0.3)
        summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        assert summary["errors"] == 0 and len(server.log) == 6 * 6
        assert server.max_in_flight == 5  # the cap, reached and never exceeded


def test_secrets_never_reach_a_table_a_dump_or_a_name(ray_cluster, judge_server, tmp_path, monkeypatch):
    """The API key (user-info or a query in ``base_url`` is refused by the spec: tests/test_judges.py)."""
    import pyarrow.parquet as pq
    import ray

    key = "sk-echo-secret-4242"
    monkeypatch.setenv("CCS_TEST_ECHO_KEY", key)
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})
    with nullcontext(judge_server.reset()) as server:
        server.always = "echo"  # a gateway that echoes the request headers in its 500 answers
        spec = spec_for(server, server.base_url, heldout=False, max_retries=1, api_key_env="CCS_TEST_ECHO_KEY")
        with pytest.raises(JudgeFailed) as failed:
            run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        sent = {h["authorization"] for h in server.headers}
    secrets = [key]
    assert any(s in a for a in sent for s in secrets)  # the server saw the secret
    [error] = [e["detail"] for e in read_table(str(tmp_path), "errors", "r1").to_pylist()]
    assert error.startswith("HTTP 500") and "***" in error  # the echo was stored, redacted
    assert "first error: HTTP 500" in str(failed.value) and "***" in str(failed.value)  # and reported, redacted
    calls = read_table(str(tmp_path), "judge_calls", "r1").to_pylist()
    assert {c["endpoint"] for c in calls} == {server.base_url}  # no user-info
    stored = [spec.to_json(), repr(ray.util.list_named_actors(all_namespaces=True)), str(failed.value)]
    for f in tmp_path.rglob("*"):
        if f.suffix == ".parquet":
            stored.append(repr(pq.read_table(f, partitioning=None).to_pylist()))
        elif f.is_file():
            stored.append(f.read_bytes().decode(errors="replace"))
    leaks = [(s, text[:80]) for s in secrets for text in stored if s in text]
    assert leaks == []


def test_reported_usage_paces_the_token_budget(ray_cluster, judge_server, tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS[:5]})  # 6 requests of about 200 estimated tokens, one at a time
    tpm, burst_s, used = 60_000, 0.5, 1000  # 1000 tokens/s, 500 at once; every answer reports 1000 tokens
    with nullcontext(judge_server.reset(usage_tokens=used)) as server:
        spec = spec_for(server, heldout=False, tpm=tpm, burst_s=burst_s, concurrency=1, actors=1)
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)
        times = sorted(t for t, _ in server.log)
    calls = read_table(str(tmp_path), "judge_calls", "r1").to_pylist()
    assert len(times) == 6 and all(c["prompt_tokens"] == used for c in calls)
    # the 6th request may go once the 5 answered ones (5000 tokens) fit the budget: 500 + 1000 t >= 5000
    assert times[-1] - times[0] >= (5 * used - tpm / 60 * burst_s) / (tpm / 60) - LATENCY_MARGIN_S


def test_identical_requests_in_flight_are_sent_once(ray_cluster, judge_server, tmp_path):
    """Four heads with the same spans over two actors: every distinct request reaches the server once; the
    others wait for its flight (merged) or find its answer cached (hit), and all get the same verdicts."""
    same = {f"L3.H{h}": COLORS for h in range(4)}
    write_spans(tmp_path, same)
    with nullcontext(judge_server.reset(latency_s=0.3)) as server:
        summary = run_stage("judge", spec_for(server, actors=2, concurrency=8), str(tmp_path), "r1", MODEL)
        keys = [h["idempotency-key"] for h in server.headers]
        assert len(keys) == len(set(keys)) == 1 + 10 and summary["errors"] == 0
        assert summary["calls"] == 11 and summary["merged"] + summary["cached"] == 3 * 11 and summary["merged"] > 0
    calls = read_table(str(tmp_path), "judge_calls", "r1").to_pylist()
    assert {c["via"] for c in calls if c["attempt"] is None} <= {"hit", "merged"}
    ccs = {r["head_label"]: (r["label"], r["ccs"], r["ccs_heldout"])
           for r in read_table(str(tmp_path), "ccs", "r1").to_pylist()
           if r["judge"] == "fake"}
    assert len(ccs) == 4 and len(set(ccs.values())) == 1


class _Awaitable:
    """``await wrapper.method(*args)`` over an in-process object whose methods may be sync or async."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        method = getattr(self.obj, name)

        async def call(*args):
            result = method(*args)
            return await result if asyncio.iscoroutine(result) else result

        return call


def test_cache_is_checked_again_after_the_limiter_slot(judge_server, tmp_path):
    """Two clients that do not share a flight registry (two drivers on one cache): the second is granted its
    slot a second after the first and finds the first's answer cached instead of sending."""
    from ccs_ray.judges.cache import AnswerCache
    from ccs_ray.judges.client import Endpoint, JudgeClient
    from ccs_ray.judges.flights import InFlight
    from ccs_ray.judges.limiter import RateLimiter
    from ccs_ray.judges.prompts import label_request

    server = judge_server.reset()
    limiter = _Awaitable(RateLimiter(rpm=60, burst_s=1.0))  # one request per second
    clients = [JudgeClient(Endpoint(server.base_url, "fake", timeout_s=5), None, limiter, _Awaitable(InFlight()),
                           f"d{i}")
               for i in range(2)]
    cache = AnswerCache(str(tmp_path / "cache"))

    async def both():
        return await asyncio.gather(*(c.ask(label_request(COLORS[:5]), cache) for c in clients))

    first, second = asyncio.run(both())
    assert len(server.log) == 1 and (first.via, second.via) == ("sent", "hit")
    assert first.value == second.value == expected_label(COLORS[:5])
    assert [c["attempt"] for c in second.calls] == [None] and second.calls[0]["cost_usd"] == 0


@pytest.mark.slow
def test_killed_judge_worker_is_replaced_and_nothing_is_lost_or_paid_twice(ray_cluster, judge_server, tmp_path):
    """A judge actor killed mid-stage: its heads go to a fresh actor, every judgment arrives, and with a server
    that honours Idempotency-Key nothing is computed twice for an answer already delivered."""
    import threading
    import time

    import ray

    from ccs_ray.judges import pool

    heads = {f"L3.H{h}": [f"{c} {h}" for c in COLORS] for h in range(6)}
    write_spans(tmp_path, heads)
    server = judge_server.reset(latency_s=0.1, honour_idempotency=True)
    spec = spec_for(server, model="fake-kill", actors=2, concurrency=4)
    result = {}
    thread = threading.Thread(target=lambda: result.update(s=run_stage("judge", spec, str(tmp_path), "r1", MODEL)))
    thread.start()
    deadline = time.time() + 60
    while len(server.log) < 12 and time.time() < deadline:
        time.sleep(0.02)
    victim = list(pool._POOLS.values())[-1].workers[0]
    ray.kill(victim)
    thread.join(120)
    started = list(pool._POOLS.values())[-1]
    assert result["s"]["errors"] == 0 and victim not in started.workers and started.started == 3  # one replacement
    judgments = [j for j in read_table(str(tmp_path), "judgments", "r1").to_pylist() if j["judge"] == "fake-kill"]
    assert len(judgments) == 6 * 10 and all(j["aligned"] is not None for j in judgments)
    account = server.accounting()
    assert account["paid_twice"] == 0 and account["keys_answered"] == 6 * 11
    # every request the server received has its judge_calls row, the killed actor's calls in flight too (their
    # outcome unknown); only such a call may have a row without a request (killed before it went out)
    sent = [c for c in read_table(str(tmp_path), "judge_calls", "r1").to_pylist() if c["via"] == "sent"]
    received = Counter(r.idempotency_key for r in server.records)
    assert not received - Counter(c["cache_key"] for c in sent)
    assert not Counter(c["cache_key"] for c in sent if c["outcome"] != "unknown") - received
