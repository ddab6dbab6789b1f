"""Against the paper: the published data as package data, the paper-* prune strategies, the vs_paper and
paper_agreement views, ``ccs-ray compare-paper``, the report section, and pruning the published heads end to
end with ``stages = ["prune", "report"]``."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ccs_ray import paper_reference
from ccs_ray.ablate import Ablation, prune_strategies
from ccs_ray.analytics import canned_sql, connect, query
from ccs_ray.cli import main
from ccs_ray.heads import head_name, head_names, parse_head_name
from ccs_ray.preflight import PreflightError, preflight
from ccs_ray.reference import PAPER_DIR, published_random_layers
from ccs_ray.scores import paper_concept
from ccs_ray.spec import SpecError, load_spec
from ccs_ray.tables import read_table, write_table
from synthetic_results import write_paper_figures

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "paper"
PAPER_MODELS = ("ViT-B-32/openai", "ViT-B-32/datacomp_m_s128m_b4k", "ViT-B-16/openai", "ViT-B-16/laion2b_s34b_b88k",
                "ViT-L-14/openai", "ViT-L-14/laion2b_s32b_b82k")


def rows(conn, sql):
    return query(conn, sql).to_pylist()


# --- the reference data ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures/paper is not beside the checkout")
@pytest.mark.parametrize("name", ["heads.json", "ccs_counts.csv", "results.csv"])
def test_package_data_is_the_published_data(name):
    assert (PAPER_DIR / name).read_bytes() == (FIXTURES / name).read_bytes()


def test_loader_head_sets_counts_and_results():
    ref = paper_reference()
    assert tuple(ref.heads) == PAPER_MODELS
    counts = {r["model"]: r for r in ref.counts.to_pylist()}
    raw = json.loads((PAPER_DIR / "heads.json").read_text())["models"]
    for model, sets in ref.heads.items():
        assert len(sets.high) == counts[model]["high"] and len(sets.low) == counts[model]["low"]
        assert sets.high == raw[model]["high"] and sets.low == raw[model]["low"]  # published order kept
        assert set(sets.high).isdisjoint(sets.low)
        assert set(sets.concepts) <= {"locations", "objects", "colors", "animals"}
        last4 = range(20, 24) if model.startswith("ViT-L") else range(8, 12)  # the paper analysed the last 4 layers
        assert all(parse_head_name(h)[0] in last4 for hs in sets.sets().values() for h in hs)
    lines = (PAPER_DIR / "results.csv").read_text().splitlines()
    results = ref.results.to_pylist()
    assert len(results) == len(lines) - 1 == 273
    first = lines[1].split(",")
    assert results[0] == dict(model=first[0], dataset=first[1], metric=first[2], strategy=first[3],
                              value=float(first[4]), approx=first[5] == "1", source=first[6])
    assert {r["strategy"] for r in results} == {"none", "high", "low", "random", "concept:locations",
                                                "concept:objects", "concept:animals"}
    assert ref.heads_of("b32-openai") is ref.heads["ViT-B-32/openai"]  # preset aliases resolve
    with pytest.raises(KeyError, match="no head sets for 'ViT-B-32/none'.*ViT-B-32/openai"):
        ref.heads_of("ViT-B-32/none")


@pytest.mark.parametrize("spelling, paper", [("locations", "locations"), ("concept:location", "locations"),
                                             ("Location", "locations"), ("animal", "animals"), ("Colours", None),
                                             ("colors", "colors"), ("object", "objects"), ("food", None), ("", None)])
def test_concept_names_meet(spelling, paper):
    assert paper_concept(spelling) == paper


# --- paper-* strategies ----------------------------------------------------------------------------------------

def strategies(model="ViT-B-32/openai", pool_layers=(8, 9, 10, 11), seeds=3, ccs_rows=(),
               which=("paper-high", "paper-low", "paper-random", "paper-concept:locations", "paper-concept:objects",
                      "paper-concept:colors", "paper-concept:animals")):
    ref = paper_reference().heads[model]
    pool = head_names(pool_layers, 16 if model.startswith("ViT-L") else 12)
    return {a.ablation_id: a for a in prune_strategies(list(ccs_rows), list(which), seeds=seeds, reference=ref,
                                                       paper_random_pool=pool)}, ref, pool


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_strategies_select_exactly_the_published_sets(model):
    got, ref, pool = strategies(model)
    assert set(got["paper-high"].heads) == set(ref.high) and got["paper-high"].k == len(ref.high)
    assert set(got["paper-low"].heads) == set(ref.low)
    for concept in ("locations", "objects", "colors", "animals"):
        if concept in ref.concepts:
            assert set(got[f"paper-concept:{concept}"].heads) == set(ref.concepts[concept])
            assert got[f"paper-concept:{concept}"].paper_strategy == f"concept:{concept}"
        else:  # the paper has no such set for this model: a configuration without heads, and why
            assert got[f"paper-concept:{concept}"].heads == []
            assert got[f"paper-concept:{concept}"].reason == f"the paper published no {concept} set for {model}"
    assert got["none"].heads == [] and got["none"].paper_strategy == "none"
    assert got["paper-high"].paper_strategy == "high" and got["paper-random:s0"].paper_strategy == "random"


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_random_rule(model):
    got, ref, pool = strategies(model, seeds=4)
    draws = [got[f"paper-random:s{s}"] for s in range(4)]
    for seed, a in enumerate(draws):
        assert a.strategy == "paper-random" and a.seed == seed and a.k == len(ref.high)
        assert len(set(a.heads)) == len(ref.high)
        assert set(a.heads) <= set(pool) and set(a.heads).isdisjoint(ref.high)
        # the rule, stated independently: random.Random(seed).sample over the pool minus high, in head order
        free = sorted(set(pool) - set(ref.high), key=lambda h: tuple(map(int, h[1:].split(".H"))))
        assert set(a.heads) == set(random.Random(seed).sample(free, len(ref.high)))
    assert len({tuple(a.heads) for a in draws}) == 4  # seeds differ
    again, _, _ = strategies(model, seeds=4)
    assert [again[f"paper-random:s{s}"].heads for s in range(4)] == [a.heads for a in draws]  # seeded


@pytest.mark.parametrize("model, n_layers, published", [
    ("ViT-B-32/openai", 12, list(range(12))),  # the published exception: all 12 layers
    ("ViT-B-32/datacomp_m_s128m_b4k", 12, [8, 9, 10, 11]),
    ("ViT-L-14/openai", 24, [20, 21, 22, 23]),
])
def test_paper_random_pool_options(model, n_layers, published):
    assert published_random_layers(model, n_layers) == published
    wide, ref, pool = strategies(model, pool_layers=published, seeds=5)
    layers = {parse_head_name(h)[0] for s in range(5) for h in wide[f"paper-random:s{s}"].heads}
    assert layers <= set(published)
    if model == "ViT-B-32/openai":  # 5 draws of 8 from 132 heads: some come from layers 0..7
        assert min(layers) < 8


def test_paper_strategies_need_no_ccs_and_mix_with_ccs_ones():
    got, _, _ = strategies(which=("paper-high",))
    assert list(got) == ["none", "paper-high"]
    with pytest.raises(ValueError, match="no rows of judge"):
        strategies(which=("paper-high", "high"))
    ccs = [dict(head_label=head_name(11, h), layer=11, head=h, judge="combined", ccs=5 if h < 2 else 3, label="x")
           for h in range(12)]
    got, _, _ = strategies(which=("paper-high", "high"), ccs_rows=ccs)
    assert got["high"].heads == ["L11.H0", "L11.H1"] and got["high"].by_ccs and not got["paper-high"].by_ccs
    with pytest.raises(ValueError, match="reference sets"):
        prune_strategies([], ["paper-low"])


def test_spec_normalises_paper_concepts_and_rejects_unknown_ones():
    spec = load_spec({"name": "t", "prune": {"strategies": ["paper-concept:location", "paper-concept:Animals",
                                                            "paper-high", "concept"]}})
    assert spec.prune.strategies == ["paper-concept:locations", "paper-concept:animals", "paper-high", "concept"]
    with pytest.raises(SpecError,
                       match=r"prune.strategies: 'paper-concept:food': name one of .*paper-concept:locations"):
        load_spec({"name": "t", "prune": {"strategies": ["paper-concept:food"]}})
    with pytest.raises(SpecError, match="unknown strategy 'hihg'"):
        load_spec({"name": "t", "prune": {"strategies": ["hihg"]}})
    with pytest.raises(SpecError, match="paper_random_pool"):
        load_spec({"name": "t", "prune": {"paper_random_pool": "everything"}})
    assert Ablation("concept:location", "concept", concept="location").paper_strategy == "concept:locations"
    assert Ablation("equal:high", "equal", concept="high").paper_strategy is None


# --- vs_paper and paper_agreement --------------------------------------------------------------------------------

def test_vs_paper_equal_figures_are_all_within_tolerance(tmp_path):
    published = write_paper_figures(str(tmp_path))
    with connect(str(tmp_path)) as conn:
        got = rows(conn, "SELECT * FROM vs_paper")
        summary = rows(conn, canned_sql("vs_paper_summary"))
    assert len(got) == len(published)  # one row per figure: every key matched exactly once
    assert all(r["ours"] is not None and r["within_tolerance"] and r["comparable"] and r["caveat"] is None for r in got)
    by_key = {(r["model"], r["dataset"], r["metric"], r["strategy"]): r for r in got}
    for p in published:
        r = by_key[(p["model"], p["dataset"], p["metric"], p["strategy"])]
        assert r["ours"] == pytest.approx(p["value"], abs=1e-9) and r["theirs"] == p["value"]
        assert r["tolerance"] == (2.0 if p["approx"] else 1.0)
        assert r["n_seeds"] == (3 if p["strategy"] == "random" else 1)
        assert r["heads_from"] == ("none" if p["strategy"] == "none" else "paper")
    assert sum(r["figures"] for r in summary) == len(published)
    assert all(r["figures"] == r["comparable"] == r["within_tolerance"] and r["share_within"] == 1.0 for r in summary)


@pytest.mark.parametrize("shift, within", [(3.0, 0.0), (-3.0, 0.0), (0.9, None)])
def test_vs_paper_shifted_figures(tmp_path, shift, within):
    published = write_paper_figures(str(tmp_path), shift=shift)
    with connect(str(tmp_path)) as conn:
        got = rows(conn, "SELECT * FROM vs_paper")
        share = rows(conn, "SELECT avg(within_tolerance::INTEGER) AS s FROM vs_paper")[0]["s"]
    assert all(r["difference"] == pytest.approx(shift, abs=1e-9) for r in got)
    if within is None:  # 0.9 points off: within 1 (tables) and 2 (charts) alike
        assert share == 1.0
    else:
        assert share == within
    assert len(got) == len(published)


def test_vs_paper_joins_on_keys_exactly_as_written(tmp_path):
    """A dataset or metric spelled otherwise, another reference model or a configuration the paper has no figure
    for matches nothing; random-init weights and MaxSkew over other occupations are flagged not comparable."""
    root, model = str(tmp_path), "ViT-B-32/openai"
    ablations = [dict(ablation_id=a, strategy=s, seed=None, heads=[], n_heads=0, reference_model=model,
                      paper_strategy=ps) for a, s, ps in (("none", "none", "none"),
                                                          ("paper-high", "paper-high", "high"),
                                                          ("equal:high", "equal", None))]
    write_table(root, "ablations", ablations, "r", model)
    write_table(root, "ablations", [dict(ablations[0], reference_model="ViT-B-32/openai ")], "r", "other/x")
    evals = [dict(ablation_id="none", strategy="none", dataset=d, metric=m, value=75.68)
             for d, m in (("cifar10", "top1"), ("CIFAR10", "top1"), ("cifar10", "Top1"), ("cifar10 ", "top1"))]
    evals += [dict(ablation_id="equal:high", strategy="equal", dataset="cifar10", metric="top1", value=1.0)]
    write_table(root, "evals", evals, "r", model)
    write_table(root, "evals", evals[:1], "r", "other/x")
    bias = [dict(ablation_id="paper-high", strategy="paper-high", dataset="fairface", attribute="race",
                 occupation=f"o{i}", k=10, maxskew=60.5 / 6, combine="embedding_mean") for i in range(6)]
    write_table(root, "bias", bias, "r", model)
    write_table(root, "ablations", [dict(ablations[0], reference_model=model)], "r", "ViT-B-32/none")
    write_table(root, "evals", evals[:1], "r", "ViT-B-32/none")
    with connect(root) as conn:
        got = rows(conn, "SELECT * FROM vs_paper WHERE ours IS NOT NULL ORDER BY our_model, dataset")
    assert [(r["our_model"], r["dataset"], r["metric"], r["strategy"]) for r in got] == [
        ("ViT-B-32/none", "cifar10", "top1", "none"), ("ViT-B-32/openai", "cifar10", "top1", "none"),
        ("ViT-B-32/openai", "fairface", "maxskew_sum@10:race", "high")]
    none_init, exact, skew = got
    assert exact["within_tolerance"] and exact["comparable"] and exact["caveat"] is None
    assert (none_init["within_tolerance"] and not none_init["comparable"]
            and none_init["caveat"] == "random-init weights")
    assert skew["ours"] == pytest.approx(60.5) and skew["within_tolerance"] and not skew["comparable"]
    assert skew["caveat"] == "MaxSkew summed over 6 occupations, not 104"


def write_published_ccs(root, model="ViT-B-32/openai", judge="combined", run="r", concepts=True, heuristic=False):
    """A ccs table of ``model``'s last 4 layers equal to the published sets: CCS 5 for high, 0/1 for low, 2..4
    otherwise; and the concept ablations the prune stage would choose from it. Returns {head: ccs}."""
    ref = paper_reference().heads[model]
    n_heads = 16 if model.startswith("ViT-L") else 12
    layers = range(20, 24) if model.startswith("ViT-L") else range(8, 12)
    rng = random.Random(1)
    ccs = {h: 5 if h in ref.high else rng.choice((0, 1)) if h in ref.low else rng.choice((2, 3, 4))
           for h in head_names(layers, n_heads)}
    write_table(root, "ccs", [dict(layer=parse_head_name(h)[0], head=parse_head_name(h)[1], head_label=h, judge=judge,
                                   ccs=c, heuristic=heuristic) for h, c in ccs.items()], run, model, name=judge)
    if concepts:
        write_table(root, "ablations", [dict(ablation_id=f"concept:{c[:-1]}", strategy="concept", concept=c[:-1],
                                             heads=heads, judge=judge, reference_model=model,
                                             paper_strategy=f"concept:{c}") for c, heads in ref.concepts.items()],
                    run, model, name=f"concepts-{judge}")
    return ccs


def spearman(x, y):
    """Spearman's rho, independently of SQL: Pearson on average ranks (ties share their mean rank)."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


