"""ccs_ray.stats against scipy and direct computations, its DuckDB functions through analytics.connect, and the
canned queries that show intervals (no Ray)."""

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from ccs_ray import scores, stats
from ccs_ray.analytics import canned_queries, connect, query
from ccs_ray.stages.judge import agreement
from ccs_ray.tables import write_table

EXACT = 1e-12  # the same closed form computed two ways
BOOTSTRAP_TOL = 0.03  # percentile bounds of two bootstraps (2000 vs 5000 resamples): a few Monte Carlo sds
JACKKNIFE_REL = 0.1  # jackknife vs large-sample SE over a few hundred items
COVERAGE_SIMULATIONS = 2000


def rows_of(conn, sql):
    return query(conn, sql).to_pylist()


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    with connect(str(tmp_path_factory.mktemp("empty"))) as c:
        yield c


# --- the math against scipy and direct computations ----------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 1), (0, 20), (7, 20), (20, 20), (512, 1000), (1, 3)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_wilson_is_scipys(k, n, confidence):
    want = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    got = stats.wilson_interval(k, n, confidence)
    assert (got.estimate, got.n) == (k / n, n)
    assert got.low == pytest.approx(want.low, abs=EXACT) and got.high == pytest.approx(want.high, abs=EXACT)


def test_wilson_without_items_has_no_interval():
    assert stats.wilson_interval(0, 0) == (None, None, None, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(5, 4)


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0], [40.0, 42.0, 44.0, 41.5, 39.0], [3.0, 3.0]])
def test_t_interval_is_scipys(values):
    mean, low, high, n = stats.t_interval(values, 0.95)
    assert n == len(values) and mean == pytest.approx(np.mean(values))
    if np.std(values) > 0:
        want = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
        assert (low, high) == (pytest.approx(want[0]), pytest.approx(want[1]))
    else:  # no spread: the interval is the mean (scipy answers nan for scale 0)
        assert low == high == mean
    assert stats.t_interval([5.0]) == (5.0, None, None, 1) and stats.t_interval([]) == (None, None, None, 0)


def test_spearman_is_scipys_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.integers(0, 6, 30).astype(float)  # CCS-like: many ties
        y = x + rng.integers(-2, 3, 30)
        assert stats.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=EXACT)
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3])) and math.isnan(stats.spearman([1], [2]))


def test_bootstrap_intervals_agree_with_scipys_and_repeat_with_the_seed():
    rng = np.random.default_rng(4)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    got = stats.spearman_interval(x, y)
    want = sps.bootstrap((x, y), lambda a, b: sps.spearmanr(a, b).statistic, paired=True, vectorized=False,
                         method="percentile", n_resamples=5000, random_state=1).confidence_interval
    assert got.estimate == pytest.approx(sps.spearmanr(x, y).statistic) and got.n == 60
    assert (got.low == pytest.approx(want.low, abs=BOOTSTRAP_TOL)
            and got.high == pytest.approx(want.high, abs=BOOTSTRAP_TOL))
    assert stats.spearman_interval(x, y) == got  # the fixed seed: the same interval
    assert stats.spearman_interval(x, y, seed=1) != got

    values = list(rng.integers(0, 6, 48)) + [None] * 4  # unscored heads count, as not k
    hits = np.array([v == 3 for v in values], dtype=float)
    got = stats.share_interval(values, 3)
    want = sps.bootstrap((hits,), np.mean, method="percentile", n_resamples=5000, random_state=1).confidence_interval
    assert got.estimate == pytest.approx(hits.mean()) and got.n == len(values)
    assert (got.low == pytest.approx(want.low, abs=BOOTSTRAP_TOL)
            and got.high == pytest.approx(want.high, abs=BOOTSTRAP_TOL))
    assert stats.share_interval(values, 3) == got


def test_bootstrap_needs_enough_items():
    assert stats.share_interval([1, 2, 1, 1], 1) == (0.75, None, None, 4)
    assert stats.spearman_interval([1.0] * 6, range(6)) == (None, None, None, 6)  # rho undefined
    with pytest.raises(ValueError, match="same length"):
        stats.bootstrap_interval(np.mean, [1, 2], [1])


