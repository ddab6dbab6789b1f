"""Intervals and standard errors for the figures ccs-ray reports: pure numpy/scipy math (no Ray, no I/O), and
the DuckDB scalar functions :func:`register` adds to every ``ccs-ray sql`` connection.

Every interval is two-sided at ``confidence`` (default :data:`CONFIDENCE` = 0.95), z = Phi^-1((1 + c) / 2).
Functions return an :class:`Interval` (estimate, low, high, n); a bound is None where there is not enough data
for an interval (never a made-up one).

- :func:`wilson_interval` (Wilson 1927): k successes of n, p = k / n,
  centre = (k + z^2/2) / (n + z^2), half width = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4); proportions 0..1.
- :func:`t_interval` (Student 1908): mean +- t_{(1+c)/2, n-1} * s / sqrt(n), s the sample std (ddof = 1);
  None bounds for n < 2.
- :func:`paired_difference`: p_a - p_b of two 0/1 vectors over the same items, with Newcombe's hybrid score
  interval for paired proportions (Newcombe 1998, Stat. Med. 17:2635, method 10, as published: with the
  corrected phi); :func:`paired_table_difference` takes the 2x2 table itself. From the table (a: both 1, b: a 1
  and b 0, c: a 0 and b 1, d: both 0; Newcombe's e, f, g, h; n items), p_a = (a+b)/n, p_b = (a+c)/n,
  D = p_a - p_b = (b - c)/n, (l_a, u_a), (l_b, u_b) their Wilson intervals, and the corrected phi coefficient
  phi = C / sqrt((a+b)(c+d)(a+c)(b+d)) with C = ad - bc - n/2 where ad - bc > n/2, C = 0 where
  0 <= ad - bc <= n/2 and C = ad - bc where ad - bc < 0 (phi = 0 when a margin is 0):
  low = D - sqrt((p_a - l_a)^2 - 2 phi (p_a - l_a)(u_b - p_b) + (u_b - p_b)^2),
  high = D + sqrt((u_a - p_a)^2 - 2 phi (u_a - p_a)(p_b - l_b) + (p_b - l_b)^2).
  The correction shrinks a positive correlation only (a negative one is kept: it widens the interval), so the
  interval is never narrower than with the plain phi (Newcombe's method 8); it reproduces the paper's Table III.
  Chosen over the Wald interval on per-item differences (D +- z * sd(a_i - b_i) / sqrt(n)), whose coverage falls
  short when few items change (b + c small, the common case for one pruned head) and which shrinks to the point 0
  when none does; the hybrid score interval keeps near-nominal coverage there and stays inside [-1, 1].
- :func:`spearman`: Pearson's correlation of the ranks (average ranks for ties); NaN when a side is constant
  or there are fewer than 2 pairs.
- :func:`bootstrap_interval`: percentile bootstrap (Efron & Tibshirani 1993, ch. 13): ``n_boot`` resamples of
  the items with replacement (the same item indices in every sample array: paired), the statistic of each, and
  its (1-c)/2 and (1+c)/2 quantiles (linear interpolation) over the resamples where it is finite. A fixed
  ``seed`` (:data:`SEED`) makes the interval reproducible. Fewer than :data:`MIN_BOOTSTRAP_N` items: no interval.
  :func:`spearman_interval` (over pairs) and :func:`share_interval` (over items) use it; where every item is, or
  none is, at the value counted, every resample has the same share and the interval is that point.
- :func:`cohen_kappa_se`: the large-sample standard error of Cohen's kappa of Fleiss, Cohen & Everitt (1969,
  Psychol. Bull. 72:323), valid away from kappa = 0 (for intervals): with cell proportions p_ij, margins p_i.
  (rater a) and p_.j (rater b), p_e = sum_i p_i. p_.i,
  Var = [sum_i p_ii (1 - (p_i. + p_.i)(1 - kappa))^2 + (1 - kappa)^2 sum_{i != j} p_ij (p_.i + p_j.)^2
         - (kappa - p_e (1 - kappa))^2] / (n (1 - p_e)^2).
- :func:`fleiss_kappa_se`: the linearised (delta-method) standard error of Fleiss' kappa over items (Gwet 2008,
  Br. J. Math. Stat. Psychol. 61:29, eq. for Fleiss' kappa; no finite-population correction), valid away from
  kappa = 0 (Fleiss, Nee & Landis 1979 give the SE under kappa = 0 only, for a test): N items each rated by r
  raters, r_ik raters put item i in category k, pi_k = mean_i r_ik / r, p_e = sum_k pi_k^2,
  P_i = sum_k r_ik (r_ik - 1) / (r (r - 1)), p_e|i = sum_k pi_k r_ik / r,
  kappa_i* = (P_i - p_e) / (1 - p_e) - 2 (1 - kappa) (p_e|i - p_e) / (1 - p_e),
  Var = sum_i (kappa_i* - kappa)^2 / (N (N - 1)).
  The kappa values come from :mod:`ccs_ray.scores` (:func:`~ccs_ray.scores.cohen_kappa`,
  :func:`~ccs_ray.scores.fleiss_kappa`); both SEs are None where kappa is undefined (p_e = 1) or there are
  fewer than 2 items.

DuckDB functions (:func:`register`; NULL in, NULL out; degenerate input gives NULL fields, never an error):
    wilson_interval(p DOUBLE /*percent*/, n BIGINT) -> STRUCT(low DOUBLE, high DOUBLE)   percent; k = round(p n / 100)
    mean_interval(values DOUBLE[]) -> STRUCT(mean DOUBLE, low DOUBLE, high DOUBLE, n INTEGER)   NULL elements dropped
    paired_difference(bits_a BLOB, bits_b BLOB, n BIGINT) -> STRUCT(diff DOUBLE, low DOUBLE, high DOUBLE)
        percent points, a - b; bits = numpy.packbits(hits, bitorder='little') of n per-item 0/1 hits
    spearman_interval(x DOUBLE[], y DOUBLE[]) -> STRUCT(rho DOUBLE, low DOUBLE, high DOUBLE, n INTEGER)
        pairs with a NULL or NaN dropped
    share_interval(values INTEGER[], k INTEGER) -> STRUCT(share DOUBLE, low DOUBLE, high DOUBLE)
        share of the items (NULL items included, never equal to k) equal to k
    cohen_kappa_se(a DOUBLE[], b DOUBLE[]) -> DOUBLE            pairs with a NULL dropped
    fleiss_kappa_se(counts BIGINT[][]) -> DOUBLE                per item, the raters in each category
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import special
from scipy import stats as sps

from . import scores

CONFIDENCE = 0.95  # every interval's confidence level
N_BOOT = 2000  # bootstrap resamples
SEED = 0  # the bootstrap's random seed: the same data give the same interval
MIN_BOOTSTRAP_N = 5  # fewer items than this: no bootstrap interval (a resample takes a handful of values)
PERCENT = 100.0  # the DuckDB functions' unit for proportions and differences of proportions
PHI_CORRECTION = 0.5  # Newcombe's method-10 phi: a positive ad - bc shrinks by PHI_CORRECTION * n, not below 0


class Interval(NamedTuple):
    """An estimate and its interval; ``low``/``high`` None where there is no interval; ``n`` items."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int


