"""The loopback judge server itself, through real HTTP and the real openai client: the faults a client can
be billed for without reading the answer, the fault mix, Idempotency-Key and the server's own accounting."""

import random
import threading
import time

import openai
import pytest

from ccs_ray.judges.loopback import CHAOS_MIX, JudgeServer, draw_fault, fake_answer, request_key


@pytest.fixture(scope="module")
def server():
    with JudgeServer() as s:
        yield s


def ask(server, text="- red thing", timeout=5.0, key=None, **params):
    """The completion for one user turn, without retries; ``key`` is sent as Idempotency-Key."""
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=timeout)
    try:
        return client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": text}],
            extra_headers={"Idempotency-Key": key} if key else None, **params)
    finally:
        client.close()


def settled(server, n):
    """The first ``n`` records, once every one of them has finished (the server may still be writing)."""
    deadline = time.time() + 5
    while not (len(server.records) >= n and all(r.finished for r in server.records[:n])):
        assert time.time() < deadline, server.records
        time.sleep(0.01)
    return server.records[:n]


def test_slow_beyond_timeout_is_billed_but_not_delivered(server):
    server.reset(beyond_s=0.6).always = "slow-beyond-timeout"
    with pytest.raises(openai.APITimeoutError):  # the client gives up (and closes its connection) at 0.2 s
        ask(server, timeout=0.2)
    [record] = settled(server, 1)
    assert record.outcome == "slow-beyond-timeout" and record.billed
    assert not record.delivered and not record.valid and record.finished - record.arrival >= 0.6
    assert ask(server, timeout=2.0).choices[0].message.content == '{"label": "red"}'  # a patient client reads it
    assert settled(server, 2)[1].delivered and server.accounting()["delivered"] == 1


def test_drop_after_answer_is_billed_but_not_delivered(server):
    server.reset().always = "drop-after-answer"
    with pytest.raises(openai.APIConnectionError) as e:
        ask(server)
    assert not isinstance(e.value, openai.APITimeoutError)
    [record] = settled(server, 1)
    assert record.outcome == "drop-after-answer" and record.billed and not record.delivered and not record.valid


def test_records_key_the_whole_body(server):
    server.reset()
    ask(server, temperature=0.0)
    ask(server, temperature=0.5)
    first, second = settled(server, 2)
    assert first.key == request_key(server.requests[0]) != second.key
    assert first.idempotency_key is None and first.billed and first.delivered and first.valid


def test_fault_mix_draws_its_shares():
    rng = random.Random(1)
    drawn = [draw_fault(CHAOS_MIX, rng) for _ in range(2000)]
    for fault, p in {**CHAOS_MIX, "ok": 1 - sum(CHAOS_MIX.values())}.items():
        assert drawn.count(fault) / 2000 == pytest.approx(p, abs=0.025), fault


def test_the_server_draws_each_request_from_its_mix(server):
    mix = {"429": 0.3, "500": 0.2, "garbage": 0.2}
    server.reset(fault_mix=mix)
    server.rng.seed(3)
    for _ in range(30):
        try:
            ask(server)
        except openai.APIStatusError:
            pass
    rng = random.Random(3)
    assert server.outcomes() == [draw_fault(mix, rng) for _ in range(30)]
    server.faults.append("500")  # the queue comes first
    with pytest.raises(openai.InternalServerError):
        ask(server)
    server.reset(fault_mix=None)
    with pytest.raises(ValueError, match="fault_mix"):
        server.reset(fault_mix={"typo": 0.1})
    with pytest.raises(ValueError, match="fault_mix"):
        JudgeServer(fault_mix={"429": 0.7, "500": 0.5})


def test_honoured_idempotency_key_replays_the_answer_unbilled(server):
    server.reset(honour_idempotency=True).faults.extend(["garbage", "429"])
    assert ask(server, key="k1").choices[0].message.content == "%%% not an answer %%%"  # not stored
    with pytest.raises(openai.RateLimitError):
        ask(server, key="k1")
    first = ask(server, key="k1")
    again = ask(server, key="k1")
    assert again.model_dump() == first.model_dump() and first.choices[0].message.content == '{"label": "red"}'
    with pytest.raises(openai.UnprocessableEntityError):  # the same key for another body
        ask(server, text="- blue thing", key="k1")
    ask(server, key="k2")  # another Idempotency-Key for the same body: computed, and paid twice
    records = settled(server, 6)
    assert [r.outcome for r in records] == ["garbage", "429", "ok", "replayed", "422", "ok"]
    assert [r.billed for r in records] == [True, False, True, False, False, True]
    acc = server.accounting()
    assert acc["replayed"] == 1 and acc["paid_twice"] == 1 and acc["computed_twice"] == 2


def test_honoured_idempotency_key_conflicts_while_computing(server):
    server.reset(slow_s=1.0, honour_idempotency=True).faults.append("slow")
    first = threading.Thread(target=ask, args=(server,), kwargs={"key": "k"})
    first.start()
    while not server.records:
        time.sleep(0.01)
    with pytest.raises(openai.ConflictError):
        ask(server, key="k")
    first.join()
    ask(server, key="k")
    assert server.outcomes() == ["slow", "409", "replayed"]
    assert server.accounting() | {"outcomes": None} == {
        "requests": 3, "billed": 1, "delivered": 1, "keys": 1, "keys_answered": 1, "paid_twice": 0,
        "computed_twice": 0, "replayed": 1, "conflicts": 1, "outcomes": None}


def test_undelivered_idempotent_answers_are_not_stored(server):
    server.reset(honour_idempotency=True).faults.append("drop-after-answer")
    with pytest.raises(openai.APIConnectionError):
        ask(server, key="k")
    ask(server, key="k")
    assert server.outcomes() == ["drop-after-answer", "ok"]
    assert server.accounting()["computed_twice"] == 1 and server.accounting()["paid_twice"] == 0


@pytest.mark.parametrize("first, paid_twice", [("ok", 1), ("garbage", 0), ("drop-after-answer", 0), ("429", 0)])
def test_paid_twice_counts_answers_the_client_already_had(server, first, paid_twice):
    server.reset().faults.append(first)
    try:
        ask(server)
    except (openai.APIStatusError, openai.APIConnectionError):
        pass
    settled(server, 1)
    ask(server)
    ask(server, text="- blue thing")  # another key
    settled(server, 3)
    acc = server.accounting()
    assert acc["paid_twice"] == paid_twice and acc["computed_twice"] == int(first != "429")
    assert acc["keys"] == acc["keys_answered"] == 2 and acc["outcomes"] == {first: 1, "ok": 2} | (
        {"ok": 3} if first == "ok" else {})


def test_fake_answer_is_unchanged():
    assert fake_answer([{"role": "user", "content": "- The red thing"}]) == '{"label": "red"}'
