"""Soft pruning: heads removed in the forward pass (no weight copy), shared prefixes, and the strategies.

- :func:`ablated` patches the affected blocks of the image tower for the duration of a ``with``:
  ``model.encode_image`` inside it runs with the heads zeroed (``mode="zero"``, the paper's zeroing of the
  head's ``out_proj.weight`` columns: the shared out_proj bias stays) or replaced by their mean attention
  output (``mode="mean"``, ``mean_z`` from ``HeadMoments.mean_z()``).
- :func:`encode_ablations` encodes one batch under many configurations, running every forward-pass
  prefix the configurations share only once (a trie over their per-layer head sets).
- :func:`prune_strategies` turns ``ccs`` table rows into :class:`Ablation` configurations: the baseline
  ``none``, ``high``, ``low``, ``random`` (per seed), ``equal``, ``concept``, ``explicit``, ``sweep`` (the
  high, low and random series) and ``single`` (each analysed head alone, per ablation mode); and the paper's
  published head sets (:mod:`ccs_ray.reference`) into
  ``paper-high``, ``paper-low``, ``paper-random`` (per seed) and ``paper-concept:<name>``, which need no CCS.
  A strategy that selects no head is one configuration without heads whose ``reason`` says why.

All of it is math: no Ray, no I/O, inference only (no gradients flow through an ablated layer).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch

from .choices import ABLATION_MODES, PAPER_CONCEPTS, PAPER_STRATEGIES, STRATEGIES, ccs_strategies, is_paper_strategy
from .decompose import HeadAblation, block_forward, decomposed_forward, head_outputs, last_block_cls_only, tower_shape
from .heads import head_name, parse_head_name
from .reference import PaperHeads
from .scores import concept_families, level, normalize_label, paper_concept

# --- ablation in the forward pass -------------------------------------------------------------------------


def head_ablation(model, heads: Iterable[str], mode: str = "zero",
                  mean_z: Mapping[int, torch.Tensor] | None = None) -> HeadAblation:
    """Validate head names against ``model``'s image tower and group them by layer."""
    if mode not in ABLATION_MODES:
        raise ValueError(f"ablation mode {mode!r} is not one of {ABLATION_MODES}")
    shape = tower_shape(model)
    by_layer: dict[int, set[int]] = {}
    for name in heads:
        layer, head = parse_head_name(name)
        if not (0 <= layer < shape.layers and 0 <= head < shape.n_heads):
            raise ValueError(f"head {name} is outside the image tower: layers 0..{shape.layers - 1}, "
                             f"heads 0..{shape.n_heads - 1}")
        by_layer.setdefault(layer, set()).add(head)
    if mode == "mean":
        missing = sorted(set(by_layer) - set(mean_z or {}))
        if missing:
            raise ValueError(f"mean ablation needs mean head outputs (mean_z) for layers {missing}; "
                             f"they come from the scan's HeadMoments.mean_z() (layers it decomposed)")
    return HeadAblation(by_layer={l: sorted(h) for l, h in sorted(by_layer.items())}, mode=mode,
                        mean_z=dict(mean_z) if mean_z else None)


def _ablated_block_forward(model, ablation: HeadAblation, layer: int, q_x, k_x=None, v_x=None, attn_mask=None):
    if k_x is not None or v_x is not None or attn_mask is not None:
        raise ValueError("an ablated image-tower block supports self-attention without a mask only")
    return decomposed_forward(model, None, layers=[], ablation=ablation, start=(layer, q_x), stop_at=layer + 1)


@contextmanager
def ablated(model, heads: Iterable[str], mode: str = "zero", mean_z: Mapping[int, torch.Tensor] | None = None):
    """Within the ``with``, the image tower of ``model`` runs with ``heads`` (``["L11.H5", ...]``) ablated.

    The weights are untouched: the affected blocks' ``forward`` is temporarily replaced by the per-head
    attention path of :mod:`ccs_ray.decompose`, and restored on exit (also on error). Yields the
    :class:`HeadAblation`. Nesting is refused for a layer that is already ablated.
    """
    ablation = head_ablation(model, heads, mode, mean_z)
    blocks = model.visual.transformer.resblocks
    patched = []
    try:
        for layer in ablation.by_layer:
            block = blocks[layer]
            if "forward" in vars(block):
                raise RuntimeError(f"layer {layer} is already patched (nested ablated() on the same layer)")
            block.forward = partial(_ablated_block_forward, model, ablation, layer)
            patched.append(block)
        yield ablation
    finally:
        for block in patched:
            del block.forward


