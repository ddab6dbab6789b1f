"""The Ray judge pool: async worker actors, each with its own AsyncOpenAI client, all sharing one named
limiter actor per endpoint+model and one answer cache; fed one head at a time.
"""

from __future__ import annotations

import asyncio
import os

import ray

from ..progress import Progress
from ..spec import EndpointConfig, JudgeConfig
from .cache import AnswerCache
from .client import Answer, Endpoint, JudgeClient
from .heads import HeadSpans, Verdict
from .limiter import limiter_actor
from .prompts import Request, batched_request, judge_request, label_request


def endpoint_of(judge: EndpointConfig, cfg: JudgeConfig) -> Endpoint:
    """The call settings of one configured LLM judge; a clear error when base_url or model is missing."""
    missing = [k for k in ("base_url", "model") if not getattr(judge, k)]
    if missing:
        raise ValueError(f"LLM judge {judge.name or judge.model!r} needs {' and '.join(missing)} "
                         "(e.g. --set judge.base_url=http://127.0.0.1:8000/v1 --set judge.model=NAME; a base_url "
                         "selects the LLM judge, judge.kind = 'offline' the heuristic one)")
    return Endpoint(judge.base_url, judge.model, judge.structured, judge.input_price, judge.output_price,
                    cfg.timeout_s, cfg.max_retries, cfg.backoff_s, cfg.backoff_max_s)


def api_key_of(judge: EndpointConfig) -> str | None:
    """The key from the environment variable the spec names (never from the spec itself)."""
    if not judge.api_key_env:
        return None
    key = os.environ.get(judge.api_key_env)
    if not key:
        raise ValueError(f"judge {judge.name or judge.model!r}: environment variable {judge.api_key_env!r} "
                         "(judge.api_key_env) is not set")
    return key


def planned_requests(head: HeadSpans, label: str, mode: str) -> list[tuple[str, int | None, Request]]:
    """(variant, span rank or None for batched, request) of every judgment request of a labelled head."""
    out = []
    for variant, spans in head.spans.items():
        if not spans:
            continue
        if mode == "batched":
            out.append((variant, None, batched_request([t for _, t in spans], label)))
        else:
            out.extend((variant, rank, judge_request(text, label)) for rank, text in spans)
    return out


def _call(kind: str, variant: str | None, rank: int | None, head: HeadSpans, answer: Answer) -> dict:
    row = answer.to_dict()
    row.pop("value")
    return {"kind": kind if variant is None else f"{kind}:{variant}", "head_label": head.head_label,
            "span_rank": rank, **row}


async def judge_head(client: JudgeClient, cache: AnswerCache, head: HeadSpans, mode: str) -> Verdict:
    """Label ``head`` from its paper spans, then judge every span against the label (per span or batched)."""
    label_answer = await client.ask(label_request(head.texts("paper")), cache)
    verdict = Verdict(head, label_answer.value, label_answer.error,
                      calls=[_call("label", None, None, head, label_answer)])
    for variant, spans in head.spans.items():
        verdict.aligned[variant] = [None] * len(spans)
        verdict.errors[variant] = [f"no label: {label_answer.error}"] * len(spans)
    if label_answer.error:
        return verdict
    planned = planned_requests(head, label_answer.value, mode)
    answers = await asyncio.gather(*(client.ask(req, cache) for _, _, req in planned))
    for (variant, rank, req), answer in zip(planned, answers):
        verdict.calls.append(_call(req.kind, variant, rank, head, answer))
        ranks = [r for r, _ in head.spans[variant]]
        values = answer.value if rank is None else [answer.value]
        for i, r in enumerate(ranks if rank is None else [rank]):
            verdict.aligned[variant][ranks.index(r)] = None if answer.error else values[i]
            verdict.errors[variant][ranks.index(r)] = answer.error
    return verdict


@ray.remote(num_cpus=0)
class JudgeWorker:
    """An async actor holding one AsyncOpenAI client; ``judge`` runs one head."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, limiter, concurrency: int, seed: int):
        self.client = JudgeClient(endpoint, api_key,
                                  reserve=lambda tokens: limiter.reserve.remote(tokens),
                                  settle=lambda at, estimated, actual: limiter.settle.remote(at, estimated, actual),
                                  pause=lambda seconds: limiter.pause.remote(seconds),
                                  concurrency=concurrency, seed=seed)

    async def judge(self, head: HeadSpans, mode: str, cache_root: str) -> Verdict:
        return await judge_head(self.client, AnswerCache(cache_root), head, mode)


def limiter_name(endpoint: Endpoint) -> str:
    return f"ccs-judge-limiter:{endpoint.public_url.rstrip('/')}:{endpoint.model}"


def split_slots(concurrency: int, actors: int) -> tuple[int, ...]:
    """Requests in flight per actor, summing to exactly ``concurrency``: the quotient each, one more for the
    first remainder actors; never more actors than slots (8 over 3 -> (3, 3, 2); 2 over 3 -> (1, 1))."""
    n = min(actors, concurrency)
    q, r = divmod(concurrency, n)
    return tuple(q + (i < r) for i in range(n))


#: Started pools, most recently used last, reused by later calls with the same key (workers start slowly). At most
#: MAX_POOLS are kept (the judges of one run): an older pool's idle workers would hold memory until the job ends.
_WORKERS: dict[tuple, list] = {}
MAX_POOLS = 4


def run_pool(judge: EndpointConfig, cfg: JudgeConfig, heads: list[HeadSpans], cache_root: str,
             progress: Progress | None = None) -> list[Verdict]:
    """Every head through up to ``cfg.actors`` worker actors (at most ``cfg.concurrency`` requests in flight in all);
    ``progress`` advances by head, with the calls sent, their retries and their cost so far."""
    if not heads:
        return []
    endpoint, key = endpoint_of(judge, cfg), api_key_of(judge)
    limiter = limiter_actor(limiter_name(endpoint), judge.rpm, judge.tpm, judge.burst_s)
    slots = split_slots(cfg.concurrency, min(cfg.actors, len(heads)))
    pool_key = (ray.get_runtime_context().get_job_id(), endpoint, key, slots)
    if pool_key not in _WORKERS:
        while len(_WORKERS) >= MAX_POOLS:
            _stop_pool(next(iter(_WORKERS)))
        _WORKERS[pool_key] = [JudgeWorker.options(max_concurrency=max(4, n)).remote(endpoint, key, limiter, n, i)
                              for i, n in enumerate(slots)]
    workers = _WORKERS[pool_key] = _WORKERS.pop(pool_key)  # now the most recently used
    turns = [i for k in range(max(slots)) for i, n in enumerate(slots) if k < n]  # heads in proportion to slots
    refs = [workers[turns[j % len(turns)]].judge.remote(h, cfg.mode, cache_root) for j, h in enumerate(heads)]
    try:
        if progress is not None:
            calls = retries = 0
            cost = 0.0
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                sent = [c for c in ray.get(done[0]).calls if c["status"] != "cached"]
                calls, retries = calls + len(sent), retries + sum(c["retries"] for c in sent)
                cost += sum(c["cost_usd"] for c in sent)
                progress.update(1, calls=calls, retries=retries, cost_usd=cost)
        return ray.get(refs)
    except ray.exceptions.RayActorError:
        _stop_pool(pool_key)  # a dead worker: start afresh next time
        raise


def _stop_pool(pool_key: tuple) -> None:
    for worker in _WORKERS.pop(pool_key):
        ray.kill(worker)
