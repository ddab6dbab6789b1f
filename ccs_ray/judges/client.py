"""One judge endpoint: AsyncOpenAI calls through the shared limiter and the answer cache, with bounded retries.

Retried (jittered exponential backoff, at most ``max_retries`` times): 429 (after the pause its
Retry-After / x-ratelimit headers ask for, applied to every worker through the limiter), 5xx, 408/409,
timeouts, dropped connections, and answers that do not parse. Other 4xx fail at once. A request that
still has no valid answer is an error, never a 0. Only valid answers are cached; cached answers cost
nothing and make no call. Error texts are redacted (:func:`redactor`) before they leave the client.

Exactly once: a request whose answer is cached is not sent; one whose key is in flight anywhere in the
pool waits for that flight (:mod:`.flights`); the cache is checked again after each limiter slot. What is
left is a retry after a timeout, when the server may have computed the first answer as well: every call
carries ``Idempotency-Key: <cache key>`` for servers that honour it, and such calls are recorded as
``retried_after_timeout`` (keep ``judge.timeout_s`` well above the endpoint's slowest answers).

With a :class:`~.journal.CallJournal`, every call is recorded there before it is sent and completed after
(so a call whose process dies in flight is still accounted for).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import openai

from ..spec import JudgeConfig
from .cache import AnswerCache, cache_key
from .flights import LEAD, MERGED
from .journal import CallJournal
from .limiter import pause_from_headers
from .prompts import Request, UnparseableAnswer

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

HIT, SENT = "hit", "sent"  # how a request got its answer (judge_calls.via), besides flights.MERGED
RETRIED_STATUS = {408, 409}
TEMPERATURE = 0.0
ERROR_CHARS = 300  # stored error texts are cut to this length (after redaction)
_CREDENTIAL = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic)\s+)?|\bbearer\s+)[^\s'\",}]+")


def redactor(base_url: str, api_key: str | None) -> Callable[[str], str]:
    """``text -> text`` with the API key, the user-info and query values of ``base_url``, and every
    ``Authorization`` value or ``Bearer`` token replaced by ``***`` (for anything stored or logged)."""
    parts = urlsplit(base_url)
    found = {api_key, parts.username, parts.password, parts.query, *(v for _, v in parse_qsl(parts.query))}
    found |= {unquote(f) for f in found if f}
    secrets = sorted((f for f in found if f and len(f) >= 4), key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return _CREDENTIAL.sub(r"\1***", text)

    return redact


@dataclass
class Answer:
    """What one request came to: ``value`` (parsed) or ``error``; ``via`` says how (``hit``: the cache,
    ``merged``: another request's flight, ``sent``: this client's calls), and ``calls`` holds one record
    per call sent (:meth:`JudgeClient._record`) or one for the hit or merge."""

    value: object = None
    error: str | None = None
    via: str = SENT
    cache_key: str = ""
    calls: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    """The call settings of one judge (no secret in it)."""

    base_url: str
    model: str
    structured: bool = True
    input_price: float = 0.0  # USD per 1M prompt tokens
    output_price: float = 0.0  # USD per 1M completion tokens
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def params(self, request: Request) -> dict:
        """Request parameters besides model and messages (part of the cache key)."""
        return {"temperature": TEMPERATURE, "response_format": request.schema if self.structured else None}

    @property
    def public_url(self) -> str:
        """``base_url`` as it may be stored and named: no user-info, no query."""
        return JudgeConfig.public_url(self.base_url)

    def key(self, request: Request) -> str:
        return cache_key(self.public_url, self.model, request.messages, self.params(request))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6


class JudgeClient:
    """Asks one endpoint. ``limiter`` and ``flights`` are the pool's shared :class:`~.limiter.RateLimiter` and
    :class:`~.flights.InFlight` (any object whose ``reserve``/``settle``/``pause`` and ``join``/``finish``
    calls can be awaited); ``owner`` names this client in ``flights``."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, limiter, flights, owner: str,
                 concurrency: int = 8, seed: int | None = None):
        self.endpoint, self.limiter, self.flights, self.owner = endpoint, limiter, flights, owner
        self.slots = asyncio.Semaphore(concurrency)
        self.rng = random.Random(seed)
        self.redact = redactor(endpoint.base_url, api_key)
        self.openai = openai.AsyncOpenAI(api_key=api_key or "no-key", base_url=endpoint.base_url,
                                         max_retries=0, timeout=endpoint.timeout_s)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.endpoint.backoff_max_s, self.endpoint.backoff_s * 2 ** attempt)
        return cap / 2 + self.rng.uniform(0, cap / 2)

    async def ask(self, request: Request, cache: AnswerCache, journal: CallJournal | None = None) -> Answer:
        """The parsed answer to ``request``: from ``cache``, from an identical request in flight in the pool, or
        from the endpoint (then stored in ``cache`` before the waiting requests are woken). ``journal``: where
        each call sent is recorded before it goes out and completed after."""
        key = self.endpoint.key(request)
        while True:
            hit = cache.get(key)
            if hit is not None:
                return self._shared(key, HIT, {"value": hit["value"], "error": None})
            role, result = await self.flights.join(key, self.owner)
            if role == MERGED:
                return self._shared(key, MERGED, result)
            if role == LEAD:
                break  # else the leader's actor died: look again
        answer = None
        try:
            answer = await self._send(request, key, cache, journal)
        finally:
            await self.flights.finish(key, None if answer is None else {"value": answer.value, "error": answer.error})
        return answer

    def _shared(self, key: str, via: str, result: dict) -> Answer:
        """An answer this client did not pay for: a cache hit, or another request's answer."""
        answer = Answer(value=result["value"], error=result["error"], via=via, cache_key=key)
        answer.calls.append(self._record(None, "error" if answer.error else "ok", answer.error))
        return answer

    @staticmethod
    def _record(attempt: int | None, outcome: str, error: str | None = None, prompt_tokens: int = 0,
                completion_tokens: int = 0, latency_s: float = 0.0, cost_usd: float = 0.0,
                retried_after_timeout: bool = False) -> dict:
        """One judge_calls record: a call sent (``attempt`` 0, 1, ...) or, with ``attempt`` None, a hit or merge."""
        return dict(attempt=attempt, outcome=outcome, error=error, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, latency_s=latency_s, cost_usd=cost_usd,
                    retried_after_timeout=retried_after_timeout)

    async def _send(self, request: Request, key: str, cache: AnswerCache, journal: CallJournal | None) -> Answer:
        """Send ``request`` (this client leads its key) with bounded retries; one record per call sent.

        The cache is checked again once the limiter grants each slot (an identical request may have been
        answered meanwhile, in this run or another). Every call carries ``Idempotency-Key: key``, so a
        retry after a timeout, when the server may have computed the first answer too, is recognisable by
        servers that honour the header; such calls are flagged ``retried_after_timeout``.
        """
        ep = self.endpoint
        answer = Answer(cache_key=key, via=SENT)
        params = {k: v for k, v in ep.params(request).items() if v is not None}
        tokens = sum(request.estimated_tokens())
        timed_out = False
        for attempt in range(ep.max_retries + 1):
            wait, used, outcome, error, retry = 0.0, (0, 0), "ok", None, True
            async with self.slots:
                at = await self.limiter.reserve(tokens)
                await asyncio.sleep(max(0.0, at - time.time()))
                hit = cache.get(key)
                if hit is not None:  # answered while this one waited for its slot: the slot goes unused
                    await self.limiter.settle(at, tokens, 0)
                    shared = self._shared(key, HIT, {"value": hit["value"], "error": None})
                    shared.calls[:0] = answer.calls
                    return shared
                entry = journal.sent(key, attempt, timed_out) if journal is not None else None
                start = time.perf_counter()
                try:
                    # the prompt templates' {"role", "content"} dicts are what openai's message TypedDicts describe
                    messages = cast("list[ChatCompletionMessageParam]", request.messages)
                    raw = await self.openai.chat.completions.with_raw_response.create(
                        model=ep.model, messages=messages, extra_headers={"Idempotency-Key": key}, **params)
                    completion = raw.parse()  # with_raw_response gives the legacy response: parse() is sync
                    if (pause := pause_from_headers(raw.headers)) > 0:
                        await self.limiter.pause(pause)
                    usage = completion.usage
                    if usage is not None:
                        used = (usage.prompt_tokens or 0), (usage.completion_tokens or 0)
                        await self.limiter.settle(at, tokens, sum(used))
                    text = (completion.choices[0].message.content or "") if completion.choices else ""
                    answer.value = request.parse(text)
                except UnparseableAnswer as e:
                    outcome, error = "unparseable", f"unparseable: {e}"
                except openai.APIStatusError as e:
                    outcome, error = f"http_{e.status_code}", f"HTTP {e.status_code}: {e}"
                    if e.status_code == 429:
                        wait = pause_from_headers(e.response.headers)
                        if wait > 0:
                            await self.limiter.pause(wait)
                    elif e.status_code < 500 and e.status_code not in RETRIED_STATUS:
                        retry = False
                    wait = wait or self._backoff(attempt)
                except openai.APITimeoutError:
                    outcome, error = "timeout", f"timeout after {ep.timeout_s} s"
                    wait = self._backoff(attempt)
                except openai.APIConnectionError as e:
                    outcome, error = "connection", f"connection: {e.__cause__ or e}"
                    wait = self._backoff(attempt)
            error = None if error is None else self.redact(error)[:ERROR_CHARS]
            answer.calls.append(self._record(attempt, outcome, error, *used, time.perf_counter() - start,
                                             ep.cost(*used), timed_out))
            answer.error = error
            timed_out = timed_out or outcome == "timeout"
            final = error is None or not retry or attempt == ep.max_retries
            if entry is not None:
                CallJournal.complete(entry, answer.calls[-1], final)
            if final:
                break
            await asyncio.sleep(wait)
        if answer.error is None:
            cache.put(key, {"value": answer.value, "model": ep.model,
                            "prompt_tokens": sum(c["prompt_tokens"] for c in answer.calls),
                            "completion_tokens": sum(c["completion_tokens"] for c in answer.calls)})
        return answer

    async def close(self) -> None:
        await self.openai.close()
