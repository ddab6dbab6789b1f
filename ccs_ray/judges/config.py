"""The judges a spec configures, checked without the engine: names, endpoints and API keys (no torch, Ray or openai).

``judge.judges`` lists several judges, else the ``[judge]`` table is one. An LLM judge needs ``base_url`` and
``model``; its key comes from the environment variable ``api_key_env`` names, never from the spec. Each judge has a
unique name (an LLM judge's model, ``offline-heuristic`` for the offline one, or ``name``), never ``combined``
(the majority vote) or ``human:*`` (imported ratings).
"""

from __future__ import annotations

import os

from ..spec import EndpointConfig, JudgeConfig

COMBINED = "combined"  # the judge name of the majority vote over a run's judges
OFFLINE_NAME = "offline-heuristic"  # the offline judge's name


def check_endpoint(judge: EndpointConfig) -> tuple[str, str]:
    """(base_url, model) of an LLM judge; a ValueError naming what is missing."""
    base_url, model = judge.base_url, judge.model
    if not base_url or not model:
        missing = [k for k, v in (("base_url", base_url), ("model", model)) if not v]
        raise ValueError(f"LLM judge {judge.name or judge.model!r} needs {' and '.join(missing)} "
                         "(e.g. --set judge.base_url=http://127.0.0.1:8000/v1 --set judge.model=NAME; a base_url "
                         "selects the LLM judge, judge.kind = 'offline' the heuristic one)")
    return base_url, model


def api_key_of(judge: EndpointConfig) -> str | None:
    """The key from the environment variable the spec names (never from the spec itself)."""
    if not judge.api_key_env:
        return None
    key = os.environ.get(judge.api_key_env)
    if not key:
        raise ValueError(f"judge {judge.name or judge.model!r}: environment variable {judge.api_key_env!r} "
                         "(judge.api_key_env) is not set")
    return key


def judges_of(cfg: JudgeConfig) -> list[tuple[str, EndpointConfig]]:
    """(name, config) of every judge: ``judge.judges``, else the ``[judge]`` table itself; an LLM judge without
    base_url or model, or a bad or repeated name, is a ValueError."""
    judges = cfg.judges or [EndpointConfig(**{k: getattr(cfg, k) for k in EndpointConfig.model_fields})]
    for j in judges:
        if j.kind == "openai":
            check_endpoint(j)
    # an LLM judge has a model (check_endpoint checked it): '' stands in for none, a bad name below
    named = [(j.name or (OFFLINE_NAME if j.kind == "offline" else j.model or ""), j) for j in judges]
    names = [n for n, _ in named]
    bad = sorted({n for n in names if not n or names.count(n) > 1 or n == COMBINED or n.startswith("human:")})
    if bad:
        raise ValueError(f"judge names must be non-empty, unique, not {COMBINED!r} and not 'human:*'; bad: {bad} "
                         "(set judges[i].name)")
    return named