def _newcombe_from_table(a, b, c, d, confidence=0.95, corrected=True):
    """Newcombe (1998) method 10 (``corrected`` phi; method 8 without), transcribed from the 2x2 table, with
    scipy's Wilson intervals."""
    n = a + b + c + d
    ci1 = sps.binomtest(a + b, n).proportion_ci(confidence, "wilson")
    ci2 = sps.binomtest(a + c, n).proportion_ci(confidence, "wilson")
    p1, p2 = (a + b) / n, (a + c) / n
    product = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if corrected:
        cross = cross - n / 2 if cross > n / 2 else 0 if cross >= 0 else cross
    phi = cross / math.sqrt(product) if product else 0.0
    delta = math.sqrt(max(0.0, (p1 - ci1.low) ** 2 - 2 * phi * (p1 - ci1.low) * (ci2.high - p2) + (ci2.high - p2) ** 2))
    eps = math.sqrt(max(0.0, (ci1.high - p1) ** 2 - 2 * phi * (ci1.high - p1) * (p2 - ci2.low) + (p2 - ci2.low) ** 2))
    return (b - c) / n, (b - c) / n - delta, (b - c) / n + eps


def _hits_of(table):
    """Two 0/1 vectors over the same items whose paired 2x2 table is ``table`` (both, a only, b only, neither)."""
    cells = [(1, 1), (1, 0), (0, 1), (0, 0)]
    pairs = [cell for cell, count in zip(cells, table, strict=True) for _ in range(count)]
    np.random.default_rng(5).shuffle(pairs)
    a_hits, b_hits = zip(*pairs, strict=True)
    return np.array(a_hits), np.array(b_hits)


@pytest.mark.parametrize("table", [(30, 5, 2, 13), (40, 0, 0, 10), (0, 3, 1, 0), (12, 9, 0, 29), (50, 0, 0, 0),
                                   (4, 2, 2, 2), (5, 3, 2, 1)])
def test_paired_difference_is_newcombes_from_the_2x2_table(table):
    diff, low, high, n = stats.paired_difference(*_hits_of(table))
    want = _newcombe_from_table(*table)
    assert n == sum(table) and (diff, low, high) == tuple(pytest.approx(w, abs=EXACT) for w in want)
    assert -1 <= low <= diff <= high <= 1
    assert stats.paired_table_difference(*table) == (diff, low, high, n)


def test_paired_table_difference_checks_its_cells():
    assert stats.paired_table_difference(0, 0, 0, 0) == (None, None, None, 0)
    with pytest.raises(ValueError, match=">= 0"):
        stats.paired_table_difference(3, -1, 2, 4)


def test_a_small_positive_ad_minus_bc_is_corrected_to_no_correlation():
    """0 <= ad - bc <= n/2 gives phi = 0: the square-and-add of the two Wilson intervals (as for unpaired data)."""
    a, b, c, d = 4, 2, 2, 2  # ad - bc = 4 <= n/2 = 5; the plain phi would be 4/24
    n = a + b + c + d
    p_a, p_b = (a + b) / n, (a + c) / n
    ci_a = sps.binomtest(a + b, n).proportion_ci(0.95, "wilson")
    ci_b = sps.binomtest(a + c, n).proportion_ci(0.95, "wilson")
    diff, low, high, _ = stats.paired_table_difference(a, b, c, d)
    assert low == pytest.approx(p_a - p_b - math.hypot(p_a - ci_a.low, ci_b.high - p_b), abs=EXACT)
    assert high == pytest.approx(p_a - p_b + math.hypot(ci_a.high - p_a, p_b - ci_b.low), abs=EXACT)


