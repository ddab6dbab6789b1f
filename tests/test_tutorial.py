"""``docs/tutorial.ipynb`` runs from start to end as a reader runs it (the smoke job on a random-init model, then the
results through ``ccs_ray.open``), and each step shows what its text says it shows."""

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 420  # the cell that runs the smoke job: about a minute on 2 cores
N_HEADS = 16  # ccs-tiny's 4 layers x 4 heads


def _outputs(cell) -> tuple[str, str]:
    """(the text a cell printed or displayed, its HTML) of an executed cell; what it wrote to stderr (warnings of
    the libraries it loads) is not what the step shows."""
    text, markup = [], []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out["name"] == "stdout":
            text.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            text.append(out["data"].get("text/plain", ""))
            markup.append(out["data"].get("text/html", ""))
    return "".join(text), "".join(markup)


@pytest.mark.slow
def test_the_tutorial_runs_and_shows_each_step(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    docs = tmp_path / "docs"  # the notebook's relative paths, as in the repository
    docs.mkdir()
    (tmp_path / "jobs").mkdir()
    shutil.copy(REPO / "jobs" / "smoke.toml", tmp_path / "jobs" / "smoke.toml")
    stored = nbformat.read(REPO / "docs" / "tutorial.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in stored.cells if c.cell_type == "code")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the job starts its own local Ray, as a reader's does
    nbclient.NotebookClient(stored, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(docs)}}).execute()
    code = [c for c in stored.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    steps = {name: _outputs(c) for c in code for name in re.findall(r"^(\w+) = ", c.source, re.M)}

    ran, _ = steps["run"]
    assert "report" in ran and "explore: ccs-ray sql --results" in ran  # the run's summary per stage
    assert steps["results"][0] == "Results('results/tutorial', read-only; models: ccs-tiny/none)"
    table = _outputs(next(c for c in code if "GROUP BY ALL" in c.source))[1]
    assert "<table" in table and "offline-heuristic" in table
    assert "<table" in _outputs(next(c for c in code if "ccs_at_k" in c.source))[1]
    _, heads = steps["heads"]
    assert len(set(re.findall(r"<td>(L\d\.H\d)</td>", heads))) == N_HEADS and "label_variance" in heads
    text, card = steps["card"]
    assert re.match(r"L\d\.H\d of ccs-tiny/none \(run \S+\)\nlabel: ", text)
    assert card.startswith("<iframe ") and "srcdoc=" in card and "Random-init weights" in card
    refused, _ = _outputs(next(c for c in code if "ReadOnlyError" in c.source))
    assert "read_only=False" in refused and refused.count("\n") == 1
    exported = (docs / "ccs.csv").read_text().splitlines()
    assert exported[0] == "model,head_label,ccs,label" and len(exported) == N_HEADS + 1
    assert steps["report"][0].strip() == "'report.html'"
    assert (docs / "report.html").read_text().count('<article class="card"') == N_HEADS
    assert (docs / "results" / "tutorial" / "report.html").is_file()
