"""The paper's published head sets and figures, shipped as package data (``reference/paper/``, see its README).

:func:`paper_reference` loads them once: per model the head sets the paper pruned (:class:`PaperHeads`:
``high``, ``low`` and concept sets), its high / medium / low count table, and one row per published figure
(model, dataset, metric, strategy, value, approx, source). The same data are the tables ``paper_heads``,
``paper_counts`` and ``paper_results`` (:func:`reference_tables`, schemas in :mod:`ccs_ray.tables`), which
``ccs-ray sql`` and the report read and which every run writes into its results root
(:func:`write_reference_tables`), so plain DuckDB over a root sees them too.

Concept names: the paper's sets are ``locations``, ``objects``, ``colors``, ``animals``; ccs-ray's concept
families are singular (``location``). :func:`ccs_ray.scores.paper_concept` maps any spelling
(``concept:location``, ``Locations``, ``animal``) to the paper's name, so that strategies and figures of both meet.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from ..files import write_parquet
from ..heads import parse_head_name
from ..scores import paper_concept
from ..tables import to_arrow

PAPER_DIR = Path(__file__).resolve().parent / "paper"

#: Reference models whose published random baseline drew from every layer of the tower (the paper's
#: exception); the others drew from the last :data:`PUBLISHED_RANDOM_LAST` layers.
PUBLISHED_RANDOM_ALL_LAYERS = ("ViT-B-32/openai",)
PUBLISHED_RANDOM_LAST = 4


@dataclass(frozen=True)
class PaperHeads:
    """The head sets the paper pruned for one model (head names ``L{layer}.H{head}``, as published)."""

    model: str
    high: list[str]
    low: list[str]
    concepts: dict[str, list[str]] = field(default_factory=dict)  # paper concept name -> heads

    def sets(self) -> dict[str, list[str]]:
        """Every set by its strategy name in ``paper_results``: ``high``, ``low``, ``concept:<name>``."""
        return {"high": self.high, "low": self.low, **{f"concept:{c}": h for c, h in self.concepts.items()}}


@dataclass(frozen=True)
class PaperReference:
    """Everything published: ``heads`` per model key, the ``counts`` table (model, high, medium, low) and the
    ``results`` table (one row per figure); ``source``: where the head sets come from."""

    heads: dict[str, PaperHeads]
    counts: pa.Table
    results: pa.Table
    source: str

    def heads_of(self, model: str) -> PaperHeads:
        """The published sets of ``model`` (a key or a preset alias such as ``b32-openai``); KeyError names
        the models that have sets."""
        key = reference_key(model)
        if key not in self.heads:
            raise KeyError(f"the paper published no head sets for {model!r}; models with sets: {', '.join(self.heads)}")
        return self.heads[key]


def reference_key(model: str) -> str:
    """``model`` with a preset alias (``b32-openai``) resolved to its open_clip key."""
    from ..model_keys import PAPER_MODELS

    return PAPER_MODELS.get(model, model)


def _read_csv(path: Path, types: dict[str, type]) -> pa.Table:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [kind(r[name]) if kind is not bool else r[name] == "1" for r in rows]
               for name, kind in types.items()}
    return pa.table(columns)


@lru_cache(maxsize=1)
def paper_reference() -> PaperReference:
    """The published head sets and figures (package data; read once)."""
    data = json.loads((PAPER_DIR / "heads.json").read_text())
    heads = {model: PaperHeads(model, list(sets["high"]), list(sets["low"]),
                               {paper_concept(c) or c: list(h) for c, h in sets.get("concepts", {}).items()})
             for model, sets in data["models"].items()}
    counts = _read_csv(PAPER_DIR / "ccs_counts.csv", {"model": str, "high": int, "medium": int, "low": int})
    results = _read_csv(PAPER_DIR / "results.csv", {"model": str, "dataset": str, "metric": str, "strategy": str,
                                                    "value": float, "approx": bool, "source": str})
    return PaperReference(heads, counts, results, data["source"])


def published_random_layers(model: str, n_layers: int) -> list[int]:
    """The layers the paper's random baseline drew from for reference ``model`` in a tower of ``n_layers``."""
    if reference_key(model) in PUBLISHED_RANDOM_ALL_LAYERS:
        return list(range(n_layers))
    return list(range(max(0, n_layers - PUBLISHED_RANDOM_LAST), n_layers))


def paper_random_layers(pool: str, model: str, analysed: list[int], n_layers: int) -> list[int]:
    """The layers paper-random draws from (``prune.paper_random_pool``): ``"analysed"``, the analysed layers;
    ``"published"``, those the paper drew from for reference ``model`` (:func:`published_random_layers`)."""
    return list(analysed) if pool == "analysed" else published_random_layers(model, n_layers)


def reference_tables() -> dict[str, pa.Table]:
    """``paper_heads``, ``paper_counts`` and ``paper_results`` as tables of their :mod:`ccs_ray.tables` schemas."""
    ref = paper_reference()
    heads = []
    for model, sets in ref.heads.items():
        for head_set, names in sets.sets().items():
            for position, name in enumerate(names):
                layer, head = parse_head_name(name)
                heads.append(dict(model=model, head_set=head_set, concept=paper_concept(head_set) if ":" in head_set
                                  else None, position=position, layer=layer, head=head, head_label=name,
                                  source=ref.source))
    return {"paper_heads": to_arrow("paper_heads", heads), "paper_counts": to_arrow("paper_counts", ref.counts),
            "paper_results": to_arrow("paper_results", ref.results)}


def write_reference_tables(root: str) -> list[str]:
    """Write the reference tables into ``root`` as ``<table>/reference.parquet`` (replacing earlier copies);
    returns their URIs."""
    uris = []
    for table, data in reference_tables().items():
        uri = f"{root.rstrip('/')}/{table}/reference.parquet"
        write_parquet(uri, data)
        uris.append(uri)
    return uris


__all__ = ["PaperHeads", "PaperReference", "paper_reference", "published_random_layers",
           "reference_key", "reference_tables", "write_reference_tables"]
