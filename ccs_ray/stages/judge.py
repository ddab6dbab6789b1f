"""Stage ``judge``: the spans table -> labels, judgments, ccs, judge_calls and errors tables of one model.

Section: ``[judge]``, ``[spans]`` and ``scan.convention`` (:class:`JudgeSection`). Per model; needs ``spans``.
Every judge of the section labels each head from its spans 1..m and judges each span 1/0 (and spans m+1..2m
against the same label when ``judge.heldout``); ``combined`` is their majority vote. LLM judges run through the
Ray pool of :mod:`ccs_ray.judges.pool` (one global rate limiter, an answer cache that makes re-runs free);
the offline judge is a deterministic heuristic and says so in every row (``heuristic``).

A judge whose judging of more than ``judge.max_error_share`` of the heads (or of every head) ended in error
(no label, or a span without a verdict) fails the stage with :class:`JudgeFailed`, after the tables are written:
the stage gets no ``done`` marker, so ``--resume`` runs it again; answers received are cache hits then, so only
the requests that failed are sent again, and the rerun's files replace the failed attempt's.

judge_calls: every call sent is recorded in the run's journal before it goes out and completed after
(:mod:`ccs_ray.judges.journal`, ``ROOT/_state/<run_id>/<model>/judge_calls``); the stage folds the journal of
every lifetime of the run into the file ``judge-journal`` (replaced each time), so a call whose driver or actor
was killed is still there (``outcome = "unknown"``: it may have been billed). The requests answered without a
call (``via`` = hit or merged) of each run of the stage are kept in a file of their own (``judge-<uuid>``).

Every ccs row with a label also gets its label fidelity (:mod:`ccs_ray.fidelity`, no LLM): the label encoded
as the spans' pool is (``spans.template``, ``spans.normalize``) against the pool ``spans.pool``, over the head's
statistics: the scan's merged moments (``spans.method`` data or both) or its weights' covariance (weights).
Without moments in the run (spans written by other means) the two columns stay null and the summary says so.
CLIP text embeddings (the offline judge's, label fidelity's) come from the run's text cache
(:meth:`~ccs_ray.runs.RunState.text_cache`), where the spans stage left the pool's.
"""

from __future__ import annotations

import itertools
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch

from .. import scores, stats
from ..fidelity import label_fidelity
from ..files import sweep_tmp
from ..heads import parse_head_name
from ..judges.client import HIT, SENT
from ..judges.config import COMBINED, judges_of
from ..judges.flights import MERGED
from ..judges.headspans import VARIANTS, Verdict, file_safe, heads_from_spans
from ..judges.journal import CallJournal, read_journal
from ..judges.offline import OfflineJudge, vocabulary_from
from ..judges.pool import endpoint_of, run_pool
from ..moments import HeadMoments
from ..pools import load_pool
from ..progress import Progress, Steps
from ..spec import JudgeConfig, SpansConfig, Spec
from ..tables import read_table, replace_file, write_table
from ..texts import TextEncoder
from ..textspan import keyed_span_bases
from .context import ModelContext
from .summaries import JudgeSummary

STALE_TMP_S = 10.0  # an answer cache entry (< 1 KB) still half written after this long has lost its writer


class JudgeFailed(RuntimeError):
    """A judge could not judge more than ``judge.max_error_share`` of a model's heads, or not one of them."""


@dataclass(frozen=True)
class JudgeSection:
    """``judge``: the judges and how to call them; ``m``: spans per head that CCS counts (``spans.m``);
    ``spans``: the TextSpan settings label fidelity follows (pool, template, normalize, rank, method);
    ``convention``: the decomposition convention of the weights-only head covariances (``scan.convention``)."""

    judge: JudgeConfig
    m: int
    spans: SpansConfig
    convention: str


def section(spec: Spec) -> JudgeSection:
    return JudgeSection(spec.judge, spec.spans.m, spec.spans, spec.scan.convention)


def cache_root_of(cfg: JudgeConfig, root: str) -> str:
    """The answer cache's root: ``judge.cache``, else ``<results root>/judge_cache``."""
    return cfg.cache or f"{root.rstrip('/')}/judge_cache"


def _now() -> datetime:
    return datetime.now(UTC)


