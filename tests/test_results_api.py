"""``ccs_ray.open(root)``: SQL as DuckDB relations (pandas, polars), the heads of a model, one head's card inline in
Jupyter and as text, the report, and the read-only connection's refusals with the way to a writable one; over the
synthetic results."""

import html
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import ccs_ray
from ccs_ray.analytics import READ_ONLY_HINT, ReadOnlyError
from ccs_ray.reporting import build_card, show_head
from ccs_ray.reporting.cards import HeadError
from ccs_ray.tables import write_table
from synthetic_results import HOSTILE_TEXT, HOSTILE_URI, JUDGES, MODELS, RUN_ID, write_results

LAYERS, N_HEADS = (8, 11), 4
HEAD_COLUMNS = ["head_label", "layer", "head", "ccs", "level", "label"]


def files_under(root) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "results"
    return root, write_results(str(root), layers=LAYERS, n_heads=N_HEADS)


@pytest.fixture
def results(written):
    with ccs_ray.open(str(written[0])) as opened:
        yield opened


def level(ccs: int) -> str:
    return "high" if ccs == 5 else "low" if ccs <= 1 else "medium"


def test_open_loads_neither_torch_nor_ray_and_star_import_keeps_the_builtin_open(written):
    code = ("import sys, ccs_ray\n"
            f"r = ccs_ray.open({str(written[0])!r})\n"
            "print(type(r).__name__, sorted(m for m in ('torch', 'ray', 'open_clip') if m in sys.modules))\n"
            "from ccs_ray import *\n"
            "print(open is __builtins__.open, 'open' in dir(ccs_ray))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["Results []", "True True"]


def test_sql_is_a_relation_with_every_view(results, written):
    rows = written[1]["ccs"]
    rel = results.sql("SELECT model, judge, count(*) AS n FROM ccs GROUP BY ALL ORDER BY ALL")
    expected = sorted({(r["model"], r["judge"]) for r in rows})
    assert rel.columns == ["model", "judge", "n"]
    assert rel.fetchall() == [(m, j, len(LAYERS) * N_HEADS) for m, j in expected]
    assert results.sql("SELECT ccs FROM ccs WHERE model = ? AND head_label = ? AND judge = ?",
                       [MODELS[0], "L8.H1", "combined"]).fetchall() == [
        (r["ccs"],) for r in rows if (r["model"], r["head_label"], r["judge"]) == (MODELS[0], "L8.H1", "combined")]
    assert results.models() == sorted(MODELS)
    assert repr(results) == f"Results({str(written[0])!r}, read-only; models: {', '.join(sorted(MODELS))})"


PER_HEAD = "SELECT head_label, ccs FROM ccs WHERE model = ? AND judge = 'combined' ORDER BY layer, head"


def per_head(written) -> list[tuple]:
    return [(r["head_label"], r["ccs"]) for r in written[1]["ccs"]
            if (r["model"], r["judge"]) == (MODELS[1], "combined")]


def test_sql_to_pandas(results, written):
    frame = results.sql(PER_HEAD, [MODELS[1]]).df()
    assert list(frame.columns) == ["head_label", "ccs"]
    assert [(h, None if c != c else int(c)) for h, c in frame.itertuples(index=False)] == per_head(written)


def test_sql_to_polars(results, written):
    pytest.importorskip("polars")
    assert results.sql(PER_HEAD, [MODELS[1]]).pl().rows() == per_head(written)


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('{csv}')",
    "COPY (SELECT 1 AS x) TO '{out}'",
    "COPY (SELECT 1 AS x) TO 'ccsresults://evals/x.parquet'",
    "SET disabled_filesystems = ''",
])
def test_read_only_refusals_say_how_to_get_a_writable_connection(results, written, tmp_path, statement):
    (csv := tmp_path / "mine.csv").write_text("head_label,note\nL8.H0,curious\n")
    before = files_under(written[0])
    with pytest.raises(ReadOnlyError) as refused:
        results.sql(statement.format(csv=csv, out=tmp_path / "out.csv"))
    message = str(refused.value)
    assert "\n" not in message and message.endswith(READ_ONLY_HINT)
    assert "ccs_ray.open(root, read_only=False)" in message
    assert files_under(written[0]) == before and not (tmp_path / "out.csv").exists()


def test_a_writable_connection_reads_and_writes_other_files(written, tmp_path):
    (csv := tmp_path / "mine.csv").write_text("head_label,note\nL8.H1,curious\n")
    out = tmp_path / "high.csv"
    with ccs_ray.open(str(written[0]), read_only=False) as writable:
        assert "writable" in repr(writable)
        joined = writable.sql(f"SELECT m.note, c.ccs FROM read_csv('{csv}') m JOIN ccs c USING (head_label) "
                              "WHERE c.model = ? AND c.judge = 'combined'", [MODELS[0]]).fetchall()
        writable.sql(f"COPY (SELECT head_label FROM ccs WHERE ccs = 5 ORDER BY ALL) TO '{out}' (HEADER false)")
    ccs = {(r["model"], r["judge"], r["head_label"]): r["ccs"] for r in written[1]["ccs"]}
    assert joined == [("curious", ccs[(MODELS[0], "combined", "L8.H1")])]
    assert out.read_text().split() == sorted(h for (_, _, h), c in ccs.items() if c == 5)


