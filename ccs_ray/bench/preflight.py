"""``ccs-ray bench preflight``: seconds from ``ccs-ray run`` to its error, per kind of mistake, and the
time of ``ccs-ray --help``.

Each case is ``ccs-ray run`` of a small generated spec (the smoke job's settings: a random-init tiny model,
the probe set) with one mistake, in a process of its own, as a user runs it; the figure is that process's
wall time to exit (imports included). A case that does not exit with status 2 and one ``ccs-ray:`` line
is reported as such. Weight downloads are cut off (``HF_HUB_OFFLINE=1``) so that the offline case is the
same everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """name = "bench-preflight"
stages = ["scan", "spans", "judge", "prune", "report"]
[models]
keys = ["ccs-tiny/none"]
[data]
source = "probe://?n=64&seed=0&size=32"
[evals]
classification = [{ name = "shapes", source = "probe://shapes?n=16&seed=1&size=32" }]
"""

#: Case name -> (kind, ``--set`` overrides that make the mistake). A ``spec`` mistake is knowable from the spec and
#: the model configs (preflight's first phase, which loads no engine); an ``environment`` one needs the weights,
#: sources, datasets or cluster.
CASES = {
    "unknown_model": ("spec", ["models.keys=ViT-B-99/openai"]),
    "layers_out_of_range": ("spec", ["models.layers=[2, 7]"]),
    "malformed_head_name": ("spec", ['prune.heads={mine = ["L1H2"]}']),
    "stage_need_missing": ("spec", ['stages=["spans"]']),
    "typo_in_evals_entry": ("spec", ['evals.classification=[{name = "shapes", sorce = "probe://shapes"}]']),
    "judge_model_without_base_url": ("spec", ["judge.model=gpt-x"]),
    "judge_api_key_not_set": ("spec", ["judge.model=gpt-x", "judge.base_url=http://127.0.0.1:9/v1",
                                       "judge.api_key_env=CCS_RAY_BENCH_NO_SUCH_KEY"]),
    "missing_pool": ("spec", ["spans.pool=/no/such/pool.txt"]),
    "weights_offline_not_cached": ("environment", ["models.keys=ViT-B-32/openai"]),
    "missing_checkpoint": ("environment", ["models.keys=ViT-B-32@/no/such/checkpoint.pt"]),
    "missing_eval_source": ("environment", ['evals.classification=[{name = "x", source = "/no/such/folder", '
                                            'classnames = ["a"]}]']),
    "unschedulable_actors": ("environment", ["scan.gpus_per_actor=1"]),
}


def _timed(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    return time.perf_counter() - t0, out


def run() -> dict:
    """Seconds to the error per case (``<case>_s``), the slowest spec and environment mistakes, and ``help_s``;
    ``failed_cases`` lists cases that did not end as a one-line preflight error."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    figures: dict[str, float] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench-preflight.toml"
        spec.write_text(SPEC)
        for case, (_, overrides) in CASES.items():
            args = ["run", str(spec), "--results", f"{tmp}/results", *[a for o in overrides for a in ("--set", o)]]
            seconds, out = _timed(args, env)
            figures[f"{case}_s"] = round(seconds, 2)
            if out.returncode != 2 or not out.stderr.startswith("ccs-ray: ") or "Traceback" in out.stderr:
                failed.append(case)
        read_only = Path(tmp) / "a-file"
        read_only.write_text("")
        seconds, out = _timed(["run", str(spec), "--results", f"{read_only}/results"], env)
        figures["results_root_not_writable_s"] = round(seconds, 2)
        if out.returncode != 2:
            failed.append("results_root_not_writable")
    figures["slowest_s"] = max(figures.values())
    for kind in sorted({k for k, _ in CASES.values()}):
        figures[f"slowest_{kind}_s"] = max(figures[f"{c}_s"] for c, (k, _) in CASES.items() if k == kind)
    figures["help_s"] = round(_timed(["--help"], env)[0], 2)
    return {**figures, "failed_cases": failed}
