"""Preflight and ``--dry-run``: every mistake knowable before computing is reported at once, through the CLI
(exit status 2, one line per problem, nothing written, no Ray started; in this process, or in a process of its
own where the whole process's output is the point); the plan's figures against independent counts; failures
during a run (exit status 1, one line, the run recorded ``failed``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ccs_ray import cli
from ccs_ray.preflight import ENGINE_CHECKS
from ccs_ray.spec import load_spec

JOBS = Path(__file__).resolve().parents[1] / "jobs"
SMOKE = str(JOBS / "smoke.toml")


def ccs_ray(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``ccs-ray ARGS`` in a process of its own (no RAY_ADDRESS: a local cluster would be started there)."""
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | (env or {})
    return subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], capture_output=True, text=True, timeout=300,
                          env=environ)


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """``ccs-ray ARGS`` in this process, without RAY_ADDRESS: a CompletedProcess of (exit status, stdout, stderr).
    A command that started Ray where none ran fails the test."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def run(*args: str) -> subprocess.CompletedProcess:
        running = ray.is_initialized()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        assert running or not ray.is_initialized(), f"ccs-ray {' '.join(args)} started Ray"
        return subprocess.CompletedProcess(["ccs-ray", *args], code, out, err)

    return run


def problems(out: subprocess.CompletedProcess) -> list[str]:
    """The problem lines of a preflight error (exit status 2, no traceback, no Ray started)."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Started a local Ray" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("ccs-ray: ") and "found before starting" in lines[0]
    return [line.strip() for line in lines[1:]]


#: Mistakes the first phase finds (spec, configs, pool, judges): reported without loading the engine.
FIRST_PHASE = ("models.keys=ViT-B-99/openai", "models.layers=[2, 7]", "spans.pool=/no/such/pool.txt",
               "judge.model=gpt-x", "judge.base_url=http://127.0.0.1:9/v1")