# Newcombe (1998), Stat. Med. 17:2635, Table III: paired tables (e, f, g, h) = (both, a only, b only, neither)
# and the published 95% limits of method 10 for (f - g) / n, to 4 decimals.
NEWCOMBE_TABLE_III = [
    ((36, 12, 2, 0), (0.0569, 0.3404)), ((20, 12, 2, 16), (0.0562, 0.3292)), ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((36, 14, 0, 0), (0.1528, 0.4167)), ((35, 14, 0, 1), (0.1461, 0.4175)), ((18, 14, 0, 18), (0.1441, 0.3963)),
    ((2, 97, 1, 0), (0.8721, 0.9854)), ((1, 97, 1, 1), (0.8736, 0.9850)), ((0, 29, 1, 0), (0.6666, 0.9882)),
    ((2, 98, 0, 0), (0.9178, 0.9945)), ((1, 98, 0, 1), (0.9171, 0.9916)), ((0, 30, 0, 0), (0.8395, 1.0)),
    ((54, 0, 0, 0), (-0.0664, 0.0664)), ((53, 0, 0, 1), (-0.0729, 0.0729)), ((30, 0, 0, 24), (-0.0358, 0.0358)),
    ((29, 0, 0, 25), (-0.0354, 0.0354)), ((28, 0, 0, 26), (-0.0352, 0.0352)), ((27, 0, 0, 27), (-0.0351, 0.0351)),
]
PUBLISHED_DECIMALS = 4
# (1, 97, 1, 1) has ad - bc < 0, so method 10 equals method 8 there, whose lower limit the table prints as 0.8737;
# the method-10 column prints 0.8736 (0.873672 computed): that row is held to one unit of the 4th decimal.
MISPRINTED = {(1, 97, 1, 1)}
MISPRINT_TOL = 1e-4


def _published(low, high):
    return round(low, PUBLISHED_DECIMALS), round(high, PUBLISHED_DECIMALS)


@pytest.mark.parametrize("table,limits", NEWCOMBE_TABLE_III)
def test_paired_difference_gives_newcombes_published_limits(table, limits):
    diff, low, high, n = stats.paired_table_difference(*table)
    assert diff == pytest.approx((table[1] - table[2]) / n, abs=EXACT)
    if table in MISPRINTED:
        assert (low, high) == pytest.approx(limits, abs=MISPRINT_TOL)
    else:
        assert _published(low, high) == limits


def test_the_published_limits_need_the_corrected_phi():
    """The plain phi (Newcombe's method 8) misses the published method-10 limits wherever the correction changes
    phi (ad - bc > 0 and no margin 0): e.g. (18, 12, 2, 18) gives (0.0618, 0.3239) with it."""
    assert _published(*_newcombe_from_table(18, 12, 2, 18, corrected=False)[1:]) == (0.0618, 0.3239)
    corrected_rows = [(t, limits) for t, limits in NEWCOMBE_TABLE_III
                      if t[0] * t[3] > t[1] * t[2] and min(t[0] + t[1], t[2] + t[3], t[0] + t[2], t[1] + t[3]) > 0]
    assert len(corrected_rows) == 10
    for table, limits in corrected_rows:
        assert _published(*_newcombe_from_table(*table, corrected=False)[1:]) != limits


def test_duckdb_paired_difference_gives_newcombes_published_limits(empty):
    """The SQL function (percent points, over packed per-item bits) is the same interval as the Python one."""
    for table, limits in NEWCOMBE_TABLE_III:
        hits_a, hits_b = _hits_of(table)
        bits = [np.packbits(h, bitorder="little").tobytes() for h in (hits_a, hits_b)]
        [(got,)] = empty.execute("SELECT paired_difference($1, $2, $3)", [*bits, sum(table)]).fetchall()
        diff, low, high, _ = stats.paired_table_difference(*table)
        assert diff is not None and low is not None and high is not None
        assert got == {k: pytest.approx(stats.PERCENT * v, abs=EXACT) for k, v in
                       zip(("diff", "low", "high"), (diff, low, high), strict=True)}
        if table not in MISPRINTED:
            assert _published(got["low"] / stats.PERCENT, got["high"] / stats.PERCENT) == limits