def verdict_rows(judge: str, verdicts: list[Verdict], heuristic: bool, m: int) -> dict[str, list[dict]]:
    """labels, judgments and ccs rows of one judge's verdicts."""
    rows: dict[str, list[dict]] = {"labels": [], "judgments": [], "ccs": []}
    for v in verdicts:
        h = v.head
        key = {"layer": h.layer, "head": h.head, "head_label": h.head_label, "judge": judge, "heuristic": heuristic}
        for variant in v.aligned:
            rows["labels"].append({**key, "variant": variant, "label": v.label,
                                   "label_normalized": scores.normalize_label(v.label), "error": v.label_error})
            for (rank, text), a, err in zip(h.spans[variant], v.aligned[variant], v.errors[variant], strict=True):
                rows["judgments"].append({**key, "variant": variant, "span_rank": rank, "text": text,
                                          "label": v.label, "aligned": a, "error": err})
        rows["ccs"].append(_ccs_row(key, v.label, v.aligned, m))
    return rows


def _ccs_row(key: dict, label: str | None, aligned: dict[str, list[int | None]], m: int) -> dict:
    paper = scores.ccs(aligned.get("paper", []), m)
    return {**key, "label": label, "ccs": paper,
            "ccs_heldout": scores.ccs(aligned["heldout"], m) if "heldout" in aligned else None,
            "level": scores.level(paper, m)}


def combined_rows(by_judge: dict[str, list[Verdict]], heuristic: bool, m: int) -> dict[str, list[dict]]:
    """Majority vote per span across judges; label = the most common normalised label."""
    rows: dict[str, list[dict]] = {"judgments": [], "ccs": []}
    per_head = zip(*by_judge.values(), strict=True)  # every judge has a verdict for every head
    for verdicts in per_head:
        h = verdicts[0].head
        key = {"layer": h.layer, "head": h.head, "head_label": h.head_label, "judge": COMBINED,
               "heuristic": heuristic}
        label = scores.most_common_label([v.label for v in verdicts])
        aligned: dict[str, list[int | None]] = {}
        for variant, spans in h.spans.items():
            aligned[variant] = [scores.majority_vote([v.aligned[variant][i] for v in verdicts])
                                for i in range(len(spans))]
            rows["judgments"].extend({**key, "variant": variant, "span_rank": rank, "text": text, "label": label,
                                      "aligned": a, "error": None if a is not None else "no valid vote"}
                                     for (rank, text), a in zip(spans, aligned[variant], strict=True))
        rows["ccs"].append(_ccs_row(key, label, aligned, m))
    return rows


def agreement(by_judge: dict[str, list[Verdict]]) -> dict:
    """Pairwise Cohen's kappa and Fleiss' kappa of the judges over every (head, variant, span) judgment, and
    their standard errors (:mod:`ccs_ray.stats`: ``cohen_se``, ``fleiss_se``; None where kappa is undefined)."""
    names = list(by_judge)
    votes = {n: [a for v in by_judge[n] for variant in VARIANTS for a in v.aligned.get(variant, [])] for n in names}
    pairs = list(itertools.combinations(names, 2))
    ratings = list(zip(*votes.values(), strict=True))  # every judge judged every span
    return {"cohen": {f"{a}|{b}": scores.cohen_kappa(votes[a], votes[b]) for a, b in pairs},
            "cohen_se": {f"{a}|{b}": stats.cohen_kappa_se(votes[a], votes[b]) for a, b in pairs},
            "fleiss": scores.fleiss_kappa(ratings) if len(names) > 1 else None,
            "fleiss_se": stats.fleiss_kappa_se(ratings) if len(names) > 1 else None}


