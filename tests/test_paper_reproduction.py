"""A reproduction that needs only paths: ``jobs/paper.toml`` and ``jobs/paper-pruning.toml`` on a folder holding
every dataset the paper evaluates on, each a miniature in its official layout (:mod:`miniatures`).

- Both jobs plan (``--dry-run``) after setting only their documented path keys, ``data.source`` and
  ``evals.data_root``, in an environment that holds what a user downloads besides the data: the six models'
  weights in the Hugging Face cache and TextSpan's pool in ccs-ray's cache (stand-in files here: a dry run does
  not read them). The plan counts each dataset's images as the miniature holds them.
- ``jobs/paper-pruning.toml`` runs end to end with a random-init stand-in of ``ViT-B-32/openai``
  (``prune.reference_model``): a Hugging Face style ``local-dir:`` folder of a small tower with ViT-B-32's 12
  layers of 12 heads, so that the published head sets apply. Every dataset is evaluated under every strategy.
"""

import json
import os
import subprocess
import sys

import pytest
from miniatures import PAPER_MODEL_HUBS, write_hf_cache, write_paper_datasets, write_pool_cache, write_standin

STANDIN_OF = "ViT-B-32/openai"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """:func:`miniatures.write_paper_datasets`: (evals.data_root, ImageNet validation folder, {(kind, name): (items
    in the source, items evaluated)}, ImageNet validation images)."""
    root = tmp_path_factory.mktemp("paper-data")
    return write_paper_datasets(root)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def test_both_paper_jobs_plan_after_setting_only_their_path_keys(datasets, tmp_path):
    data_root, imagenet_val, counts, imagenet_images = datasets
    env = {"HF_HOME": str(write_hf_cache(tmp_path / "hf", PAPER_MODEL_HUBS)), "HF_HUB_OFFLINE": "1",
           "CCS_RAY_CACHE": str(write_pool_cache(tmp_path / "cache"))}
    for job, paths in (("paper", [f"data.source={imagenet_val}", f"evals.data_root={data_root}"]),
                       ("paper-pruning", [f"evals.data_root={data_root}"])):
        sets = [arg for path in paths for arg in ("--set", path)]
        out = _cli("run", job, *sets, "--results", str(tmp_path / job), "--dry-run", "--json", env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        plan = json.loads(out.stdout)
        planned = {s["key"]: s["images"] for s in plan["sources"]}
        for (kind, name), (n, _) in counts.items():
            [key] = [k for k in planned if k.startswith(f"evals.{kind}[") and k.endswith(f"{name!r}")]
            assert planned[key] == n, (key, planned[key], n)
        if job == "paper":
            assert planned["data.source"] == imagenet_images


@pytest.mark.slow
def test_paper_pruning_runs_end_to_end_with_a_random_init_standin(ray_cluster, datasets, tmp_path, capsys):
    from ccs_ray import cli
    from ccs_ray.reference import PAPER_DIR
    from ccs_ray.results import Results

    data_root, _, counts, _ = datasets
    standin = write_standin(tmp_path / "standin")
    argv = ["run", "paper-pruning", "--set", f"evals.data_root={data_root}",
            "--set", f'models.keys=["local-dir:{standin}"]', "--set", f"prune.reference_model={STANDIN_OF}",
            "--results", str(tmp_path / "results"), "--json", "--no-progress"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["stages"]) == {"prune", "report"}
    results = Results(summary["results"])
    rows = results.sql("SELECT DISTINCT dataset, strategy, ablation_id, n FROM evals").fetchall()
    assert {strategy for _, strategy, _, _ in rows} == {"none", "paper-high", "paper-low", "paper-random",
                                                        "paper-concept"}
    ablations = {ablation for _, _, ablation, _ in rows}
    published = json.loads((PAPER_DIR / "heads.json").read_text())["models"][STANDIN_OF]["concepts"]
    assert ablations == {"none", "paper-high", "paper-low", *(f"paper-random:s{seed}" for seed in range(5)),
                         *(f"paper-concept:{concept}" for concept in published)}  # those the paper published
    for (kind, name), (_, n) in counts.items():
        if kind in ("classification", "video"):  # every image or video, under every ablation
            assert {(a, m) for dataset, _, a, m in rows if dataset == name} == {(a, n) for a in ablations}, name
    bias = results.sql("SELECT DISTINCT dataset, ablation_id FROM bias").fetchall()
    assert set(bias) == {(name, a) for (kind, name) in counts if kind == "bias" for a in ablations}