def test_paired_difference_covers_the_true_difference():
    """Near-nominal coverage where few items change (the case the Wald interval misses)."""
    rng = np.random.default_rng(6)
    n, p_both, p_a_only, p_b_only = 60, 0.6, 0.06, 0.02  # true difference 0.04
    covered = 0
    for _ in range(COVERAGE_SIMULATIONS):
        cell = rng.choice(4, n, p=[p_both, p_a_only, p_b_only, 1 - p_both - p_a_only - p_b_only])
        _, low, high, _ = stats.paired_difference(np.isin(cell, (0, 1)), np.isin(cell, (0, 2)))
        covered += low <= p_a_only - p_b_only <= high
    assert 0.93 <= covered / COVERAGE_SIMULATIONS <= 0.995


def _cohen_se_transcribed(a, b):
    """Fleiss, Cohen & Everitt (1969), written cell by cell."""
    n, cats = len(a), sorted(set(a) | set(b))
    p = {(i, j): sum(x == i and y == j for x, y in zip(a, b, strict=True)) / n for i in cats for j in cats}
    row = {i: sum(p[i, j] for j in cats) for i in cats}
    col = {j: sum(p[i, j] for i in cats) for j in cats}
    po, pe = sum(p[i, i] for i in cats), sum(row[i] * col[i] for i in cats)
    k = (po - pe) / (1 - pe)
    s = sum(p[i, i] * (1 - (row[i] + col[i]) * (1 - k)) ** 2 for i in cats)
    s += (1 - k) ** 2 * sum(p[i, j] * (col[i] + row[j]) ** 2 for i in cats for j in cats if i != j)
    return math.sqrt((s - (k - pe * (1 - k)) ** 2) / (n * (1 - pe) ** 2))


def _jackknife_se(statistic, items):
    leave_one_out = np.array([statistic(items[:i] + items[i + 1:]) for i in range(len(items))])
    return math.sqrt((len(items) - 1) / len(items) * np.sum((leave_one_out - leave_one_out.mean()) ** 2))


def test_cohen_kappa_se():
    rng = np.random.default_rng(7)
    truth = rng.choice(3, 300, p=[0.5, 0.3, 0.2])
    a = [int(t if rng.random() < 0.8 else rng.integers(3)) for t in truth]
    b = [int(t if rng.random() < 0.6 else 2) for t in truth]  # rater b leans to category 2: asymmetric margins
    se = stats.cohen_kappa_se(a, b)
    assert se == pytest.approx(_cohen_se_transcribed(a, b), rel=EXACT)
    pairs = list(zip(a, b, strict=True))
    jackknife = _jackknife_se(lambda ps: scores.cohen_kappa(*zip(*ps, strict=True)), pairs)
    assert se == pytest.approx(jackknife, rel=JACKKNIFE_REL)
    assert stats.cohen_kappa_se(a + [None], b + [1]) == se  # pairs with a missing rating are left out
    assert stats.cohen_kappa_se([1, 1, 1], [1, 1, 1]) is None and stats.cohen_kappa_se([1], [0]) is None


def test_fleiss_kappa_se_against_the_jackknife():
    rng = np.random.default_rng(8)
    truth = rng.choice(3, 300, p=[0.5, 0.3, 0.2])
    ratings = [[int(t if rng.random() < 0.7 else rng.integers(3)) for _ in range(4)] for t in truth]
    se = stats.fleiss_kappa_se(ratings)
    assert se == pytest.approx(_jackknife_se(scores.fleiss_kappa, ratings), rel=JACKKNIFE_REL)
    assert stats.fleiss_kappa_se(ratings + [[1, None, 0, 1]]) == se  # a row with a missing rating is dropped
    assert stats.fleiss_kappa_se([[1, 1], [1, 1]]) is None and stats.fleiss_kappa_se([[1, 0]]) is None


