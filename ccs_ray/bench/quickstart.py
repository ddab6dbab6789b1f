"""``ccs-ray bench quickstart``: the README's first job, alone and beside a one-core busy loop, stage by stage.

The job (``ccs-ray run quickstart`` on a random-init model, offline: ``ViT-B-32/none`` by default) runs twice as a
user runs it: a fresh ``ccs-ray`` process that starts its own local Ray, in a fresh results root. Once with nothing
else started, once while a process this bench starts and stops spins on one core (``loaded``). Per run: the wall
seconds of the whole command (interpreter and Ray start-up included) and, per stage, its wall and CPU seconds from
the run's summary (:mod:`ccs_ray.cputime`). ``ratio`` is loaded over quiet wall time. Targets on 2 cores: at most 75 s
quiet, at most 2x that loaded (every pool sized to the CPUs its process holds and waiting without spinning,
:mod:`ccs_ray.threads`, is what keeps the second near the first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

QUIET_TARGET_S = 75.0
LOADED_TARGET_RATIO = 2.0
BUSY_LOOP = "while True:\n    pass\n"


def _job(spec: str, model: str | None, root: str, sets: tuple[str, ...]) -> dict:
    """One ``ccs-ray run`` in a fresh process and local Ray: wall seconds and the summary's per-stage seconds."""
    args = [sys.executable, "-m", "ccs_ray.cli", "run", spec, "--results", root, "--json", "--no-progress"]
    for s in ([f'models.keys=["{model}"]'] if model else []) + list(sets):
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(args[2:])}` failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    summary = json.loads(out.stdout)
    stages = {stage: {"wall_s": summary["seconds"][stage], "cpu_s": summary["cpu_seconds"][stage]}
              for stage in summary["stages"]}
    return {"wall_s": round(wall, 2), "run_s": summary["seconds"]["total"],
            "cpu_s": summary["cpu_seconds"]["total"], "stages": stages}


def run(spec: str = "quickstart", model: str | None = "ViT-B-32/none", sets: tuple[str, ...] = ()) -> dict:
    """Figures of ``spec`` (a built-in name or a path) with ``models.keys = [model]`` (None: the spec's) and the
    extra ``--set`` overrides ``sets``: ``quiet`` and ``loaded`` runs, their ratio and whether the targets hold."""
    figures: dict = {"bench": "quickstart", "spec": spec, "model": model, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ccs-ray-bench-quickstart-") as tmp:
        figures["quiet"] = _job(spec, model, f"{tmp}/quiet", sets)
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            figures["loaded"] = _job(spec, model, f"{tmp}/loaded", sets)
        finally:
            busy.kill()
            busy.wait()
    quiet, loaded = figures["quiet"]["wall_s"], figures["loaded"]["wall_s"]
    figures["ratio"] = round(loaded / quiet, 3)
    figures["targets_met"] = {"quiet_wall_s": quiet <= QUIET_TARGET_S, "ratio": figures["ratio"] <= LOADED_TARGET_RATIO}
    return figures
