"""The Ray judge pool: async worker actors, each with its own AsyncOpenAI client, all sharing one named
limiter actor and one in-flight registry per endpoint+model and one answer cache; fed one head at a time.

A worker that dies (killed, its node lost) is replaced: its unfinished keys are released in the registry
(so that a waiting request takes over) and its heads go to the new worker, where every answer already
received is a cache hit. Workers are owned by the driver: when the driver dies, Ray stops them with it.
Given a :class:`~.journal.CallJournal`, every call a worker sends is recorded there before it goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle

from ..files import WriteGuard, guard_writes
from ..progress import Progress
from ..spec import EndpointConfig, JudgeConfig
from .cache import AnswerCache
from .client import Answer, Endpoint, JudgeClient
from .config import api_key_of, check_endpoint
from .flights import flights_actor
from .headspans import HeadSpans, Verdict
from .journal import CallJournal
from .limiter import limiter_actor
from .prompts import Request, batched_request, judge_request, label_request


def endpoint_of(judge: EndpointConfig, cfg: JudgeConfig) -> Endpoint:
    """The call settings of one configured LLM judge; a clear error when base_url or model is missing."""
    base_url, model = check_endpoint(judge)
    return Endpoint(base_url, model, judge.structured, judge.input_price, judge.output_price,
                    cfg.timeout_s, cfg.max_retries, cfg.backoff_s, cfg.backoff_max_s)


def planned_requests(head: HeadSpans, label: str, mode: str) -> list[tuple[str, int | None, Request]]:
    """(variant, span rank or None for batched, request) of every judgment request of a labelled head."""
    out: list[tuple[str, int | None, Request]] = []
    for variant, spans in head.spans.items():
        if not spans:
            continue
        if mode == "batched":
            out.append((variant, None, batched_request([t for _, t in spans], label)))
        else:
            out.extend((variant, rank, judge_request(text, label)) for rank, text in spans)
    return out


def _tags(kind: str, variant: str | None, rank: int | None, head: HeadSpans) -> dict:
    """The judge_calls columns that name one request of ``head``."""
    return {"kind": kind if variant is None else f"{kind}:{variant}", "head_label": head.head_label,
            "span_rank": rank}


def _calls(tags: dict, answer: Answer) -> list[dict]:
    """The judge_calls records of one request (``tags``: :func:`_tags`): one per call sent, or one for its hit or
    merge; ``final`` marks the record whose outcome the request kept."""
    base = {**tags, "cache_key": answer.cache_key}
    last = len(answer.calls) - 1
    return [{**base, **call, "via": answer.via if i == last else "sent", "final": i == last}
            for i, call in enumerate(answer.calls)]


async def judge_head(client: JudgeClient, cache: AnswerCache, head: HeadSpans, mode: str,
                     journal: CallJournal | None = None) -> Verdict:
    """Label ``head`` from its paper spans, then judge every span against the label (per span or batched);
    ``journal``: where every call sent is recorded before it goes out."""

    def ask(request: Request, tags: dict):
        return client.ask(request, cache, None if journal is None else journal.tagged(**tags))

    label_tags = _tags("label", None, None, head)
    label_answer = await ask(label_request(head.texts("paper")), label_tags)
    label = label_answer.value
    assert label is None or isinstance(label, str)  # parse_label's answer, or None with an error
    verdict = Verdict(head, label, label_answer.error, calls=_calls(label_tags, label_answer))
    for variant, spans in head.spans.items():
        verdict.aligned[variant] = [None] * len(spans)
        verdict.errors[variant] = [f"no label: {label_answer.error}"] * len(spans)
    if label_answer.error:
        return verdict
    assert label is not None  # no error: the answer parsed
    planned = [(variant, rank, req, _tags(req.kind, variant, rank, head))
               for variant, rank, req in planned_requests(head, label, mode)]
    answers = await asyncio.gather(*(ask(req, tags) for _, _, req, tags in planned))
    for (variant, rank, _, tags), answer in zip(planned, answers, strict=True):
        verdict.calls += _calls(tags, answer)
        ranks = [r for r, _ in head.spans[variant]]
        values = answer.value if rank is None else [answer.value]
        for i, r in enumerate(ranks if rank is None else [rank]):
            if answer.error:
                verdict.aligned[variant][ranks.index(r)] = None
            else:
                assert isinstance(values, list)  # batched: parse_batched's list of bits
                verdict.aligned[variant][ranks.index(r)] = values[i]
            verdict.errors[variant][ranks.index(r)] = answer.error
    return verdict


class _Remote:
    """``await remote.method(*args)`` calls ``handle.method.remote(*args)`` of a Ray actor handle."""

    def __init__(self, handle):
        self.handle = handle

    def __getattr__(self, name: str):
        method = getattr(self.handle, name)
        return lambda *args: method.remote(*args)


@ray.remote(num_cpus=0)
class JudgeWorker:
    """An async actor holding one AsyncOpenAI client; ``judge`` runs one head. ``owner`` names it in the
    in-flight registry."""

    def __init__(self, endpoint: Endpoint, api_key: str | None, limiter, flights, owner: str, concurrency: int,
                 seed: int):
        self.client = JudgeClient(endpoint, api_key, _Remote(limiter), _Remote(flights), owner,
                                  concurrency=concurrency, seed=seed)

    async def judge(self, head: HeadSpans, mode: str, cache_root: str, journal: CallJournal | None,
                    guard: WriteGuard | None = None) -> Verdict:
        """One head's verdict; its cache entries and journal records are written under the run's ``guard``."""
        with guard_writes(guard) if guard is not None else contextlib.nullcontext():
            return await judge_head(self.client, AnswerCache(cache_root), head, mode, journal)


def limiter_name(endpoint: Endpoint) -> str:
    return f"ccs-judge-limiter:{endpoint.public_url.rstrip('/')}:{endpoint.model}"


def flights_name(endpoint: Endpoint) -> str:
    return f"ccs-judge-flights:{endpoint.public_url.rstrip('/')}:{endpoint.model}"


def split_slots(concurrency: int, actors: int) -> tuple[int, ...]:
    """Requests in flight per actor, summing to exactly ``concurrency``: the quotient each, one more for the
    first remainder actors; never more actors than slots (8 over 3 -> (3, 3, 2); 2 over 3 -> (1, 1))."""
    n = min(actors, concurrency)
    q, r = divmod(concurrency, n)
    return tuple(q + (i < r) for i in range(n))


@dataclass
class _Pool:
    """Started workers of one endpoint, key and layout, with what they need to start a replacement."""

    endpoint: Endpoint
    api_key: str | None
    limiter: ActorHandle
    flights: ActorHandle
    slots: tuple[int, ...]
    workers: list = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    started: int = 0  # workers started so far (names owners uniquely)

    def start(self, i: int) -> None:
        """Start worker ``i`` (again, when it died)."""
        owner = f"{uuid.uuid4().hex[:8]}:{i}:{self.started}"
        # mypy does not apply class decorators (python/mypy#3135): ray.remote made JudgeWorker an ActorClass
        worker = JudgeWorker.options(max_concurrency=max(4, self.slots[i])).remote(  # type: ignore[attr-defined]
            self.endpoint, self.api_key, self.limiter, self.flights, owner, self.slots[i], self.started)
        self.started += 1
        if i < len(self.workers):
            self.workers[i], self.owners[i] = worker, owner
        else:
            self.workers.append(worker)
            self.owners.append(owner)


#: Started pools, most recently used last, reused by later calls with the same key (workers start slowly). At most
#: MAX_POOLS are kept (the judges of one run): an older pool's idle workers would hold memory until the job ends.
_POOLS: dict[tuple, _Pool] = {}
MAX_POOLS = 4
MAX_RESTARTS_PER_WORKER = 3  # a pool's workers may die this many times per worker in one run_pool call


def run_pool(judge: EndpointConfig, cfg: JudgeConfig, heads: list[HeadSpans], cache_root: str,
             progress: Progress | None = None, journal: CallJournal | None = None,
             guard: WriteGuard | None = None) -> list[Verdict]:
    """Every head through up to ``cfg.actors`` worker actors (at most ``cfg.concurrency`` requests in flight in all);
    ``progress`` advances by head, with the calls sent, their retries and their cost so far; ``journal``: where
    every call sent is recorded before it goes out (:mod:`.journal`); ``guard``: the run's
    :class:`~ccs_ray.files.WriteGuard` (the workers outlive a run: it goes with each head).

    A dead worker is replaced and its heads are judged again (answers already received come from the cache);
    after :data:`MAX_RESTARTS_PER_WORKER` deaths per worker the RayActorError is raised."""
    if not heads:
        return []
    endpoint, key = endpoint_of(judge, cfg), api_key_of(judge)
    limiter = limiter_actor(limiter_name(endpoint), judge.rpm, judge.tpm, judge.burst_s)
    slots = split_slots(cfg.concurrency, min(cfg.actors, len(heads)))
    pool_key = (ray.get_runtime_context().get_job_id(), endpoint, key, slots)
    if pool_key not in _POOLS:
        while len(_POOLS) >= MAX_POOLS:
            _stop_pool(next(iter(_POOLS)))
        pool = _Pool(endpoint, key, limiter, flights_actor(flights_name(endpoint)), slots)
        for i in range(len(slots)):
            pool.start(i)
        _POOLS[pool_key] = pool
    pool = _POOLS[pool_key] = _POOLS.pop(pool_key)  # now the most recently used
    turns = [i for k in range(max(slots)) for i, n in enumerate(slots) if k < n]  # heads in proportion to slots
    pending = {}  # ref -> (head index, worker index)

    def submit(j: int, i: int) -> None:
        pending[pool.workers[i].judge.remote(heads[j], cfg.mode, cache_root, journal, guard)] = (j, i)

    for j in range(len(heads)):
        submit(j, turns[j % len(turns)])
    verdicts: list[Verdict | None] = [None] * len(heads)
    restarts, calls, retries, cost = 0, 0, 0, 0.0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        j, i = pending.pop(done[0])
        try:
            verdict = verdicts[j] = ray.get(done[0])
        except ray.exceptions.RayActorError:
            restarts += 1
            if restarts > MAX_RESTARTS_PER_WORKER * len(slots):
                _stop_pool(pool_key)
                raise
            _replace(pool, i, pending, submit, j)
            continue
        sent = [c for c in verdict.calls if c["attempt"] is not None]
        calls, retries = calls + len(sent), retries + sum(c["attempt"] > 0 for c in sent)
        cost += sum(c["cost_usd"] for c in sent)
        if progress is not None:
            progress.update(1, calls=calls, retries=retries, cost_usd=cost)
    judged = [v for v in verdicts if v is not None]
    assert len(judged) == len(heads)  # every head was submitted until its verdict came back
    return judged


def _replace(pool: _Pool, i: int, pending: dict, submit, j: int) -> None:
    """Worker ``i`` died running head ``j``: release its flights, start a new worker, give it every head the
    dead one held."""
    dead = pool.owners[i]
    held = [j]
    for ref, (jj, ii) in list(pending.items()):
        if ii == i:
            del pending[ref]
            held.append(jj)
    ray.get(pool.flights.abandon.remote(dead))
    ray.kill(pool.workers[i])
    pool.start(i)
    for jj in held:
        submit(jj, i)


def _stop_pool(pool_key: tuple) -> None:
    for worker in _POOLS.pop(pool_key).workers:
        ray.kill(worker)
