"""``ccs-ray submit``: the same run as ``ccs-ray run``, submitted as a Ray job to a cluster.

The job's runtime environment carries this package (``py_modules``) and the spec's folder
(``working_dir``); the cluster's Python must have the dependencies (torch, open_clip_torch, ...) or
they are listed with ``pip``. Results should go to storage the cluster can reach (``--results s3://...``):
a relative local root lands in the job's temporary working folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import ccs_ray


def job_request(spec, spec_path: str, overrides: list[str], pip: list[str] | None = None) -> dict:
    """``submit_job`` keyword arguments for a spec: entrypoint and runtime environment."""
    path = Path(spec_path)
    if not path.is_file():
        raise FileNotFoundError(f"job spec not found: {spec_path} (submit needs a local spec file)")
    args = ["python", "-m", "ccs_ray.cli", "run", path.name, "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    args += ["--set", f'results.root="{spec.results_root}"']
    runtime_env = {"working_dir": str(path.parent.resolve()), "py_modules": [str(Path(ccs_ray.__file__).parent)]}
    if pip:
        runtime_env["pip"] = pip
    return {"entrypoint": shlex.join(args), "runtime_env": runtime_env,
            "metadata": {"ccs_ray_spec": spec.name}}


def submit(spec, spec_path: str, overrides: list[str], address: str, pip: list[str] | None = None) -> int:
    """Submit and print the job id and how to follow it; returns the exit code."""
    from ray.job_submission import JobSubmissionClient

    request = job_request(spec, spec_path, overrides, pip)
    job_id = JobSubmissionClient(address).submit_job(**request)
    print(f"submitted job {job_id}")
    print(f"follow its logs:  ray job logs --follow {job_id} --address {address}")
    print(f"its status:       ray job status {job_id} --address {address}")
    if "://" not in spec.results_root:
        print(f"note: results go to {spec.results_root} inside the job's working folder; pass --results s3://... "
              f"(or another URI the cluster can reach) to keep them")
    return 0
