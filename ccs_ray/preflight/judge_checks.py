"""Preflight of the judges: names, endpoints and API keys (:mod:`ccs_ray.judges.config`), and each judge's calls,
tokens and cost for every analysed head, estimated before any span exists."""

from __future__ import annotations

from ..planning import JudgePlan, Plan
from ..spec import Spec
from .problems import Checks


def check_judges(checks: Checks, spec: Spec, dry_run: bool) -> list | None:
    """The judges' names, endpoints and (unless planning only) API keys; (name, config) of each, or None."""
    from ..judges.config import api_key_of, check_endpoint, judges_of

    cfg = spec.judge
    endpoints = []
    for i, judge in enumerate(cfg.judges or [cfg]):
        where = f"judge.judges[{i}]" if cfg.judges else "judge"
        if judge.kind == "openai":
            endpoints.append(checks.run(where, check_endpoint, judge))
            if not dry_run:
                checks.run(where, api_key_of, judge)
    return checks.run("judge", lambda: judges_of(cfg)) if None not in endpoints else None


def estimate_judges(spec: Spec, plan: Plan, judges: list, pool_ok: bool) -> None:
    """Each judge's calls, tokens and cost for every analysed head (before any answer cache)."""
    from ..judges.headspans import HeadSpans
    from ..judges.pool import endpoint_of, planned_requests
    from ..judges.prompts import label_request

    cfg = spec.judge
    placeholder = _placeholder_span(spec, pool_ok)
    m = spec.spans.m
    spans = {"paper": [(r, placeholder) for r in range(1, m + 1)]}
    if cfg.heldout:
        spans["heldout"] = [(r, placeholder) for r in range(m + 1, 2 * m + 1)]
    head = HeadSpans(0, 0, "L0.H0", spans)
    per_head = [label_request(head.texts("paper"))] + [r for _, _, r in planned_requests(head, "concept", cfg.mode)]
    heads = sum(model.heads for model in plan.models)
    prompt = heads * sum(r.estimated_tokens()[0] for r in per_head)
    completion = heads * sum(r.estimated_tokens()[1] for r in per_head)
    calls = heads * len(per_head)
    for name, judge in judges:
        if judge.kind == "offline":
            plan.judges.append(JudgePlan(name, "offline", 0, 0, 0, 0.0))
            continue
        priced = judge.input_price or judge.output_price
        cost = endpoint_of(judge, cfg).cost(prompt, completion) if priced else None
        plan.judges.append(JudgePlan(name, judge.kind, calls, prompt, completion, cost))


def _placeholder_span(spec: Spec, pool_ok: bool) -> str:
    """A pool text of median length, standing in for spans that do not exist yet (judge estimates)."""
    from ..pools import load_pool

    if not pool_ok:
        return "a photo of a concept"
    texts = sorted(load_pool(spec.spans.pool), key=len)
    return texts[len(texts) // 2]
