"""Pruning strategies from ccs rows: high, low, random, equal, concept, explicit, sweep; strategies that select
no head, with their reasons."""

import random

import pytest

from ccs_ray import ablate
from ccs_ray.ablate import concept_families, prune_strategies
from ccs_ray.heads import head_name
from ccs_ray.scores import normalize_label

# 16 heads of layers 2-3: CCS and labels chosen so every strategy has a known answer
CCS = {"L2.H0": 5, "L2.H1": 0, "L2.H2": 3, "L2.H3": 1, "L3.H0": 5, "L3.H1": 5, "L3.H2": 1, "L3.H3": None}
LABELS = {"L2.H0": "Geography", "L2.H1": "colours", "L2.H2": "animals", "L2.H3": "Objects",
          "L3.H0": "location", "L3.H1": "pets", "L3.H2": "texture", "L3.H3": None}


def level(ccs):
    return None if ccs is None else "high" if ccs == 5 else "low" if ccs <= 1 else "medium"


def rows(judge="combined"):
    out = []
    for name, ccs in CCS.items():
        layer, head = int(name[1]), int(name[-1])
        out.append(dict(layer=layer, head=head, head_label=name, judge=judge, ccs=ccs, level=level(ccs),
                        label=LABELS[name]))
    return out + [dict(layer=2, head=0, head_label="L2.H0", judge="gpt", ccs=0, level="low", label="x")]


def by_id(ablations):
    return {a.ablation_id: a for a in ablations}


def test_high_low_equal_and_baseline():
    got = by_id(prune_strategies(rows(), ["high", "low", "equal"]))
    assert list(got) == ["none", "high", "low", "equal:high", "equal:low"]
    assert got["none"].heads == [] and got["none"].strategy == "none"
    assert got["high"].heads == ["L2.H0", "L3.H0", "L3.H1"] and got["high"].k == 3
    assert got["low"].heads == ["L2.H1", "L2.H3", "L3.H2"]
    # equal: min(3, 3) = 3 each
    assert got["equal:high"].heads == got["high"].heads and got["equal:low"].heads == got["low"].heads
    # the other judge's rows are ignored; an unknown judge is a clear error
    assert by_id(prune_strategies(rows(), ["low"], judge="gpt"))["low"].heads == ["L2.H0"]
    with pytest.raises(ValueError, match="judges present"):
        prune_strategies(rows(), ["high"], judge="claude")
    with pytest.raises(ValueError, match="allowed"):
        prune_strategies(rows(), ["highest"])


def test_equal_count_takes_lowest_ccs_first():
    r = [x for x in rows() if x["head_label"] != "L3.H1"]  # 2 high, 3 low -> 2 of each; CCS 0 before CCS 1
    got = by_id(prune_strategies(r, ["equal"]))
    assert got["equal:high"].heads == ["L2.H0", "L3.H0"]
    assert got["equal:low"].heads == ["L2.H1", "L2.H3"]


def test_random_is_reproducible_excludes_high_and_matches_count():
    a = prune_strategies(rows(), ["random"], seeds=4)
    b = prune_strategies(rows(), ["random"], seeds=4)
    assert [x.heads for x in a] == [x.heads for x in b]
    randoms = [x for x in a if x.strategy == "random"]
    assert [x.seed for x in randoms] == [0, 1, 2, 3]
    pool = sorted(set(CCS) - {"L2.H0", "L3.H0", "L3.H1"}, key=lambda n: (int(n[1]), int(n[-1])))
    for x in randoms:  # independent computation of the draw
        assert x.heads == sorted(random.Random(x.seed).sample(pool, 3), key=lambda n: (int(n[1]), int(n[-1])))
        assert x.ablation_id == f"random:s{x.seed}" and x.k == 3
    assert len({tuple(x.heads) for x in randoms}) > 1
    wide = [head_name(l, h) for l in range(4) for h in range(4)]
    drawn = {h for x in prune_strategies(rows(), ["random"], seeds=5, random_pool=wide) for h in x.heads}
    assert drawn & {"L0.H0", "L0.H1", "L0.H2", "L0.H3", "L1.H0", "L1.H1", "L1.H2", "L1.H3"}
    assert not drawn & {"L2.H0", "L3.H0", "L3.H1"}
    with pytest.raises(ValueError, match="random_pool"):
        prune_strategies(rows(), ["random"], random_pool=["L0.H0", "L2.H0"])