def _layer_key(ablation: HeadAblation | None, layer: int):
    if ablation is None:
        return None
    idx = ablation.by_layer.get(layer)
    return (ablation.mode, tuple(idx)) if idx else None


def encode_ablations(model, images: torch.Tensor, ablations: Sequence[HeadAblation | None]) -> torch.Tensor:
    """[C, B, D] image embeddings of one batch under C ablation configurations (None = no ablation).

    Configurations that agree on layers < l share the forward pass up to l: the pass branches only at
    layers where their head sets differ, so e.g. 15 configurations over the last 4 of 12 layers run the
    first 8 layers once. At a branching layer the branches that ablate heads there share the layer's
    attention (q, k, v and the per-head outputs, :func:`ccs_ray.decompose.head_outputs`) and each runs only its
    output projection and MLP; a branch that ablates nothing there runs the stock block (the last block: the class
    token's row alone, as in :func:`~ccs_ray.decompose.decomposed_forward`). Identical
    configurations are computed once. Each embedding equals ``encode_images(model, images, ablation)``
    (the same operations on the same inputs).
    """
    blocks = model.visual.transformer.resblocks
    n_layers = len(blocks)
    out: dict[int, torch.Tensor] = {}  # configuration index -> its embeddings [B, D]

    def branch(x, start: int, members: list[int]) -> None:
        # members agree on every layer < start; x enters layer `start` (x is the images when start == 0)
        lead = ablations[members[0]]
        split = next((l for l in range(start, n_layers)
                      if len({_layer_key(ablations[i], l) for i in members}) > 1), None)
        resume = (start, x) if start else None
        if split is None:
            emb = decomposed_forward(model, x if not start else None, layers=[], ablation=lead, start=resume).embedding
            for i in members:
                out[i] = emb
            return
        x = decomposed_forward(model, x if not start else None, layers=[], ablation=lead, start=resume, stop_at=split)
        groups: dict = {}
        for i in members:
            groups.setdefault(_layer_key(ablations[i], split), []).append(i)
        z = None  # the layer's head outputs for x, computed once for the branches that ablate heads here
        cls_only = last_block_cls_only(blocks, split, None)
        for key, group in groups.items():
            if key is None and not cls_only:
                y = blocks[split](x)
            else:
                z = head_outputs(blocks[split], x, cls_only) if z is None else z
                y, _ = block_forward(blocks[split], x, ablations[group[0]] if key else None, split, z)
            branch(y, split + 1, group)

    if ablations:
        with torch.no_grad():  # as in decomposed_forward: inference only (and the stock blocks' no-grad fast path)
            branch(images, 0, list(range(len(ablations))))
    if not ablations:
        return torch.zeros(0, images.shape[0], model.visual.proj.shape[1])
    return torch.stack([out[i] for i in range(len(ablations))])


# --- strategies -----------------------------------------------------------------------------------------


