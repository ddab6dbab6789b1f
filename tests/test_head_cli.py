"""``ccs-ray head MODEL HEAD`` (one head's card in the terminal, ``--open``: its HTML card in the browser) and
``ccs-ray report --head`` (the report limited to chosen heads), over the synthetic results."""

import os
import re
import subprocess
import sys
import webbrowser

import pytest

from ccs_ray.cli import main
from synthetic_results import HOSTILE_URI, JUDGES, K_IMAGES, M_SPANS, MODELS, RUN_ID, write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("head") / "results"
    return str(root), write_results(str(root), layers=(8, 11), n_heads=4)


def test_head_prints_its_card(results, capsys):
    root, rows = results
    assert main(["head", MODELS[0], "L8.H0", "--results", root]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"L8.H0 of {MODELS[0]} (run {RUN_ID})\n")
    ccs = {r["judge"]: r for r in rows["ccs"] if (r["model"], r["head_label"]) == (MODELS[0], "L8.H0")}
    for judge in ("combined", *JUDGES):
        c = ccs[judge]
        fidelity = (f" (label fidelity: {100 * c['label_variance']:.1f} % of the variance, percentile "
                    f"{c['label_percentile']:.0f} of the pool)")
        line = (rf"^  {judge} +CCS {c['ccs']}  held-out {c['ccs_heldout']}  label: {re.escape(c['label'])}"
                rf"{re.escape(fidelity)}$")
        assert re.search(line, out, re.M), judge
    words = {1: "aligned", 0: "not aligned", None: "no answer"}
    judged = {(j["span_rank"], j["judge"]): j for j in rows["judgments"]
              if (j["model"], j["head_label"]) == (MODELS[0], "L8.H0")}
    for rank in range(1, M_SPANS + 1):
        assert f"\n  {rank}. {judged[(rank, 'combined')]['text']} (" in out
        verdicts = ", ".join(f"{j}: {words[judged[(rank, j)]['aligned']]}" for j in ("combined", *sorted(JUDGES)))
        assert f"\n     {verdicts}\n" in out
    images = [r for r in rows["top_images"]
              if (r["model"], r["head_label"], r["direction"]) == (MODELS[0], "L8.H0", "top")]
    assert len(images) == (M_SPANS + 1) * K_IMAGES and all(r["image_uri"] in out for r in images)
    assert f"top 1: {HOSTILE_URI} (score" in out  # printed as it is: a terminal interprets no markup
    assert "top images overall:\n  1. " in out and "span stability across folds: mean Jaccard" in out
    bottom = [r for r in rows["top_images"]
              if (r["model"], r["head_label"], r["direction"]) == (MODELS[0], "L8.H0", "bottom")]
    assert len(bottom) == M_SPANS * K_IMAGES and all(f"bottom {r['position']}: {r['image_uri']}" in out for r in bottom)


def test_head_of_a_failed_judge_says_unscored_and_why(tmp_path, capsys):
    root, error = str(tmp_path / "results"), "HTTP 503: judge unavailable"
    write_results(root, models=MODELS[:1], layers=(11,), n_heads=2, judge_error=error)
    assert main(["head", MODELS[0], "L11.H1", "--results", root]) == 0
    out = capsys.readouterr().out
    assert "CCS – (unscored)" in out and f"no CCS: {error} ({', '.join(sorted(JUDGES))})" in out


def test_head_open_writes_the_html_card_and_opens_it(results, capsys, tmp_path, monkeypatch):
    root, _ = results
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    monkeypatch.chdir(tmp_path)
    assert main(["head", MODELS[1], "L11.H3", "--results", root, "--open"]) == 0
    path = tmp_path / f"ccs-head-{MODELS[1].replace('/', '_')}-L11.H3.html"
    assert capsys.readouterr().out.rstrip().endswith(f"HTML card: {path}") and opened == [path.as_uri()]
    html = path.read_text()
    assert '<article class="card" id="L11.H3">' in html and html.count('<article class="card"') == 1
    assert html.count('<span class="thumb ') == (2 * M_SPANS + 1) * K_IMAGES and "<script" not in html


def test_head_open_with_a_browser_command(results, tmp_path):
    """The real webbrowser module, with BROWSER set to a command that opens nothing."""
    root, _ = results
    out = tmp_path / "card.html"
    done = subprocess.run([sys.executable, "-m", "ccs_ray.cli", "head", MODELS[0], "L11.H0", "--results", root,
                           "--open", "-o", str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BROWSER": "true"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"HTML card: {out}") and 'id="L11.H0"' in out.read_text()


@pytest.mark.parametrize("args, message", [
    (["ViT-X/openai", "L8.H0"], f"no results for model 'ViT-X/openai'; models: {', '.join(sorted(MODELS))}"),
    ([MODELS[0], "L9.H0"], f"no head L9.H0 of {MODELS[0]}; runs: {RUN_ID}; heads: 8 heads, L8.H0 .. L11.H3"),
    ([MODELS[0], "L8.H0", "--run-id", "run-x"],
     f"no head L8.H0 of {MODELS[0]} in run run-x; runs: {RUN_ID}; heads: none"),
    ([MODELS[0], "head5"], "head 'head5' is not of the form 'L<layer>.H<head>'"),
])
def test_head_names_what_there_is(results, capsys, args, message):
    root, _ = results
    assert main(["head", *args, "--results", root]) == 2
    assert message in capsys.readouterr().err


def test_report_limited_to_chosen_heads(results, capsys, tmp_path):
    root, _ = results
    out = tmp_path / "r.html"
    assert main(["report", "--results", root, "-o", str(out), "--head", "L11.H2", "--head", "L8.H1"]) == 0
    html = out.read_text()
    ids = re.findall(r'<article class="card" id="([^"]*)">', html)
    assert sorted(ids) == sorted(f"{m}.{h}" for m in MODELS for h in ("L8.H1", "L11.H2"))
    assert html.count('<tr><td data-sort=') == 2 * len(MODELS)  # the head explorer's rows
    links = set(re.findall(r'<a href="#([^"]*)"', html))
    assert {f"{m}.{h}" for m in MODELS for h in ("L8.H1", "L11.H2")} <= links
    assert "Heads shown in the explorer and cards: L11.H2, L8.H1." in html
    assert html.count('class="cell"') == 8 * len(MODELS)  # the heatmaps still show every head
    assert main(["report", "--results", root, "-o", str(out), "--head", "bad"]) == 2
    assert "head 'bad' is not of the form" in capsys.readouterr().err
