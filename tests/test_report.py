"""The HTML report: contents against the rows written, escaping, offline, the head explorer and cards, the size
bound, and a real headless Chromium that loads it without console messages, paints the plots and thumbnails,
follows its anchors, sorts its head tables, keeps injected markup inert, prints it to PDF with every span, and
leaves screenshots in test-artifacts/."""

import fcntl
import html as html_lib
import json
import re
import shutil
import statistics
import subprocess
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import ray
from markupsafe import escape

from ccs_ray.analytics import canned_queries, canned_rows, connect
from ccs_ray.reporting import build_report
from ccs_ray.reporting.plots import PALETTE, ccs_color
from ccs_ray.sqlshell import run_canned
from synthetic_results import (
    EMPTY_CONCEPT,
    HOSTILE_ERROR,
    HOSTILE_LABEL,
    HOSTILE_SHARD,
    HOSTILE_TEXT,
    HOSTILE_URI,
    JUDGES,
    K_IMAGES,
    M_SPANS,
    MODELS,
    write_failed_run,
    write_results,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
THUMB = '<span class="thumb '  # a thumbnail in the page
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def esc(text: str) -> str:
    """``text`` as the report's templates escape it."""
    return str(escape(text))


HOSTILE_DIR = "<img src=x onerror=\"document.title='pwned'\">"  # a folder name on the path of the results


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report") / HOSTILE_DIR
    rows = write_results(str(tmp / "results"))
    rows["runs"].append(write_failed_run(str(tmp / "results")))
    out = build_report(str(tmp / "results"), str(tmp / "report.html"))
    return Path(out), Path(out).read_text(), rows


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """Path of Debian's chromium, installed with apt-get when missing (needs root and the package mirror; one
    install at a time when the tests run in several processes)."""
    with open(tmp_path_factory.getbasetemp().parent / "chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _installed_chromium()


def _installed_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            if done.returncode != 0:
                pytest.skip(f"chromium is missing and `{' '.join(cmd)}` failed: {done.stderr[-500:]}")
        path = shutil.which("chromium")
    return path


def run_chromium(chromium, tmp_path, url, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def open_in_chromium(chromium, tmp_path, page: Path, screenshot: str, size: tuple[int, int]):
    """Load ``page`` in headless Chromium (no console message allowed), then screenshot it at ``size`` into
    test-artifacts/``screenshot``. Returns (the DOM as Chromium built it, hex color -> pixels of that color)."""
    from PIL import Image

    dom = run_chromium(chromium, tmp_path, page.as_uri(), "--dump-dom")
    assert dom.returncode == 0 and console_messages(dom.stderr) == [], dom.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    done = run_chromium(chromium, tmp_path, page.as_uri(), f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}",
                        "--hide-scrollbars")
    assert done.returncode == 0 and console_messages(done.stderr) == []
    image = Image.open(shot).convert("RGB")
    assert image.size == size
    pixels = np.asarray(image).reshape(-1, 3)
    return dom.stdout, lambda hex_color: int((pixels == [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]).all(1).sum())


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


def figures(html: str, kind: str) -> list[str]:
    """The report's <figure class="kind"> elements (plots of one kind), as HTML."""
    return re.findall(rf'<figure class="{kind}">.*?</figure>', html, flags=re.S)


def explorer_rows(html: str, model: str) -> dict[str, str]:
    """head -> the head explorer row of ``model`` (HTML)."""
    section = next(s for s in html.split('<section class="model"')[1:] if f"<h3>{esc(model)} " in s)
    table = section.split('<table class="heads">')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td data-sort.*?</tr>", table, flags=re.S)
    return {re.search(r'">(L\d+\.H\d+)</a>', r).group(1): r for r in rows}


def cards(html: str) -> dict[str, str]:
    """card id (unescaped) -> the card's HTML."""
    return {html_lib.unescape(m.group(1)): m.group(0)
            for m in re.finditer(r'<article class="card" id="([^"]*)">.*?</article>', html, flags=re.S)}


PROBE = """<script>
window.addEventListener("load", function () {
  var d = document.documentElement, images = Array.prototype.slice.call(document.querySelectorAll(".thumb"));
  var ids = new Set(Array.prototype.map.call(document.querySelectorAll("[id]"), function (e) { return e.id; }));
  var links = Array.prototype.map.call(document.querySelectorAll("a[href]"),
                                       function (a) { return a.getAttribute("href"); });
  d.setAttribute("data-images", images.length);
  d.setAttribute("data-unpainted", images.filter(function (i) {
    return getComputedStyle(i).backgroundImage.indexOf('url("data:image/webp;base64,') !== 0 || !i.offsetWidth;
  }).length);
  d.setAttribute("data-links", links.length);
  d.setAttribute("data-dead-links", links.filter(function (h) {
    return !h.startsWith("#") || !ids.has(decodeURIComponent(h.slice(1)));
  }).length);
  d.setAttribute("data-overflow", d.scrollWidth - d.clientWidth);
  d.setAttribute("data-target", (document.querySelector(":target") || {id: ""}).id);
  d.setAttribute("data-scrolled", window.scrollY);
  d.setAttribute("data-title", document.title);
  d.setAttribute("data-onerror", document.querySelectorAll("[onerror]").length);
  d.setAttribute("data-scripts", document.scripts.length);
  var table = document.querySelector("table.heads"), th = table.tHead.rows[0].cells[1];
  function ccs() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[1].textContent; }).join(",");
  }
  th.click();
  d.setAttribute("data-sorted-up", ccs());
  th.click();
  d.setAttribute("data-sorted-down", ccs());
  var box = table.previousElementSibling;
  box.value = "L9.H5";
  box.dispatchEvent(new Event("input"));
  d.setAttribute("data-filtered", table.querySelectorAll("tbody tr:not(.filtered-out)").length);
});
</script>"""


def pdf_text(pdf: Path) -> str:
    """The text of a PDF without whitespace, its ligatures (ﬁ, ﬂ) spelled out, for finding texts in it."""
    from pypdf import PdfReader

    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", "".join(p.extract_text() for p in PdfReader(pdf).pages)))


def print_to_pdf(chromium, tmp_path, page: Path, name: str) -> str:
    """Print ``page`` with headless Chromium to test-artifacts/``name``; returns :func:`pdf_text` of it."""
    ARTIFACTS.mkdir(exist_ok=True)
    pdf = ARTIFACTS / name
    pdf.unlink(missing_ok=True)
    done = run_chromium(chromium, tmp_path, page.as_uri(), f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert done.returncode == 0 and pdf.stat().st_size > 0, done.stderr[-2000:]
    return pdf_text(pdf)


def probe(chromium, tmp_path, page: Path, fragment: str, width: int = 800) -> dict[str, str]:
    """Load a copy of ``page`` with :data:`PROBE` (a test-only script) at ``#fragment`` in a ``width`` px window
    and return what it measured after the load (data-* attributes of the <html> element); no console message."""
    copy = tmp_path / f"probe-{page.name}"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = run_chromium(chromium, tmp_path, f"{copy.as_uri()}#{fragment}", "--dump-dom", f"--window-size={width},2000")
    assert done.returncode == 0 and console_messages(done.stderr) == [], done.stderr[-2000:]
    head = re.search(r"<html([^>]*)>", done.stdout).group(1)
    return {k: html_lib.unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', head)}


# --- contents ---------------------------------------------------------------------------------------

def test_report_is_self_contained_and_escaped(report):
    _, html, _ = report
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == html.lower().count("<script") == 1  # the head tables' sorting, and nothing else
    assert "innerHTML" not in scripts[0] and "pwned" not in scripts[0] and "alert" not in scripts[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE_TEXT not in html
    assert "tags&lt;b&gt;&amp;" in html and HOSTILE_LABEL not in html
    for hostile in (HOSTILE_URI, HOSTILE_SHARD, HOSTILE_ERROR, HOSTILE_DIR):
        assert hostile not in html and esc(hostile) in html, hostile
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)""", html)
    assert refs and all(r.startswith(("#", "data:image/webp;base64,", "data:,")) for r in refs)  # works offline
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)


def test_heatmap_cells_show_ccs_label_and_spans(report):
    _, html, rows = report
    ns = "{http://www.w3.org/2000/svg}"
    heatmaps = {svg.find(f"{ns}title").text: svg for svg in svgs(html)}  # every SVG is well-formed XML
    for model in MODELS:
        svg = heatmaps[f"CCS per head of {model} (combined)"]
        combined = {r["head_label"]: r for r in rows["ccs"] if r["model"] == model and r["judge"] == "combined"}
        links = svg.findall(f"{ns}a")
        assert len(links) == len(combined) == 48  # every cell links to its head's card
        for link in links:
            cell = link.find(f"{ns}g[@class='cell']")
            title = cell.find(f"{ns}title").text
            want = combined[title.split(" ")[0]]
            assert unquote(link.get("href")) == f"#{model}.{want['head_label']}"
            spans = [s["text"] for s in sorted(rows["spans"], key=lambda s: s["rank"])
                     if (s["model"], s["head_label"], s["subset"]) == (model, want["head_label"], "all")][:5]
            assert f"CCS {want['ccs']}/5" in title and f"label: {want['label']}" in title
            assert title.endswith("\n".join(f"{i}. {t}" for i, t in enumerate(spans, 1)))
            assert cell.find(f"{ns}rect").get("fill") == ccs_color(want["ccs"])
    first = heatmaps[f"CCS per head of {MODELS[0]} (combined)"].find(f".//{ns}g[@class='cell']/{ns}title").text
    assert first.startswith("L8.H0 ") and f"1. {HOSTILE_TEXT}" in first  # escaped in the file, intact as text


def test_accuracy_bars_with_error_bars_and_ccs_at_k(report):
    _, html, rows = report
    for model in MODELS:
        random_ids = {a["ablation_id"] for a in rows["ablations"] if a["model"] == model and a["strategy"] == "random"}
        for dataset in ("cifar10", "cifar100"):
            vals = [e["value"] for e in rows["evals"]
                    if e["model"] == model and e["dataset"] == dataset and e["ablation_id"] in random_ids]
            tip = f"random · {dataset}: {statistics.mean(vals):.4g} ± {statistics.stdev(vals):.3g}"
            assert tip in html, tip
    accuracy = figures(html, "accuracy")
    assert len(accuracy) == len(MODELS)
    for figure in accuracy:  # error bars for random only (5 seeds): 3 lines x 2 datasets; the others say 1 seed
        assert figure.count('class="errorbar"') == 3 * 2 and "msrvtt" not in figure and "sweep" not in figure
        assert "± sample std over the seeds of random (5 seeds)" in figure
        assert ("1 seed (no error bar): none, high, low, concept:animals, concept:location, equal:high, equal:low"
                in figure)
    for model in MODELS:
        combined = [r["ccs"] for r in rows["ccs"] if r["model"] == model and r["judge"] == "combined"]
        for k, n in Counter(combined).items():
            assert f"{model} · {k}: {n / len(combined):.4g}" in html
        assert f"{model} · unscored: 0<" in html  # the synthetic judges scored every head


def test_sweep_video_maxskew_and_ccs_drop_plots(report):
    """Every result has its plot: the sweep's high, low and random curves per accuracy dataset, video R@1/5/10
    and MedR, MaxSkew@k per strategy, CCS against accuracy drop per head group; a strategy that selected no
    head is listed with its reason."""
    _, html, rows = report
    sweeps = figures(html, "sweep")
    assert len(sweeps) == 2 * len(MODELS)  # cifar10, cifar100
    model = MODELS[0]
    evals = {(e["model"], e["ablation_id"], e["dataset"], e["metric"]): e["value"] for e in rows["evals"]}
    curve = next(f for f in sweeps if f"Sweep on cifar100: accuracy of {model} " in f)
    for k in (1, 2, 3):
        high, low = (evals[(model, f"sweep:k{k}", "cifar100", "top1")],
                     evals[(model, f"sweep-low:k{k}", "cifar100", "top1")])
        rand = [evals[(model, f"sweep-random:k{k}:s{s}", "cifar100", "top1")] for s in (0, 1)]
        assert f"high · {k}: {high:.4g}<" in curve and f"low · {k}: {low:.4g}<" in curve
        assert f"random · {k}: {statistics.mean(rand):.4g} ± {statistics.stdev(rand):.3g}<" in curve
    start = evals[(model, "sweep:k0", "cifar100", "top1")]
    assert all(f"{name} · 0: {start:.4g}<" in curve for name in ("high", "low", "random"))
    assert curve.count('class="errorbar"') == 3 * 3 and "mean ± sample std over 2 seeds" in curve
    video = [f for f in figures(html, "video") if model in f]
    assert len(video) == 2 and all(m in video[0] for m in (">R@1<", ">R@5<", ">R@10<")) and "Median rank" in video[1]
    medr = statistics.mean(evals[(model, f"random:s{s}", "msrvtt", "MedR")] for s in range(5))
    assert f"random · msrvtt: {medr:.4g} ±" in video[1]
    skew = next(f for f in figures(html, "maxskew") if model in f)
    high = sum(b["maxskew"] for b in rows["bias"]
               if (b["model"], b["ablation_id"], b["attribute"]) == (model, "high", "race"))
    assert f"high · fairface / race: {high:.4g}<" in skew and skew.count('class="errorbar"') == 3 * 2
    drop = next(f for f in figures(html, "ccs-drop") if model in f)
    groups = {a["ablation_id"] for a in rows["ablations"] if a["model"] == model and a["n_heads"] > 0}
    configs = {re.sub(r":s\d+$", "", g).replace(":k", ":k=") if g.startswith(("random", "sweep")) else g
               for g in groups}
    configs = {"random" if c.startswith("random") else c for c in configs}
    assert drop.count('class="point"') == len(configs)
    ccs = {c["head_label"]: c["ccs"] for c in rows["ccs"] if c["model"] == model and c["judge"] == "combined"}
    high_heads = next(a["heads"] for a in rows["ablations"] if (a["model"], a["ablation_id"]) == (model, "high"))
    high_drop = statistics.mean(evals[(model, "none", d, "top1")] - evals[(model, "high", d, "top1")]
                                for d in ("cifar10", "cifar100"))
    assert f"high: {len(high_heads)} heads, mean CCS {statistics.mean(ccs[h] for h in high_heads):.2f}, " \
           f"accuracy drop {high_drop:+.3g} pts" in drop
    assert f"<li>{EMPTY_CONCEPT[0]}: {esc(EMPTY_CONCEPT[1])}</li>" in html


def test_tradeoff_and_tables(report):
    path, html, rows = report
    pruned = {(b["model"], "random" if b["strategy"] == "random" else b["ablation_id"], b["attribute"])
              for b in rows["bias"] if b["strategy"] != "none" and not b["strategy"].startswith("sweep")}
    assert sum(f.count('class="point"') for f in figures(html, "tradeoff")) == len(pruned)  # random seeds: one point
    assert "Judge agreement" in html and html.count("claude-sonnet") >= 2 * len(MODELS)
    fleiss = json.loads(run_canned("fleiss_kappa", str(path.parent / "results"), "json"))
    assert len(fleiss) == 2 * len(MODELS)
    section = html.split('id="agreement"')[1].split('id="stability"')[0]
    for r in fleiss:
        assert (f"<td class=\"token\">{r['variant']}</td><td class=\"num\">3</td>"
                f"<td class=\"num\">{r['n_spans']}</td>") in section
        assert f"<td class=\"num\">{r['kappa']:.3g}</td><td class=\"num\">{r['kappa_se']:.3g}</td></tr>" in section
    total = sum(c["cost_usd"] for c in rows["judge_calls"] if c["model"] == MODELS[0])
    assert f"<td class=\"num\">{total:.3g}</td>" in html


def test_tradeoff_points_are_occupation_sums_over_seeds(report):
    """Each trade-off point, computed with numpy from the per-seed rows: Δ MaxSkew (sum) = the sum over
    occupations (the paper's total), averaged over seeds, minus the unpruned model's; Δ accuracy = mean top-1
    over seeds and accuracy datasets minus the unpruned model's."""
    _, html, rows = report
    tradeoff = "".join(figures(html, "tradeoff"))

    def config(r):
        return "random" if r["strategy"] == "random" else r["ablation_id"]

    per_ablation, acc = defaultdict(list), defaultdict(list)
    for b in rows["bias"]:
        per_ablation[(b["model"], config(b), b["dataset"], b["attribute"], b["ablation_id"])].append(b["maxskew"])
    sums = defaultdict(list)
    for (model, cfg, dataset, attribute, _), values in per_ablation.items():
        sums[(model, cfg, dataset, attribute)].append(np.sum(values))
    for e in rows["evals"]:
        if e["metric"] == "top1":
            acc[(e["model"], config(e))].append(e["value"])
    tips = []
    for (model, cfg, dataset, attribute), totals in sums.items():
        if cfg != "none" and not cfg.startswith("sweep"):
            d_skew = np.mean(totals) - np.mean(sums[(model, "none", dataset, attribute)])
            d_acc = np.mean(acc[(model, cfg)]) - np.mean(acc[(model, "none")])
            tips.append(f"{cfg} on {dataset} / {attribute}: Δ accuracy {d_acc:+.3g} pts, Δ MaxSkew (sum) {d_skew:+.3g}")
    assert len(sums[(MODELS[0], "random", "fairface", "race")]) == 5  # the random point averages 5 seeds
    assert tips and all(tip in tradeoff for tip in tips), [t for t in tips if t not in tradeoff]
    assert tradeoff.count('class="point"') == len(tips)


def test_head_explorer_lists_every_head_with_labels_ccs_spans_and_verdicts(report):
    """One row per head of every model, in visible text (not only in title attributes): the label of every judge,
    CCS and held-out CCS, the level, the 5 spans with each judge's verdict as a mark (✓ ✗ ?: combined once,
    then each judge), the variance its spans explain, their stability, and its level group's Δ accuracy."""
    _, html, rows = report
    marks = {1: "✓", 0: "✗", None: "?"}
    for model in MODELS:
        got = explorer_rows(html, model)
        ccs = {(c["head_label"], c["judge"]): c for c in rows["ccs"] if c["model"] == model}
        verdicts = {(j["head_label"], j["span_rank"], j["judge"]): j for j in rows["judgments"] if j["model"] == model}
        heads = sorted({h for h, _ in ccs}, key=lambda h: tuple(map(int, h[1:].split(".H"))))
        top1 = {(e["ablation_id"], e["dataset"]): e["value"] for e in rows["evals"]
                if e["model"] == model and e["metric"] == "top1"}
        delta = {g: statistics.mean(top1[(g, d)] - top1[("none", d)] for d in ("cifar10", "cifar100"))
                 for g in ("high", "low")}
        sums = defaultdict(float)
        for b in rows["bias"]:
            if b["model"] == model:
                sums[(b["ablation_id"], b["attribute"])] += b["maxskew"]
        skew = {g: statistics.mean(sums[(g, a)] - sums[("none", a)] for a in ("race", "gender"))
                for g in ("high", "low")}
        assert list(got) == heads and len(heads) == 48
        for head in heads:
            row, mine = got[head], ccs[(head, "combined")]
            visible = re.sub(r'\s(?:title|data-sort)="[^"]*"', "", row)
            scores = f'<td class="num">{mine["ccs"]}</td><td class="num">{mine["ccs_heldout"]}</td>'
            assert f'{scores}<td>{mine["level"]}</td>' in visible
            for judge in ("combined", *JUDGES):
                assert f'<span class="judge">{judge}:</span> {esc(ccs[(head, judge)]["label"])}</li>' in visible
            for rank in range(1, M_SPANS + 1):
                text = verdicts[(head, rank, JUDGES[0])]["text"]
                mark = " ".join(marks[verdicts[(head, rank, j)]["aligned"]] for j in ("combined", *sorted(JUDGES)))
                assert f'<span class="span">{esc(text)}</span> <span class="marks">{mark}</span>' in visible
            fidelity = f'{100 * mine["label_variance"]:.1f} % · p{mine["label_percentile"]:.0f}</td>'
            assert fidelity in visible, head  # the label's share of the head's variance and its pool percentile
            group = delta.get(mine["level"])  # high and low heads: what pruning their level's group changes
            cells = (group, skew.get(mine["level"]))
            want = [f'<td class="num">{"–" if v is None else format(v, ".3g")}</td>' for v in cells]
            assert visible.endswith(f"{want[0]}\n        {want[1]}</tr>"), head


def test_one_card_per_head_high_and_low_first_with_spans_verdicts_and_thumbnails(report):
    _, html, rows = report
    got = cards(html)
    assert len(got) == 48 * len(MODELS)
    for model in MODELS:
        mine = [(i, c) for i, c in got.items() if i.startswith(f"{model}.")]
        ccs = {c["head_label"]: c for c in rows["ccs"] if c["model"] == model and c["judge"] == "combined"}
        levels = [ccs[i.removeprefix(f"{model}.")]["level"] for i, _ in mine]
        n_high, n_low = levels.count("high"), levels.count("low")
        assert levels == ["high"] * n_high + ["low"] * n_low + ["medium"] * (48 - n_high - n_low)
        for card_id, card in mine:
            head = card_id.removeprefix(f"{model}.")
            header = card.split('<table class="spans">')[1].split("</thead>")[0]
            assert header.count("<th>combined</th>") == 1 and all(f"<th>{j}</th>" in header for j in JUDGES)
            # every span's top and bottom images, and the overall top images
            assert card.count(THUMB) == 2 * M_SPANS * K_IMAGES + K_IMAGES
            span_rows = card.split('<table class="spans">')[1].split("</table>")[0].split("<tr>")[2:]
            assert len(span_rows) == M_SPANS
            for span_row in span_rows:
                assert span_row.count(THUMB) == 2 * K_IMAGES
                assert re.search(r">(aligned|not aligned|no answer)</span>", span_row)  # verdicts in words
            images = [r for r in rows["top_images"] if (r["model"], r["head_label"]) == (model, head)]
            for image in images:
                assert f'title="{esc(image["image_uri"])} · score' in card
    card = got[f"{MODELS[0]}.L8.H0"]
    assert esc(HOSTILE_URI) in card and "&lt;script&gt;alert(1)&lt;/script&gt;</td>" in card
    assert esc(HOSTILE_SHARD) in got[f"{MODELS[0]}.L8.H1"]  # a shard not in the URI is named too


def test_banners_random_init_heuristic_and_failed_runs(report, tmp_path):
    _, html, rows = report
    failed = re.search(r'<p class="failure" id="failed-1">(.*?)</p>', html, flags=re.S).group(1)
    assert f"Run run-20250102 of {MODELS[0]} failed</b> in stage prune: {esc(HOSTILE_ERROR)}" in failed
    assert 'id="random-init"' not in html
    root = str(tmp_path / "results")
    write_results(root, models=("ccs-tiny/none",), layers=(3,), n_heads=4, heuristic=("ccs-tiny/none",))
    tiny = Path(build_report(root, str(tmp_path / "r.html"))).read_text()
    notice = re.search(r'<p class="warning" id="random-init">(.*?)</p>', tiny, flags=re.S).group(1)
    assert "ccs-tiny/none (run run-20250101)" in notice and "test the pipeline and are not findings" in notice
    notice = re.search(r'<p class="warning" id="heuristic">(.*?)</p>', tiny, flags=re.S).group(1)
    assert "offline heuristic judge" in notice and "test the pipeline and are not findings" in notice
    assert 'class="failure"' not in tiny


def test_heuristic_scores_are_flagged(tmp_path):
    flagged, plain = MODELS[1], MODELS[0]
    rows = write_results(str(tmp_path / "results"), heuristic=(flagged,))
    details = json.loads(run_canned("head_details", str(tmp_path / "results"), "json"))
    assert len(details) == len(rows["ccs"]) and all(r["heuristic"] == (r["model"] == flagged) for r in details)
    html = Path(build_report(str(tmp_path / "results"), str(tmp_path / "r.html"))).read_text()
    notice = re.search(r'<p class="warning" id="heuristic">(.*?)</p>', html, flags=re.S).group(1)
    assert "offline heuristic judge" in notice and flagged in notice and plain not in notice
    titles = {svg.find("{http://www.w3.org/2000/svg}title").text for svg in svgs(html)}
    assert {f"CCS per head of {flagged} (combined, offline heuristic judge)",
            f"CCS per head of {plain} (combined)"} <= titles
    write_results(str(tmp_path / "plain"))
    plain_html = Path(build_report(str(tmp_path / "plain"), str(tmp_path / "r2.html"))).read_text()
    assert "offline heuristic judge" not in plain_html and "warning" not in plain_html.split("</style>")[1]


def test_failed_judge_reports_every_head_unscored_with_the_reason(tmp_path):
    """Every judge request failed: the counts line names 48 unscored heads (none high, medium or low) and the
    error; the explorer's level and every card say unscored, with the reason."""
    root, error = tmp_path / "results", "ConnectionError: judge endpoint refused the connection"
    write_results(str(root), models=MODELS[:1], judge_error=error)
    html = Path(build_report(str(root), str(tmp_path / "r.html"))).read_text()
    counts = re.search(r'<span class="levels">(.*?)</span>(.*?)\. Hover', html, flags=re.S)
    assert counts.group(1) == "0 high, 0 medium, 0 low, 48 unscored heads"
    assert esc(error) in counts.group(2) and all(j in counts.group(2) for j in JUDGES)
    rows = explorer_rows(html, MODELS[0])
    assert len(rows) == 48 and all(f'title="no CCS: {esc(error)}' in r and ">unscored</td>" in r for r in rows.values())
    got = cards(html)
    assert len(got) == 48
    assert all('(<span class="level">unscored</span>)' in c and f"No CCS: {esc(error)}" in c for c in got.values())


def test_report_without_top_images_says_so(tmp_path):
    root = tmp_path / "results"
    write_results(str(root), layers=(11,), n_heads=3)
    shutil.rmtree(root / "top_images")  # a run without the explain stage
    html = Path(build_report(str(root), str(tmp_path / "r.html"))).read_text()
    assert THUMB not in html and html.count("No top images: the explain stage has not run.") == len(MODELS)
    assert len(cards(html)) == 3 * len(MODELS)
    assert html.count("no top images (the explain stage has not run)") == 3 * len(MODELS)


def test_report_of_an_empty_root(tmp_path):
    (tmp_path / "results").mkdir()
    html = Path(build_report(str(tmp_path / "results"), str(tmp_path / "r.html"))).read_text()
    assert "no heads scored yet" in html and "no judge calls recorded" in html and "<svg" not in html


def test_report_size_bound_6_models_64_heads_5_spans_8_images(tmp_path):
    """6 models x 64 heads x 5 spans x 8 top and 8 bottom images (plus 8 overall per head) with photo-like
    thumbnails: under 25 MB."""
    models = tuple(f"ViT-B-{i}/laion2b_s34b_b88k" for i in range(6))
    write_results(str(tmp_path / "results"), models=models, layers=(8, 9, 10, 11), n_heads=16)
    page = Path(build_report(str(tmp_path / "results"), str(tmp_path / "report.html")))
    html = page.read_text()
    assert html.count(THUMB) == 6 * 64 * (2 * 5 + 1) * 8 and len(cards(html)) == 6 * 64
    print(f"report of 6 models x 64 heads x 5 spans x 8 images: {page.stat().st_size / 1e6:.2f} MB")
    assert page.stat().st_size < 25e6


# --- a real browser ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_console_check_catches_errors(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert any("Uncaught ReferenceError" in m for m in console_messages(run_chromium(chromium, tmp_path,
                                                                                      bad.as_uri(),
                                                                                      "--dump-dom").stderr))


@pytest.mark.slow
def test_report_in_headless_chromium(report, chromium, tmp_path):
    path, html, rows = report
    dom, count = open_in_chromium(chromium, tmp_path, path, "report.png", (1280, 4200))
    n_svg = html.count("<svg")
    # per model: heatmap, 8 plots, CCS against single-head importance per accuracy dataset (2) and its panel side
    # by side; the 2 pruning effects side by side; CCS@K
    assert dom.count("<svg") == n_svg == (1 + 8 + 2 + 1) * len(MODELS) + 2 + 1
    assert html.count("Spearman&#39;s rho = ") == 2 * len(MODELS)
    assert dom.count('class="cell"') == 48 * len(MODELS)
    assert all(count(c) > 200 for c in PALETTE[:4])  # the bars of none/high/low/random are painted
    first = sorted(MODELS)[0]  # the first model's heatmap is on the screenshot: a cell of every score painted
    for score in {r["ccs"] for r in rows["ccs"] if r["model"] == first and r["judge"] == "combined"}:
        assert count(ccs_color(score)) > 200, score


@pytest.mark.slow
def test_thumbnails_anchors_sorting_and_injected_markup_in_chromium(report, chromium, tmp_path):
    """After the load, in an 800 px window (about a printed page), with no console message: every thumbnail
    painted (its WebP data URI as background, a width > 0), every link leads to an element of the page, the page is
    no wider than the window, the anchor of a head's card scrolls to it, the head table sorts by CCS both ways and
    filters, and the markup injected through span texts, labels, image URIs, shard and folder names and a failure
    reason created no element and ran nothing."""
    path, html, rows = report
    anchor = f"{MODELS[0]}.L9.H3"
    got = probe(chromium, tmp_path, path, anchor)
    assert int(got["images"]) == len(rows["top_images"])
    assert got["unpainted"] == "0"
    assert int(got["links"]) > 2 * 48 * len(MODELS) and got["dead-links"] == "0"
    assert int(got["overflow"]) <= 0
    assert got["target"] == anchor and int(got["scrolled"]) > 0
    assert got["title"] == html_lib.unescape(re.search(r"<title>(.*?)</title>", html).group(1))
    assert got["onerror"] == "0" and got["scripts"] == "2"  # the report's and the probe's
    up = [int(v) for v in got["sorted-up"].split(",")]
    assert up == sorted(up) and [int(v) for v in got["sorted-down"].split(",")] == sorted(up, reverse=True)
    assert got["filtered"] == "1"


@pytest.mark.slow
def test_report_prints_to_pdf_with_every_span(chromium, tmp_path):
    root = tmp_path / "results"
    rows = write_results(str(root), layers=(11,), n_heads=4)
    text = print_to_pdf(chromium, tmp_path, Path(build_report(str(root), str(tmp_path / "report.html"))), "report.pdf")
    spans = {j["text"] for j in rows["judgments"]}
    missing = [t for t in spans if re.sub(r"\s+", "", t) not in text]
    assert len(spans) > 5 and not missing, missing
    assert all(re.sub(r"\s+", "", c["label"]) in text for c in rows["ccs"])


# --- end to end -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_job_then_every_canned_query_and_the_report(tmp_path, smoke_run, chromium):
    spec, root, summary = smoke_run
    out = {name: json.loads(run_canned(name, root, "json")) for name in canned_queries()}
    n_heads = 4 * 4  # ccs-tiny: 4 layers x 4 heads, all decomposed
    assert out["ccs_at_k"] and all(r["n_heads"] == n_heads for r in out["ccs_at_k"])
    assert {r["judge"] for r in out["ccs_at_k"]} >= {"combined"}
    assert len(out["span_stability"]) == n_heads
    assert all(r["heuristic"] for r in out["head_details"])  # the smoke job's judge is the offline one
    none = [r for r in out["accuracy_drop_vs_random"] if r["config"] == "none"]
    assert none and all(r["drop"] == 0 for r in none)
    assert {r["dataset"] for r in out["accuracy_drop_vs_random"]} == {"probe-shapes", "probe-clips"}
    sweeps = {f"{s}:k={k}" for s in ("sweep", "sweep-low", "sweep-random") for k in (1, 2, 3)}  # sweep_k = 3
    assert {r["config"] for r in out["accuracy_drop_vs_random"]} >= sweeps
    pruned = [r for r in out["bias_vs_accuracy"] if r["config"] != "none"]
    assert pruned and all(r["dataset"] == "probe-colors-bias" and r["delta_accuracy"] is not None for r in pruned)
    assert out["run_summary"][0]["status"] == "done"  # (the offline judge makes no judge calls)
    spans = {(r["head_label"], r["span_rank"]): r["text"] for r in out["span_verdicts"]}
    assert len({h for h, _ in spans}) == n_heads

    path = Path(summary["stages"]["report"]["path"])  # the report the job itself wrote
    html = path.read_text()
    print(f"smoke report: {path.stat().st_size / 1e6:.2f} MB, {html.count(THUMB)} thumbnails")
    assert html.count('class="cell"') == n_heads and html.lower().count("<script") == 1
    assert 'id="heuristic"' in html and "offline heuristic judge" in html
    assert 'id="random-init"' in html and "ccs-tiny/none (run " in html  # random-init weights: no findings
    # the job's report shows its own run done
    assert '<td class="token">done</td>' in html and '<td class="token">running</td>' not in html
    for r in out["strategies_without_heads"]:  # listed with the reason, not dropped
        assert f"<li>{esc(r['ablation_id'])}: {esc(r['reason'])}</li>" in html
    assert len(explorer_rows(html, "ccs-tiny/none")) == len(cards(html)) == n_heads
    assert all(esc(text) in html for text in spans.values())
    for kind in ("heatmap", "accuracy", "sweep", "video", "maxskew", "ccs-drop", "tradeoff"):
        assert figures(html, kind), kind
    images = len(out["head_top_images"])
    assert images == n_heads * (2 * 5 + 1) * 8  # explain: k = 8 top and bottom images per span, 8 overall
    assert html.count(THUMB) == images
    assert re.findall(r'<article class="card" id="([^"]*)">', html)[0] in {r["head_label"] for r in out["head_details"]}

    n_svg = html.count("<svg")
    dom, count = open_in_chromium(chromium, tmp_path, path, "smoke-report.png", (1280, 2400))
    assert dom.count("<svg") == n_svg and dom.count('class="cell"') == n_heads
    tradeoff = [r for r in pruned if not r["config"].startswith("sweep")]
    assert sum(f.count('class="point"') for f in figures(dom, "tradeoff")) == len(tradeoff)
    assert count(PALETTE[0]) > 200  # the bar of the unpruned model
    for score in {r["ccs"] for r in out["head_details"] if r["judge"] == "combined"}:
        assert count(ccs_color(score)) > 200, score  # heatmap cells
    got = probe(chromium, tmp_path, path, out['head_details'][0]['head_label'])  # one model: ids are L3.H1 ...
    assert got["images"] == str(images) and got["unpainted"] == "0" and got["dead-links"] == "0"
    assert int(got["overflow"]) <= 0 and got["target"] and int(got["scrolled"]) > 0

    text = print_to_pdf(chromium, tmp_path, path, "smoke-report.pdf")
    assert all(re.sub(r"\s+", "", t) in text for t in spans.values())  # every span, printed

    _check_the_kept_actor(spec, root, summary, tmp_path)


@ray.remote(num_cpus=0)
class Gone:
    """An actor that can compute spans (as a kept scan actor does), killed before it is asked to."""

    def call(self, fn, *args):
        yield 0


def _check_the_kept_actor(spec, root: str, summary: dict, tmp_path: Path) -> None:
    """The scan's actor, kept with its model loaded, computed the spans and the explain pass, with the results of
    a task of their own (spans) and of one process (explain)."""
    from test_explain import check_against_reference

    from ccs_ray.passes import ModelActors
    from ccs_ray.stages import RunContext
    from ccs_ray.stages.spans import run_spans, section
    from ccs_ray.tables import read_table

    run_id, key = summary["run_id"], spec.models.keys[0]
    assert summary["stages"]["spans"][key]["ran_on"] == "kept actor"
    scan_workers = {r["worker"] for r in read_table(root, "shards", run_id, key).to_pylist()}
    explain_logs = Path(root, "_state", run_id, key.replace("/", "%2F"), "explain").glob("*/shards/*.jsonl")
    explain_workers = {json.loads(line)["worker"] for log in explain_logs for line in log.read_text().splitlines()[1:]}
    assert len(scan_workers) == 1 and explain_workers == scan_workers
    check_against_reference(spec, root, run_id)
    kept = sorted(read_table(root, "spans", run_id, key).to_pylist(),
                  key=lambda r: (r["head_label"], r["subset"], r["rank"]))
    copy = str(tmp_path / "copy")  # the spans are written again: into a copy of the shared run's root
    shutil.copytree(root, copy)
    ctx = RunContext.of(spec, run_id, copy, progress=False, actors=ModelActors()).for_model(key)
    ctx.actors.keep(key, 0, 1, Gone.remote())
    ray.kill(ctx.actors.one(key))
    rows, ran_on = run_spans(ctx, section(spec))  # the kept actor is dead: in a task of its own, the same rows
    order = sorted(rows, key=lambda r: (r["head_label"], r["subset"], r["rank"]))
    assert ran_on == "task" and order == [{k: r[k] for k in rows[0]} for r in kept]


def test_differences_ccs_at_k_and_kappas_are_shown_with_their_intervals(report):
    """Each model's changes against the unpruned model carry their 95% interval (over images for one seed, over
    seeds for random) as the canned query strategy_differences gives them; CCS@K shows its bootstrap interval
    and the kappas their standard errors."""
    path, html, _ = report
    root = str(path.parent / "results")
    with connect(root) as conn:
        diffs = canned_rows(conn, "strategy_differences", "metric = 'top1' AND strategy IS DISTINCT FROM 'single'")
        at_k = canned_rows(conn, "ccs_at_k", "judge = 'combined'")
        kappas = canned_rows(conn, "judge_agreement")
    assert {d["interval_over"] for d in diffs} == {"images", "seeds"}
    for d in diffs:
        cells = "".join(f'<td class="num">{format(v, ".3g")}</td>' for v in (d["difference"], d["low"], d["high"]))
        assert cells in html, d["config"]
        assert d["low"] <= d["difference"] <= d["high"]
    for r in at_k:
        assert f'<td class="num">{format(r["ccs_at_k"], ".3g")}</td><td class="num">' in html
    assert kappas and all(f'<td class="num">{format(k["kappa_se"], ".3g")}</td>' in html for k in kappas)