@dataclass
class Ablation:
    """One pruning configuration: which heads it removes and how it was chosen.

    ``ablation_id`` is unique in a run: ``none``, ``high``, ``low``, ``random:s<seed>``, ``equal:high``,
    ``equal:low``, ``concept:<family>``, ``explicit:<name>``, ``sweep:k<k>`` (the top-k heads by CCS),
    ``sweep-low:k<k>`` (the bottom k), ``sweep-random:k<k>:s<seed>`` (k random heads),
    ``single:<mode>:<head>`` (one head alone, e.g. ``single:zero:L11.H5``), ``paper-high``, ``paper-low``,
    ``paper-random:s<seed>``, ``paper-concept:<name>``. ``k`` is the number of heads. ``concept``: the part of
    the id after the strategy where there is one (a concept family, an explicit list's name, ``high``/``low``
    of equal, ``<mode>:<head>`` of single). ``mode``: how this configuration ablates its heads (``zero`` or
    ``mean``); None means the stage's ``prune.mode``. ``reason``: why the strategy selected no head (e.g. "no
    head with CCS = 5"); such a configuration has no heads and is recorded, not evaluated.
    """

    ablation_id: str
    strategy: str
    seed: int | None = None
    k: int | None = None
    concept: str | None = None
    heads: list[str] = field(default_factory=list)
    reason: str | None = None
    mode: str | None = None

    @property
    def by_ccs(self) -> bool:
        """Whether a judge's CCS chose the heads (not the baseline, explicit lists or the published sets)."""
        return self.strategy not in ("none", "explicit") and not is_paper_strategy(self.strategy)

    @property
    def paper_strategy(self) -> str | None:
        """The published strategy (``paper_results.strategy``) this configuration reproduces: ``none``,
        ``high``, ``low``, ``random``, ``concept:<paper name>`` (from our CCS or from the published sets alike);
        None for the others (equal, explicit, sweep, a concept the paper has not)."""
        base = self.strategy.removeprefix("paper-")
        if base in ("none", "high", "low", "random"):
            return base
        concept = paper_concept(self.concept) if base == "concept" else None
        return f"concept:{concept}" if concept else None


def _draw(pool: Iterable[str], exclude: Iterable[str], n: int, seed: int, what: str) -> list[str]:
    """``n`` heads drawn with ``random.Random(seed).sample`` from ``pool`` minus ``exclude``, in head order."""
    pool = sorted(set(pool) - set(exclude), key=parse_head_name)
    if len(pool) < n:
        raise ValueError(f"{what} strategy: {n} heads to draw but only {len(pool)} heads in its pool; "
                         f"widen it (prune.random_pool = 'all', prune.paper_random_pool = 'published' or more layers)")
    return random.Random(seed).sample(pool, n)


def _scored(rows: Iterable[Mapping], judge: str) -> list[Mapping]:
    rows = list(rows)
    mine = [r for r in rows if r.get("judge") == judge]
    if not mine:
        judges = sorted({str(r.get("judge")) for r in rows})
        raise ValueError(f"the ccs table has no rows of judge {judge!r}; judges present: {judges or 'none'}")
    return sorted(mine, key=lambda r: parse_head_name(_label_of(r)))


def _label_of(row: Mapping) -> str:
    if row.get("head_label"):
        return row["head_label"]
    return head_name(int(row["layer"]), int(row["head"]))


def _level(row: Mapping) -> str | None:
    """The row's level as the judge stage wrote it, else :func:`ccs_ray.scores.level` of its CCS."""
    return row.get("level") or level(row.get("ccs"))