def run(ctx: ModelContext, section: JudgeSection, text_encoder=None) -> JudgeSummary:
    """Label and judge every head of ``ctx.model`` with every judge; write the tables.

    ``text_encoder``: ``list[str] -> [N, D]`` L2-normalised CLIP text embeddings for the offline judge
    (default: the model's text tower through the run's text cache, :meth:`~ccs_ray.runs.RunState.text_cache`;
    the model is loaded on the CPU for the first text not in it).
    Returns a summary: heads judged, calls sent, requests answered from the cache or merged into an identical
    one in flight, calls sent after a timeout, errors, cost, how label fidelity was computed and the median
    label_percentile per judge.
    """
    m, cfg, root, run_id, model = section.m, section.judge, ctx.root, ctx.run_id, ctx.model
    encoder = TextEncoder(model, ctx.models.precision, cache_dir=ctx.text_cache)
    spans = read_table(root, "spans", run_id=run_id, model=model)
    head_spans, problems = heads_from_spans(spans, m, cfg.heldout)
    if not head_spans:
        raise ValueError(f"the spans table of run {run_id!r} under {root} holds no spans of subset 'all' for "
                         f"{model!r}: write them with the spans stage")
    judges, cache_root = judges_of(cfg), cache_root_of(cfg, root)
    journal = f"{ctx.state.model_dir(model)}/judge_calls"
    verdicts = _verdicts(ctx, cfg, judges, head_spans, text_encoder or encoder, cache_root, journal)
    tables = {name: verdict_rows(name, v.verdicts, v.heuristic, m) for name, v in verdicts.items()}
    by_judge = {name: v.verdicts for name, v in verdicts.items()}
    tables[COMBINED] = combined_rows(by_judge, any(v.heuristic for v in verdicts.values()), m)
    with Steps(ctx.progress) as steps:  # encodes the pool and each head's labels: no bar, a line that counts up
        steps.next(f"judge {model}: label fidelity ...")
        fidelity = add_label_fidelity(ctx, section, encoder, [r for rows in tables.values() for r in rows["ccs"]])
    calls = [c for v in verdicts.values() for c in v.calls]
    errors = _write_tables(ctx, tables, problems, calls, journal)
    for folder in (cache_root, journal):  # entries whose writer died mid-write (a killed actor)
        sweep_tmp(folder, older_than_s=STALE_TMP_S)
    for name, judge in judges:
        if not verdicts[name].heuristic:
            check_errors(name, by_judge[name], model, cfg.max_error_share, endpoint_of(judge, cfg).public_url)
    return JudgeSummary(
        heads_judged=len(head_spans), judges=list(tables),
        calls=sum(c["via"] == SENT for c in calls), cached=sum(c["via"] == HIT for c in calls),
        merged=sum(c["via"] == MERGED for c in calls),
        retried_after_timeout=sum(c["retried_after_timeout"] for c in calls),
        errors=errors, cost_usd=sum(c["cost_usd"] for c in calls),
        heuristic=any(v.heuristic for v in verdicts.values()),
        ccs_at_k={n: scores.ccs_at_k([r["ccs"] for r in rows["ccs"]], m) for n, rows in tables.items()},
        agreement=agreement(by_judge), label_fidelity=fidelity,
        label_percentile_median={n: _median([r["label_percentile"] for r in rows["ccs"]])
                                 for n, rows in tables.items()})


@dataclass(frozen=True)
class _JudgeVerdicts:
    """One judge's verdicts on a model's heads, whether it is the offline heuristic, and its calls' rows."""

    verdicts: list[Verdict]
    heuristic: bool
    calls: list[dict]


def _verdicts(ctx: ModelContext, cfg: JudgeConfig, judges: list, head_spans: list, text_encoder, cache_root: str,
              journal: str) -> dict[str, _JudgeVerdicts]:
    """Each judge's verdicts on ``head_spans``: the offline judge in this process, an LLM judge through its pool
    of workers (every call journalled under ``journal``, answers cached under ``cache_root``)."""
    out = {}
    for name, judge in judges:
        with Progress(f"judge {name} {ctx.model}", len(head_spans), "heads", ctx.progress) as progress:
            if judge.kind == "offline":
                offline = OfflineJudge(vocabulary_from(cfg.vocabulary), text_encoder)
                out[name] = _JudgeVerdicts([offline.verdict(h) for h in head_spans], True, [])
                progress.update(len(head_spans))
                continue
            endpoint = endpoint_of(judge, cfg).public_url  # JudgeConfig.public_url of the judge's base_url
            verdicts = run_pool(judge, cfg, head_spans, cache_root, progress,
                                CallJournal(journal, {"judge": name, "endpoint": endpoint}), ctx.guard)
            out[name] = _JudgeVerdicts(verdicts, False, [call_row(name, endpoint, c) for v in verdicts
                                                         for c in v.calls])
    return out


