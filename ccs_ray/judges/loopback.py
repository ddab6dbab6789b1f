"""A loopback OpenAI-compatible judge (``POST /v1/chat/completions``) with fault injection and its own billing log,
for tests and the bench.

Its deterministic "model" reads our prompts' last user turn: a label request (``- span`` lines) is answered
with the first word of the first span (lower case, articles skipped); a judgment (``Concept:`` and
``Description:``) with 1 when the concept word occurs in the description; a batched judgment with one such
bit per numbered description. Answers are JSON (``{"label": ..}``, ``{"aligned": ..}``).

Faults: ``faults`` is a queue consumed one per request (``"429"`` with Retry-After / retry-after-ms, ``"500"``,
``"401"`` (a refused API key, which the client does not retry), ``"echo"`` (500 whose message echoes the
Authorization and every other request header, as a careless gateway might), ``"slow"`` (sleeps ``slow_s`` first),
``"slow-beyond-timeout"`` (computes the answer after ``beyond_s``, set above the client's timeout), ``"garbage"``
(200 with an unparseable answer), ``"drop"`` (closes the connection without answering), ``"drop-after-answer"``
(computes the answer, then closes the connection without sending it), ``"quota"`` (200 with exhausted x-ratelimit
headers), ``"ok"``); ``always`` applies one fault to every request; otherwise ``fault_mix``
(``{fault: probability}``, e.g. :data:`CHAOS_MIX`) draws one per request from the seeded rng, "ok" for the rest;
``error_rate`` turns "ok" requests into 429s at random (seeded); ``rpm_limit`` answers 429 (outcome "limit") once
more than that many requests arrived in the last 60 s; ``usage_tokens`` (when set) is the prompt-token usage every
answer reports (else a quarter of the prompt's characters).

Idempotency: with ``honour_idempotency``, a request reaching the model with an ``Idempotency-Key`` header already
answered (delivered, valid) is answered with the stored response, unbilled (outcome "replayed"); one whose key
is being computed gets 409 (outcome "409"); one whose key was answered or is being computed for another body
gets 422 (outcome "422"). Failed or undelivered attempts store nothing.

Logs: ``log`` keeps (arrival time, outcome) of every request, ``requests`` its body and ``headers`` its headers;
``records`` its :class:`Record` (billed, delivered, valid), from which :meth:`JudgeServer.accounting` counts what
the server charged, e.g. answers paid twice. A reply counts as delivered when it was written to a connection the
client still had open: a client that timed out and closed it was billed for an answer it never read.
"""

from __future__ import annotations

import json
import math
import random
import re
import select
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .cache import json_digest