@pytest.mark.parametrize("model", ["ViT-B-32/openai", "ViT-L-14/laion2b_s32b_b82k"])
def test_paper_agreement_equal_sets_give_jaccard_one(tmp_path, model):
    ccs = write_published_ccs(str(tmp_path), model)
    ref = paper_reference().heads[model]
    with connect(str(tmp_path)) as conn:
        got = {r["head_set"]: r for r in rows(conn, "SELECT * FROM paper_agreement")}
    assert set(got) == {"high", "low", *(f"concept:{c}" for c in ref.concepts)}
    for head_set, published in ref.sets().items():
        r = got[head_set]
        assert (r["jaccard"], r["precision"], r["recall"]) == (1.0, 1.0, 1.0), head_set
        assert r["n_ours"] == r["n_published"] == r["n_shared"] == len(published)
        assert r["published_heads"] == published and r["our_ccs"] == [ccs[h] for h in published]
        assert r["mean_our_ccs"] == pytest.approx(np.mean([ccs[h] for h in published]))
        assert r["reference_model"] == model and r["judge"] == "combined" and r["heuristic"] is False
    membership = [1 if h in ref.high else -1 if h in ref.low else 0 for h in ccs]
    want = spearman(list(ccs.values()), membership)
    assert want > 0.7 and all(r["spearman_rho"] == pytest.approx(want, abs=1e-12) for r in got.values())