def z_value(confidence: float = CONFIDENCE) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval: Phi^-1((1 + c) / 2)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return float(special.ndtri((1 + confidence) / 2))


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of the proportion ``successes`` / ``n`` (0..1); None bounds (and estimate) for n = 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return Interval(None, None, None, 0)
    z2 = z_value(confidence) ** 2
    centre = (successes + z2 / 2) / (n + z2)
    half = np.sqrt(z2) / (n + z2) * np.sqrt(successes * (n - successes) / n + z2 / 4)
    return Interval(successes / n, max(0.0, float(centre - half)), min(1.0, float(centre + half)), n)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` and its Student-t interval; None bounds for fewer than 2 values (None mean for 0)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, n)
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(hits_a: Sequence[int] | np.ndarray, hits_b: Sequence[int] | np.ndarray,
                      confidence: float = CONFIDENCE) -> Interval:
    """p_a - p_b of two 0/1 vectors over the same items (proportions, -1..1) and Newcombe's hybrid score interval
    for paired proportions (module docstring); None for no items."""
    a_hits, b_hits = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    if a_hits.shape != b_hits.shape or a_hits.ndim != 1:
        raise ValueError(f"hits_a and hits_b must be 1-D over the same items: {a_hits.shape} vs {b_hits.shape}")
    both = int(np.sum(a_hits & b_hits))
    a_only = int(np.sum(a_hits & ~b_hits))
    b_only = int(np.sum(~a_hits & b_hits))
    return paired_table_difference(both, a_only, b_only, len(a_hits) - both - a_only - b_only, confidence)


def paired_table_difference(a: int, b: int, c: int, d: int, confidence: float = CONFIDENCE) -> Interval:
    """p_a - p_b = (b - c) / n of the paired 2x2 table (a: both hit, b: only a, c: only b, d: neither) and
    Newcombe's hybrid score interval with the corrected phi (module docstring); None for no items."""
    if min(a, b, c, d) < 0:
        raise ValueError(f"the table's cells must be >= 0, got {(a, b, c, d)}")
    n = a + b + c + d
    if n == 0:
        return Interval(None, None, None, 0)
    p_a, low_a, high_a, _ = wilson_interval(a + b, n, confidence)
    p_b, low_b, high_b, _ = wilson_interval(a + c, n, confidence)
    assert p_a is not None and low_a is not None and high_a is not None  # n > 0
    assert p_b is not None and low_b is not None and high_b is not None
    margins = float(a + b) * (c + d) * (a + c) * (b + d)
    cross = float(a * d - b * c)
    if cross > 0:
        cross = max(cross - PHI_CORRECTION * n, 0.0)
    phi = cross / np.sqrt(margins) if margins > 0 else 0.0
    diff = p_a - p_b
    below = (p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2
    above = (high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2
    return Interval(diff, float(diff - np.sqrt(max(below, 0.0))), float(diff + np.sqrt(max(above, 0.0))), n)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired ``x`` and ``y`` (average ranks for ties); NaN when a side is
    constant or there are fewer than 2 pairs."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and paired: {xs.shape} vs {ys.shape}")
    return float(_rank_correlation(xs, ys)) if len(xs) >= 2 else float("nan")


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis of ``x``, ``y`` [..., n] -> [...]; NaN where a side is constant."""
    rx, ry = sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    denominator = np.sqrt(np.sum(rx * rx, -1) * np.sum(ry * ry, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, np.sum(rx * ry, -1) / denominator, np.nan)


def bootstrap_interval(statistic: Callable[..., np.ndarray | float], *samples: Sequence | np.ndarray,
                       n_boot: int = N_BOOT, seed: int = SEED, confidence: float = CONFIDENCE) -> Interval:
    """``statistic(*samples)`` and its percentile bootstrap interval over the items (the samples resampled with
    the same indices: paired); None bounds for fewer than :data:`MIN_BOOTSTRAP_N` items or no finite resample.

    ``statistic`` reduces the last axis of its arrays (the items): [..., n] -> [...]; it is called once on the
    samples [n] and once on all resamples [n_boot, n].
    """
    arrays = [np.asarray(s) for s in samples]
    if not arrays or any(len(s) != len(arrays[0]) for s in arrays):
        raise ValueError(f"need one or more samples of the same length, got lengths {[len(s) for s in arrays]}")
    n = len(arrays[0])
    estimate = float(statistic(*arrays)) if n else None
    if estimate is not None and np.isnan(estimate):
        estimate = None
    if n < MIN_BOOTSTRAP_N:
        return Interval(estimate, None, None, n)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    replicates = np.asarray(statistic(*(s[index] for s in arrays)), dtype=np.float64)
    replicates = replicates[np.isfinite(replicates)]
    if not len(replicates):
        return Interval(estimate, None, None, n)
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(low), float(high), n)


def spearman_interval(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = SEED,
                      confidence: float = CONFIDENCE) -> Interval:
    """Spearman's rho of paired ``x``, ``y`` and its percentile bootstrap interval over the pairs (estimate None
    where rho is undefined)."""
    return bootstrap_interval(_rank_correlation, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                              n_boot=n_boot, seed=seed, confidence=confidence)


def share_interval(values: Sequence, k, n_boot: int = N_BOOT, seed: int = SEED,
                   confidence: float = CONFIDENCE) -> Interval:
    """The share (0..1) of ``values`` equal to ``k`` (None values count, as not k) and its percentile bootstrap
    interval over the items."""
    hits = np.array([v is not None and v == k for v in values], dtype=np.float64)
    return bootstrap_interval(lambda h: h.mean(-1), hits, n_boot=n_boot, seed=seed, confidence=confidence)


def cohen_kappa_se(a: Sequence[int | None], b: Sequence[int | None]) -> float | None:
    """Large-sample SE of Cohen's kappa of two raters (Fleiss, Cohen & Everitt 1969) over the items both rated;
    None with fewer than 2 such items or where kappa is undefined (chance agreement 1)."""
    kappa = scores.cohen_kappa(a, b)  # checks the lengths
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    n = len(pairs)
    if kappa is None or n < 2:
        return None
    cats = sorted({v for p in pairs for v in p})
    p = np.zeros((len(cats), len(cats)))
    for x, y in pairs:
        p[cats.index(x), cats.index(y)] += 1.0 / n
    rows, cols = p.sum(1), p.sum(0)  # rater a's and rater b's margins
    p_e = float(rows @ cols)
    if p_e >= 1.0:
        return None
    diagonal = np.sum(np.diag(p) * (1 - (rows + cols) * (1 - kappa)) ** 2)
    weights = (cols[:, None] + rows[None, :]) ** 2  # cell (i, j): (p_.i + p_j.)^2
    off_diagonal = (1 - kappa) ** 2 * np.sum((p * weights)[~np.eye(len(cats), dtype=bool)])
    variance = (diagonal + off_diagonal - (kappa - p_e * (1 - kappa)) ** 2) / (n * (1 - p_e) ** 2)
    return float(np.sqrt(max(variance, 0.0)))


def fleiss_kappa_se(ratings: Sequence[Sequence[int | None]]) -> float | None:
    """Linearised SE of Fleiss' kappa over items (rows, each rated by the same raters; rows with a None dropped,
    as :func:`~ccs_ray.scores.fleiss_kappa` does); None with fewer than 2 items or where kappa is undefined."""
    kappa = scores.fleiss_kappa(ratings)  # checks the raters
    rows = [list(r) for r in ratings if r and all(x is not None for x in r)]
    if kappa is None or len(rows) < 2:
        return None
    cats = sorted({x for r in rows for x in r if x is not None})
    counts = np.array([[r.count(c) for c in cats] for r in rows], dtype=np.float64)  # [N items, K categories]
    n_items, raters = counts.shape[0], len(rows[0])
    pi = counts.sum(0) / (n_items * raters)
    p_e = float(pi @ pi)
    if p_e >= 1.0:
        return None
    agreement = (counts * (counts - 1)).sum(1) / (raters * (raters - 1))  # P_i
    chance = counts @ pi / raters  # p_e|i
    kappa_star = (agreement - p_e) / (1 - p_e) - 2 * (1 - kappa) * (chance - p_e) / (1 - p_e)
    return float(np.sqrt(np.sum((kappa_star - kappa) ** 2) / (n_items * (n_items - 1))))


# --- DuckDB scalar functions ------------------------------------------------------------------------

def _finite(x) -> float | None:
    """``x`` as a float, None for None or NaN (SQL NULL)."""
    return None if x is None or np.isnan(x) else float(x)


def _sql_wilson(p: float, n: int) -> dict:
    if n <= 0 or not 0 <= p <= PERCENT:
        return {"low": None, "high": None}
    _, low, high, _ = wilson_interval(round(p * n / PERCENT), n)
    assert low is not None and high is not None  # n > 0
    return {"low": low * PERCENT, "high": high * PERCENT}


def _sql_mean(values: list) -> dict:
    kept = [v for v in values if _finite(v) is not None]
    mean, low, high, n = t_interval(kept)
    return {"mean": mean, "low": _finite(low), "high": _finite(high), "n": n}


def unpack_hits(bits: bytes, n: int) -> np.ndarray | None:
    """The n 0/1 hits packed in ``bits`` (``numpy.packbits(hits, bitorder='little')``); None when ``bits`` does
    not hold exactly ceil(n / 8) bytes."""
    if n <= 0 or len(bits) != (n + 7) // 8:
        return None
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n, bitorder="little")


def _sql_paired(bits_a: bytes, bits_b: bytes, n: int) -> dict:
    hits_a, hits_b = unpack_hits(bits_a, n), unpack_hits(bits_b, n)
    if hits_a is None or hits_b is None:
        return {"diff": None, "low": None, "high": None}
    diff, low, high, _ = paired_difference(hits_a, hits_b)
    assert diff is not None and low is not None and high is not None  # n > 0
    return {"diff": diff * PERCENT, "low": low * PERCENT, "high": high * PERCENT}


def _sql_spearman(x: list, y: list) -> dict:
    if len(x) != len(y):
        return {"rho": None, "low": None, "high": None, "n": None}
    pairs = [(u, v) for u, v in zip(x, y, strict=True) if _finite(u) is not None and _finite(v) is not None]
    rho, low, high, n = spearman_interval([u for u, _ in pairs], [v for _, v in pairs])
    return {"rho": rho, "low": low, "high": high, "n": n}


def _sql_share(values: list, k: int) -> dict:
    share, low, high, _ = share_interval(values, k)
    return {"share": share, "low": low, "high": high}


def _sql_cohen_se(a: list, b: list) -> float | None:
    return cohen_kappa_se(a, b) if len(a) == len(b) else None


def _sql_fleiss_se(counts: list) -> float | None:
    items = [c for c in counts if c is not None and None not in c]
    if not items or len({sum(c) for c in items}) != 1 or sum(items[0]) < 2 or min(min(c) for c in items) < 0:
        return None
    return fleiss_kappa_se([[j for j, m in enumerate(c) for _ in range(m)] for c in items])


def register(conn) -> None:
    """Add the DuckDB functions of the module docstring to ``conn`` (a ``duckdb.DuckDBPyConnection``)."""
    import duckdb

    def struct(*names: str, n: bool = False) -> object:
        return duckdb.struct_type({**{name: "DOUBLE" for name in names}, **({"n": "INTEGER"} if n else {})})

    doubles, integers = duckdb.list_type("DOUBLE"), duckdb.list_type("INTEGER")
    functions: list[tuple[str, Callable[..., object], list, object]] = [
        ("wilson_interval", _sql_wilson, ["DOUBLE", "BIGINT"], struct("low", "high")),
        ("mean_interval", _sql_mean, [doubles], struct("mean", "low", "high", n=True)),
        ("paired_difference", _sql_paired, ["BLOB", "BLOB", "BIGINT"], struct("diff", "low", "high")),
        ("spearman_interval", _sql_spearman, [doubles, doubles], struct("rho", "low", "high", n=True)),
        ("share_interval", _sql_share, [integers, "INTEGER"], struct("share", "low", "high")),
        ("cohen_kappa_se", _sql_cohen_se, [doubles, doubles], "DOUBLE"),
        ("fleiss_kappa_se", _sql_fleiss_se, [duckdb.list_type(duckdb.list_type("BIGINT"))], "DOUBLE"),
    ]
    for name, function, parameters, returns in functions:  # 'special': the functions may answer NULL
        conn.create_function(name, _null_in_null_out(function), parameters, returns, side_effects=False,
                             null_handling="special")


def _null_in_null_out(function: Callable) -> Callable:
    """``function`` answering None (SQL NULL) when any argument is NULL (same signature: DuckDB checks it)."""
    @functools.wraps(function)
    def wrapped(*args):
        return None if any(a is None for a in args) else function(*args)

    return wrapped
