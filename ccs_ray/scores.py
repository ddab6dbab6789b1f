"""Concept Consistency Score and judge agreement: pure math on 1/0 span judgments (no Ray, no I/O).

CCS(h) = number of a head's m spans (m = 5 in the paper) judged aligned with its label, 0..m; None when
any judgment is missing (never scored 0 silently). Levels (docs/architecture.md, "CCS and its levels"): ``high`` = m,
``medium`` 2..m-1, ``low`` <= 1, and ``unscored`` for a head without a score (never counted in another level); the
paper names high and low only, the medium band is ours.
CCS@K = fraction of the analysed heads (the paper's H) with CCS = K; the heads without a score (a judgment
missing) are the fraction ``unscored``, so CCS@0..m plus unscored add to 1. :func:`normalize_label` and
:func:`level` are defined here only: the judge stage, human ratings and the pruning strategies all use these;
:func:`paper_concept` names a concept as the paper's published sets do, and :func:`concept_families` gives the
concept families' words (torch- and pyarrow-free, for the spec and the SQL table ``concept_families``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from .choices import PAPER_CONCEPTS

UNSCORED = "unscored"  # the level of a head without a score (a judgment missing)
LEVELS = ("high", "medium", "low", UNSCORED)


def ccs(aligned: Sequence[int | None], m: int = 5) -> int | None:
    """Number of aligned spans among exactly ``m`` judgments; None if fewer than m or any is None."""
    if len(aligned) != m or any(a is None for a in aligned):
        return None
    bad = [a for a in aligned if a not in (0, 1)]
    if bad:
        raise ValueError(f"span judgments must be 0 or 1, got {bad}")
    return int(sum(a for a in aligned if a is not None))


def level(score: int | None, m: int = 5) -> str:
    """``high`` (= m), ``medium`` (2..m-1) or ``low`` (<= 1); ``unscored`` for a missing score."""
    if score is None:
        return UNSCORED
    if not 0 <= score <= m:
        raise ValueError(f"CCS {score} is outside 0..{m}")
    return "high" if score == m else "low" if score <= 1 else "medium"


def ccs_at_k(scores: Iterable[int | None], m: int = 5) -> dict[int | str, float]:
    """{K: fraction of all heads with CCS = K} for K = 0..m, and ``"unscored"``: the fraction with a None
    score; the values add to 1 (all 0.0 for no heads)."""
    scores = list(scores)
    counts = Counter(scores)
    n = len(scores)
    return {**{k: (counts[k] / n if n else 0.0) for k in range(m + 1)}, "unscored": counts[None] / n if n else 0.0}


def majority_vote(votes: Sequence[int | None]) -> int | None:
    """1 if a strict majority of the valid votes is 1, else 0 (a tie is 0); None when no vote is valid."""
    valid = [v for v in votes if v is not None]
    if not valid:
        return None
    return int(2 * sum(valid) > len(valid))


def normalize_label(label: str | None) -> str | None:
    """Lower case, letters/digits/spaces only, single spaces, trailing plural 's' dropped: "Colors." -> "color"."""
    if label is None:
        return None
    words = re.sub(r"[^a-z0-9 ]+", " ", label.lower()).split()
    if not words:
        return None
    last = words[-1]
    if len(last) > 3 and last.endswith("s") and not last.endswith("ss"):
        words[-1] = last[:-1]
    return " ".join(words)


def paper_concept(name: str | None) -> str | None:
    """The paper's name of a concept (``locations``, ``objects``, ``colors``, ``animals``) for any spelling of it
    (``concept:location``, ``Locations``, ``animal``); None when the paper has no such concept."""
    if not name:
        return None
    key = normalize_label(name.removeprefix("concept:"))
    return next((c for c in PAPER_CONCEPTS if normalize_label(c) == key), None)


#: Concept families: a head belongs to one when its normalised label (:func:`normalize_label`, as in the labels
#: table's ``label_normalized`` and the combined judge's label) is one of the family's words
#: (:func:`concept_families`); the prune strategy ``concept`` and the report's label families use them.
CONCEPT_FAMILIES: dict[str, tuple[str, ...]] = {
    "location": ("location", "geography", "geolocation", "country", "city", "place", "region", "landmark",
                 "continent", "nation", "locale", "area", "travel"),
    "animals": ("animal", "wildlife", "pet", "species", "fauna", "mammal", "bird", "dog", "cat", "insect",
                "fish", "reptile", "creature"),
    "objects": ("object", "item", "thing", "tool", "artifact", "artefact", "device", "equipment", "furniture",
                "appliance", "gadget", "household item"),
    "colors": ("color", "colour", "hue", "palette", "coloring", "colouring", "tint", "shade"),
}


def concept_families(synonyms: Mapping[str, Sequence[str]] | None = None) -> dict[str, set[str]]:
    """Family -> its normalised words: the default families (:data:`CONCEPT_FAMILIES`, each with its own name),
    each extended by (or, for a new name, defined by) ``synonyms``."""
    families = {name: set(words) for name, words in CONCEPT_FAMILIES.items()}
    for name, words in (synonyms or {}).items():
        families.setdefault(name, set()).update(words)
    return {name: {n for n in map(normalize_label, (*words, name)) if n is not None} | {name}
            for name, words in families.items()}


def most_common_label(labels: Sequence[str | None]) -> str | None:
    """The most frequent non-empty normalised label; ties go to the alphabetically first."""
    counts = Counter(n for n in map(normalize_label, labels) if n)
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))


def cohen_kappa(a: Sequence[int | None], b: Sequence[int | None]) -> float | None:
    """Cohen's kappa of two raters over the items both rated (None pairs dropped).

    kappa = (p_o - p_e) / (1 - p_e); 1.0 when both agree on every item and p_e = 1; None with no items.
    """
    if len(a) != len(b):
        raise ValueError(f"raters rated different numbers of items: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return None
    n = len(pairs)
    cats = sorted({x for p in pairs for x in p})
    p_o = sum(x == y for x, y in pairs) / n
    p_e = sum((sum(x == c for x, _ in pairs) / n) * (sum(y == c for _, y in pairs) / n) for c in cats)
    if p_e == 1.0:
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def fleiss_kappa(ratings: Sequence[Sequence[int | None]]) -> float | None:
    """Fleiss' kappa over items (rows) each rated by the same raters (columns); rows with a None are dropped.

    With n raters, n_ij raters putting item i in category j, N items:
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), p_j = sum_i n_ij / (N n), kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2).
    """
    rows = [list(r) for r in ratings if r and all(x is not None for x in r)]
    if not rows:
        return None
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise ValueError("every item must be rated by the same number of raters")
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least 2 raters")
    cats = sorted({x for r in rows for x in r if x is not None})
    counts = [[r.count(c) for c in cats] for r in rows]
    N = len(rows)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in counts) / N
    p_e = sum((sum(row[j] for row in counts) / (N * n)) ** 2 for j in range(len(cats)))
    if p_e == 1.0:
        return 1.0 if p_bar == 1.0 else 0.0
    return (p_bar - p_e) / (1 - p_e)
