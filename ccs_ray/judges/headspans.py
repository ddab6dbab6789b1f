"""The judge protocol per head: spans in, a :class:`Verdict` (label, 1/0 per span, calls) out.

Variants: ``paper`` labels from spans 1..m and judges the same spans (the paper's, circular);
``heldout`` judges spans m+1..2m against that same label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

VARIANTS = ("paper", "heldout")


@dataclass
class HeadSpans:
    """A head's spans by variant: ``spans[variant] = [(rank, text), ...]`` in rank order."""

    layer: int
    head: int
    head_label: str
    spans: dict[str, list[tuple[int, str]]]

    def texts(self, variant: str) -> list[str]:
        return [t for _, t in self.spans.get(variant, [])]


@dataclass
class Verdict:
    """One judge on one head. ``aligned[variant]`` and ``errors[variant]`` run parallel to the spans."""

    head: HeadSpans
    label: str | None
    label_error: str | None = None
    aligned: dict[str, list[int | None]] = field(default_factory=dict)
    errors: dict[str, list[str | None]] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)  # judge_calls fields: kind, span_rank and an Answer's


def judged_spans(spans: pa.Table) -> pa.Table:
    """The rows of one run and model's spans table that the judge labels: those of method ``data`` (null: spans
    of an earlier version, all from data) when there are any, else those of method ``weights``."""
    method = pc.fill_null(spans["method"], "data")
    judged = "data" if pc.any(pc.equal(method, "data")).as_py() else "weights"
    return spans.filter(pc.equal(method, judged))


def heads_from_spans(spans: pa.Table, m: int, heldout: bool) -> tuple[list[HeadSpans], list[dict]]:
    """Group the ``subset == "all"`` rows of a spans table (one run and model; the method :func:`judged_spans`
    picks) by head: ranks 1..m (paper), m+1..2m (heldout).

    Returns one :class:`HeadSpans` per head (sorted by layer, head) and error rows (reason, item, detail)
    for heads with fewer spans than needed; such a head keeps the spans it has.
    """
    need = 2 * m if heldout else m
    by_head: dict[tuple[int, int, str], dict[int, str]] = {}
    spans = judged_spans(spans)
    for row in spans.filter(pc.equal(spans["subset"], "all")).to_pylist():
        by_head.setdefault((row["layer"], row["head"], row["head_label"]), {})[row["rank"]] = row["text"]
    head_spans, errors = [], []
    for (layer, head, head_label), ranked in sorted(by_head.items()):
        variants = {"paper": [(r, ranked[r]) for r in range(1, m + 1) if r in ranked]}
        if heldout:
            variants["heldout"] = [(r, ranked[r]) for r in range(m + 1, 2 * m + 1) if r in ranked]
        have = sum(len(v) for v in variants.values())
        if have < need:
            missing = [r for r in range(1, need + 1) if r not in ranked]
            errors.append({"reason": "too few spans", "item": head_label,
                           "detail": f"{have} of the {need} spans needed (m={m}, heldout={heldout}); "
                                     f"missing ranks {missing}"})
        head_spans.append(HeadSpans(layer, head, head_label, variants))
    return head_spans, errors


def file_safe(name: str) -> str:
    """``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_`` (file names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
