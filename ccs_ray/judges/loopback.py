"""A loopback OpenAI-compatible judge (``POST /v1/chat/completions``) with fault injection, for tests and the bench.

Its deterministic "model" reads our prompts' last user turn: a label request (``- span`` lines) is answered
with the first word of the first span (lower case, articles skipped); a judgment (``Concept:`` and
``Description:``) with 1 when the concept word occurs in the description; a batched judgment with one such
bit per numbered description. Answers are JSON (``{"label": ..}``, ``{"aligned": ..}``).

Faults: ``faults`` is a queue consumed one per request (``"429"`` with Retry-After / retry-after-ms,
``"500"``, ``"echo"`` (500 whose message echoes the Authorization and every other request header, as a
careless gateway might), ``"slow"`` (sleeps ``slow_s`` first), ``"garbage"`` (200 with an unparseable answer), ``"drop"``
(closes the connection without answering), ``"quota"`` (200 with exhausted x-ratelimit headers), ``"ok"``);
``always`` applies one fault to every request; ``error_rate`` injects 429s at random (seeded);
``rpm_limit`` answers 429 once more than that many requests arrived in the last 60 s; ``usage_tokens`` (when
set) is the prompt-token usage every answer reports (else a quarter of the prompt's characters). ``log`` keeps
(arrival time, outcome) of every request.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARTICLES = {"a", "an", "the", "photo", "of", "picture"}


def fake_answer(messages: list[dict]) -> str:
    """The deterministic judge's answer to our label/judge/batched prompts."""
    text = messages[-1]["content"]
    spans = re.findall(r"^- (.+)$", text, re.M)
    if spans:
        words = [w for w in re.findall(r"[a-z]+", spans[0].lower()) if w not in ARTICLES]
        return json.dumps({"label": words[0] if words else "none"})
    concept = re.search(r"^Concept: (.+)$", text, re.M).group(1).strip().lower()
    numbered = re.findall(r"^\d+\. (.+)$", text, re.M)
    if numbered:
        return json.dumps({"aligned": [int(concept in d.lower()) for d in numbered]})
    description = re.search(r"^Description: (.+)$", text, re.M).group(1)
    return json.dumps({"aligned": int(concept in description.lower())})


class JudgeServer:
    """``with JudgeServer() as s: s.base_url`` -> ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, rpm_limit: int | None = None, error_rate: float = 0.0, latency_s: float = 0.0,
                 slow_s: float = 2.0, retry_after_s: float = 0.1, usage_tokens: int | None = None, seed: int = 0):
        self.settings = dict(rpm_limit=rpm_limit, error_rate=error_rate, latency_s=latency_s, slow_s=slow_s,
                             retry_after_s=retry_after_s, usage_tokens=usage_tokens)
        self.__dict__.update(self.settings)
        self.faults: deque[str] = deque()
        self.always: str | None = None
        self.log: list[tuple[float, str]] = []
        self.requests: list[dict] = []  # request bodies, in arrival order
        self.headers: list[dict] = []  # request headers (lower-case names), in arrival order
        self.in_flight = self.max_in_flight = 0
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self, **settings) -> "JudgeServer":
        """Clear the log, the faults and the in-flight peak; the constructor's settings, but for those given."""
        unknown = set(settings) - set(self.settings)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; settings: {', '.join(self.settings)}")
        with self.lock:
            self.faults.clear()
            self.always, self.log, self.requests, self.headers, self.max_in_flight = None, [], [], [], 0
            self.__dict__.update({**self.settings, **settings})
        return self

    def outcomes(self) -> list[str]:
        return [o for _, o in self.log]

    def _decide(self, now: float) -> str:
        """The fault for a request arriving at ``now`` (under the lock); logs it."""
        fault = self.faults.popleft() if self.faults else self.always or "ok"
        if self.rpm_limit is not None and sum(t > now - 60 for t, _ in self.log) >= self.rpm_limit:
            fault = "limit"
        elif fault == "ok" and self.error_rate and self.rng.random() < self.error_rate:
            fault = "429"
        self.log.append((now, fault))
        return fault

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.close_connection = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    fault = server._decide(time.time())
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(fault, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, fault: str, body: dict) -> None:
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault in ("429", "limit"):
                    wait = server.retry_after_s
                    if fault == "limit":
                        with server.lock:
                            oldest = min(t for t, _ in server.log if t > time.time() - 60)
                        wait = max(wait, oldest + 60 - time.time())
                    return self._send(429, {"error": {"message": "rate limit", "type": "rate_limit"}},
                                      {"retry-after-ms": str(int(wait * 1000)), "Retry-After": str(max(1, round(wait)))})
                if fault == "500":
                    return self._send(500, {"error": {"message": "injected server error"}})
                if fault == "echo":
                    message = f"cannot serve Authorization: {self.headers.get('Authorization')} {dict(self.headers)}"
                    return self._send(500, {"error": {"message": message}})
                time.sleep(server.slow_s if fault == "slow" else server.latency_s)
                content = "%%% not an answer %%%" if fault == "garbage" else fake_answer(body["messages"])
                prompt = server.usage_tokens or sum(len(m["content"]) for m in body["messages"]) // 4
                headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"} if fault == "quota" else {}
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(content) // 4,
                              "total_tokens": prompt + len(content) // 4},
                }, headers)

        return Handler