def prune_strategies(
    ccs_rows: Iterable[Mapping],
    strategies: Sequence[str] = ("high", "low", "random", "equal"),
    *,
    judge: str = "combined",
    seeds: int = 5,
    random_pool: Sequence[str] | None = None,
    concepts: Sequence[str] = ("location", "animals", "objects", "colors"),
    synonyms: Mapping[str, Sequence[str]] | None = None,
    explicit: Mapping[str, Sequence[str]] | None = None,
    sweep_k: int = 0,
    reference: PaperHeads | None = None,
    paper_random_pool: Sequence[str] | None = None,
    m: int = 5,
    single_modes: Sequence[str] = ("zero",),
) -> list[Ablation]:
    """Ablation configurations from the ``ccs`` table's rows (dicts with head_label/layer/head, judge, ccs,
    level, label), always starting with the baseline ``none``.

    - ``high`` / ``low``: every head of that level (high: CCS = m; low: CCS <= 1).
    - ``random``: per seed 0..seeds-1, as many heads as ``high``, drawn (``random.Random(seed).sample``
      over the pool in head order) from ``random_pool`` (default: the heads of the ccs table) minus the
      high heads.
    - ``equal``: n = min(#high, #low) of each: ``equal:high`` and ``equal:low`` (low heads by CCS
      ascending, ties in head order).
    - ``concept``: per family in ``concepts``, the heads whose normalised label is one of its words
      (:data:`ccs_ray.scores.CONCEPT_FAMILIES`, extended by ``synonyms``).
    - ``explicit``: the named head lists as given.
    - ``sweep``: three series over k heads removed: ``sweep:k<k>`` for k = 0..sweep_k, the top-k heads by CCS
      (ties in head order); ``sweep-low:k<k>`` for k = 1..sweep_k, the bottom k (ties in head order); and per
      seed, ``sweep-random:k<k>:s<seed>`` for k = 1..sweep_k, the first k of ``random.Random(seed).sample``
      of sweep_k heads from ``random_pool`` (nested sets, so the series share forward-pass prefixes).
      ``sweep:k0`` is every series' k = 0.
    - ``single``: per mode in ``single_modes`` (``zero``, ``mean``) and per head of the ccs rows of ``judge``
      (head order, scored or not), that head alone: ``single:<mode>:<head>``, k = 1, with its own ``mode``, so
      zero and mean ablations of the same head are evaluated in one run.
    - ``paper-high`` / ``paper-low``: the published sets of ``reference``; ``paper-concept:<name>``: its
      concept set ``name`` (any spelling, :func:`ccs_ray.scores.paper_concept`); ``paper-random``: per seed,
      as many heads as ``paper-high``, drawn like ``random`` from ``paper_random_pool`` minus the published
      high heads.

    ``explicit`` and the paper-* strategies read no ``ccs`` rows: ``ccs_rows`` may be empty (no judge stage) when
    only they are asked for.

    ``m``: the number of spans a CCS counts (``spans.m``; a high head has CCS = m), for the reasons.
    A strategy that selects no head (e.g. no high heads, a concept the paper has no set for) yields one
    configuration without heads whose ``reason`` says why, named as its configuration would be
    (``random`` and ``paper-random`` without a seed).
    """
    unknown = sorted(s for s in strategies if s not in STRATEGIES and not is_paper_strategy(s))
    if unknown:
        raise ValueError(f"unknown prune strategies {unknown}; allowed: {', '.join(STRATEGIES + PAPER_STRATEGIES)}")
    paper = [s for s in strategies if is_paper_strategy(s)]
    if paper and reference is None:
        raise ValueError(f"prune strategies {paper} prune the paper's published heads: give the reference sets "
                         f"(prune.reference_model)")
    rows = _scored(ccs_rows, judge) if ccs_strategies(list(strategies)) else []  # explicit, paper-*: no CCS
    scored = [r for r in rows if r.get("ccs") is not None]
    high = [_label_of(r) for r in scored if _level(r) == "high"]
    low = [_label_of(r) for r in sorted(scored, key=lambda r: r["ccs"]) if _level(r) == "low"]
    no_high, no_low = f"no head with CCS = {m}", "no head with CCS ≤ 1"
    pool = random_pool if random_pool is not None else [_label_of(r) for r in rows]
    out = [Ablation("none", "none", k=0)]

    def add(ablation_id, strategy, heads, reason, **kw):
        if heads:
            out.append(Ablation(ablation_id, strategy, k=len(heads), heads=sorted(heads, key=parse_head_name), **kw))
        else:
            out.append(Ablation(ablation_id, strategy, k=0, reason=reason, **kw))

    for strategy in strategies:
        if strategy == "high":
            add("high", "high", high, no_high)
        elif strategy == "low":
            add("low", "low", low, no_low)
        elif strategy == "random" and not high:
            add("random", "random", [], f"{no_high} to match in number")
        elif strategy == "random":
            for seed in range(seeds):
                add(f"random:s{seed}", "random", _draw(pool, high, len(high), seed, strategy), None, seed=seed)
        elif strategy == "equal":
            n = min(len(high), len(low))
            why = f"{no_high if not high else no_low} (equal removes as many high as low heads)"
            add("equal:high", "equal", high[:n], why, concept="high")
            add("equal:low", "equal", low[:n], why, concept="low")
        elif strategy == "concept":
            families = concept_families(synonyms)
            missing = [c for c in concepts if c not in families]
            if missing:
                raise ValueError(f"concepts {missing} have no synonym list; known: {sorted(families)} "
                                 f"(add words under prune.synonyms)")
            for concept in concepts:
                add(f"concept:{concept}", "concept",
                    [_label_of(r) for r in rows if normalize_label(r.get("label")) in families[concept]],
                    f"no head's label is one of the {concept} words", concept=concept)
        elif strategy == "explicit":
            for name, heads in (explicit or {}).items():
                add(f"explicit:{name}", "explicit", [head_name(*parse_head_name(h)) for h in heads],
                    "the list names no head", concept=name)
        elif strategy == "sweep":
            out.extend(_sweep(scored, pool, sweep_k, seeds))
        elif strategy == "single":
            out.extend(_single(rows, single_modes))
        else:
            assert reference is not None  # a paper strategy: checked above
            if strategy in ("paper-high", "paper-low"):
                which = strategy.removeprefix("paper-")
                add(strategy, strategy, getattr(reference, which),
                    f"the paper published no {which} set for {reference.model}")
            elif strategy == "paper-random" and not reference.high:
                add(strategy, strategy, [],
                    f"the paper published no high set for {reference.model} to match in number")
            elif strategy == "paper-random":
                for seed in range(seeds):
                    add(f"paper-random:s{seed}", strategy, _draw(paper_random_pool or [], reference.high,
                                                                  len(reference.high), seed, strategy), None, seed=seed)
            elif strategy.startswith("paper-concept:"):
                paper_name = paper_concept(strategy.split(":", 1)[1])
                if paper_name is None:
                    raise ValueError(f"{strategy}: the paper's concept sets are {', '.join(PAPER_CONCEPTS)}")
                add(f"paper-concept:{paper_name}", "paper-concept", reference.concepts.get(paper_name, []),
                    f"the paper published no {paper_name} set for {reference.model}", concept=paper_name)
    return out


