"""Preflight of the heads the prune stage ablates: the paper's published sets exist for each model's reference
model and lie in its tower; the ``explicit`` lists lie in every model's tower (and decomposed layers for mean
ablation)."""

from __future__ import annotations

from ..planning import ModelPlan, Plan
from ..spec import Spec
from .problems import Checks


def check_published_heads(checks: Checks, spec: Spec, plan: Plan) -> None:
    """What the paper-* strategies read: the published sets of each model's reference model (heads inside its
    tower, enough heads for paper-random). What the other strategies read is a stage need (:mod:`.stages.contract`)."""
    from ..choices import is_paper_strategy

    prune = spec.prune
    paper = [s for s in prune.strategies if is_paper_strategy(s)]
    if not paper:
        return
    from ..ablate import prune_strategies
    from ..heads import head_names, parse_head_name
    from ..reference import paper_random_layers, paper_reference, reference_key

    published = paper_reference().heads
    for m in plan.models:
        ref = reference_key(prune.reference_model or m.key)
        if ref not in published:
            where = "prune.reference_model" if prune.reference_model else f"models.keys: {m.key!r}"
            same = [k for k in published if k.split("/")[0] == m.name]
            checks.problems.append(
                f"{where}: the paper published no head sets for {ref!r}, which {', '.join(paper)} prune; set "
                f"prune.reference_model to " + (f"{same[0]!r} (the same architecture)" if same else
                                                f"one of {', '.join(published)}"))
            continue
        # the configurations the prune stage will build (one seed shows the pool is large enough)
        pool = head_names(paper_random_layers(prune.paper_random_pool, ref, m.layers, m.tower_layers), m.n_heads)
        ablations = checks.run(f"prune.paper_random_pool for {m.key}", prune_strategies,
                               [], paper, seeds=1, reference=published[ref], paper_random_pool=pool)
        heads = {h for a in ablations or [] for h in a.heads}
        heads |= set(published[ref].high) if "paper-random" in paper else set()  # the set it sizes by and avoids
        outside = sorted(heads - set(head_names(range(m.tower_layers), m.n_heads)), key=parse_head_name)
        if outside:
            checks.problems.append(f"prune.reference_model: published heads of {ref} {outside} lie outside the image "
                                   f"tower of {m.key} ({m.tower_layers} layers x {m.n_heads} heads)")


def check_explicit_heads(checks: Checks, spec: Spec, models: list[ModelPlan]) -> None:
    """The ``explicit`` strategy's lists (``prune.heads``, spelled right: :class:`~ccs_ray.spec.PruneConfig`): there is
    one, and each head lies in every model's image tower and, for ``prune.mode = "mean"``, in its decomposed layers
    (whose mean head outputs the scan measures): what the prune stage would refuse after the stages before it."""
    from ..heads import parse_head_name

    prune = spec.prune
    if "prune" not in spec.stages or "explicit" not in prune.strategies:
        return
    if not prune.heads:
        checks.problems.append("prune.strategies: 'explicit' prunes the lists of prune.heads, which names none; add "
                               "one (prune.heads = { mine = [\"L11.H5\"] }) or drop 'explicit'")
    for m in models:
        for name, heads in prune.heads.items():
            where = f"prune.heads.{name}"
            parsed = [(h, *parse_head_name(h)) for h in heads]
            outside = [h for h, layer, head in parsed if layer >= m.tower_layers or head >= m.n_heads]
            if outside:
                checks.problems.append(f"{where}: {', '.join(outside)} outside the image tower of {m.key} (layers "
                                       f"0..{m.tower_layers - 1}, heads 0..{m.n_heads - 1})")
            elif prune.mode == "mean" and (missed := [h for h, layer, _ in parsed if layer not in m.layers]):
                checks.problems.append(f"{where}: {', '.join(missed)} outside the layers {m.key} decomposes "
                                       f"({m.layers}), whose mean head outputs prune.mode = 'mean' needs; widen "
                                       f"models.layers or use prune.mode = 'zero'")