def test_judge_stage_summary_has_the_standard_errors():
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 2, (40, 5))
    verdicts = {j: [SimpleNamespace(aligned={"paper": [int(t if rng.random() < 0.8 else 1 - t) for t in row]})
                    for row in truth] for j in ("a", "b", "c")}
    votes = {j: [x for v in vs for x in v.aligned["paper"]] for j, vs in verdicts.items()}
    got = agreement(verdicts)
    for x, y in itertools.combinations("abc", 2):
        assert got["cohen_se"][f"{x}|{y}"] == stats.cohen_kappa_se(votes[x], votes[y]) > 0
    assert got["fleiss_se"] == stats.fleiss_kappa_se(list(zip(*votes.values(), strict=True))) > 0


# --- DuckDB functions ------------------------------------------------------------------------------------

def test_duckdb_functions_are_the_python_ones(empty):
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=30), rng.normal(size=30)
    hits_a, hits_b = rng.random(37) < 0.7, rng.random(37) < 0.6
    bits_a = np.packbits(hits_a, bitorder="little").tobytes()
    bits_b = np.packbits(hits_b, bitorder="little").tobytes()
    seeds = [-3.0, -1.5, -2.5, -4.0]
    scores_ = [int(v) for v in rng.integers(0, 6, 20)] + [None]
    a, b = [int(v) for v in rng.integers(0, 2, 50)], [int(v) for v in rng.integers(0, 2, 50)]
    counts = [[int(c), 3 - int(c)] for c in rng.integers(0, 4, 40)]
    got = _functions_on(empty, seeds, x, y, scores_, a, b, counts, bits_a, bits_b)
    w = stats.wilson_interval(147, 200)
    assert got["w"] == {"low": pytest.approx(100 * w.low), "high": pytest.approx(100 * w.high)}
    m = stats.t_interval(seeds)
    assert got["m"] == {"mean": pytest.approx(m.estimate), "low": pytest.approx(m.low), "high": pytest.approx(m.high),
                        "n": 4}
    p = stats.paired_difference(hits_a, hits_b)
    assert got["p"] == {k: pytest.approx(100 * v) for k, v in zip(("diff", "low", "high"), p[:3], strict=True)}
    assert got["s"] == dict(zip(("rho", "low", "high", "n"), stats.spearman_interval(x, y), strict=True))
    assert got["sh"] == dict(zip(("share", "low", "high"), stats.share_interval(scores_, 3)[:3], strict=True))
    assert got["c"] == pytest.approx(stats.cohen_kappa_se(a, b))
    ratings = [[1] * c1 + [0] * c0 for c0, c1 in counts]
    assert got["f"] == pytest.approx(stats.fleiss_kappa_se(ratings))


def _functions_on(conn, seeds, x, y, scores_, a, b, counts, bits_a, bits_b):
    """The DuckDB functions on these inputs (blobs as parameters), one row."""
    sql = """SELECT wilson_interval(73.5, 200) AS w, mean_interval($seeds) AS m,
                    paired_difference($a_bits, $b_bits, 37) AS p,
                    spearman_interval($x, $y) AS s, share_interval($scores, 3) AS sh, cohen_kappa_se($a, $b) AS c,
                    fleiss_kappa_se($counts) AS f"""
    params = dict(seeds=seeds, a_bits=bits_a, b_bits=bits_b, x=[float(v) for v in x], y=[float(v) for v in y],
                  scores=scores_, a=[float(v) for v in a], b=[float(v) for v in b], counts=counts)
    [row] = conn.execute(sql, params).fetchall()
    return dict(zip([d[0] for d in conn.description], row, strict=True))