def test_other_sql_errors_list_the_views(results):
    with pytest.raises(ccs_ray.analytics.SqlError, match=r"(?s)nope.*views:\n.*  ccs\(") as e:
        results.sql("SELECT * FROM nope")
    assert not isinstance(e.value, ReadOnlyError)


def test_heads_one_row_per_head_of_the_reports_judge(results, written):
    rel = results.heads(MODELS[0])
    assert rel.columns[:len(HEAD_COLUMNS)] == HEAD_COLUMNS
    assert {"ccs_heldout", "spans", "judge", "run_id", "model"} <= set(rel.columns)
    got = [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]
    mine = [r for r in written[1]["ccs"] if (r["model"], r["judge"]) == (MODELS[0], "combined")]
    assert [g["head_label"] for g in got] == [f"L{l}.H{h}" for l in LAYERS for h in range(N_HEADS)]
    by_head = {r["head_label"]: r for r in mine}
    for g in got:
        w = by_head[g["head_label"]]
        assert (g["ccs"], g["label"], g["judge"], g["run_id"], g["model"]) == (
            w["ccs"], w["label"], "combined", RUN_ID, MODELS[0])
        assert w["ccs"] is None or g["level"] == level(w["ccs"])
    other = results.heads(MODELS[0], judge=JUDGES[0]).fetchall()
    assert [row[3] for row in other] == [r["ccs"] for r in written[1]["ccs"]
                                         if (r["model"], r["judge"]) == (MODELS[0], JUDGES[0])]


def test_heads_of_the_latest_run_unless_told(written, tmp_path):
    root = tmp_path / "results"
    write_results(str(root), layers=LAYERS, n_heads=N_HEADS, models=MODELS[:1])
    write_table(str(root), "ccs", [dict(layer=11, head=0, head_label="L11.H0", judge="combined", ccs=5)],
                "run-20250301", MODELS[0])
    with ccs_ray.open(str(root)) as results:
        assert [row[:6] for row in results.heads(MODELS[0]).fetchall()] == [("L11.H0", 11, 0, 5, "high", None)]
        assert len(results.heads(MODELS[0], run_id=RUN_ID).fetchall()) == len(LAYERS) * N_HEADS
        with pytest.raises(HeadError, match=f"no CCS of {MODELS[0]} in run 'run-1'; runs with CCS: {RUN_ID}, "
                                            "run-20250301"):
            results.heads(MODELS[0], run_id="run-1")


def test_heads_of_an_unknown_model_or_judge_name_the_known_ones(results):
    with pytest.raises(HeadError, match=f"no results for model 'ViT-X/none'; models: {', '.join(sorted(MODELS))}"):
        results.heads("ViT-X/none")
    with pytest.raises(HeadError, match=f"no judge 'oracle' of .*; judges: {', '.join(sorted(['combined', *JUDGES]))}"):
        results.heads(MODELS[0], judge="oracle")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_card_is_the_text_card_and_an_isolated_inline_html_card(results, written, tmp_path):
    root = str(written[0])
    card = results.card(MODELS[0], "L8.H0")
    assert (card.model, card.head, card.run_id) == (MODELS[0], "L8.H0", RUN_ID)
    assert repr(card) == str(card) == card.text == show_head(root, MODELS[0], "L8.H0")
    build_card(root, MODELS[0], "L8.H0", str(tmp_path / "card.html"))  # the page ccs-ray head --open writes
    assert card.page == (tmp_path / "card.html").read_text()
    fragment = card._repr_html_()
    parser = _Tags()
    parser.feed(fragment)
    (tag, attrs), = parser.tags  # one element: the card's styles and markup stay inside its frame
    assert tag == "iframe" and attrs["srcdoc"] == card.page and attrs["sandbox"] == "allow-same-origin"
    assert "<style" not in fragment and "<script" not in fragment and HOSTILE_URI not in fragment
    assert html.escape(HOSTILE_TEXT) in card.page and HOSTILE_TEXT not in card.page  # escaped twice in the fragment
    assert '<article class="card" id="L8.H0">' in card.page


def test_card_of_an_unknown_model_or_head_names_the_known_ones(results):
    with pytest.raises(HeadError, match=f"no results for model 'ViT-X/none'; models: {', '.join(sorted(MODELS))}"):
        results.card("ViT-X/none", "L8.H0")
    with pytest.raises(HeadError, match=f"no head L2.H0 of .*; runs: {RUN_ID}; heads: 8 heads, L8.H0 .. L11.H3"):
        results.card(MODELS[0], "L2.H0")


def test_report_writes_the_report_and_returns_its_path(results, tmp_path):
    out = tmp_path / "report.html"
    assert results.report(str(out)) == str(out)
    page = out.read_text()
    assert page.count('<article class="card"') == len(MODELS) * len(LAYERS) * N_HEADS
    only = tmp_path / "one.html"
    results.report(str(only), heads=["L11.H3"])
    assert only.read_text().count('<article class="card"') == len(MODELS)
