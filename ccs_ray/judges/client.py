"""One judge endpoint: AsyncOpenAI calls through the shared limiter and the answer cache, with bounded retries.

Retried (jittered exponential backoff, at most ``max_retries`` times): 429 (after the pause its
Retry-After / x-ratelimit headers ask for, applied to every worker through the limiter), 5xx, 408/409,
timeouts, dropped connections, and answers that do not parse. Other 4xx fail at once. A request that
still has no valid answer is an error, never a 0. Only valid answers are cached; cached answers cost
nothing and make no call. Error texts are redacted (:func:`redactor`) before they leave the client.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import openai

from ..spec import JudgeConfig
from .cache import AnswerCache, cache_key
from .limiter import pause_from_headers
from .prompts import Request, UnparseableAnswer

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
    """What one request came to: ``value`` (parsed) or ``error``, with its accounting."""

    value: object = None
    status: str = "ok"  # ok, cached, error
    cache_key: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0
    cost_usd: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Asks one endpoint; ``reserve(tokens) -> send time``, ``settle(send time, estimated, actual tokens)`` and
    ``pause(seconds)`` reach the shared limiter."""

    def __init__(self, endpoint: Endpoint, api_key: str | None,
                 reserve: Callable[[int], Awaitable[float]], settle: Callable[[float, int, int], Awaitable],
                 pause: Callable[[float], Awaitable],
                 concurrency: int = 8, seed: int | None = None):
        self.endpoint = endpoint
        self.reserve, self.settle, self.pause = reserve, settle, pause
        self.slots = asyncio.Semaphore(concurrency)
        self.rng = random.Random(seed)
        self.redact = redactor(endpoint.base_url, api_key)
        self.openai = openai.AsyncOpenAI(api_key=api_key or "no-key", base_url=endpoint.base_url,
                                         max_retries=0, timeout=endpoint.timeout_s)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.endpoint.backoff_max_s, self.endpoint.backoff_s * 2 ** attempt)
        return cap / 2 + self.rng.uniform(0, cap / 2)

    async def ask(self, request: Request, cache: AnswerCache) -> Answer:
        """The parsed answer to ``request``, from ``cache`` or the endpoint (then stored in ``cache``)."""
        ep = self.endpoint
        key = ep.key(request)
        hit = cache.get(key)
        if hit is not None:
            return Answer(value=hit["value"], status="cached", cache_key=key)
        answer = Answer(cache_key=key)
        params = {k: v for k, v in ep.params(request).items() if v is not None}
        tokens = sum(request.estimated_tokens())
        start = time.perf_counter()
        for attempt in range(ep.max_retries + 1):
            answer.retries = attempt
            wait = 0.0
            async with self.slots:
                at = await self.reserve(tokens)
                await asyncio.sleep(max(0.0, at - time.time()))
                try:
                    raw = await self.openai.chat.completions.with_raw_response.create(
                        model=ep.model, messages=request.messages, **params)
                    completion = raw.parse()  # with_raw_response gives the legacy response: parse() is sync
                    if (pause := pause_from_headers(raw.headers)) > 0:
                        await self.pause(pause)
                    usage = completion.usage
                    if usage is not None:
                        used = (usage.prompt_tokens or 0), (usage.completion_tokens or 0)
                        answer.prompt_tokens += used[0]
                        answer.completion_tokens += used[1]
                        await self.settle(at, tokens, sum(used))
                    text = (completion.choices[0].message.content or "") if completion.choices else ""
                    answer.value, answer.error = request.parse(text), None
                    break
                except UnparseableAnswer as e:
                    answer.error = f"unparseable: {e}"
                except openai.APIStatusError as e:
                    answer.error = f"HTTP {e.status_code}: {e}"
                    if e.status_code == 429:
                        wait = pause_from_headers(e.response.headers)
                        if wait > 0:
                            await self.pause(wait)
                    elif e.status_code < 500 and e.status_code not in RETRIED_STATUS:
                        break
                    wait = wait or self._backoff(attempt)
                except openai.APITimeoutError:
                    answer.error = f"timeout after {ep.timeout_s} s"
                    wait = self._backoff(attempt)
                except openai.APIConnectionError as e:
                    answer.error = f"connection: {e.__cause__ or e}"
                    wait = self._backoff(attempt)
            if attempt < ep.max_retries:
                await asyncio.sleep(wait)
        answer.latency_s = time.perf_counter() - start
        answer.cost_usd = ep.cost(answer.prompt_tokens, answer.completion_tokens)
        if answer.error is None:
            cache.put(key, {"value": answer.value, "model": ep.model, "prompt_tokens": answer.prompt_tokens,
                                 "completion_tokens": answer.completion_tokens})
        else:
            answer.status, answer.error = "error", self.redact(answer.error)[:ERROR_CHARS]
        return answer

    async def close(self) -> None:
        await self.openai.close()
