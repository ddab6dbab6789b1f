"""The judge stage: spans table -> labels, judgments, ccs, judge_calls and errors tables of one (run, model)."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timezone

import fsspec

from .. import scores
from ..spec import EndpointConfig, JudgeConfig, Spec
from ..tables import partition_path, read_table, write_table
from .cache import AnswerCache
from .heads import VARIANTS, HeadSpans, Verdict, file_safe, heads_from_spans
from .offline import NAME as OFFLINE_NAME, OfflineJudge, vocabulary_from
from .pool import endpoint_of, planned_requests, run_pool
from .prompts import label_request

COMBINED = "combined"


def judges_of(spec: Spec) -> list[tuple[str, EndpointConfig]]:
    """(name, config) of every judge of the spec: ``judge.judges``, else the ``[judge]`` table itself."""
    cfg = spec.judge
    judges = cfg.judges or [EndpointConfig(**{k: getattr(cfg, k) for k in EndpointConfig.model_fields})]
    for j in judges:
        if j.kind == "openai":
            endpoint_of(j, cfg)  # base_url and model are set
    named = [(j.name or (OFFLINE_NAME if j.kind == "offline" else j.model), j) for j in judges]
    names = [n for n, _ in named]
    bad = sorted({n for n in names if not n or names.count(n) > 1 or n == COMBINED or n.startswith("human:")})
    if bad:
        raise ValueError(f"judge names must be non-empty, unique, not {COMBINED!r} and not 'human:*'; bad: {bad} "
                         "(set judges[i].name)")
    return named


def cache_root_of(spec: Spec, root: str) -> str:
    return spec.judge.cache or f"{root.rstrip('/')}/judge_cache"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def verdict_rows(judge: str, verdicts: list[Verdict], heuristic: bool, m: int) -> dict[str, list[dict]]:
    """labels, judgments and ccs rows of one judge's verdicts."""
    rows = {"labels": [], "judgments": [], "ccs": []}
    for v in verdicts:
        h = v.head
        key = {"layer": h.layer, "head": h.head, "head_label": h.head_label, "judge": judge, "heuristic": heuristic}
        for variant in v.aligned:
            rows["labels"].append({**key, "variant": variant, "label": v.label,
                                   "label_normalized": scores.normalize_label(v.label), "error": v.label_error})
            for (rank, text), a, err in zip(h.spans[variant], v.aligned[variant], v.errors[variant]):
                rows["judgments"].append({**key, "variant": variant, "span_rank": rank, "text": text,
                                          "label": v.label, "aligned": a, "error": err})
        rows["ccs"].append(_ccs_row(key, v.label, v.aligned, m))
    return rows


def _ccs_row(key: dict, label: str | None, aligned: dict[str, list[int | None]], m: int) -> dict:
    paper = scores.ccs(aligned.get("paper", []), m)
    return {**key, "label": label, "ccs": paper, "ccs_heldout": scores.ccs(aligned["heldout"], m) if "heldout" in aligned else None,
            "level": scores.level(paper, m)}


def combined_rows(by_judge: dict[str, list[Verdict]], heuristic: bool, m: int) -> dict[str, list[dict]]:
    """Majority vote per span across judges; label = the most common normalised label."""
    rows = {"judgments": [], "ccs": []}
    per_head = zip(*by_judge.values())
    for verdicts in per_head:
        h = verdicts[0].head
        key = {"layer": h.layer, "head": h.head, "head_label": h.head_label, "judge": COMBINED, "heuristic": heuristic}
        label = scores.most_common_label([v.label for v in verdicts])
        aligned = {}
        for variant, spans in h.spans.items():
            aligned[variant] = [scores.majority_vote([v.aligned[variant][i] for v in verdicts]) for i in range(len(spans))]
            rows["judgments"].extend({**key, "variant": variant, "span_rank": rank, "text": text, "label": label,
                                      "aligned": a, "error": None if a is not None else "no valid vote"}
                                     for (rank, text), a in zip(spans, aligned[variant]))
        rows["ccs"].append(_ccs_row(key, label, aligned, m))
    return rows


def agreement(by_judge: dict[str, list[Verdict]]) -> dict:
    """Pairwise Cohen's kappa and Fleiss' kappa of the judges over every (head, variant, span) judgment."""
    names = list(by_judge)
    votes = {n: [a for v in by_judge[n] for variant in VARIANTS for a in v.aligned.get(variant, [])] for n in names}
    return {"cohen": {f"{a}|{b}": scores.cohen_kappa(votes[a], votes[b]) for a, b in itertools.combinations(names, 2)},
            "fleiss": scores.fleiss_kappa(list(zip(*votes.values()))) if len(names) > 1 else None}