def _sweep(scored: list[Mapping], pool: Sequence[str], sweep_k: int, seeds: int) -> list[Ablation]:
    """The sweep's three series (see :func:`prune_strategies`): top-k, bottom-k and, per seed, k random heads."""
    if sweep_k > len(scored):
        raise ValueError(f"sweep_k = {sweep_k} but only {len(scored)} heads have a CCS")
    high = [_label_of(r) for r in sorted(scored, key=lambda r: -r["ccs"])]
    low = [_label_of(r) for r in sorted(scored, key=lambda r: r["ccs"])]
    out = [Ablation(f"sweep:k{k}", "sweep", k=k, heads=sorted(high[:k], key=parse_head_name))
           for k in range(sweep_k + 1)]
    out += [Ablation(f"sweep-low:k{k}", "sweep-low", k=k, heads=sorted(low[:k], key=parse_head_name))
            for k in range(1, sweep_k + 1)]
    for seed in range(seeds):
        order = _draw(pool, (), sweep_k, seed, "sweep")
        out += [Ablation(f"sweep-random:k{k}:s{seed}", "sweep-random", seed=seed, k=k,
                         heads=sorted(order[:k], key=parse_head_name)) for k in range(1, sweep_k + 1)]
    return out


def _single(rows: list[Mapping], modes: Sequence[str]) -> list[Ablation]:
    """The single strategy (see :func:`prune_strategies`): each head of ``rows`` alone, per mode."""
    unknown = sorted(set(modes) - set(ABLATION_MODES))
    if unknown:
        raise ValueError(f"prune.single_modes: {unknown} are not ablation modes; allowed: {', '.join(ABLATION_MODES)}")
    heads = list(dict.fromkeys(_label_of(r) for r in rows))
    return [Ablation(f"single:{mode}:{head}", "single", k=1, concept=f"{mode}:{head}", heads=[head], mode=mode)
            for mode in dict.fromkeys(modes) for head in heads]


def all_heads(model, layers: Sequence[int] | None = None) -> list[str]:
    """Every head name of the image tower (or of ``layers``), in head order."""
    return tower_shape(model).head_names(list(layers) if layers is not None else None)