def test_paper_agreement_partial_overlap(tmp_path):
    """Our high set = 3 published high heads + 2 others: Jaccard 3/10, precision 3/5, recall 3/8 for ViT-B-32/openai."""
    root, model = str(tmp_path), "ViT-B-32/openai"
    ref = paper_reference().heads[model]
    ours = ref.high[:3] + ["L8.H0", "L8.H1"]
    ccs = {h: 5 if h in ours else 3 for h in head_names(range(8, 12), 12)}
    write_table(root, "ccs", [dict(head_label=h, judge="gpt-4o", ccs=c) for h, c in ccs.items()], "r", model)
    with connect(root) as conn:
        high, low = rows(conn, "SELECT * FROM paper_agreement ORDER BY head_set")  # no concept sets were chosen
    assert (high["head_set"], low["head_set"]) == ("high", "low")
    assert (high["n_ours"], high["n_published"], high["n_shared"]) == (5, 8, 3)
    assert high["jaccard"] == pytest.approx(3 / 10) and high["precision"] == pytest.approx(3 / 5)
    assert high["recall"] == pytest.approx(3 / 8)
    assert low["n_ours"] == 0 and low["jaccard"] == 0 and low["precision"] is None and low["recall"] == 0
    membership = [1 if h in ref.high else -1 if h in ref.low else 0 for h in ccs]
    assert high["spearman_rho"] == pytest.approx(spearman(list(ccs.values()), membership), abs=1e-12)