def _write_tables(ctx: ModelContext, tables: dict[str, dict[str, list[dict]]], problems: list[dict],
                  calls: list[dict], journal: str) -> int:
    """Write each judge's tables, this run's judge errors (spans that could not be read, requests that failed;
    they replace the last run's) and ``judge_calls`` (every call sent, from the journal; this run's cache hits and
    merges beside every earlier run's). Returns the number of error rows."""
    root, run_id, model = ctx.root, ctx.run_id, ctx.model
    for name, rows in tables.items():
        for table, table_rows in rows.items():
            replace_file(root, table, table_rows, run_id, model, f"judge-{file_safe(name)}")
    errors = [{"stage": "judge", "source": "spans", **p, "logged_at": _now()} for p in problems]
    errors += [{"stage": "judge", "source": c["judge"], "reason": "judge request failed", "detail": c["error"],
                "item": f"{c['head_label']} {c['kind']} {c['span_rank'] or ''}".strip(), "logged_at": _now()}
               for c in calls if c["final"] and c["error"]]
    replace_file(root, "errors", errors, run_id, model, "judge")
    replace_file(root, "judge_calls", read_journal(journal), run_id, model, "judge-journal")
    write_table(root, "judge_calls", [c for c in calls if c["attempt"] is None], run_id, model,
                name=f"judge-{uuid.uuid4().hex}")
    return len(errors)


def check_errors(judge: str, verdicts: list[Verdict], model: str, max_share: float, endpoint: str) -> None:
    """A :class:`JudgeFailed` naming the count and the first error when more than ``max_share`` of ``verdicts``
    (or all of them) hold an error: no label, or a span without a verdict."""
    errors = [v.label_error or next((e for errs in v.errors.values() for e in errs if e), None) for v in verdicts]
    failed = [e for e in errors if e is not None]
    if failed and (len(failed) > max_share * len(verdicts) or len(failed) == len(verdicts)):
        raise JudgeFailed(f"{len(failed)} of {len(verdicts)} heads of {model} could not be judged by judge {judge!r} "
                          f"(judge.max_error_share = {max_share}): first error: {' '.join(failed[0].split())} "
                          f"from {endpoint}")


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def add_label_fidelity(ctx: ModelContext, section: JudgeSection, encoder: TextEncoder, rows: list[dict]) -> str:
    """Fill ``label_variance`` and ``label_percentile`` of the ccs ``rows`` of ``ctx.model`` in place
    (:func:`ccs_ray.fidelity.label_fidelity`; null for a row without a label or a head without variance).

    Returns how they were computed: the head statistics used (``spans.method``), or why they were not (no
    moments in this run for the data method).
    """
    for r in rows:
        r["label_variance"] = r["label_percentile"] = None
    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return "no labels"
    method = section.spans.method
    heads = sorted({r["head_label"] for r in labelled})
    head_stats: dict[str, tuple[int, np.ndarray | torch.Tensor, torch.Tensor]]  # n, total, outer
    moments = None
    if method == "weights":
        from ..circuits import head_covariances

        covariances = head_covariances(encoder.load(), sorted({parse_head_name(h)[0] for h in heads}),
                                       section.convention)
        head_stats = {h: (1, np.zeros(len(covariances[h])), covariances[h]) for h in heads}
    else:
        try:
            uri = ctx.moments_uri()
        except ValueError as e:
            return f"not computed: {e}"
        moments = HeadMoments.load(uri)
        head_stats = {h: moments.head(h, None) for h in heads}
    template, normalize = section.spans.template, section.spans.normalize
    pool = encoder(load_pool(section.spans.pool), template, normalize)
    labels = sorted({r["label"] for r in labelled})
    label_rows, embedded = {n: i for i, n in enumerate(labels)}, encoder(labels, template, normalize)
    bases: dict[str, torch.Tensor] = {}
    for layer in sorted({parse_head_name(h)[0] for h in heads}):  # one batched eigh per layer bounds the memory
        group = [h for h in heads if parse_head_name(h)[0] == layer]
        if moments is not None:  # k x k problems for compact moments
            solved = moments.span_bases([(h, None) for h in group], section.spans.rank)
            bases |= {h: basis for h, (basis, _) in zip(group, solved, strict=True)}
        else:
            bases |= keyed_span_bases({h: head_stats[h][2] for h in group}, section.spans.rank)
    for head in heads:
        mine = [r for r in labelled if r["head_label"] == head]
        names = sorted({r["label"] for r in mine})
        variance, percentile = label_fidelity(*head_stats[head], embedded[[label_rows[n] for n in names]], pool,
                                              section.spans.rank, basis=bases[head])
        found = {n: (v, p) for n, v, p in zip(names, variance.tolist(), percentile.tolist(), strict=True)}
        for r in mine:
            v, p = found[r["label"]]
            r["label_variance"], r["label_percentile"] = (None, None) if np.isnan(v) else (v, p)
    return method


def call_row(judge: str, endpoint: str, call: dict) -> dict:
    """A judge_calls row from one of a verdict's call records."""
    return {**call, "judge": judge, "endpoint": endpoint, "logged_at": _now()}

