"""The judge tells the truth: a judge that could not judge the heads fails the stage, and every call sent is
journalled before it goes out, so judge_calls holds also the calls whose client stopped with them in flight (the
stage's failure and rerun through the Ray pool: tests/test_judges_pool.py)."""

import asyncio
from collections import Counter

import pytest
from test_judges import COLORS, MODEL
from test_judges_pool import _Awaitable

from ccs_ray.judges.cache import AnswerCache
from ccs_ray.judges.client import Endpoint, JudgeClient
from ccs_ray.judges.flights import InFlight
from ccs_ray.judges.headspans import HeadSpans, Verdict
from ccs_ray.judges.journal import UNKNOWN, CallJournal, read_journal
from ccs_ray.judges.limiter import RateLimiter
from ccs_ray.judges.loopback import JudgeServer
from ccs_ray.judges.prompts import label_request
from ccs_ray.stages.judge import JudgeFailed, check_errors
from ccs_ray.tables import to_arrow


@pytest.fixture(scope="module")
def server():
    with JudgeServer() as s:
        yield s


def test_error_share_beyond_the_limit_or_every_head_fails():
    head = HeadSpans(3, 0, "L3.H0", {"paper": [(1, "a red car")]})
    ok = Verdict(head, "red", aligned={"paper": [1]}, errors={"paper": [None]})
    bad = Verdict(head, "red", aligned={"paper": [None]}, errors={"paper": ["HTTP 500: down\nfor maintenance"]})
    url = "http://127.0.0.1:9/v1"
    check_errors("j", [ok] * 9 + [bad], MODEL, 0.1, url)  # 1 of 10 is not more than 0.1
    check_errors("j", [ok], MODEL, 0.0, url)
    with pytest.raises(JudgeFailed) as failed:
        check_errors("j", [ok] * 8 + [bad] * 2, MODEL, 0.1, url)
    assert str(failed.value) == (f"2 of 10 heads of {MODEL} could not be judged by judge 'j' (judge.max_error_share "
                                 f"= 0.1): first error: HTTP 500: down for maintenance from {url}")
    unlabelled = Verdict(head, None, "HTTP 401: invalid API key", aligned={"paper": [None]},
                         errors={"paper": ["no label: HTTP 401: invalid API key"]})
    with pytest.raises(JudgeFailed, match="^1 of 1 heads .*first error: HTTP 401: invalid API key from"):
        check_errors("j", [unlabelled], MODEL, 1.0, url)  # every head errored: whatever the share


def test_calls_in_flight_when_the_client_stops_stay_in_the_journal(server, tmp_path):
    """Clients stopped with four calls in flight (their tasks cancelled, as a dying process leaves them): each call
    was recorded before it went out and stays with its outcome unknown; a second client's calls complete."""
    server.reset(latency_s=0.3)
    journal = CallJournal(str(tmp_path / "journal"), {"judge": "fake", "endpoint": server.base_url})
    cache = AnswerCache(str(tmp_path / "cache"))
    requests = [label_request(COLORS[i:i + 5]) for i in range(4)]

    def client(owner):
        return JudgeClient(Endpoint(server.base_url, "fake", timeout_s=5), None,
                           _Awaitable(RateLimiter(rpm=60_000)), _Awaitable(InFlight()), owner)

    def ask(c, i):
        return c.ask(requests[i], cache, journal.tagged(kind="label", head_label=f"L0.H{i}", span_rank=None))

    async def two_lifetimes():
        first, second = client("first"), client("second")
        tasks = [asyncio.ensure_future(ask(first, i)) for i in range(4)]
        while len(server.log) < 4:
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopped = read_journal(journal.folder)
        answers = await asyncio.gather(*(ask(second, i) for i in range(4)))
        await asyncio.gather(first.close(), second.close())
        return stopped, answers

    stopped, answers = asyncio.run(two_lifetimes())
    assert len(stopped) == 4 and all(r["outcome"] == UNKNOWN and not r["final"] and r["cost_usd"] is None
                                     and r["prompt_tokens"] is None for r in stopped)
    assert all(a.error is None for a in answers)
    rows = read_journal(journal.folder)
    assert sorted(r["cache_key"] for r in rows) == sorted(r.idempotency_key for r in server.records)  # 8 each
    assert Counter((r["outcome"], r["final"]) for r in rows) == {(UNKNOWN, False): 4, ("ok", True): 4}
    assert {r["head_label"] for r in rows} == {f"L0.H{i}" for i in range(4)}
    assert to_arrow("judge_calls", rows).num_rows == 8  # the judge_calls schema, column for column