def dry_run_plan(spec: Spec, heads: list[HeadSpans], cache_root: str) -> dict:
    """Calls and cost each LLM judge would make: judgment prompts of heads whose label is not cached yet are
    estimated with a one-word placeholder label."""
    cache, plan = AnswerCache(cache_root), {}
    for name, judge in judges_of(spec):
        if judge.kind == "offline":
            plan[name] = {"calls": 0, "cached": 0, "cost_usd": 0.0, "heuristic": True}
            continue
        ep = endpoint_of(judge, spec.judge)
        calls = cached = prompt = completion = 0
        for head in heads:
            req = label_request(head.texts("paper"))
            hit = cache.get(ep.key(req))
            reqs = [req] + [r for _, _, r in planned_requests(head, hit["value"] if hit else "concept", spec.judge.mode)]
            for r in reqs:
                if cache.get(ep.key(r)) is not None:
                    cached += 1
                    continue
                calls += 1
                p, c = r.estimated_tokens()
                prompt, completion = prompt + p, completion + c
        plan[name] = {"calls": calls, "cached": cached, "prompt_tokens": prompt, "completion_tokens": completion,
                      "cost_usd": ep.cost(prompt, completion), "heuristic": False}
    return plan


def run_judge_stage(spec: Spec, root: str, run_id: str, model: str, text_encoder=None, dry_run: bool = False) -> dict:
    """Label and judge every head of ``model`` in run ``run_id`` with every judge; write the tables.

    ``text_encoder``: optional ``list[str] -> [N, D]`` L2-normalised CLIP text embeddings for the offline judge.
    Returns a summary: heads, calls made, cached, errors, cost (and the plan only, with ``dry_run``).
    """
    m, cfg = spec.spans.m, spec.judge
    spans = read_table(root, "spans", run_id=run_id, model=model)
    heads, problems = heads_from_spans(spans, m, cfg.heldout)
    if not heads:
        raise ValueError(f"no spans (subset 'all') for run {run_id!r}, model {model!r} under {root}: run the spans stage first")
    judges, cache_root = judges_of(spec), cache_root_of(spec, root)
    if dry_run:
        plan = dry_run_plan(spec, heads, cache_root)
        return {"dry_run": True, "heads": len(heads), "judges": plan,
                "calls": sum(p["calls"] for p in plan.values()), "cost_usd": sum(p["cost_usd"] for p in plan.values())}

    by_judge: dict[str, list[Verdict]] = {}
    heuristic: dict[str, bool] = {}
    tables: dict[str, dict[str, list[dict]]] = {}
    calls: list[dict] = []
    for name, judge in judges:
        heuristic[name] = judge.kind == "offline"
        if heuristic[name]:
            offline = OfflineJudge(vocabulary_from(cfg.vocabulary), text_encoder)
            by_judge[name] = [offline.verdict(h) for h in heads]
        else:
            by_judge[name] = run_pool(judge, cfg, heads, cache_root)
            calls += [call_row(name, JudgeConfig.public_url(judge.base_url), c) for v in by_judge[name] for c in v.calls]
        tables[name] = verdict_rows(name, by_judge[name], heuristic[name], m)
    tables[COMBINED] = combined_rows(by_judge, any(heuristic.values()), m)
    for name, rows in tables.items():
        for table, table_rows in rows.items():
            _replace(root, table, table_rows, run_id, model, f"judge-{file_safe(name)}")

    errors = [{"stage": "judge", "source": "spans", **p, "at": _now()} for p in problems]
    errors += [{"stage": "judge", "source": c["judge"], "reason": "judge request failed", "detail": c["error"],
                "item": f"{c['head_label']} {c['kind']} {c['span_rank'] or ''}".strip(), "at": _now()}
               for c in calls if c["error"]]
    _replace(root, "errors", errors, run_id, model, "judge")  # this run's judge errors replace the last run's
    write_table(root, "judge_calls", calls, run_id, model, name=f"judge-{uuid.uuid4().hex}")  # every run's calls kept
    return {
        "heads": len(heads), "judges": list(tables),
        "calls": sum(not c["cached"] for c in calls), "cached": sum(c["cached"] for c in calls),
        "errors": len(errors), "cost_usd": sum(c["cost_usd"] for c in calls),
        "heuristic": any(heuristic.values()),
        "ccs_at_k": {n: scores.ccs_at_k([r["ccs"] for r in rows["ccs"]], m) for n, rows in tables.items()},
        "agreement": agreement(by_judge),
    }


def call_row(judge: str, endpoint: str, call: dict) -> dict:
    """A judge_calls row from one of a verdict's calls."""
    row = {k: v for k, v in call.items() if k != "status"}
    return {**row, "judge": judge, "endpoint": endpoint, "cached": call["status"] == "cached",
            "status": call["status"], "at": _now()}


def _replace(root: str, table: str, rows: list[dict], run_id: str, model: str, name: str) -> None:
    """Write ``rows`` as ``name``, replacing an earlier file of that name (removed when there are no rows)."""
    if write_table(root, table, rows, run_id, model, name=name) is None:
        fs, path = fsspec.core.url_to_fs(f"{partition_path(root, table, run_id, model)}/{name}.parquet")
        if fs.exists(path):
            fs.rm(path)
