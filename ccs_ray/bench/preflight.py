"""``ccs-ray bench preflight``: seconds from ``ccs-ray run`` to its error, per kind of mistake, and the
time of ``ccs-ray --help``.

Each case is ``ccs-ray run`` of a small generated spec (the smoke job's settings: a random-init tiny model,
the probe set) with one mistake, in a process of its own, as a user runs it; the figure is that process's
wall time to exit (imports included). A case that does not exit with status 2 and one ``ccs-ray:`` line
is reported as such (``failed_cases``, counted by ``cases_missed``). Weight downloads are cut off
(``HF_HUB_OFFLINE=1``) so that the offline case is the same everywhere. A case's overrides and environment may name
``{tmp}`` (its temporary folder, which holds ``not-a-tar.tar``, a text file) and ``{closed_port}`` (a loopback port
nothing listens on).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

SPEC = """name = "bench-preflight"
stages = ["scan", "spans", "judge", "prune", "report"]
[models]
keys = ["ccs-tiny/none"]
[data]
source = "probe://?n=64&seed=0&size=32"
[evals]
classification = [{ name = "shapes", source = "probe://shapes?n=16&seed=1&size=32" }]
"""



class Case(NamedTuple):
    """A mistake: ``kind`` is ``spec`` when it is knowable from the spec and the model configs (preflight's first
    phase, which loads no engine), ``environment`` when it needs the weights, sources, datasets or cluster;
    ``overrides``: the ``--set`` items that make it; ``env``: environment variables that make it."""

    kind: str
    overrides: list[str]
    env: dict[str, str] = {}


_EXPLICIT = 'prune.strategies=["explicit"]'
_URL = ["judge.model=gpt-x", "judge.api_key_env=CCS_RAY_BENCH_KEY"]

#: Case name -> the mistake it makes.
CASES = {
    "unknown_model": Case("spec", ["models.keys=ViT-B-99/openai"]),
    "layers_out_of_range": Case("spec", ["models.layers=[2, 7]"]),
    "malformed_head_name": Case("spec", ['prune.heads={mine = ["L1H2"]}']),
    "head_name_with_space": Case("spec", [_EXPLICIT, 'prune.heads={mine = ["L1.H2 "]}']),
    "head_name_lowercase": Case("spec", [_EXPLICIT, 'prune.heads={mine = ["l1.h2"]}']),
    "head_named_twice": Case("spec", [_EXPLICIT, 'prune.heads={mine = ["L1.H2", "L1.H2"]}']),
    "head_list_empty": Case("spec", [_EXPLICIT, "prune.heads={mine = []}"]),
    "head_outside_tower": Case("spec", [_EXPLICIT, 'prune.heads={mine = ["L1.H2", "L99.H0", "L1.H99"]}']),
    "head_outside_decomposed_layers": Case("spec", [_EXPLICIT, "prune.mode=mean", "models.layers=[3]",
                                                    'prune.heads={mine = ["L0.H0"]}']),
    "explicit_without_heads": Case("spec", [_EXPLICIT]),
    "stage_need_missing": Case("spec", ['stages=["spans"]']),
    "typo_in_evals_entry": Case("spec", ['evals.classification=[{name = "shapes", sorce = "probe://shapes"}]']),
    "judge_model_without_base_url": Case("spec", ["judge.model=gpt-x"]),
    "judge_api_key_not_set": Case("spec", ["judge.model=gpt-x", "judge.base_url=http://127.0.0.1:9/v1",
                                           "judge.api_key_env=CCS_RAY_BENCH_NO_SUCH_KEY"]),
    "base_url_with_credentials": Case("spec", [*_URL, "judge.base_url=http://user:pass@127.0.0.1:9/v1"]),
    "base_url_with_query": Case("spec", [*_URL, "judge.base_url=http://127.0.0.1:9/v1?token=T"]),
    "missing_pool": Case("spec", ["spans.pool=/no/such/pool.txt"]),
    "weights_offline_not_cached": Case("environment", ["models.keys=ViT-B-32/openai"]),
    "missing_checkpoint": Case("environment", ["models.keys=ViT-B-32@/no/such/checkpoint.pt"]),
    "missing_eval_source": Case("environment", ['evals.classification=[{name = "x", source = "/no/such/folder", '
                                                'classnames = ["a"]}]']),
    "source_not_a_tar": Case("environment", ["data.source={tmp}/not-a-tar.tar"]),
    "ray_address_unreachable": Case("environment", [], {"RAY_ADDRESS": "127.0.0.1:{closed_port}"}),
    "unschedulable_actors": Case("environment", ["scan.gpus_per_actor=1"]),
}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(text: str, names: dict[str, str]) -> str:
    """``text`` with each placeholder of ``names`` (``{tmp}``, ``{closed_port}``) replaced (TOML braces stay)."""
    for placeholder, value in names.items():
        text = text.replace(placeholder, value)
    return text


def _timed(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    return time.perf_counter() - t0, out


def run() -> dict:
    """Seconds to the error per case (``<case>_s``), the slowest spec and environment mistakes, and ``help_s``;
    ``failed_cases`` lists cases that did not end as a one-line preflight error, ``cases_missed`` counts them."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    figures: dict[str, float] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench-preflight.toml"
        spec.write_text(SPEC)
        (Path(tmp) / "not-a-tar.tar").write_text("these are notes, not a tar archive\n" * 40)
        names = {"{tmp}": tmp, "{closed_port}": str(_closed_port())}
        for case, (_, overrides, case_env) in CASES.items():
            sets = [a for o in overrides for a in ("--set", _fill(o, names))]
            args = ["run", str(spec), "--results", f"{tmp}/results", *sets]
            seconds, out = _timed(args, env | {k: _fill(v, names) for k, v in case_env.items()})
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
    for kind in sorted({c.kind for c in CASES.values()}):
        figures[f"slowest_{kind}_s"] = max(figures[f"{name}_s"] for name, c in CASES.items() if c.kind == kind)
    figures["help_s"] = round(_timed(["--help"], env)[0], 2)
    return {**figures, "failed_cases": failed, "cases_missed": len(failed)}
