"""The judge_calls journal: every call to a judge endpoint is recorded before it is sent and completed after.

One small JSON file per call sent, ``<folder>/<uuid>.json`` (the judge stage keeps its folder in the run's state:
``ROOT/_state/<run_id>/<model>/judge_calls``), holding the call's judge_calls row. It is written (atomically) just
before the request goes out, with ``outcome = "unknown"``, ``final`` false and null tokens, latency and cost, and
replaced by the complete row (outcome, tokens, latency, cost, error, ``final``) when the call ends. A call whose
process died in between (a killed driver or judge actor) keeps ``outcome = "unknown"``: it may or may not have
reached the endpoint, and one that did may have been billed; its request is asked again by the next attempt.

The judge stage folds the whole journal, every lifetime of the run, into the judge_calls table
(:func:`read_journal`), when it ends and again whenever it runs after an interruption, so the table holds every
call sent, whichever process sent it and whether or not that process lived to see the answer.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsspec

from ..files import atomic_write

UNKNOWN = "unknown"  # judge_calls.outcome of a call sent whose outcome was never recorded


@dataclass(frozen=True)
class CallJournal:
    """Writes journal files under ``folder``; ``fields``: judge_calls columns every record of it shares (the
    judge and endpoint; :meth:`tagged` adds a request's kind, head_label and span_rank)."""

    folder: str
    fields: dict = field(default_factory=dict)

    def tagged(self, **fields) -> CallJournal:
        """This journal with more shared columns."""
        return CallJournal(self.folder, {**self.fields, **fields})

    def sent(self, cache_key: str, attempt: int, retried_after_timeout: bool) -> tuple[str, dict]:
        """Record attempt ``attempt`` of the request ``cache_key`` as about to be sent; returns (its file, its row)
        for :meth:`complete`."""
        row = {**self.fields, "cache_key": cache_key, "via": "sent", "attempt": attempt, "outcome": UNKNOWN,
               "final": False, "retried_after_timeout": retried_after_timeout, "prompt_tokens": None,
               "completion_tokens": None, "latency_s": None, "cost_usd": None, "error": None}
        entry = f"{self.folder.rstrip('/')}/{uuid.uuid4().hex}.json", row
        _write(*entry)
        return entry

    @staticmethod
    def complete(entry: tuple[str, dict], record: dict, final: bool) -> None:
        """Replace a sent call's row by its outcome: ``record`` (:meth:`~.client.JudgeClient._record`'s fields)
        and whether the request kept it (``final``)."""
        uri, row = entry
        _write(uri, {**row, **record, "final": final})


def _write(uri: str, row: dict) -> None:
    atomic_write(uri, json.dumps({**row, "logged_at": datetime.now(UTC).isoformat()}).encode())


def read_journal(folder: str) -> list[dict]:
    """Every judge_calls row of the journal under ``folder`` (none when it does not exist), oldest first."""
    fs, path = fsspec.core.url_to_fs(folder)
    fs.invalidate_cache(path)
    files = fs.glob(f"{path}/*.json")  # an atomic write's temporary name ends in .tmp: never matched
    rows = [json.loads(blob) for blob in (fs.cat(files).values() if files else ())]
    for row in rows:
        row["logged_at"] = datetime.fromisoformat(row["logged_at"])
    return sorted(rows, key=lambda r: r["logged_at"])
