"""The HTML report: contents against the rows written, escaping, offline, and a real headless Chromium
that loads it without console messages, paints the plots and leaves a screenshot in test-artifacts/."""

import json
import re
import shutil
import statistics
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ccs_ray.analytics import canned_queries, run_canned
from ccs_ray.report import build_report
from ccs_ray.report.plots import PALETTE, ccs_color
from synthetic_results import HOSTILE_LABEL, HOSTILE_TEXT, MODELS, write_results

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows = write_results(str(tmp / "results"))
    out = build_report(str(tmp / "results"), str(tmp / "report.html"))
    return Path(out), Path(out).read_text(), rows


@pytest.fixture(scope="session")
def chromium():
    """Path of Debian's chromium, installed with apt-get when missing (needs root and the package mirror)."""
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


# --- contents ---------------------------------------------------------------------------------------

def test_report_is_self_contained_and_escaped(report):
    _, html, _ = report
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE_TEXT not in html
    assert "tags&lt;b&gt;&amp;" in html and HOSTILE_LABEL not in html
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)""", html)
    assert refs and all(r.startswith(("#", "data:")) for r in refs)  # nothing to fetch: works offline
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)


def test_heatmap_cells_show_ccs_label_and_spans(report):
    _, html, rows = report
    ns = "{http://www.w3.org/2000/svg}"
    heatmaps = {svg.find(f"{ns}title").text: svg for svg in svgs(html)}  # every SVG is well-formed XML
    for model in MODELS:
        svg = heatmaps[f"CCS per head of {model} (combined)"]
        combined = {r["head_label"]: r for r in rows["ccs"] if r["model"] == model and r["judge"] == "combined"}
        cells = svg.findall(f"{ns}g[@class='cell']")
        assert len(cells) == len(combined) == 48
        for cell in cells:
            title = cell.find(f"{ns}title").text
            want = combined[title.split(" ")[0]]
            spans = [s["text"] for s in sorted(rows["spans"], key=lambda s: s["rank"])
                     if (s["model"], s["head_label"], s["subset"]) == (model, want["head_label"], "all")][:5]
            assert f"CCS {want['ccs']}/5" in title and f"label: {want['label']}" in title
            assert title.endswith("\n".join(f"{i}. {t}" for i, t in enumerate(spans, 1)))
            assert cell.find(f"{ns}rect").get("fill") == ccs_color(want["ccs"])
    first = heatmaps[f"CCS per head of {MODELS[0]} (combined)"].find(f"{ns}g[@class='cell']/{ns}title").text
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
    assert html.count('class="errorbar"') == 3 * 2 * len(MODELS)  # random only: 3 lines x 2 datasets x models
    assert "msrvtt" not in html.split('id="ccsk"')[0].split('id="models"')[1]  # R@1 is no accuracy
    for model in MODELS:
        combined = [r["ccs"] for r in rows["ccs"] if r["model"] == model and r["judge"] == "combined"]
        for k, n in Counter(combined).items():
            assert f"{model} · {k}: {n / len(combined):.4g}" in html
        assert f"{model} · unscored: 0<" in html  # the synthetic judges scored every head


def test_tradeoff_and_tables(report):
    path, html, rows = report
    pruned = {(b["model"], b["ablation_id"].split(":")[0] if b["strategy"] == "random" else b["ablation_id"], b["attribute"])
              for b in rows["bias"] if b["strategy"] != "none"}  # random seeds share one config
    assert html.count('class="point"') == len(pruned)
    assert "Judge agreement" in html and html.count("claude-sonnet") >= 2 * len(MODELS)
    fleiss = json.loads(run_canned("fleiss_kappa", str(path.parent / "results"), "json"))
    assert len(fleiss) == 2 * len(MODELS)
    section = html.split('id="agreement"')[1].split('id="stability"')[0]
    for r in fleiss:
        assert f"<td>{r['variant']}</td><td class=\"num\">3</td><td class=\"num\">{r['n_spans']}</td>" in section
        assert f"<td class=\"num\">{r['kappa']:.3g}</td></tr>" in section
    total = sum(c["cost_usd"] for c in rows["judge_calls"] if c["model"] == MODELS[0])
    assert f"<td class=\"num\">{total:.3g}</td>" in html


def test_tradeoff_points_are_occupation_sums_over_seeds(report):
    """Each trade-off point, computed with numpy from the per-seed rows: Δ MaxSkew (sum) = the sum over
    occupations (the paper's total), averaged over seeds, minus the unpruned model's; Δ accuracy = mean top-1
    over seeds and accuracy datasets minus the unpruned model's."""
    _, html, rows = report

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
        if cfg != "none":
            d_skew = np.mean(totals) - np.mean(sums[(model, "none", dataset, attribute)])
            d_acc = np.mean(acc[(model, cfg)]) - np.mean(acc[(model, "none")])
            tips.append(f"{cfg} on {dataset} / {attribute}: Δ accuracy {d_acc:+.3g} pts, Δ MaxSkew (sum) {d_skew:+.3g}")
    assert len(sums[(MODELS[0], "random", "fairface", "race")]) == 5  # the random point averages 5 seeds
    assert tips and all(tip in html for tip in tips), [t for t in tips if t not in html]
    assert html.count('class="point"') == len(tips)


def test_heuristic_scores_are_flagged(tmp_path):
    flagged, plain = MODELS[1], MODELS[0]
    rows = write_results(str(tmp_path / "results"), heuristic=(flagged,))
    details = json.loads(run_canned("head_details", str(tmp_path / "results"), "json"))
    assert len(details) == len(rows["ccs"]) and all(r["heuristic"] == (r["model"] == flagged) for r in details)
    html = Path(build_report(str(tmp_path / "results"), str(tmp_path / "r.html"))).read_text()
    notice = re.search(r'<p class="warning" id="heuristic">(.*?)</p>', html, flags=re.S).group(1)
    assert "offline heuristic judge" in notice and flagged in notice and plain not in notice
    titles = {svg.find("{http://www.w3.org/2000/svg}title").text for svg in svgs(html)}
    assert {f"CCS per head of {flagged} (combined, offline heuristic judge)", f"CCS per head of {plain} (combined)"} <= titles
    write_results(str(tmp_path / "plain"))
    plain_html = Path(build_report(str(tmp_path / "plain"), str(tmp_path / "r2.html"))).read_text()
    assert "offline heuristic judge" not in plain_html and "warning" not in plain_html.split("</style>")[1]


def test_report_of_an_empty_root(tmp_path):
    (tmp_path / "results").mkdir()
    html = Path(build_report(str(tmp_path / "results"), str(tmp_path / "r.html"))).read_text()
    assert "no heads scored yet" in html and "no judge calls recorded" in html and "<svg" not in html


# --- a real browser ---------------------------------------------------------------------------------

def test_console_check_catches_errors(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert any("Uncaught ReferenceError" in m for m in console_messages(run_chromium(chromium, tmp_path,
                                                                                      bad.as_uri(), "--dump-dom").stderr))


def test_report_in_headless_chromium(report, chromium, tmp_path):
    path, html, _ = report
    dom, count = open_in_chromium(chromium, tmp_path, path, "report.png", (1280, 4200))
    assert dom.count("<svg") == html.count("<svg") == 3 * len(MODELS) + 1
    assert dom.count('class="cell"') == 48 * len(MODELS)
    assert all(count(c) > 200 for c in PALETTE[:4])  # the bars of none/high/low/random are painted
    assert count(ccs_color(5)) > 200  # CCS 5 heatmap cells


# --- end to end -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_job_then_every_canned_query_and_the_report(tmp_path, ray_cluster, chromium):
    from ccs_ray import pipeline
    from ccs_ray.spec import load_spec

    spec_path = Path(__file__).resolve().parent.parent / "jobs" / "smoke.toml"
    root = tmp_path / "results"
    summary = pipeline.run(load_spec(str(spec_path), [f"results.root={root}"]), progress=False)
    out = {name: json.loads(run_canned(name, str(root), "json")) for name in canned_queries()}
    n_heads = 4 * 4  # ccs-tiny: 4 layers x 4 heads, all decomposed
    assert out["ccs_at_k"] and all(r["n_heads"] == n_heads for r in out["ccs_at_k"])
    assert {r["judge"] for r in out["ccs_at_k"]} >= {"combined"}
    assert len(out["span_stability"]) == n_heads
    assert all(r["heuristic"] for r in out["head_details"])  # the smoke job's judge is the offline one
    none = [r for r in out["accuracy_drop_vs_random"] if r["config"] == "none"]
    assert none and all(r["drop"] == 0 for r in none)
    assert {r["dataset"] for r in out["accuracy_drop_vs_random"]} == {"probe-shapes", "probe-clips"}
    pruned = [r for r in out["bias_vs_accuracy"] if r["config"] != "none"]
    assert pruned and all(r["dataset"] == "probe-colors-bias" and r["delta_accuracy"] is not None for r in pruned)
    assert out["run_summary"][0]["status"] == "done"  # (the offline judge makes no judge calls)

    path = Path(summary["stages"]["report"]["path"])  # the report the job itself wrote
    html = path.read_text()
    assert html.count('class="cell"') == n_heads and "<script" not in html.lower()
    assert 'id="heuristic"' in html and "offline heuristic judge" in html
    assert "<td>done</td>" in html and "<td>running</td>" not in html  # the job's report shows its own run done
    n_svg = html.count("<svg")
    assert n_svg == 4  # heatmap, accuracy bars, accuracy-bias trade-off, CCS@K
    dom, count = open_in_chromium(chromium, tmp_path, path, "smoke-report.png", (1280, 2400))
    assert dom.count("<svg") == n_svg and dom.count('class="cell"') == n_heads
    assert dom.count('class="point"') == len(pruned)
    assert count(PALETTE[0]) > 200  # the bar of the unpruned model
    for score in {r["ccs"] for r in out["head_details"] if r["judge"] == "combined"}:
        assert count(ccs_color(score)) > 200, score  # heatmap cells
