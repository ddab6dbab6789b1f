"""DuckDB analytics over a synthetic results root: views, read-only access, every canned query checked
against the same answer computed in plain Python from the rows written, formats, errors, interactive mode."""

import csv
import io
import itertools
import json
import math
import statistics
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccs_ray import scores, sqlshell
from ccs_ray.analytics import ResultsRootError, SqlError, canned_queries, connect, query
from ccs_ray.reference import reference_tables
from ccs_ray.scores import fleiss_kappa
from ccs_ray.sqlshell import main_sql, run_canned, run_sql
from ccs_ray.tables import REFERENCE_TABLES, SCHEMAS, write_table
from synthetic_results import DATASETS, JUDGES, MODELS, OCCUPATIONS, SEEDS, SWEEP_K, write_results

# the views sql/macros.sql derives from evals and bias, with their columns
DERIVED = {
    "evals_random": ["run_id", "model", "dataset", "metric", "n_seeds", "mean", "std"],
    "bias_random": ["run_id", "model", "dataset", "attribute", "occupation", "combine", "n_seeds", "mean", "std"],
    "bias_totals": ["run_id", "model", "ablation_id", "strategy", "seed", "dataset", "attribute", "combine",
                    "maxskew_sum", "maxskew_mean", "n_occupations"],
    "vs_paper": ["model", "dataset", "metric", "strategy", "theirs", "approx", "source", "run_id", "our_model",
                 "heads_from", "our_strategy", "n_seeds", "ours", "difference", "tolerance", "within_tolerance",
                 "comparable", "caveat", "ours_low", "ours_high"],
    "paper_agreement": ["run_id", "model", "reference_model", "judge", "head_set", "n_ours", "n_published", "n_shared",
                        "jaccard", "precision", "recall", "published_heads", "our_ccs", "mean_our_ccs", "spearman_rho",
                        "heuristic"],
    "judged_spans": SCHEMAS["spans"].names,  # the spans rows of the judged method, every column of spans
    "head_importance": ["run_id", "model", "judge", "layer", "head", "head_label", "dataset", "metric", "mode", "ccs",
                        "level", "label", "value", "baseline", "change", "n"],
    "run_status": ["run_id", "model", "status", "stage", "error"],
    "finished_runs": ["run_id", "model"],
}
# the reference tables: the installed package's data in every root, whatever the root holds
REFERENCE_ROWS = {name: data.num_rows for name, data in reference_tables().items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "synthetic"
    return str(root), write_results(str(root))


@pytest.fixture(scope="module")
def conn(results):
    c = connect(results[0])
    yield c
    c.close()


def rows_of(conn, sql):
    return query(conn, sql).to_pylist()


def canned(conn, name):
    return rows_of(conn, canned_queries()[name])


def files_under(root):
    return sorted(p.relative_to(root) for p in __import__("pathlib").Path(root).rglob("*"))


# --- views ------------------------------------------------------------------------------------------

def test_a_view_per_table_with_the_rows_written(conn, results):
    views = {r["view_name"] for r in rows_of(conn, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert views == set(SCHEMAS) | set(DERIVED)
    for table, rows in results[1].items():
        assert rows_of(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"] == len(rows), table
    for table, n in REFERENCE_ROWS.items():
        assert rows_of(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"] == n > 0, table
    for view, columns in DERIVED.items():
        assert [r["column_name"] for r in rows_of(conn, f"DESCRIBE {view}")] == columns, view
    models = {r["model"] for r in rows_of(conn, "SELECT DISTINCT model FROM spans")}
    assert models == set(MODELS)  # hive partitions are URL-quoted; the model column is the real key


def test_empty_root_has_every_view_empty_with_the_same_typed_columns(tmp_path, conn):
    with connect(str(tmp_path)) as empty:
        for table in SCHEMAS:
            got = [(r["column_name"], r["column_type"]) for r in rows_of(empty, f"DESCRIBE {table}")]
            want = [(r["column_name"], r["column_type"]) for r in rows_of(conn, f"DESCRIBE {table}")]
            assert got == want, table
            assert [c for c, _ in got] == SCHEMAS[table].names
            assert rows_of(empty, f"SELECT count(*) AS n FROM {table}")[0]["n"] == REFERENCE_ROWS.get(table, 0)
        published = REFERENCE_ROWS["paper_results"]
        for view, columns in DERIVED.items():
            assert [r["column_name"] for r in rows_of(empty, f"DESCRIBE {view}")] == columns, view
            n = published if view == "vs_paper" else 0  # every published figure, with no figure of ours
            assert rows_of(empty, f"SELECT count(*) AS n, count(ours) AS ours FROM {view}" if n else
                           f"SELECT count(*) AS n FROM {view}")[0] == ({"n": n, "ours": 0} if n else {"n": 0}), view
        for name, sql in canned_queries().items():
            assert query(empty, sql).num_rows == (published if name == "vs_paper" else 0), name


def test_root_with_only_the_runs_table_reads_every_other_view_empty(tmp_path, conn):
    root = str(tmp_path / "spec")
    write_table(root, "runs", [dict(spec_name="partial", stage="scan", status="running")], "r1", "m/x")
    with connect(root) as partial:
        assert rows_of(partial, "SELECT spec_name, status FROM runs") == [dict(spec_name="partial", status="running")]
        for view in [*SCHEMAS, *DERIVED]:
            got = [(r["column_name"], r["column_type"]) for r in rows_of(partial, f"DESCRIBE {view}")]
            assert got == [(r["column_name"], r["column_type"]) for r in rows_of(conn, f"DESCRIBE {view}")], view
            if view not in ("runs", "run_status", "vs_paper", *REFERENCE_TABLES):
                assert query(partial, f"SELECT * FROM {view}").num_rows == 0, view
        assert rows_of(partial, "SELECT * FROM run_status") == [dict(run_id="r1", model="m/x", status="running",
                                                                     stage="scan", error=None)]
        for sql in canned_queries().values():
            query(partial, sql)  # runs: no missing-file error
    assert json.loads(run_sql("SELECT count(*) AS n FROM runs", root, fmt="json")) == [{"n": 1}]


def test_remote_root_through_fsspec(tmp_path):
    root = "memory://ccs-test-results/spec"
    write_table(root, "ccs", [dict(layer=11, head=5, head_label="L11.H5", judge="combined", ccs=5)], "r1", "m/x")
    write_table(root, "ccs", [dict(layer=11, head=6, head_label="L11.H6", judge="combined", ccs=1)], "r1", "m/x")
    write_table(root, "ccs", [dict(layer=11, head=7, head_label="L11.H7", judge="combined", ccs=None)], "r1", "m/x")
    out = json.loads(run_canned("high_low_heads", root, fmt="json"))
    assert {(r["level"], tuple(r["heads"])) for r in out} == {("high", ("L11.H5",)), ("low", ("L11.H6",)),
                                                                ("unscored", ("L11.H7",))}  # never medium


def test_runs_that_did_not_finish_keep_their_rows_and_are_marked(tmp_path):
    """A finished run, a failed one and rows of a run with no runs row (its record lost): the table views show every
    run's rows; run_status says how each ended; finished_runs joins keep the finished run's rows only."""
    root, model = str(tmp_path / "spec"), "m/x"
    ended = {"done": ("report", None), "failed": ("prune", "OSError: [Errno 28] No space left on device")}
    for run_id, status in (("r-done", "done"), ("r-failed", "failed")):
        stage, error = ended[status]
        write_table(root, "runs", [dict(spec_name="s", stage=stage, status=status, error=error,
                                        started_at=datetime(2026, 1, 1, tzinfo=UTC))], run_id, model)
    for run_id in ("r-done", "r-failed", "r-lost"):
        write_table(root, "ccs", [dict(layer=11, head=h, head_label=f"L11.H{h}", judge="combined", ccs=h)
                                  for h in range(2)], run_id, model)
        write_table(root, "shards", [dict(shard_id="s0", status="done")], run_id, model)
    with connect(root) as c:
        for table in ("ccs", "shards"):
            got = Counter(r["run_id"] for r in rows_of(c, f"SELECT run_id FROM {table}"))
            assert got == ({"r-done": 2, "r-failed": 2, "r-lost": 2} if table == "ccs"
                           else {"r-done": 1, "r-failed": 1, "r-lost": 1}), table
        assert rows_of(c, "SELECT run_id, status FROM runs ORDER BY run_id") == [
            dict(run_id="r-done", status="done"), dict(run_id="r-failed", status="failed")]
        assert rows_of(c, "SELECT * FROM run_status") == [
            dict(run_id="r-done", model=model, status="done", stage="report", error=None),
            dict(run_id="r-failed", model=model, status="failed", stage="prune", error=ended["failed"][1]),
            dict(run_id="r-lost", model=model, status="unrecorded", stage=None, error=None)]
        assert rows_of(c, "SELECT * FROM finished_runs") == [dict(run_id="r-done", model=model)]
        finished = rows_of(c, "SELECT run_id, head_label FROM ccs JOIN finished_runs USING (run_id, model) ORDER BY 2")
        assert finished == [dict(run_id="r-done", head_label="L11.H0"), dict(run_id="r-done", head_label="L11.H1")]
        marked = rows_of(c, "SELECT status, count(*) AS n FROM ccs JOIN run_status USING (run_id, model) "
                            "GROUP BY status ORDER BY status")
        assert marked == [dict(status="done", n=2), dict(status="failed", n=2), dict(status="unrecorded", n=2)]


# --- read-only --------------------------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1 AS x) TO '{root}/evals/x.parquet'",
    "COPY (SELECT 1 AS x) TO 'ccsresults://evals/x.parquet'",
    "COPY (SELECT 1 AS x) TO '{tmp}/elsewhere.csv'",
    "ATTACH '{root}/db.duckdb'",
    "CREATE TABLE t AS SELECT * FROM read_csv('/etc/passwd')",
    "SET disabled_filesystems = ''",
    "SET lock_configuration = false",
    "INSTALL httpfs",
])
def test_results_are_read_only(results, tmp_path, statement):
    root = results[0]
    before = files_under(root)
    with connect(root) as c:
        with pytest.raises(SqlError):
            query(c, statement.format(root=root, tmp=tmp_path))
        assert query(c, "SELECT count(*) AS n FROM ccs").to_pylist()[0]["n"] == len(results[1]["ccs"])
    assert files_under(root) == before
    assert not (tmp_path / "elsewhere.csv").exists()


def test_the_read_only_filesystem_refuses_every_write(results):
    """Under DuckDB's own refusals, the ``ccsresults://`` filesystem of a read-only connection refuses writes too."""
    from ccs_ray.analytics import ReadOnlyResults, resolve_root

    root = results[0]
    before = files_under(root)
    fs, path = resolve_root(root)
    results_fs = ReadOnlyResults(path=path, fs=fs)
    (part,) = results_fs.glob("runs/**/*.parquet")[:1]
    assert results_fs.open(part, "rb").read(4) == b"PAR1"  # reading works
    writes = [lambda: results_fs.open("x.csv", "wb"), lambda: results_fs._open("x.csv", "ab"),
              lambda: results_fs.mkdir("new"), lambda: results_fs.makedirs("new/deeper"), lambda: results_fs.rm(part),
              lambda: results_fs.mv(part, "moved.parquet"), lambda: results_fs.pipe_file("x.csv", b"1"),
              lambda: results_fs.touch("x.csv")]
    for write in writes:
        with pytest.raises(PermissionError, match="the results root is read-only: cannot "):
            write()
    assert files_under(root) == before


def test_in_memory_scratch_tables_still_work(conn):
    query(conn, "CREATE OR REPLACE TEMP TABLE mine AS SELECT model, count(*) AS n FROM ccs GROUP BY model")
    assert sum(r["n"] for r in rows_of(conn, "SELECT n FROM mine")) == len(rows_of(conn, "SELECT * FROM ccs"))


# --- derived views against numpy -------------------------------------------------------------------

def _groups(rows, keys, value, where=lambda r: True):
    """key tuple -> numpy array of ``value`` over ``rows`` that meet ``where``, grouped by ``keys``."""
    out = defaultdict(list)
    for r in rows:
        if where(r):
            out[tuple(r[k] for k in keys)].append(r[value])
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def _check_random_view(got, want, keys):
    assert sorted(tuple(r[k] for k in keys) for r in got) == sorted(want)
    for r in got:
        values = want[tuple(r[k] for k in keys)]
        assert r["n_seeds"] == len(values) == SEEDS
        assert r["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert r["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)


def test_evals_random_is_mean_and_sample_std_over_seeds(conn, results):
    keys = ("run_id", "model", "dataset", "metric")
    want = _groups(results[1]["evals"], keys, "value", lambda r: r["strategy"] == "random")
    assert len(want) == len(MODELS) * len(DATASETS)
    _check_random_view(rows_of(conn, "SELECT * FROM evals_random"), want, keys)


def test_bias_random_is_mean_and_sample_std_over_seeds(conn, results):
    keys = ("run_id", "model", "dataset", "attribute", "occupation")
    want = _groups(results[1]["bias"], keys, "maxskew", lambda r: r["strategy"] == "random")
    assert len(want) == len(MODELS) * 2 * len(OCCUPATIONS)
    _check_random_view(rows_of(conn, "SELECT * FROM bias_random"), want, keys)


def test_bias_totals_sum_and_mean_over_occupations(conn, results):
    keys = ("run_id", "model", "ablation_id", "strategy", "seed", "dataset", "attribute")
    want = _groups(results[1]["bias"], keys, "maxskew")
    got = rows_of(conn, "SELECT * FROM bias_totals")
    assert sorted(map(str, (tuple(r[k] for k in keys) for r in got))) == sorted(map(str, want))
    for r in got:
        values = want[tuple(r[k] for k in keys)]
        assert r["n_occupations"] == len(values) == len(OCCUPATIONS)
        assert r["maxskew_sum"] == pytest.approx(np.sum(values), rel=1e-12)  # the paper's total
        assert r["maxskew_mean"] == pytest.approx(np.mean(values), rel=1e-12)


def test_summary_rows_written_by_0_1_0_are_left_out(tmp_path):
    """ccs-ray 0.1.0 wrote summary rows into evals and bias (random:mean/std, __sum__/__mean__): the views
    leave them out, so the derived views are the same as over the per-configuration rows alone."""
    old = Path(__file__).parent / "fixtures" / "results-0.1.0"
    raw = pa.concat_tables([pq.read_table(f, partitioning=None) for f in sorted((old / "bias").rglob("*.parquet"))])
    raw = raw.to_pylist()
    assert {"__sum__", "__mean__"} <= {r["occupation"] for r in raw}
    per_occupation = [r for r in raw if r["occupation"] not in ("__sum__", "__mean__")]
    want = _groups(per_occupation, ("ablation_id", "attribute"), "maxskew")
    with connect(str(old)) as c:
        assert rows_of(c, "SELECT count(*) AS n FROM bias")[0]["n"] == len(per_occupation)
        got = {(r["ablation_id"], r["attribute"]): r for r in rows_of(c, "SELECT * FROM bias_totals")}
    assert got.keys() == want.keys()
    assert all(got[k]["maxskew_sum"] == pytest.approx(np.sum(v)) and got[k]["n_occupations"] == len(v) == 4
               for k, v in want.items())
    # random seeds beside the rows 0.1.0 added for them
    key = dict(run_id="r", model="m")
    seeds = [dict(ablation_id=f"random:s{s}", strategy="random", seed=s, dataset="d", metric="top1", value=v, n=1)
             for s, v in enumerate((40.0, 42.0, 44.0))]
    legacy = [dict(seeds[0], ablation_id=a, seed=None, value=v)
              for a, v in (("random:mean", 42.0), ("random:std", 2.0))]
    ablation = [{k: r[k] for k in ("ablation_id", "strategy", "seed", "dataset")} for r in seeds]
    bias = [dict(a, attribute="race", occupation="doctor", k=4, maxskew=r["value"] / 40, max_group="g")
            for a, r in zip(ablation, seeds, strict=True)]
    bias += [dict(ablation[0], attribute="race", occupation=o, k=4, maxskew=1.0, max_group=None)
             for o in ("__sum__", "__mean__")]
    write_table(str(tmp_path), "evals", seeds + legacy, **key)
    write_table(str(tmp_path), "bias", bias, **key)
    with connect(str(tmp_path)) as c:
        evals_random = rows_of(c, "SELECT n_seeds, mean, std FROM evals_random")
        totals = rows_of(c, "SELECT ablation_id, maxskew_sum, n_occupations FROM bias_totals ORDER BY ALL")
    assert evals_random == [dict(n_seeds=3, mean=42.0, std=2.0)]
    assert totals == [dict(ablation_id=f"random:s{s}", maxskew_sum=v / 40, n_occupations=1)
                      for s, v in enumerate((40.0, 42.0, 44.0))]


# --- canned queries against plain Python ------------------------------------------------------------

def test_every_canned_query_runs_and_says_what_it_answers(conn):
    queries = canned_queries()
    assert {"ccs_at_k", "high_low_heads", "accuracy_drop_vs_random", "concept_effects", "bias_vs_accuracy",
            "judge_agreement", "fleiss_kappa", "span_stability", "cost_per_model"} <= set(queries)
    for name, sql in queries.items():
        assert sql.lstrip().startswith("--"), name
        assert query(conn, sql).num_rows > 0, name


def test_ccs_at_k(conn, results):
    counts = Counter((r["model"], r["judge"], r["ccs"]) for r in results[1]["ccs"])
    totals = Counter((r["model"], r["judge"]) for r in results[1]["ccs"])
    got = canned(conn, "ccs_at_k")
    assert len(got) == len(totals) * 6
    for r in got:
        assert r["n_at_k"] == counts[(r["model"], r["judge"], r["k"])]
        assert r["ccs_at_k"] == pytest.approx(r["n_at_k"] / totals[(r["model"], r["judge"])])
    for key in totals:
        assert sum(r["ccs_at_k"] for r in got if (r["model"], r["judge"]) == key) == pytest.approx(1)
    assert all(r["unscored"] == 0 and r["n_unscored"] == 0 for r in got)


def test_ccs_at_k_counts_unscored_heads(tmp_path):
    """The denominator is every analysed head; heads without a score are the separate fraction unscored."""
    values = [5, 5, 3, None, None, 0, 1, 5, 2, None]
    rows = [dict(layer=11, head=h, head_label=f"L11.H{h}", judge="j", ccs=v) for h, v in enumerate(values)]
    write_table(str(tmp_path), "ccs", rows, "r1", "m")
    with connect(str(tmp_path)) as c:
        got = canned(c, "ccs_at_k")
    assert [r["k"] for r in got] == list(range(6)) and {r["n_heads"] for r in got} == {10}
    assert [r["ccs_at_k"] for r in got] == [pytest.approx(values.count(k) / 10) for k in range(6)]
    assert [r["unscored"] for r in got] == [pytest.approx(0.3)] * 6 and {r["n_unscored"] for r in got} == {3}
    assert sum(r["ccs_at_k"] for r in got) + got[0]["unscored"] == pytest.approx(1)
    at_k = scores.ccs_at_k(values)  # the judge stage's summary: the same figures
    assert [at_k[k] for k in range(6)] == [r["ccs_at_k"] for r in got] and at_k["unscored"] == got[0]["unscored"]


def test_high_low_heads(conn, results):
    want = defaultdict(list)
    for r in results[1]["ccs"]:
        level = "high" if r["ccs"] == 5 else "low" if r["ccs"] <= 1 else "medium"
        want[(r["model"], r["judge"], level)].append((r["layer"], r["head"], r["head_label"]))
    got = {(r["model"], r["judge"], r["level"]): r["heads"] for r in canned(conn, "high_low_heads")}
    assert got == {k: [name for *_, name in sorted(v)] for k, v in want.items()}


def _config(ablation):
    """The configuration an ablation's rows pool into (seeds apart): as ablation_config names it."""
    if ablation["strategy"].startswith("sweep"):
        return f"{ablation['strategy']}:k={ablation['k']}"
    return "random" if ablation["strategy"] == "random" else ablation["ablation_id"]


def _per_config(results, table):
    ablation = {(a["model"], a["ablation_id"]): a for a in results[1]["ablations"]}
    return [dict(r, config=_config(ablation[(r["model"], r["ablation_id"])])) for r in results[1][table]]


def test_accuracy_drop_vs_random(conn, results):
    values = defaultdict(list)
    for r in _per_config(results, "evals"):
        values[(r["model"], r["dataset"], r["metric"], r["config"])].append(r["value"])
    got = canned(conn, "accuracy_drop_vs_random")
    assert len(got) == len(values)
    for r in got:
        vals = values[(r["model"], r["dataset"], r["metric"], r["config"])]
        base = values[(r["model"], r["dataset"], r["metric"], "none")][0]
        rnd = values[(r["model"], r["dataset"], r["metric"], "random")]
        assert r["n_seeds"] == len(vals) and r["mean"] == pytest.approx(statistics.mean(vals))
        assert r["std"] == (pytest.approx(statistics.stdev(vals)) if len(vals) > 1 else None)
        assert r["drop"] == pytest.approx(base - statistics.mean(vals))
        assert r["random_mean"] == pytest.approx(np.mean(rnd)) and r["random_std"] == pytest.approx(np.std(rnd, ddof=1))
        assert r["drop_vs_random"] == pytest.approx(statistics.mean(rnd) - statistics.mean(vals))
    sweep = {f"{s}:k={k}" for s in ("sweep", "sweep-low", "sweep-random") for k in range(1, SWEEP_K + 1)}
    assert {r["config"] for r in got} == {"none", "high", "low", "random", "equal:high", "equal:low",
                                          "concept:location", "concept:animals", "sweep:k=0", *sweep}


def test_concept_effects(conn, results):
    evals = _per_config(results, "evals")
    base = {(r["model"], r["dataset"], r["metric"]): r["value"] for r in evals if r["config"] == "none"}
    drop = {(r["model"], r["dataset"], r["metric"], r["config"].split(":")[1]):
            base[(r["model"], r["dataset"], r["metric"])] - r["value"]
            for r in evals if r["config"].startswith("concept:")}
    got = canned(conn, "concept_effects")
    assert len(got) == len(drop)
    for r in got:
        key = (r["model"], r["dataset"], r["metric"])
        same = [d for (m, ds, me, _), d in drop.items() if (m, ds, me) == key]
        assert r["drop"] == pytest.approx(drop[key + (r["concept"],)])
        assert r["excess_drop"] == pytest.approx(r["drop"] - statistics.mean(same))
    top = max(got, key=lambda r: r["excess_drop"])  # the synthetic location heads matter for cifar100
    assert (top["concept"], top["dataset"]) == ("location", "cifar100")


def test_bias_vs_accuracy(conn, results):
    skew = defaultdict(lambda: defaultdict(list))
    for r in _per_config(results, "bias"):
        skew[(r["model"], r["config"], r["attribute"])][r["seed"]].append(r["maxskew"])
    acc = defaultdict(list)
    for r in _per_config(results, "evals"):
        if r["metric"] == "top1":
            acc[(r["model"], r["config"])].append(r["value"])
    got = canned(conn, "bias_vs_accuracy")
    assert len(got) == len(skew)
    for r in got:
        seeds = skew[(r["model"], r["config"], r["attribute"])]
        base = skew[(r["model"], "none", r["attribute"])][None]
        summed = statistics.mean(sum(v) for v in seeds.values())
        assert r["n_seeds"] == len(seeds)
        assert r["maxskew_sum"] == pytest.approx(summed)
        assert r["maxskew_mean"] == pytest.approx(statistics.mean(statistics.mean(v) for v in seeds.values()))
        assert r["delta_maxskew_sum"] == pytest.approx(summed - sum(base))
        mean_acc = statistics.mean(acc[(r["model"], r["config"])])
        assert r["accuracy"] == pytest.approx(mean_acc)
        assert r["delta_accuracy"] == pytest.approx(mean_acc - statistics.mean(acc[(r["model"], "none")]))


def test_views_and_queries_on_a_hand_computed_case(tmp_path):
    """3 random seeds at 40/42/44 give mean 42 and std 2; a metric with one seed has no std; 2 occupations at
    0.5 and 1.5 sum to 2 (mean 1). The tables hold only these per-configuration rows."""
    root, key = str(tmp_path), dict(run_id="r", model="m")
    ablations = [dict(ablation_id="none", strategy="none", seed=None, k=0, heads=[], n_heads=0)]
    ablations += [dict(ablation_id=f"random:s{s}", strategy="random", seed=s, k=2, heads=["L0.H0", "L0.H1"],
                       n_heads=2) for s in range(3)]
    evals, bias = [], []
    for a, value in zip(ablations, (50.0, 40.0, 42.0, 44.0), strict=True):
        keys = {k: a[k] for k in ("ablation_id", "strategy", "seed")}
        evals.append(dict(keys, dataset="d", metric="top1", value=value, n=10))
        if a["seed"] == 0:
            evals.append(dict(keys, dataset="d", metric="top5", value=90.0, n=10))
        bias += [dict(keys, dataset="f", attribute="race", occupation=o, k=4, maxskew=v + (a["seed"] or 0),
                      max_group="g") for o, v in (("doctor", 0.5), ("nurse", 1.5))]
    write_table(root, "ablations", ablations, **key)
    write_table(root, "evals", evals, **key)
    write_table(root, "bias", bias, **key)
    with connect(root) as c:
        evals_random = {r["metric"]: r for r in rows_of(c, "SELECT * FROM evals_random")}
        bias_random = {r["occupation"]: r for r in rows_of(c, "SELECT * FROM bias_random")}
        totals = {r["ablation_id"]: r for r in rows_of(c, "SELECT * FROM bias_totals")}
        drop = {r["config"]: r for r in canned(c, "accuracy_drop_vs_random") if r["metric"] == "top1"}
        skew = {r["config"]: r for r in canned(c, "bias_vs_accuracy")}
    assert (evals_random["top1"]["n_seeds"], evals_random["top1"]["mean"], evals_random["top1"]["std"]) == (3, 42, 2)
    assert (evals_random["top5"]["n_seeds"], evals_random["top5"]["mean"], evals_random["top5"]["std"]) == (1, 90, None)
    assert bias_random["doctor"]["mean"] == pytest.approx(1.5) and bias_random["nurse"]["std"] == pytest.approx(1)
    assert set(totals) == {a["ablation_id"] for a in ablations}
    assert (totals["none"]["maxskew_sum"], totals["none"]["maxskew_mean"], totals["none"]["n_occupations"]) == (2, 1, 2)
    assert (totals["random:s2"]["maxskew_sum"], totals["random:s2"]["seed"]) == (6, 2)
    seeds = [40.0, 42.0, 44.0]
    assert set(drop) == {"none", "random"} and drop["random"]["n_seeds"] == 3
    assert drop["random"]["mean"] == drop["none"]["random_mean"] == pytest.approx(np.mean(seeds)) == 42
    assert drop["random"]["std"] == drop["none"]["random_std"] == pytest.approx(np.std(seeds, ddof=1)) == 2
    assert skew["random"]["n_seeds"] == 3 and skew["random"]["maxskew_sum"] == pytest.approx(np.mean([2, 4, 6]))
    assert skew["random"]["maxskew_mean"] == pytest.approx(2.0) and skew["none"]["maxskew_sum"] == pytest.approx(2.0)
    assert skew["random"]["delta_maxskew_sum"] == pytest.approx(2.0)
    assert skew["random"]["accuracy"] == pytest.approx(42) and skew["random"]["delta_accuracy"] == pytest.approx(-8)


def _kappa(a, b):
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (po - pe) / (1 - pe)


def test_judge_agreement_is_cohens_kappa(conn, results):
    votes = defaultdict(dict)
    for r in results[1]["judgments"]:
        if r["aligned"] is not None:
            votes[(r["model"], r["head_label"], r["span_rank"])][r["judge"]] = r["aligned"]
    got = canned(conn, "judge_agreement")
    assert len(got) == len(MODELS) * 3
    for r in got:
        both = [(v[r["judge_a"]], v[r["judge_b"]]) for (m, *_), v in votes.items()
                if m == r["model"] and r["judge_a"] in v and r["judge_b"] in v]
        a, b = zip(*both, strict=True)
        assert r["n_spans"] == len(both)
        assert r["kappa"] == pytest.approx(_kappa(a, b))
    assert {(r["judge_a"], r["judge_b"]) for r in got} == set(itertools.combinations(sorted(JUDGES), 2))
    one = rows_of(conn, "SELECT kappa(0.9, 0.5) AS k, kappa(1, 1) AS undefined")[0]
    assert one["k"] == pytest.approx(0.8) and one["undefined"] is None


def _fleiss_by_query(rows, out):
    """Check fleiss_kappa's rows ``out`` against ccs_ray.scores.fleiss_kappa over judgment rows ``rows``."""
    judges = defaultdict(set)
    items = defaultdict(dict)
    for r in rows:
        if r["judge"] != "combined":
            judges[r["model"]].add(r["judge"])
            items[(r["model"], r["variant"], r["head_label"], r["span_rank"])][r["judge"]] = r["aligned"]
    for r in out:
        raters = sorted(judges[r["model"]])
        ratings = [[votes.get(j) for j in raters] for (m, v, *_), votes in items.items()
                   if m == r["model"] and r["variant"] in (v, "(all)")]
        complete = [x for x in ratings if None not in x]
        assert (r["n_judges"], r["n_spans"]) == (len(raters), len(complete))
        assert r["kappa"] == pytest.approx(fleiss_kappa(ratings)), (r["model"], r["variant"])


def test_fleiss_kappa_is_scores_fleiss(conn, results, tmp_path):
    got = canned(conn, "fleiss_kappa")
    assert {(r["model"], r["variant"]) for r in got} == {(m, v) for m in MODELS for v in ("paper", "(all)")}
    _fleiss_by_query(results[1]["judgments"], got)
    # two variants, four judges, missing answers and a majority-vote row that is no judge
    rng = np.random.default_rng(0)
    rows = []
    for variant in ("paper", "heldout"):
        for h in range(6):
            truth = rng.integers(0, 2, 5)
            for judge in ("a", "b", "c", "d", "combined"):
                for rank in range(5):
                    vote = int(truth[rank] if rng.random() < 0.8 else 1 - truth[rank])
                    rows.append(dict(layer=0, head=h, head_label=f"L0.H{h}", judge=judge, variant=variant,
                                     span_rank=rank, aligned=None if rng.random() < 0.05 else vote))
    write_table(str(tmp_path), "judgments", rows, "r", "m")
    with connect(str(tmp_path)) as c:
        got = canned(c, "fleiss_kappa")
    assert [r["variant"] for r in got] == ["heldout", "paper", "(all)"]
    _fleiss_by_query([dict(r, model="m") for r in rows], got)


def test_span_stability(conn, results):
    texts = defaultdict(list)
    for r in sorted(results[1]["spans"], key=lambda r: r["rank"]):
        texts[(r["model"], r["head_label"], r["subset"])].append(r["text"])
    got = canned(conn, "span_stability")
    assert len(got) == len(MODELS) * 48
    for r in got:
        a, b = texts[(r["model"], r["head_label"], "fold0")], texts[(r["model"], r["head_label"], "fold1")]
        assert r["n_shared"] == len(set(a) & set(b))
        assert r["jaccard"] == pytest.approx(len(set(a) & set(b)) / len(set(a) | set(b)))
        assert r["same_top"] == (a[0] == b[0])


def test_cost_per_model(conn, results):
    got = {(r["model"], r["judge"]): r for r in canned(conn, "cost_per_model")}
    for model in MODELS:
        for judge in (*JUDGES, "(all)"):
            calls = [c for c in results[1]["judge_calls"] if c["model"] == model and judge in (c["judge"], "(all)")]
            live = [c["latency_s"] for c in calls if c["via"] == "sent"]
            r = got[(model, judge)]
            assert r["requests"] == sum(c["final"] for c in calls) and r["calls"] == len(live)
            assert r["cached"] == sum(c["via"] == "hit" for c in calls) and r["merged"] == 0
            assert r["retries"] == sum(c["via"] == "sent" and c["attempt"] > 0 for c in calls) > 0
            assert r["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls))
            assert r["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls)
            assert r["mean_latency_s"] == pytest.approx(statistics.mean(live))
            assert r["p95_latency_s"] == pytest.approx(statistics.quantiles(live, n=20, method="inclusive")[-1])


def test_heldout_consistency(conn, results):
    for r in canned(conn, "heldout_consistency"):
        rows = [c for c in results[1]["ccs"] if (c["model"], c["judge"]) == (r["model"], r["judge"])]
        assert r["mean_difference"] == pytest.approx(statistics.mean(c["ccs"] - c["ccs_heldout"] for c in rows))
        assert r["correlation"] == pytest.approx(statistics.correlation([c["ccs"] for c in rows],
                                                                        [c["ccs_heldout"] for c in rows]))


# --- formats, errors, CLI entry points --------------------------------------------------------------

SQL = "SELECT model, judge, count(*) AS n, avg(ccs) AS mean FROM ccs GROUP BY ALL ORDER BY ALL"


def test_formats_agree(results):
    root = results[0]
    want = duckdb.sql(
        f"SELECT model, judge, count(*) AS n, avg(ccs) AS mean FROM read_parquet('{root}/ccs/**/*.parquet') "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    as_csv = list(csv.DictReader(io.StringIO(run_sql(SQL, root, "csv"))))
    as_json = json.loads(run_sql(SQL, root, "json"))
    as_parquet = pq.read_table(io.BytesIO(run_sql(SQL, root, "parquet"))).to_pylist()
    for got in (as_json, as_parquet, as_csv):
        assert [(r["model"], r["judge"], int(r["n"])) for r in got] == [w[:3] for w in want]
        assert all(math.isclose(float(r["mean"]), w[3], rel_tol=1e-5) for r, w in zip(got, want, strict=True))
    table = run_sql(SQL, root, "table").splitlines()
    assert table[0].split() == ["model", "judge", "n", "mean"] and table[-1] == f"({len(want)} rows)"
    with pytest.raises(ValueError, match="formats: table, csv, json, parquet"):
        run_sql(SQL, root, "xml")


def test_query_error_names_duckdb_message_and_views(results):
    with pytest.raises(SqlError) as err:
        run_sql("SELECT no_such_column FROM ccs", results[0])
    msg = str(err.value)
    assert "no_such_column" in msg and "Binder Error" in msg
    assert all(f"  {t}(" in msg for t in SCHEMAS) and "ccs(run_id, model, layer, head" in msg
    with pytest.raises(SqlError, match="(?s)no canned query 'nope'.*ccs_at_k"):
        run_canned("nope", results[0])


def test_results_root_resolution(tmp_path):
    with pytest.raises(ResultsRootError, match="not found"):
        connect(str(tmp_path / "missing"))
    write_table(str(tmp_path / "spec_a"), "ccs", [dict(judge="j", ccs=3)], "r", "m")
    with connect(str(tmp_path)) as c:  # one spec under the root: it is picked
        assert rows_of(c, "SELECT count(*) AS n FROM ccs")[0]["n"] == 1
    write_table(str(tmp_path / "spec_b"), "ccs", [dict(judge="j", ccs=3)], "r", "m")
    with pytest.raises(ResultsRootError, match=r"several specs \(spec_a, spec_b\).*--results .*spec_a"):
        connect(str(tmp_path))


def test_main_sql(results, tmp_path, capsys):
    root = results[0]
    assert main_sql(SQL, root, "csv", None, None) == 0
    assert capsys.readouterr().out == run_sql(SQL, root, "csv")
    out = tmp_path / "ccs.parquet"
    assert main_sql(None, root, "parquet", str(out), "ccs_at_k") == 0
    assert pq.read_table(out).num_rows == len(MODELS) * (len(JUDGES) + 1) * 6
    assert main_sql("SELEC 1", root, "table", None, None) == 2
    assert "Parser Error" in capsys.readouterr().err
    assert main_sql("SELECT 1", root, "table", None, "ccs_at_k") == 2
    assert main_sql("SELECT 1", str(tmp_path / "missing"), "table", None, None) == 2


def test_interactive(results):
    stdin = io.StringIO(".views\nSELECT count(*) AS n\n  FROM ccs;\nSELECT oops FROM ccs;\n.run cost_per_model\n"
                        ".format csv\nSELECT 7 AS seven;\n.bogus\n.quit\nSELECT 'never' AS x;\n")
    stdout = io.StringIO()
    assert sqlshell.interactive(results[0], stdin, stdout) == 0
    text = stdout.getvalue()
    assert "  spans(run_id, model, layer" in text
    assert f"{len(results[1]['ccs'])}\n(1 row)" in text
    assert "Error: Binder Error" in text and "oops" in text
    assert "(all)" in text and "seven\n7\n" in text
    assert "unknown command '.bogus'" in text and "never" not in text


def test_baseline_and_accuracy_macros_name_what_the_writers_write(conn):
    import torch

    from ccs_ray.ablate import STRATEGIES, prune_strategies
    from ccs_ray.evals.zeroshot import accuracy_metrics

    baseline = prune_strategies([dict(head_label="L0.H0", judge="combined", ccs=3)], [])[0].strategy
    metrics = list(accuracy_metrics(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 0]), ["a", "b"]))
    names = [baseline, *STRATEGIES, "baseline", "original"]
    got = rows_of(conn, f"SELECT s, is_baseline(s) AS b FROM unnest({names}) t(s)")
    assert [r["s"] for r in got if r["b"]] == [baseline] == ["none"]
    got = rows_of(conn, f"SELECT m, is_accuracy(m) AS a FROM unnest({metrics + ['accuracy', 'acc1']}) t(m)")
    assert [r["m"] for r in got if r["a"]] == ["top1"] and "top1" in metrics


def test_interactive_honours_format(results, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 7 AS seven, 'x' AS y;\n"))
    assert main_sql(None, results[0], "csv", None, None) == 0
    assert capsys.readouterr().out == "seven,y\n7,x\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 7 AS seven;\n.format table\nSELECT 8 AS eight;\n"))
    assert main_sql(None, results[0], "json", None, None) == 0
    out = capsys.readouterr().out
    assert out.startswith('[\n {\n  "seven": 7\n }\n]\n') and "eight\n-----\n8\n(1 row)" in out
    assert main_sql(None, results[0], "parquet", None, None) == 2
    assert "interactive mode prints table, csv, json" in capsys.readouterr().err


def test_a_results_file_read_from_two_threads_keeps_each_threads_position(tmp_path):
    """DuckDB may seek and read one handle from several threads: each thread reads at its own position."""
    from ccs_ray.analytics import ResultsFileSystem

    data = bytes(range(256)) * 4
    (tmp_path / "part.parquet").write_bytes(data)
    fs = ResultsFileSystem(path=str(tmp_path), fs=fsspec.filesystem("file"))
    got, a_sought, b_done = {}, threading.Event(), threading.Event()
    with fs.open("part.parquet", "rb") as f:
        def a():
            f.seek(100)
            a_sought.set()
            b_done.wait(10)  # the other thread seeks and reads in between
            got["a"] = f.read(10)

        def b():
            a_sought.wait(10)
            f.seek(0)
            got["b"] = f.read(10)
            b_done.set()

        threads = [threading.Thread(target=t) for t in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert f.seek(-4, 2) == len(data) - 4 and f.read() == data[-4:]
    assert got == {"a": data[100:110], "b": data[:10]}


def test_node_throughput_is_images_over_each_nodes_busy_time(tmp_path):
    from datetime import timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows, expect = [], {}
    for node, shards in (("a", [(0, 4.0, 100), (5, 5.0, 100), (9, 2.0, 50)]), ("b", [(3, 10.0, 100)])):
        for i, (end, seconds, n) in enumerate(shards):
            rows.append(dict(shard_id=f"{node}{i}", source="x", fingerprint="f", fold=0, n_images=n, n_errors=0,
                             status="done", node=node, worker="w", seconds=seconds,
                             finished_at=t0 + timedelta(seconds=end)))
        busy = max(e for e, _, _ in shards) - min(e - s for e, s, _ in shards)
        expect[node] = (len(shards), sum(n for *_, n in shards), busy)
    rows.append(dict(shard_id="p", source="x", fingerprint="f", fold=0, status="planned"))  # not done: not counted
    write_table(str(tmp_path), "shards", rows, "r1", "m")
    got = rows_of(connect(str(tmp_path)), canned_queries()["node_throughput"])
    total = sum(n for _, n, _ in expect.values())
    assert [r["node"] for r in got] == ["a", "b"]
    for r in got:
        shards, images, busy = expect[r["node"]]
        assert (r["shards"], r["images"], r["busy_s"]) == (shards, images, busy)
        assert r["images_per_s"] == pytest.approx(images / busy, abs=0.005)
        assert r["image_share_pct"] == pytest.approx(100 * images / total, abs=0.05)


def test_main_sql_empty_canned_name_without_query_is_bad_use(results, capsys):
    # `ccs-ray sql --query ""`: no SQL to run (not None handed to DuckDB as a query)
    assert main_sql(None, results[0], "table", None, "") == 2
    assert "give a QUERY or --query NAME" in capsys.readouterr().err