@pytest.mark.parametrize("expression,want", [
    ("wilson_interval(NULL, 10)", None),
    ("wilson_interval(50, 0)", {"low": None, "high": None}),
    ("wilson_interval(120, 10)", {"low": None, "high": None}),
    ("mean_interval([2.5])", {"mean": 2.5, "low": None, "high": None, "n": 1}),
    ("mean_interval([NULL, 'nan'::DOUBLE])", {"mean": None, "low": None, "high": None, "n": 0}),
    ("mean_interval(NULL)", None),
    ("paired_difference('\\x01'::BLOB, '\\x01\\x00'::BLOB, 8)", {"diff": None, "low": None, "high": None}),
    ("paired_difference('\\x01'::BLOB, '\\x01'::BLOB, 0)", {"diff": None, "low": None, "high": None}),
    ("paired_difference(NULL, '\\x01'::BLOB, 8)", None),
    ("spearman_interval([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6])", {"rho": None, "low": None, "high": None, "n": 6}),
    ("spearman_interval([1, 2], [1, 2, 3])", {"rho": None, "low": None, "high": None, "n": None}),
    ("share_interval([1, 1, 2], 1)", {"share": 2 / 3, "low": None, "high": None}),
    ("share_interval([], 1)", {"share": None, "low": None, "high": None}),
    ("cohen_kappa_se([1, 1, 1], [1, 1, 1])", None),
    ("cohen_kappa_se([1, 0], [1])", None),
    ("fleiss_kappa_se([[2, 0], [2, 0]])", None),
    ("fleiss_kappa_se([[2, 0], [1, 2]])", None),  # raters per item differ
])
def test_duckdb_functions_answer_null_for_degenerate_input(empty, expression, want):
    got = rows_of(empty, f"SELECT {expression} AS v")[0]["v"]
    assert got == (pytest.approx(want) if isinstance(want, dict) and want.get("share") else want)


# --- canned queries ----------------------------------------------------------------------------------------

KEY = dict(run_id="r", model="m")


def _write_evals(root, rng):
    """none, high (one seed, per-image results), low (one seed, no per-image results) and random:s0..2, on a
    classification dataset (top1, top5, acc:cat) and a video one (R@1, MedR); returns the hit vectors."""
    ablations = [("none", "none", None), ("high", "high", None), ("low", "low", None)]
    ablations += [(f"random:s{s}", "random", s) for s in range(3)]
    n = 45
    hits = {a: rng.random(n) < p for (a, *_), p in zip(ablations, (0.8, 0.55, 0.75, 0.7, 0.65, 0.72), strict=True)}
    evals, correctness = [], []
    for (ablation_id, strategy, seed), h in zip(ablations, hits.values(), strict=True):
        key = dict(ablation_id=ablation_id, strategy=strategy, seed=seed)
        evals += [dict(key, dataset="d", metric="top1", value=100 * h.mean(), n=n),
                  dict(key, dataset="d", metric="acc:cat", value=100 * h[:9].mean(), n=n),
                  dict(key, dataset="v", metric="R@1", value=30.0 + rng.normal(), n=200),
                  dict(key, dataset="v", metric="MedR", value=4.0 + rng.normal(), n=200)]
        if ablation_id != "low":
            correctness.append(dict(key, dataset="d", metric="top1", n=n,
                                    bits=np.packbits(h, bitorder="little").tobytes()))
    write_table(root, "ablations", [dict(ablation_id=a, strategy=s, seed=sd, k=1, heads=["L0.H0"], n_heads=1)
                                    for a, s, sd in ablations], **KEY)
    write_table(root, "evals", evals, **KEY)
    write_table(root, "correctness", correctness, **KEY)
    return evals, hits