ARTICLES = {"a", "an", "the", "photo", "of", "picture"}
REFUSALS = ("429", "500", "401", "echo", "drop")  # faults that stop a request before the model (as does "limit")
ANSWERS = ("ok", "slow", "slow-beyond-timeout", "garbage", "drop-after-answer", "quota")  # faults the model bills
FAULTS = REFUSALS + ANSWERS  # what fault_mix may draw
ERROR_REPLIES = {  # outcome -> (HTTP status, error object) of the plain error replies
    "500": (500, {"message": "injected server error"}),
    "401": (401, {"message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}),
    "409": (409, {"message": "a request with this Idempotency-Key is in progress", "type": "idempotency_conflict"}),
    "422": (422, {"message": "this Idempotency-Key was used for another request", "type": "idempotency_mismatch"}),
}
CHAOS_MIX = {"429": 0.10, "500": 0.05, "garbage": 0.05, "drop-after-answer": 0.02, "slow-beyond-timeout": 0.05}


def fake_answer(messages: list[dict]) -> str:
    """The deterministic judge's answer to our label/judge/batched prompts."""
    text = messages[-1]["content"]
    spans = re.findall(r"^- (.+)$", text, re.M)
    if spans:
        words = [w for w in re.findall(r"[a-z]+", spans[0].lower()) if w not in ARTICLES]
        return json.dumps({"label": words[0] if words else "none"})
    concept_line = re.search(r"^Concept: (.+)$", text, re.M)
    assert concept_line is not None, "not a label, judge or batched prompt: no 'Concept:' line"
    concept = concept_line.group(1).strip().lower()
    numbered = re.findall(r"^\d+\. (.+)$", text, re.M)
    if numbered:
        return json.dumps({"aligned": [int(concept in d.lower()) for d in numbered]})
    description = re.search(r"^Description: (.+)$", text, re.M)
    assert description is not None, "not a judge prompt: no 'Description:' line"
    return json.dumps({"aligned": int(concept in description.group(1).lower())})


def request_key(body: dict) -> str:
    """:func:`~ccs_ray.judges.cache.json_digest` of a request body (model, messages and every other field)."""
    return json_digest(body)


def draw_fault(mix: dict[str, float], rng: random.Random) -> str:
    """One fault drawn with the probabilities of ``mix``; "ok" for the rest."""
    u = rng.random()
    for fault, p in mix.items():
        if u < p:
            return fault
        u -= p
    return "ok"


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has closed (or reset) its end, so that a reply written now would not reach it."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _checked(settings: dict) -> dict:
    mix = settings["fault_mix"]
    if mix is not None:
        if set(mix) - set(FAULTS) or any(p < 0 for p in mix.values()) or sum(mix.values()) > 1:
            raise ValueError(f"fault_mix needs probabilities >= 0 summing to at most 1 over the faults "
                             f"{', '.join(FAULTS)}; got {mix}")
        settings["fault_mix"] = dict(mix)
    return settings


@dataclass
class Record:
    """One request as the server saw it; times are ``time.time()``."""

    arrival: float
    key: str  # request_key of the body
    idempotency_key: str | None  # the Idempotency-Key header
    outcome: str  # the fault applied, or "replayed", "409", "422"
    billed: bool = False  # the model computed an answer
    delivered: bool = False  # a billed answer written to a connection the client still had open
    valid: bool = False  # delivered and parseable (not "garbage")
    finished: float | None = None  # when the reply was written (or given up)


class _QuietServer(ThreadingHTTPServer):
    """A connection the client reset or closed (a timeout, a kill) is a normal event here, not an error to print."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class JudgeServer:
    """``with JudgeServer() as s: s.base_url`` -> ``http://127.0.0.1:<port>/v1``."""

    # the settings: the constructor's arguments, set from ``settings`` by __init__ and by reset
    rpm_limit: int | None
    error_rate: float
    latency_s: float
    slow_s: float
    beyond_s: float
    retry_after_s: float
    usage_tokens: int | None
    fault_mix: dict[str, float] | None
    honour_idempotency: bool

    def __init__(self, rpm_limit: int | None = None, error_rate: float = 0.0, latency_s: float = 0.0,
                 slow_s: float = 2.0, beyond_s: float = 1.0, retry_after_s: float = 0.1,
                 usage_tokens: int | None = None, fault_mix: dict[str, float] | None = None,
                 honour_idempotency: bool = False, seed: int = 0):
        self.settings = _checked(dict(
            rpm_limit=rpm_limit, error_rate=error_rate, latency_s=latency_s, slow_s=slow_s, beyond_s=beyond_s,
            retry_after_s=retry_after_s, usage_tokens=usage_tokens, fault_mix=fault_mix,
            honour_idempotency=honour_idempotency))
        self.__dict__.update(self.settings)
        self.faults: deque[str] = deque()
        self.always: str | None = None
        self.log: list[tuple[float, str]] = []
        self.records: list[Record] = []
        self.requests: list[dict] = []  # request bodies, in arrival order
        self.headers: list[dict] = []  # request headers (lower-case names), in arrival order
        self.idempotent: dict[str, tuple[str, dict | None]] = {}  # Idempotency-Key -> (request key, stored answer)
        self.in_flight = self.max_in_flight = 0
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self, **settings) -> JudgeServer:
        """Clear the logs, the faults, the stored idempotent answers and the in-flight peak; the constructor's
        settings, but for those given."""
        unknown = set(settings) - set(self.settings)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; settings: {', '.join(self.settings)}")
        settings = _checked({**self.settings, **settings})
        with self.lock:
            self.faults.clear()
            self.always, self.log, self.records, self.requests, self.headers = None, [], [], [], []
            self.idempotent, self.max_in_flight = {}, 0
            self.__dict__.update(settings)
        return self

    def outcomes(self) -> list[str]:
        return [o for _, o in self.log]

    def accounting(self) -> dict:
        """What the server charged, from its own records only (no client counter):

        ``requests``; ``billed`` (the model computed an answer); ``delivered`` (billed answers written to an
        open connection); ``keys`` (distinct request bodies); ``keys_answered`` (those with a delivered valid
        answer); ``paid_twice`` (billed requests whose body already had a delivered valid answer finished
        before they arrived: the client paid again for an answer it had); ``computed_twice`` (billed requests
        whose body had been billed before, delivered or not: what a server that ignores Idempotency-Key charges
        again after a timeout or a dropped answer); ``replayed`` (answered from the idempotency store, unbilled);
        ``conflicts`` (409s: the key was being computed); ``outcomes`` (requests per outcome).
        """
        with self.lock:
            answered: dict[str, float] = {}
            for r in self.records:
                if r.valid:
                    assert r.finished is not None  # a valid answer was written, so its record is finished
                    answered[r.key] = min(answered.get(r.key, math.inf), r.finished)
            billed = [r for r in self.records if r.billed]
            outcomes = Counter(r.outcome for r in self.records)
            return {
                "requests": len(self.records), "billed": len(billed),
                "delivered": sum(r.delivered for r in self.records),
                "keys": len({r.key for r in self.records}), "keys_answered": len(answered),
                "paid_twice": sum(answered.get(r.key, math.inf) < r.arrival for r in billed),
                "computed_twice": len(billed) - len({r.key for r in billed}),
                "replayed": outcomes["replayed"], "conflicts": outcomes["409"], "outcomes": dict(outcomes),
            }

    def _decide(self, now: float) -> str:
        """The fault for a request arriving at ``now`` (under the lock)."""
        fault = self.faults.popleft() if self.faults else self.always
        if fault is None:
            fault = draw_fault(self.fault_mix, self.rng) if self.fault_mix else "ok"
        if self.rpm_limit is not None and sum(t > now - 60 for t, _ in self.log) >= self.rpm_limit:
            fault = "limit"
        elif fault == "ok" and self.error_rate and self.rng.random() < self.error_rate:
            fault = "429"
        return fault

    def _admit(self, body: dict, headers: dict) -> tuple[Record, dict | None, bool]:
        """Logs a request arriving now (under the lock): its record, the stored answer to replay, and whether
        it holds its Idempotency-Key while computing."""
        now, key, idem = time.time(), request_key(body), headers.get("idempotency-key")
        outcome, replay, holds = self._decide(now), None, False
        if self.honour_idempotency and idem is not None and outcome not in REFUSALS + ("limit",):
            held = self.idempotent.get(idem)
            if held is None:
                self.idempotent[idem], holds = (key, None), True
            elif held[0] != key:
                outcome = "422"
            elif held[1] is None:
                outcome = "409"
            else:
                outcome, replay = "replayed", held[1]
        record = Record(now, key, idem, outcome)
        self.log.append((now, outcome))
        self.records.append(record)
        self.requests.append(body)
        self.headers.append(headers)
        return record, replay, holds

    def _settle(self, record: Record, answer: dict | None, holds: bool) -> None:
        """Closes a request's record (under the lock); a held Idempotency-Key keeps its answer only when valid."""
        if record.finished is None:
            record.finished = time.time()
        idem = record.idempotency_key
        if holds and idem is not None and self.idempotent.get(idem) == (record.key, None):  # holds: idem is set
            if record.valid:
                self.idempotent[idem] = (record.key, answer)
            else:
                del self.idempotent[idem]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> bool:
                """Writes the reply; whether it went to a connection the client still had open."""
                if _peer_closed(self.connection):
                    self.close_connection = True
                    return False
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout)
                    self.close_connection = True
                    return False
                return True

            def _hang_up(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    record, replay, holds = server._admit(body, {k.lower(): v for k, v in self.headers.items()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                answer = None
                try:
                    answer = self._answer(record, body, replay)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        server._settle(record, answer, holds)

            def _answer(self, record: Record, body: dict, replay: dict | None) -> dict | None:
                """Replies as ``record.outcome`` says, filling in the record; the billed answer it computed."""
                fault = record.outcome
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return None
                if fault == "drop":
                    self._hang_up()
                    return None
                if fault in ("429", "limit"):
                    wait = server.retry_after_s
                    if fault == "limit":
                        with server.lock:
                            oldest = min(t for t, _ in server.log if t > time.time() - 60)
                        wait = max(wait, oldest + 60 - time.time())
                    self._send(429, {"error": {"message": "rate limit", "type": "rate_limit"}},
                               {"retry-after-ms": str(int(wait * 1000)), "Retry-After": str(max(1, round(wait)))})
                    return None
                if fault == "echo":
                    message = f"cannot serve Authorization: {self.headers.get('Authorization')} {dict(self.headers)}"
                    self._send(500, {"error": {"message": message}})
                    return None
                if fault in ERROR_REPLIES:
                    status, error = ERROR_REPLIES[fault]
                    self._send(status, {"error": error})
                    return None
                if fault == "replayed":
                    assert replay is not None  # _admit replays only a stored answer
                    self._send(200, replay, {"Idempotent-Replayed": "true"})
                    return None
                time.sleep({"slow": server.slow_s, "slow-beyond-timeout": server.beyond_s}.get(fault,
                                                                                              server.latency_s))
                content = "%%% not an answer %%%" if fault == "garbage" else fake_answer(body["messages"])
                prompt = server.usage_tokens or sum(len(m["content"]) for m in body["messages"]) // 4
                answer = {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4,
                              "total_tokens": prompt + len(content) // 4},
                }
                record.billed = True
                if fault == "drop-after-answer":
                    self._hang_up()
                    return answer
                headers = ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
                           if fault == "quota" else {})
                record.delivered = self._send(200, answer, headers)
                record.finished = time.time()
                record.valid = record.delivered and fault != "garbage"
                return answer

        return Handler