def test_concepts_with_synonyms():
    got = by_id(prune_strategies(rows(), ["concept"]))
    assert got["concept:location"].heads == ["L2.H0", "L3.H0"]
    assert got["concept:animals"].heads == ["L2.H2", "L3.H1"]
    assert got["concept:objects"].heads == ["L2.H3"]
    assert got["concept:colors"].heads == ["L2.H1"]
    extra = by_id(prune_strategies(rows(), ["concept"], concepts=["colors", "surface"],
                                   synonyms={"colors": ["texture"], "surface": ["texture"]}))
    assert extra["concept:colors"].heads == ["L2.H1", "L3.H2"] and extra["concept:surface"].heads == ["L3.H2"]
    with pytest.raises(ValueError, match="synonym"):
        prune_strategies(rows(), ["concept"], concepts=["music"])
    assert normalize_label("Colours!") == "colour" and normalize_label("glass") == "glass"
    assert "geography" in concept_families()["location"]


def test_concepts_match_the_labels_tables_normalised_label():
    """A head belongs to a concept exactly when its label_normalized (ccs_ray.scores.normalize_label, as the
    judge stage writes it) is one of the family's words: one normalisation, no twin."""
    labels = ["Animals 2", "Pets", "a dog", "Colours!", "3D objects", "!!", None, " LOCATION. ", "Gas", "bus"]
    r = [dict(layer=0, head=h, head_label=head_name(0, h), judge="combined", ccs=3, label=label)
         for h, label in enumerate(labels)]
    got = by_id(prune_strategies(r, ["concept"]))
    families = concept_families()
    for concept in ("location", "animals", "objects", "colors"):
        want = [head_name(0, h) for h, label in enumerate(labels) if normalize_label(label) in families[concept]]
        assert (got[f"concept:{concept}"].heads if f"concept:{concept}" in got else []) == want, concept
    assert got["concept:animals"].heads == ["L0.H1"]  # "pet"; "animals 2" and "a dog" are no family word
    assert got["concept:location"].heads == ["L0.H7"] and got["concept:colors"].heads == ["L0.H3"]
    assert not hasattr(ablate, "normalize_label") or ablate.normalize_label is normalize_label


def test_explicit_and_sweep():
    got = by_id(prune_strategies(rows(), ["explicit", "sweep"], explicit={"paper": ["L11.H5", "L10.H8"]}, sweep_k=4,
                                 seeds=2))
    assert got["explicit:paper"].heads == ["L10.H8", "L11.H5"]
    assert [got[f"sweep:k{k}"].k for k in range(5)] == [0, 1, 2, 3, 4]
    # top-k by CCS, ties in head order: 5,5,5 (L2.H0, L3.H0, L3.H1) then 3 (L2.H2)
    assert got["sweep:k2"].heads == ["L2.H0", "L3.H0"]
    assert got["sweep:k4"].heads == ["L2.H0", "L2.H2", "L3.H0", "L3.H1"]
    # bottom-k by CCS, ties in head order: 0 (L2.H1), then 1,1 (L2.H3, L3.H2), then 3 (L2.H2); k = 0 is sweep:k0
    assert "sweep-low:k0" not in got and got["sweep-low:k1"].heads == ["L2.H1"]
    assert got["sweep-low:k3"].heads == ["L2.H1", "L2.H3", "L3.H2"]
    assert got["sweep-low:k4"].heads == ["L2.H1", "L2.H2", "L2.H3", "L3.H2"]
    assert {got[f"sweep-low:k{k}"].strategy for k in range(1, 5)} == {"sweep-low"}
    # random: per seed, the first k of one seeded draw of sweep_k heads from the ccs table's heads (nested)
    pool = sorted(CCS, key=lambda n: (int(n[1]), int(n[-1])))
    for seed in (0, 1):
        order = random.Random(seed).sample(pool, 4)
        for k in range(1, 5):
            a = got[f"sweep-random:k{k}:s{seed}"]
            assert (a.strategy, a.seed, a.k) == ("sweep-random", seed, k)
            assert a.heads == sorted(order[:k], key=lambda n: (int(n[1]), int(n[-1])))
    assert "sweep-random:k1:s2" not in got and not any(a.reason for a in got.values())
    with pytest.raises(ValueError, match="only 7 heads"):
        prune_strategies(rows(), ["sweep"], sweep_k=8)
    with pytest.raises(ValueError, match="L<layer>.H<head>"):
        prune_strategies(rows(), ["explicit"], explicit={"bad": ["head5"]})