@pytest.mark.parametrize("override, key, message", [
    ("models.keys=ViT-B-99/openai", "models.keys: 'ViT-B-99/openai'", "closest: ViT-B-32"),
    ("models.keys=ViT-B-32/openai", "models.keys: 'ViT-B-32/openai'",
     "not in the local cache and cannot be downloaded (HF_HUB_OFFLINE is set); offline, use 'ViT-B-32/none' "
     "(random init) or 'ViT-B-32@/path/to/checkpoint.pt'"),
    ("models.keys=ViT-B-32/laion9", "models.keys: 'ViT-B-32/laion9'", "no pretrained weights 'laion9'"),
    ("models.keys=ViT-B-32@/no/such/ckpt.pt", "models.keys: 'ViT-B-32@/no/such/ckpt.pt'", "checkpoint not found"),
    ("models.layers=[2, 7]", "models.layers", "[7] out of range for ccs-tiny (layers 0..3)"),
    ("spans.pool=/no/such/pool.txt", "spans.pool", "cannot be read"),
    ("data.source=/no/such/images", "data.source", "not found"),
    ('evals.video=[{name = "clips", source = "/no/such/videos", captions = "c.csv"}]', "evals.video[0] 'clips'",
     "c.csv"),
    ("judge.model=gpt-x", "judge: LLM judge 'gpt-x'", "needs base_url"),
    ("judge.base_url=http://127.0.0.1:9/v1", "judge: LLM judge None", "needs model"),
    ("scan.gpus_per_actor=1", "scan.actors", "need 1 GPUs but the cluster has 0"),
])
def test_each_mistake_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys, override, key, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "results"
    assert cli.main(["run", SMOKE, "--set", override, "--results", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    later = "; " + ENGINE_CHECKS + " once they are fixed" if override in FIRST_PHASE else ""
    assert err[0] == f"ccs-ray: 1 problem found before starting (nothing was computed{later}):"
    assert len(err) == 2 and err[1].strip().startswith(key) and message in err[1], err
    assert not root.exists()  # nothing written, not even the root


def test_every_problem_is_listed_at_once_and_a_typo_in_an_eval_entry_is_a_spec_error(tmp_path, cli_run):
    out = cli_run("run", SMOKE, "--model", "ViT-B-99/none", "--model", "ccs-tiny/none", "--set", "spans.pool=/nope.txt",
                  "--set", "judge.model=gpt-x", "--set", "judge.api_key_env=CCS_TEST_NO_SUCH_KEY",
                  "--results", str(tmp_path / "r"))
    lines = problems(out)
    assert [line.split(":")[0] for line in lines] == ["models.keys", "spans.pool", "judge", "judge 'gpt-x'"]
    assert "CCS_TEST_NO_SUCH_KEY" in lines[3] and "is not set" in lines[3]
    typo = cli_run("run", SMOKE, "--set", 'evals.bias=[{name = "b", source = "probe://colors?n=4", ocupations = []}]')
    assert typo.returncode == 2 and "evals.bias[0].ocupations: unknown key; allowed here: " in typo.stderr
    assert "occupations" in typo.stderr and "Traceback" not in typo.stderr


def test_results_root_that_cannot_be_written_and_resume_without_a_run(tmp_path, cli_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    lines = problems(cli_run("run", SMOKE, "--results", str(blocker / "results")))
    assert len(lines) == 1 and lines[0].startswith(f"results.root: '{blocker / 'results'}' is not writable")
    if os.geteuid() != 0:  # permissions bind everyone but root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert problems(cli_run("run", SMOKE, "--results", str(locked)))[0].startswith("results.root")
    lines = problems(cli_run("run", SMOKE, "--resume", "--results", str(tmp_path / "empty")))
    assert lines == [f"--resume: no run to resume under {tmp_path / 'empty'}"]


def test_dry_run_plans_from_configs_without_computing_or_writing(tmp_path, tiny_model, cli_run):
    from ccs_ray.decompose import select_layers, tower_shape
    from ccs_ray.judges.prompts import judge_request, label_request
    from ccs_ray.pools import load_pool

    root = tmp_path / "results"
    out = cli_run("run", SMOKE, "--dry-run", "--json", "--results", str(root), "--set", "judge.base_url=http://127.0.0.1:9/v1",
                  "--set", "judge.model=m", "--set", "judge.input_price=2.0", "--set", "judge.output_price=8.0",
                  "--set", "judge.api_key_env=CCS_TEST_NO_SUCH_KEY")  # a dry run needs no key
    assert out.returncode == 0, out.stderr[-3000:]
    assert not root.exists() and "Started a local Ray" not in out.stderr
    plan = json.loads(out.stdout)
    spec = load_spec(SMOKE)
    (model,) = plan["models"]
    heads = tower_shape(tiny_model[0]).head_names(select_layers(tiny_model[0], None, spec.models.last_layers))
    assert model["heads"] == len(heads) == 16 and model["layers"] == [0, 1, 2, 3] and model["n_heads"] == 4
    sources = {s["key"]: s for s in plan["sources"]}
    assert sources["data.source"]["images"] == 96 and sources["data.source"]["shards"] == 96 // spec.data.shard_size
    assert sources["evals.video[0] 'probe-clips'"]["images"] == 8
    assert set(plan["layouts"]) == {"scan", "prune"} and plan["stages"] == spec.stages
    # the judge estimate, recomputed: per head one label request and one judgment per span (m + m held out)
    pool = sorted(load_pool(spec.spans.pool), key=len)
    span = pool[len(pool) // 2]
    m = spec.spans.m
    requests = [label_request([span] * m)] + [judge_request(span, "concept")] * (2 * m)
    prompt = 16 * sum(r.estimated_tokens()[0] for r in requests)
    completion = 16 * sum(r.estimated_tokens()[1] for r in requests)
    (judge,) = plan["judges"]
    assert (judge["calls"] == 16 * (1 + 2 * m)
            and (judge["prompt_tokens"], judge["completion_tokens"]) == (prompt, completion))
    assert judge["cost_usd"] == pytest.approx((prompt * 2.0 + completion * 8.0) / 1e6)
    text = cli_run("run", SMOKE, "--dry-run", "--set", "judge.base_url=http://127.0.0.1:9/v1", "--set", "judge.model=m",
                   "--results", str(root))
    assert text.returncode == 0 and "cost unknown (set judge.input_price/output_price)" in text.stdout
    assert "ccs-tiny/none: weights none, layers [0, 1, 2, 3] x 4 heads = 16 heads" in text.stdout and not root.exists()


def test_failure_during_a_run_is_one_line_and_recorded(ray_cluster, tmp_path, monkeypatch, capsys):
    from ccs_ray import tables
    from ccs_ray.stages import report

    def disk_full(root, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "build_report", disk_full)
    root = tmp_path / "results"
    assert cli.main(["run", SMOKE, "--set", 'stages=["report"]', "--results", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    runs = tables.read_table(str(root), "runs").to_pylist()
    assert [(r["status"], r["stage"]) for r in runs] == [("failed", "report")]
    assert runs[0]["error"] == "no space left on device"
    assert err == (f"ccs-ray: stage report failed: no space left on device (--debug shows the traceback); "
                   f"resume with: ccs-ray run {SMOKE} --set 'stages=[\"report\"]' --results {root} --resume "
                   f"--run-id {runs[0]['run_id']}")
    assert not list(root.rglob("*.tmp"))


def test_an_interrupted_run_is_recorded_interrupted_and_the_interrupt_kept(ray_cluster, tmp_path, monkeypatch):
    from ccs_ray import pipeline, tables
    from ccs_ray.stages import report

    def interrupt(root, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "build_report", interrupt)
    root = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(load_spec(SMOKE, ['stages=["report"]', f"results.root={json.dumps(str(root))}"]), progress=False)
    (row,) = tables.read_table(str(root), "runs").to_pylist()
    assert (row["status"], row["stage"], row["error"]) == ("interrupted", "report", "interrupted by Ctrl-C (SIGINT)")


def test_results_root_deleted_mid_run_is_reported_not_recreated(ray_cluster, tmp_path, monkeypatch):
    import shutil

    from ccs_ray import pipeline
    from ccs_ray.stages import report

    root = tmp_path / "results"

    def delete_root(results, out):
        shutil.rmtree(results)
        return out

    monkeypatch.setattr(report, "build_report", delete_root)
    with pytest.raises(pipeline.RunFailed, match="disappeared during the run"):
        pipeline.run(load_spec(SMOKE, ['stages=["report"]', f"results.root={json.dumps(str(root))}"]), progress=False)
    assert not root.exists()


def test_human_summary_and_json_summary(ray_cluster, tmp_path, monkeypatch, capsys):
    from ccs_ray.stages import report

    monkeypatch.setattr(report, "build_report", lambda root, out: out)
    root = tmp_path / "results"
    args = ["run", SMOKE, "--set", 'stages=["report"]', "--results", str(root), "--no-progress"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run ") and f"results in {root}" in lines[0]
    assert lines[1].split()[0] == "report" and lines[1].endswith(f"{root}/report.html")
    assert lines[-1] == f'explore: ccs-ray sql --results {root} "SELECT * FROM ccs ORDER BY ccs DESC LIMIT 10"'
    views = (Path(cli.__file__).parent / "sql" / "views.sql").read_text().replace("${ROOT}", str(root))
    plain = duckdb.connect()  # plain DuckDB over views.sql: every view opens, the empty ones too
    plain.execute(views)
    assert plain.execute("SELECT count(*) FROM conversions").fetchone() == (0,)
    assert plain.execute("SELECT status FROM runs").fetchall() == [("done",)]
    assert cli.main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stages"]["report"]["path"] == f"{root}/report.html" and summary["seconds"]["total"] >= 0


def test_every_command_and_option_has_a_help_line():
    parser = cli.build_parser()
    todo = [("ccs-ray", parser)]
    while todo:
        name, p = todo.pop()
        for action in p._actions:
            if action.choices and hasattr(action, "_choices_actions"):  # subcommands
                helps = {a.dest: a.help for a in action._choices_actions}
                assert all(helps.get(sub) for sub in action.choices), (name, helps)
                todo += [(f"{name} {sub}", sp) for sub, sp in action.choices.items()]
            else:
                assert action.help, f"{name} {action.option_strings or action.dest}"


def test_submit_checks_the_spec_before_contacting_a_cluster_and_debug_shows_the_traceback(tmp_path):
    out = ccs_ray("submit", SMOKE, "--model", "ViT-B-99/none", "--address", "http://127.0.0.1:9")
    assert problems(out)[0].startswith("models.keys: 'ViT-B-99/none': unknown model")
    debug = ccs_ray("run", SMOKE, "--model", "ViT-B-99/none", "--results", str(tmp_path / "r"), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "PreflightError" in debug.stderr


def test_preflight_in_python_returns_the_plan(ray_cluster, tmp_path):
    import ccs_ray

    spec = load_spec(SMOKE, [f"results.root={json.dumps(str(tmp_path / 'r'))}"])
    plan = ccs_ray.preflight(spec)
    assert [m.key for m in plan.models] == ["ccs-tiny/none"] and plan.resources == ray_cluster.cluster_resources()
    assert "ccs-tiny/none: weights none" in str(plan) and plan.to_dict()["judge_total"] == {"calls": 0, "cost_usd": 0.0}



def test_describe_shows_each_stage_in_words():
    from ccs_ray.pipeline import describe

    summary = {"run_id": "r1", "results": "/res", "seconds": {"scan": 12.34, "judge": 2.0, "total": 15.0},
               "cpu_seconds": {"scan": 20.0, "judge": 1.5, "total": 21.5},
               "stages": {"scan": {"n_images": {"m": 96}, "n_errors": {"m": 1}, "n_converted": {"m": 0},
                                   "nodes": ["a"]},
                          "judge": {"m": {"heads_judged": 16, "calls": 3, "cached": 2, "errors": 0, "cost_usd": 0.0125,
                                          "agreement": {}}}}}
    assert describe(summary).splitlines()[:3] == [
        "run r1 done in 15.0 s; results in /res",
        "  scan      12.3 s (CPU   20.0 s)  m: 96 images, 1 errors, 0 converted",
        "  judge      2.0 s (CPU    1.5 s)  m: 16 heads, 3 calls, 2 cached, 0 errors, 0.0125 USD"]


SPEC_MISTAKES = [["models.keys=ViT-B-99/none"], ["models.layers=[9]"], ['prune.heads={mine = ["L1H2"]}'],
                 ['stages=["spans"]'], ["spans.pool=/no/such/pool.txt"], ["judge.model=gpt-x"]]


@pytest.mark.parametrize("overrides", SPEC_MISTAKES)
def test_a_spec_mistake_is_reported_before_the_engine_loads(tmp_path, overrides):
    """``ccs-ray run`` finds a mistake knowable from the spec and the model configs without importing torch,
    open_clip, scipy or Ray (``ccs-ray bench preflight`` times it)."""
    argv = ["run", SMOKE, "--results", str(tmp_path / "r"), *[a for o in overrides for a in ("--set", o)]]
    code = ("import sys\nfrom ccs_ray.cli import main\nrc = main(sys.argv[1:])\n"
            "print('RC', rc, 'HEAVY', sorted(m for m in ('torch', 'open_clip', 'scipy', 'ray') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip().splitlines()[-1] == "RC 2 HEAVY []", out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 2


def test_the_engine_loads_only_after_the_spec_checked_out(tmp_path):
    """On a good spec, preflight's second phase (weights, sources, cluster) is the first to import the engine."""
    code = ("import sys\nimport ccs_ray.preflight\np = sys.modules['ccs_ray.preflight.model_checks']\nseen = []\n"
            "real = p.check_model_weights\n"
            "def spy(*a):\n"
            "    seen.append(sorted(m for m in ('torch', 'open_clip', 'scipy', 'ray') if m in sys.modules))\n"
            "    return real(*a)\n"
            "p.check_model_weights = spy\nfrom ccs_ray.cli import main\nrc = main(sys.argv[1:])\n"
            "print('RC', rc, 'HEAVY', seen[0])\n")
    out = subprocess.run([sys.executable, "-c", code, "run", SMOKE, "--dry-run", "--results", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip().splitlines()[-1] == "RC 0 HEAVY []", out.stderr[-2000:]


def test_paper_spec_as_shipped_plans_its_placeholders_and_missing_extras():
    """``--dry-run`` of jobs/paper.toml as shipped: one line per placeholder, its two path keys (the datasets under
    ``evals.data_root`` are not listed again), and one per scheme whose fsspec package is missing, in the spec
    phase (no traceback, exit 2)."""
    import importlib.util

    out = ccs_ray("run", str(JOBS / "paper.toml"), "--dry-run")
    lines = problems(out)
    assert lines[0].startswith("data.source: YOUR-IMAGENET-VAL-FOLDER is a placeholder: set it to your images")
    assert lines[1].startswith("evals.data_root: YOUR-DATASETS-FOLDER is a placeholder: set it to the folder "
                               "holding the datasets")
    assert not [line for line in lines if line.startswith("evals.") and "data_root" not in line]
    out = ccs_ray("run", str(JOBS / "paper.toml"), "--dry-run", "--set", "data.source=s3://YOUR-BUCKET/val/",
                  "--set", "evals.data_root=s3://YOUR-BUCKET/sets/")
    lines = problems(out)
    assert lines[0] == "data.source: s3://YOUR-BUCKET/val/ is a placeholder: set it to your images: a folder, tar " \
                       "shards, parquet or a manifest (--set data.source=URI)"
    assert sum("is a placeholder" in line for line in lines) == 2  # data.source, evals.data_root
    s3 = [line for line in lines if line.startswith("s3://")]
    if importlib.util.find_spec("s3fs") is None:
        assert s3 == ['s3:// needs pip install "ccs-ray[s3]" (used by data.source and 14 more)']
    else:
        assert s3 == []
    assert ENGINE_CHECKS in out.stderr  # the environment phase waits for these fixes