# --- compare-paper and the report -------------------------------------------------------------------------------

def test_compare_paper_cli_text_and_json(tmp_path, capsys):
    root = str(tmp_path / "res")
    write_paper_figures(root)
    write_published_ccs(root, "ViT-B-32/openai", run="run-paper", concepts=False, heuristic=True)
    assert main(["compare-paper", "--results", root]) == 0
    out = capsys.readouterr().out
    assert "Against the paper" in out and "ViT-L-14/laion2b_s32b_b82k" in out
    assert "offline heuristic judge" in out  # says plainly why the CCS sets are not the paper's method
    assert main(["compare-paper", "--results", root, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"summary", "figures", "agreement", "notes"}
    assert len(data["figures"]) == 273 and all(r["within_tolerance"] for r in data["figures"])
    assert {(r["our_model"], r["heads_from"]) for r in data["summary"]} == {
        (m, h) for m in PAPER_MODELS for h in ("none", "paper")}
    assert all(r["share_within"] == 1.0 for r in data["summary"])
    assert any("heuristic" in n and "ViT-B-32/openai" in n for n in data["notes"])
    assert main(["compare-paper", "--results", str(tmp_path / "missing")]) == 2


def test_compare_paper_says_when_a_run_cannot_be_compared(tmp_path, capsys):
    root = str(tmp_path)
    write_table(root, "ablations", [dict(ablation_id="none", strategy="none", reference_model="ViT-B-32/openai",
                                         paper_strategy="none")], "r", "ViT-B-32/none")
    write_table(root, "evals", [dict(ablation_id="none", strategy="none", dataset="probe-shapes", metric="top1",
                                     value=50.0)], "r", "ViT-B-32/none")
    write_table(root, "ccs", [dict(head_label="L0.H0", judge="combined", ccs=5)], "r", "ccs-tiny/none")
    assert main(["compare-paper", "--results", root]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-32/none (run r): random-init weights" in out
    assert "none of its evaluations (probe-shapes) is one the paper published for ViT-B-32/openai" in out
    assert "ccs-tiny/none (run r): the paper published nothing for ccs-tiny/none" in out


# --- preflight, the job, presets ----------------------------------------------------------------------------------

def prune_only(tmp_path, **prune):
    return load_spec({"name": "p", "stages": ["prune", "report"], "models": {"keys": ["ViT-B-32/none"]},
                      "prune": {"strategies": ["paper-high", "paper-low", "paper-random", "paper-concept:objects"],
                                "seeds": 2, **prune},
                      "evals": {"batch_size": 16, "classification": [
                          {"name": "shapes", "source": "probe://shapes?n=12&seed=1&size=32", "shard_size": 6}]},
                      "results": {"root": str(tmp_path / "res")}})


def test_preflight_checks_the_reference_sets(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight(prune_only(tmp_path), dry_run=True)
    assert e.value.problems == [
        "models.keys: 'ViT-B-32/none': the paper published no head sets for 'ViT-B-32/none', which paper-high, "
        "paper-low, paper-random, paper-concept:objects prune; set prune.reference_model to 'ViT-B-32/openai' "
        "(the same architecture)"]
    with pytest.raises(PreflightError, match=r"lie outside the image tower of ViT-B-32/none \(12 layers x 12 heads\)"):
        preflight(prune_only(tmp_path, reference_model="ViT-L-14/openai"), dry_run=True)
    with pytest.raises(PreflightError, match="strategies \\['high'\\] rank heads by CCS.*do not include 'judge'"):
        preflight(prune_only(tmp_path, reference_model="ViT-B-32/openai", strategies=["paper-high", "high"]),
                  dry_run=True)
    plan = preflight(prune_only(tmp_path, reference_model="b32-openai"), dry_run=True)
    assert plan.models[0].tower_layers == 12 and plan.stages == ["prune", "report"]


@pytest.mark.slow
def test_prune_and_report_with_the_published_heads(ray_cluster, tmp_path):
    """stages = ["prune", "report"] with only paper-* strategies: no scan, spans or judge; the ablations are the
    published sets of the reference model; the report says the random-init run cannot match the paper."""
    from ccs_ray.pipeline import describe, run

    spec = prune_only(tmp_path, reference_model="ViT-B-32/openai", strategies=[
        "paper-high", "paper-low", "paper-random", "paper-concept:objects", "paper-concept:animals"])
    summary = run(spec, progress=False)
    assert list(summary["stages"]) == ["prune", "report"]
    root, model = str(tmp_path / "res"), "ViT-B-32/none"
    ref = paper_reference().heads["ViT-B-32/openai"]
    ablations = {r["ablation_id"]: r for r in read_table(root, "ablations", summary["run_id"], model).to_pylist()}
    empty = ablations.pop("paper-concept:animals")  # none published: recorded with the reason, not evaluated
    assert (empty["n_heads"], empty["reason"]) == (0, "the paper published no animals set for ViT-B-32/openai")
    assert set(ablations) == {"none", "paper-high", "paper-low", "paper-random:s0", "paper-random:s1",
                              "paper-concept:objects"}
    assert all(r["reason"] is None for r in ablations.values())
    assert set(ablations["paper-high"]["heads"]) == set(ref.high)
    assert set(ablations["paper-low"]["heads"]) == set(ref.low)
    assert set(ablations["paper-concept:objects"]["heads"]) == set(ref.concepts["objects"])
    for seed in (0, 1):  # analysed layers (the last 4), the default pool
        heads = ablations[f"paper-random:s{seed}"]["heads"]
        assert len(heads) == len(ref.high) and set(heads).isdisjoint(ref.high)
        assert {parse_head_name(h)[0] for h in heads} <= {8, 9, 10, 11}
    assert all(r["reference_model"] == "ViT-B-32/openai" and r["judge"] is None for r in ablations.values())
    assert {r["paper_strategy"] for r in ablations.values()} == {"none", "high", "low", "random", "concept:objects"}
    evals = read_table(root, "evals", summary["run_id"], model).to_pylist()
    assert {r["ablation_id"] for r in evals} == set(ablations)
    assert summary["stages"]["prune"][model]["empty_strategies"] == ["paper-concept:animals"]  # none published
    assert f"{model}: no head selected by paper-concept:animals" in describe(summary)
    html = Path(summary["stages"]["report"]["path"]).read_text()
    assert 'id="paper"' in html and "ViT-B-32/none (run " in html and "random-init weights" in html
    with connect(root) as conn:  # the reference tables are in the root too, for plain DuckDB
        assert rows(conn, "SELECT count(*) AS n FROM paper_heads")[0]["n"] == 162
    assert (Path(root) / "paper_results" / "reference.parquet").is_file()


def test_paper_pruning_job_covers_every_published_model_dataset_and_strategy():
    job = Path(__file__).resolve().parents[1] / "jobs" / "paper-pruning.toml"
    spec = load_spec(str(job))
    assert spec.stages == ["prune", "report"] and spec.prune.paper_random_pool == "published"
    assert tuple(spec.models.keys) == PAPER_MODELS and spec.models.last_layers == 4
    assert set(spec.prune.strategies) == {"paper-high", "paper-low", "paper-random", "paper-concept:locations",
                                          "paper-concept:objects", "paper-concept:colors", "paper-concept:animals"}
    names = {e.name for kind in ("classification", "video", "bias") for e in getattr(spec.evals, kind)}
    assert names == {r["dataset"] for r in paper_reference().results.to_pylist()}


def test_presets_use_the_papers_templates():
    from ccs_ray.evals import classnames as cn
    from ccs_ray.evals.datasets.presets import CLASSIFICATION_PRESETS
    from ccs_ray.evals.maxskew import BIAS_TEMPLATES, OCCUPATIONS
    from ccs_ray.spec import BiasEntry

    templates = {name: len(p.templates) for name, p in CLASSIFICATION_PRESETS.items()}
    assert templates == dict(cifar10=18, cifar100=18, food101=1, country211=5, oxford_pets=1, imagenet_a=80,
                             imagenet_r=80, cifar10_objects=18, imagenet=80)
    assert cn.FOOD101_TEMPLATES == ["a photo of {}, a type of food."]
    assert len(set(cn.IMAGENET_TEMPLATES)) == 80 and len(set(cn.CIFAR_TEMPLATES)) == 18
    assert CLASSIFICATION_PRESETS["cifar10_objects"].subset == ["airplane", "automobile", "ship", "truck"]
    assert len(set(OCCUPATIONS)) == 104 and BIAS_TEMPLATES == ["A {}", "A photo of {}", "A picture of {}",
                                                               "An image of {}"]
    entry = BiasEntry(name="fairface", source="x.csv")
    assert (entry.k, entry.combine) == (10, "embedding_mean")  # MaxSkew@10, the 4 templates averaged