def test_strategies_that_select_no_head_say_why():
    medium = [dict(layer=0, head=h, head_label=head_name(0, h), judge="combined", ccs=3, level="medium", label="food")
              for h in range(4)]
    got = by_id(prune_strategies(medium, ["high", "low", "random", "equal", "concept", "explicit"], seeds=3,
                                 concepts=["animals"], explicit={"nothing": []}, m=5))
    assert {k: v.reason for k, v in got.items()} == {
        "none": None, "high": "no head with CCS = 5", "low": "no head with CCS ≤ 1",
        "random": "no head with CCS = 5 to match in number",
        "equal:high": "no head with CCS = 5 (equal removes as many high as low heads)",
        "equal:low": "no head with CCS = 5 (equal removes as many high as low heads)",
        "concept:animals": "no head's label is one of the animals words", "explicit:nothing": "the list names no head"}
    assert all(a.heads == [] and a.k == 0 and a.seed is None for a in got.values())
    assert got["concept:animals"].concept == "animals" and got["equal:low"].concept == "low"
    assert by_id(prune_strategies(medium, ["high"], m=3))["high"].reason == "no head with CCS = 3"
    some_high = [dict(r, ccs=5, level="high") if r["head"] == 0 else r for r in medium]
    got = by_id(prune_strategies(some_high, ["equal"]))
    why = "no head with CCS ≤ 1 (equal removes as many high as low heads)"
    assert got["equal:high"].reason == got["equal:low"].reason == why


def test_single_one_configuration_per_head_and_mode():
    got = prune_strategies(rows(), ["single", "high"], single_modes=["zero", "mean"])
    heads = sorted(CCS, key=lambda n: (int(n[1]), int(n[-1])))  # every head of the judge's rows, CCS or not
    singles = [a for a in got if a.strategy == "single"]
    assert [a.ablation_id for a in singles] == [f"single:{m}:{h}" for m in ("zero", "mean") for h in heads]
    assert [(a.heads, a.k, a.mode, a.concept, a.seed, a.reason) for a in singles] == [
        ([h], 1, m, f"{m}:{h}", None, None) for m in ("zero", "mean") for h in heads]
    assert got[0].ablation_id == "none" and by_id(got)["high"].mode is None  # the others: the stage's prune.mode
    assert all(a.by_ccs and a.paper_strategy is None for a in singles)
    # the judge's rows only; a mode listed twice counts once
    assert [a.ablation_id for a in prune_strategies(rows(), ["single"], judge="gpt", single_modes=["mean", "mean"])] \
        == ["none", "single:mean:L2.H0"]
    with pytest.raises(ValueError, match="single_modes"):
        prune_strategies(rows(), ["single"], single_modes=["half"])
    with pytest.raises(ValueError, match="no rows of judge 'combined'; judges present: none"):  # no heads to ablate
        prune_strategies([], ["single"])


def test_preflight_says_single_mean_needs_the_scan(tmp_path):
    from ccs_ray.preflight import PreflightError, preflight
    from ccs_ray.spec import load_spec

    def problems(**prune):
        spec = load_spec({"name": "p", "stages": ["spans", "judge", "prune"], "spans": {"method": "weights"},
                          "models": {"keys": ["ccs-tiny/none"]},
                          "prune": {"strategies": ["single"], **prune}, "results": {"root": str(tmp_path / "res")},
                          "evals": {"classification": [{"name": "s", "source": "probe://shapes?n=4&seed=1&size=32"}]}})
        try:
            preflight(spec, dry_run=True)
        except PreflightError as e:
            return e.problems
        return []

    assert problems() == [] and problems(single_modes=["zero"]) == []
    assert problems(single_modes=["zero", "mean"]) == [
        "prune: prune.single_modes = ['zero', 'mean'] needs the scan's moments (mean head outputs), but stages "
        "['spans', 'judge', 'prune'] do not include 'scan': add it, or use prune.single_modes = ['zero'] (or --resume "
        "a run whose scan stage is done)"]
    assert [p.split(",")[0] for p in problems(single_modes=["mean"], mode="mean")] == [
        "prune: prune.mode = 'mean' needs the scan's moments (mean head outputs)"]  # one line for one cause