def test_strategy_differences_over_seeds_or_images(tmp_path):
    evals, hits = _write_evals(str(tmp_path), np.random.default_rng(11))
    with connect(str(tmp_path)) as c:
        got = {(r["dataset"], r["metric"], r["config"]): r
               for r in rows_of(c, canned_queries()["strategy_differences"])}
    value = {(e["dataset"], e["metric"], e["ablation_id"]): e["value"] for e in evals}
    assert set(got) == {(d, m, cfg) for d, m in (("d", "top1"), ("d", "acc:cat"), ("v", "R@1"), ("v", "MedR"))
                        for cfg in ("high", "low", "random")}
    for (dataset, metric, config), r in got.items():
        base = value[(dataset, metric, "none")]
        if config == "random":
            diffs = [value[(dataset, metric, f"random:s{s}")] - base for s in range(3)]
            mean, low, high, _ = stats.t_interval(diffs)
            assert (r["n_seeds"], r["interval_over"], r["note"], r["ablation_id"]) == (3, "seeds", None, None)
            assert (r["difference"], r["low"], r["high"]) == (pytest.approx(mean), pytest.approx(low),
                                                              pytest.approx(high))
            continue
        assert r["difference"] == pytest.approx(value[(dataset, metric, config)] - base)
        assert (r["n_seeds"], r["ablation_id"]) == (1, config)
        if (metric, config) == ("top1", "high"):
            diff, low, high, _ = stats.paired_difference(hits["high"], hits["none"])
            assert r["difference"] == pytest.approx(100 * diff)
            assert (r["low"], r["high"]) == (pytest.approx(100 * low), pytest.approx(100 * high))
            assert (r["interval_over"], r["note"]) == ("images", None)
        else:
            assert (r["low"], r["high"], r["interval_over"]) == (None, None, None)
            assert r["note"] == ("1 seed and no per-image results (results of an earlier version)" if metric == "top1"
                                 else "1 seed, and per-image results are stored for top1 and top5 only")


def test_accuracies_show_their_wilson_interval(tmp_path):
    evals, _ = _write_evals(str(tmp_path), np.random.default_rng(12))
    with connect(str(tmp_path)) as c:
        got = rows_of(c, canned_queries()["accuracy_drop_vs_random"])
    assert len(got) == 4 * 4
    for r in got:
        if r["metric"] in ("top1", "R@1"):
            want = stats.wilson_interval(round(r["mean"] * r["n"] / 100), r["n"])
            assert (r["low"], r["high"]) == (pytest.approx(100 * want.low), pytest.approx(100 * want.high))
            assert r["low"] <= r["mean"] <= r["high"] and r["note"] is None
        else:
            assert r["low"] is None and r["high"] is None and r["note"]


def test_ccs_at_k_and_kappas_show_their_intervals(tmp_path):
    rng = np.random.default_rng(13)
    values = [int(v) for v in rng.integers(0, 6, 30)] + [None, None]
    ccs = [dict(layer=0, head=h, head_label=f"L0.H{h}", judge="j", ccs=v) for h, v in enumerate(values)]
    ccs += [dict(layer=0, head=h, head_label=f"L0.H{h}", judge="few", ccs=h % 2) for h in range(3)]
    judgments = []
    for h in range(30):
        truth = rng.integers(0, 2, 5)
        for judge in ("a", "b", "c"):
            judgments += [dict(layer=0, head=h, head_label=f"L0.H{h}", judge=judge, variant="paper", span_rank=r,
                               aligned=int(truth[r] if rng.random() < 0.8 else 1 - truth[r])) for r in range(5)]
    write_table(str(tmp_path), "ccs", ccs, **KEY)
    write_table(str(tmp_path), "judgments", judgments, **KEY)
    with connect(str(tmp_path)) as c:
        at_k = rows_of(c, canned_queries()["ccs_at_k"])
        cohen = rows_of(c, canned_queries()["judge_agreement"])
        fleiss = rows_of(c, canned_queries()["fleiss_kappa"])
    for r in at_k:
        if r["judge"] == "j":
            assert (r["ccs_at_k"], r["low"], r["high"]) == stats.share_interval(values, r["k"])[:3]
            assert r["note"] == (None if 0 < r["n_at_k"]
                                 else "every resample has the same share: the interval is a point")
        else:
            assert r["low"] is None and r["note"] == "too few heads (3) for a bootstrap interval"
    votes = {j: [x["aligned"] for x in judgments if x["judge"] == j] for j in "abc"}
    assert len(cohen) == 3
    for r in cohen:
        assert r["kappa_se"] == pytest.approx(stats.cohen_kappa_se(votes[r["judge_a"]], votes[r["judge_b"]]))
    assert {r["variant"] for r in fleiss} == {"paper", "(all)"}
    for r in fleiss:
        assert r["kappa_se"] == pytest.approx(stats.fleiss_kappa_se(list(zip(*votes.values(), strict=True))))
