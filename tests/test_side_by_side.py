"""Models side by side: the canned queries model_comparison and model_layers against a direct computation from the
rows written (CCS@K, level shares, label families per layer, the effect of pruning high and low heads), and the
report's section, which names every model (and run, for a model of several runs) with those figures, and is absent
for the results of one model."""

import re
import statistics
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from test_report import esc

from ccs_ray.ablate import prune_strategies
from ccs_ray.analytics import canned_rows, connect
from ccs_ray.reporting import build_report
from ccs_ray.scores import CONCEPT_FAMILIES, normalize_label
from ccs_ray.tables import write_table
from synthetic_results import MODELS, RUN_ID, write_results

DEEP_MODEL = "ViT-L-14/openai"  # 24 layers: its analysed layers are not the others'
LATER_RUN = "run-20250103"  # a later run of MODELS[0] that judged 4 heads (one unscored) and pruned nothing
# its combined CCS rows: (head, CCS, combined label as the judge stage stores it, normalised)
LATER_HEADS = (("L11.H0", 5, "dog"), ("L11.H1", None, None), ("L11.H2", 0, "color"), ("L11.H3", 2, "<b>texture</b>"))
SHARE_TOLERANCE = 1e-12  # shares: a ratio of two counts


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three models of one run (two with layers 10 and 11, one with 20..23; 6 heads each) and a later run of the
    first model: (root, rows written, report HTML)."""
    tmp = tmp_path_factory.mktemp("side-by-side")
    root = str(tmp / "results")
    rows = write_results(root, layers=(10, 11), n_heads=6, k_images=1)
    for table, more in write_results(root, models=(DEEP_MODEL,), layers=(20, 21, 22, 23), n_heads=6, k_images=1,
                                     seed=3).items():
        rows.setdefault(table, []).extend(more)
    later = [dict(layer=11, head=int(h[-1]), head_label=h, judge="combined", label=label, ccs=ccs, ccs_heldout=None,
                  level=None if ccs is None else "high" if ccs == 5 else "low" if ccs <= 1 else "medium",
                  heuristic=False) for h, ccs, label in LATER_HEADS]
    write_table(root, "ccs", later, LATER_RUN, MODELS[0])
    rows["ccs"] += [dict(r, run_id=LATER_RUN, model=MODELS[0]) for r in later]
    html = Path(build_report(root, str(tmp / "report.html"))).read_text()
    return root, rows, html


def family_of(label):
    """The concept family whose words (normalised) hold ``label``, else 'other'."""
    for family, words in CONCEPT_FAMILIES.items():
        if label in {normalize_label(w) for w in (*words, family)} | {family}:
            return family
    return "other"


def combined(rows) -> dict[tuple, list[dict]]:
    out = defaultdict(list)
    for r in rows["ccs"]:
        if r["judge"] == "combined":
            out[(r["run_id"], r["model"])].append(r)
    return dict(out)


def expected(rows) -> dict[tuple, dict]:
    """(run, model) -> the model_comparison figures, computed from the rows written."""
    top1, skew = defaultdict(list), defaultdict(float)
    for e in rows["evals"]:
        if e["metric"] == "top1":
            top1[(e["run_id"], e["model"], e["strategy"], e["dataset"])].append(e["value"])
    for b in rows["bias"]:
        skew[(b["run_id"], b["model"], b["strategy"], b["ablation_id"], b["dataset"], b["attribute"])] += b["maxskew"]
    out = {}
    for key, heads in combined(rows).items():
        scores = [h["ccs"] for h in heads]
        n = len(scores)
        want = {f"ccs_at_{k}": scores.count(k) / n for k in range(6)}
        want.update(n_heads=n, unscored=scores.count(None) / n,
                    share_high=sum(s == 5 for s in scores if s is not None) / n,
                    share_medium=sum(2 <= s <= 4 for s in scores if s is not None) / n,
                    share_low=sum(s <= 1 for s in scores if s is not None) / n)
        for strategy in ("high", "low"):
            datasets = sorted({d for (r, m, s, d) in top1 if (r, m, s) == (*key, strategy)})
            want[f"delta_top1_{strategy}"] = statistics.mean(
                statistics.mean(top1[(*key, strategy, d)]) - statistics.mean(top1[(*key, "none", d)])
                for d in datasets) if datasets else None
            sums = defaultdict(list)  # (dataset, attribute) -> the strategy's per-configuration sums
            for (r, m, s, _, d, a), total in skew.items():
                if (r, m, s) == (*key, strategy):
                    sums[(d, a)].append(total)
            base = {(d, a): t for (r, m, s, _, d, a), t in skew.items() if (r, m, s) == (*key, "none")}
            want[f"delta_maxskew_{strategy}"] = statistics.mean(
                statistics.mean(v) - base[g] for g, v in sums.items()) if sums else None
        out[key] = want
    return out


def test_model_comparison_equals_a_direct_computation(results):
    root, rows, _ = results
    with connect(root) as conn:
        got = {(r["run_id"], r["model"]): r for r in canned_rows(conn, "model_comparison")}
    want = expected(rows)
    assert set(got) == set(want) and len(got) == 4
    for key, w in want.items():
        g = got[key]
        for column, value in w.items():
            assert g[column] == (None if value is None else pytest.approx(value, abs=SHARE_TOLERANCE)), (key, column)
        assert sum(g[f"ccs_at_{k}"] for k in range(6)) + g["unscored"] == pytest.approx(1)
        for level in ("high", "low"):
            if g[f"share_{level}_low"] is not None:
                assert g[f"share_{level}_low"] <= g[f"share_{level}"] <= g[f"share_{level}_high"]
    later = got[(LATER_RUN, MODELS[0])]
    assert later["unscored"] == 0.25 and later["share_medium"] == 0.25  # an unscored head is of no level
    assert later["delta_top1_high"] is None and later["delta_maxskew_low"] is None  # it pruned nothing
    assert later["share_high_low"] is None  # 4 heads: too few for a bootstrap interval
    assert all(want[(RUN_ID, m)]["delta_top1_high"] is not None for m in (*MODELS, DEEP_MODEL))


def test_model_layers_equals_a_direct_computation_and_the_concept_strategy(results):
    root, rows, _ = results
    with connect(root) as conn:
        got = {(r["run_id"], r["model"], r["layer"]): r for r in canned_rows(conn, "model_layers")}
    want = {}
    for key, heads in combined(rows).items():
        for layer in {h["layer"] for h in heads}:
            mine = [h for h in heads if h["layer"] == layer]
            want[(*key, layer)] = dict(
                n_heads=len(mine), n_high=sum(h["ccs"] == 5 for h in mine),
                n_low=sum(h["ccs"] is not None and h["ccs"] <= 1 for h in mine),
                families=Counter(family_of(h["label"]) for h in mine))
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert (g["n_heads"], g["n_high"], g["n_low"]) == (w["n_heads"], w["n_high"], w["n_low"]), key
        assert g["share_high"] == pytest.approx(w["n_high"] / w["n_heads"], abs=SHARE_TOLERANCE)
        assert g["share_low"] == pytest.approx(w["n_low"] / w["n_heads"], abs=SHARE_TOLERANCE)
        assert {f["family"]: f["n_heads"] for f in g["families"]} == w["families"], key
        counts = [f["n_heads"] for f in g["families"]]
        assert counts == sorted(counts, reverse=True)  # most first
    assert got[(LATER_RUN, MODELS[0], 11)]["families"] == [dict(family="other", n_heads=2),
                                                          dict(family="animals", n_heads=1),
                                                          dict(family="colors", n_heads=1)]
    # a head's label family is the concept the prune stage's concept strategy removes it for
    for heads in combined(rows).values():
        chosen = prune_strategies(heads, ["concept"], concepts=list(CONCEPT_FAMILIES))
        for ablation in chosen[1:]:
            family = ablation.ablation_id.removeprefix("concept:")
            assert sorted(ablation.heads) == sorted(h["head_label"] for h in heads if family_of(h["label"]) == family)
    assert any(f["family"] != "other" for g in got.values() for f in g["families"])


def section(html: str) -> str:
    return html.split('<h2 id="side-by-side">')[1].split('<h2 id="models">')[0]


def test_report_lines_up_every_model_with_its_figures(results):
    _, rows, html = results
    want = expected(rows)
    names = {(RUN_ID, MODELS[0]): f"{MODELS[0]} (run {RUN_ID})",
             (LATER_RUN, MODELS[0]): f"{MODELS[0]} (run {LATER_RUN})",
             (RUN_ID, MODELS[1]): MODELS[1], (RUN_ID, DEEP_MODEL): DEEP_MODEL}
    order = sorted(names, key=lambda k: (k[1], k[0]))
    part = section(html)
    assert 'href="#side-by-side"' in html
    table = part.split('<table class="side-by-side">')[1].split("</table>")[0]
    assert re.findall(r"<th>([^<]*)</th>", table.split("</thead>")[0])[1:] == [esc(names[k]) for k in order]
    lines = {m.group(1): re.findall(r'<td class="num">([^<]*)</td>', m.group(2))
             for m in re.finditer(r"<tr><th>([^<]*)</th>(.*?)</tr>", table.split("<tbody>")[1], flags=re.S)}

    def percent(v):
        return f"{100 * v:.1f} %"

    def signed(v, digits):
        return "–" if v is None else f"{v:+.{digits}f}"

    assert lines["heads analysed"] == [str(want[k]["n_heads"]) for k in order]
    for k in range(6):
        assert lines[f"CCS@{k}"] == [percent(want[key][f"ccs_at_{k}"]) for key in order]
    assert lines["unscored"] == [percent(want[k]["unscored"]) for k in order]
    assert [c.split(" (")[0] for c in lines["high (CCS 5)"]] == [percent(want[k]["share_high"]) for k in order]
    assert [c.split(" (")[0] for c in lines["low (CCS ≤ 1)"]] == [percent(want[k]["share_low"]) for k in order]
    assert lines["medium (CCS 2..4)"] == [percent(want[k]["share_medium"]) for k in order]
    for strategy in ("high", "low"):
        assert lines[f"Δ top-1, {strategy} pruned (points)"] == [signed(want[k][f"delta_top1_{strategy}"], 2)
                                                                 for k in order]
        assert lines[f"Δ MaxSkew@k (sum), {strategy} pruned"] == [signed(want[k][f"delta_maxskew_{strategy}"], 3)
                                                                  for k in order]
    # one small multiple per model: per layer its high / low counts and families, in tooltips
    panels = re.findall(r'<figure class="layer-panel">(<svg.*?</svg>)<figcaption>([^<]*)</figcaption>', part,
                        flags=re.S)
    assert [c for _, c in panels] == [esc(names[k]) for k in order]
    ns = "{http://www.w3.org/2000/svg}"
    for (svg, _), key in zip(panels, order, strict=True):
        tips = [r.find(f"{ns}title").text for r in ET.fromstring(svg).iter(f"{ns}rect")]
        for h in combined(rows)[key]:
            layer = [x for x in combined(rows)[key] if x["layer"] == h["layer"]]
            n_high = sum(x["ccs"] == 5 for x in layer)
            n_family = sum(family_of(x["label"]) == family_of(h["label"]) for x in layer)
            assert f"L{h['layer']} · high CCS: {n_high} of {len(layer)} heads ({n_high / len(layer):.0%})" in tips
            assert f"L{h['layer']} · {family_of(h['label'])}: {n_family} of {len(layer)} heads" in tips
    families = part.split('<table class="families">')[1].split("</table>")[0]
    deep = re.search(rf"<tr><th>{re.escape(DEEP_MODEL)}</th>(.*?)</tr>", families, flags=re.S).group(1)
    assert re.findall(r"<td>L(\d+):", deep) == ["20", "21", "22", "23"]
    shallow = re.search(rf"<tr><th>{re.escape(MODELS[1])}</th>(.*?)</tr>", families, flags=re.S).group(1)
    assert shallow.startswith("<td></td><td></td><td>L10: ")  # the last layers line up
    # pruning effects: a bar per model and strategy evaluated, "not evaluated" for the later run
    effects = re.findall(r'<figure class="pruning-effect">(<svg.*?</svg>)', part, flags=re.S)
    assert len(effects) == 2
    tips = [r.find(f"{ns}title").text for r in ET.fromstring(effects[0]).iter(f"{ns}rect")
            if r.find(f"{ns}title") is not None]
    assert tips == [f"{names[k]} · {s}: {want[k][f'delta_top1_{s}']:+.2f}" for k in order for s in ("high", "low")
                    if want[k][f"delta_top1_{s}"] is not None]
    assert ">high: not evaluated<" in effects[0] and ">low: not evaluated<" in effects[1]
    assert "&lt;b&gt;texture" not in part and "<b>texture" not in part  # labels appear only as families


def test_no_side_by_side_for_one_model(tmp_path):
    root = str(tmp_path / "results")
    write_results(root, models=(MODELS[0],), layers=(11,), n_heads=4, k_images=1)
    html = Path(build_report(root, str(tmp_path / "report.html"))).read_text()
    assert 'id="side-by-side"' not in html and "#side-by-side" not in html and "Models side by side" not in html
    assert 'class="layer-panel"' not in html and 'id="models"' in html
