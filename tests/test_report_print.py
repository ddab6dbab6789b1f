"""The report's layout in headless Chromium: no number or word breaks inside a table cell, plots with round
ticks, thumbnails that enlarge on click, and a print where no head card splits across pages and no page is
nearly blank."""

import re
from pathlib import Path

import pytest
from pypdf import PdfReader
from test_report import chromium, console_messages, print_to_pdf, run_chromium, svgs  # noqa: F401 (a fixture)

from ccs_ray.reporting import build_report
from ccs_ray.reporting.cards import SHOW_PX
from synthetic_results import MODELS, THUMB_PX, write_results

NEARLY_BLANK_LINES = 3  # a printed page with fewer lines of text than this is nearly blank

MEASURE = """<script>
window.addEventListener("load", function () {
  var d = document.documentElement;
  function lines(el) {  // the distinct line boxes the cell's text occupies
    var range = document.createRange();
    range.selectNodeContents(el);
    var bottoms = Array.prototype.map.call(range.getClientRects(), function (r) { return Math.round(r.bottom); });
    return new Set(bottoms).size;
  }
  var wrapped = Array.prototype.filter.call(document.querySelectorAll("td.num"), function (td) {
    return td.textContent.trim() && lines(td) > 1;
  });
  d.setAttribute("data-numeric", document.querySelectorAll("td.num").length);
  d.setAttribute("data-wrapped", wrapped.map(function (td) { return td.textContent.trim(); }).join("|"));
  var broken = [];  // words split over two lines: a line ends between two letters or digits
  document.querySelectorAll("td").forEach(function (td) {
    var text = td.firstChild;
    if (!text || text.nodeType !== 3 || td.childNodes.length !== 1) return;
    var range = document.createRange(), s = text.textContent, last = null;
    for (var i = 0; i < s.length; i++) {
      range.setStart(text, i); range.setEnd(text, i + 1);
      var rect = range.getBoundingClientRect();
      if (last !== null && rect.top > last + 2 && /\\w/.test(s[i - 1]) && /\\w/.test(s[i])) broken.push(s);
      last = rect.top;
    }
  });
  d.setAttribute("data-broken", broken.join("|"));
  var spilled = Array.prototype.filter.call(document.querySelectorAll("th, td"), function (cell) {
    return cell.scrollWidth > cell.clientWidth + 1;  // a word or number wider than its cell, spilling out
  });
  d.setAttribute("data-spilled", spilled.map(function (c) { return c.textContent.trim(); }).join("|"));
  var thumb = document.querySelector(".thumb"), before = thumb.getBoundingClientRect().width;
  thumb.focus();
  d.setAttribute("data-zoom", (thumb.getBoundingClientRect().width / before).toFixed(2));
});
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("print")
    write_results(str(tmp / "results"), models=MODELS[:1], layers=(10, 11))
    return Path(build_report(str(tmp / "results"), str(tmp / "report.html")))


@pytest.mark.slow
@pytest.mark.parametrize("width", [800, 1280])
def test_no_number_or_word_breaks_inside_a_cell_and_thumbnails_enlarge(page, chromium, tmp_path, width):  # noqa: F811
    copy = tmp_path / "measure.html"
    copy.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    done = run_chromium(chromium, tmp_path, copy.as_uri(), "--dump-dom", f"--window-size={width},2000")
    assert done.returncode == 0 and console_messages(done.stderr) == [], done.stderr[-2000:]
    got = dict(re.findall(r'data-([\w-]+)="([^"]*)"', re.search(r"<html([^>]*)>", done.stdout).group(1)))
    assert int(got["numeric"]) > 100 and got["wrapped"] == ""
    assert got["broken"] == "" and got["spilled"] == ""
    assert float(got["zoom"]) == pytest.approx(THUMB_PX / SHOW_PX, abs=0.05)  # enlarged to the stored size


def test_plot_ticks_are_round_and_few_points_are_labelled(page):
    html = page.read_text()
    for svg in svgs(html):
        ticks = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")
                 if t.text and re.fullmatch(r"[+-]?\d+(\.\d+)?", t.text)]
        for t in ticks:  # 1, 2 or 5 x 10^k multiples: at most two significant digits
            assert len(t.lstrip("+-").replace(".", "").strip("0")) <= 2, t
    drop = re.search(r'<figure class="ccs-drop">.*?</figure>', html, flags=re.S).group(0)
    assert drop.count('class="point"') == drop.count('class="point-label"') > 0


@pytest.mark.slow
def test_print_keeps_cards_whole_without_blank_pages(page, chromium, tmp_path):  # noqa: F811
    print_to_pdf(chromium, tmp_path, page, "report-print.pdf")
    pages = [p.extract_text() for p in PdfReader(Path(__file__).resolve().parent.parent / "test-artifacts"
                                                  / "report-print.pdf").pages]
    lines = [len([line for line in p.splitlines() if line.strip()]) for p in pages]
    assert min(lines) >= NEARLY_BLANK_LINES, lines
    n_cards = 24
    assert len(pages) <= 0.6 * n_cards  # with the explorer and plots: cards share pages
    for text in pages:  # a card's heading and its last paragraph are on the same page
        flat = re.sub(r"\s+", "", text)
        assert flat.count(f"{MODELS[0]}·run") == flat.count("Spanstabilityacrossfolds:"), flat
