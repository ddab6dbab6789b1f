"""``ccs-ray submit``: the same run as ``ccs-ray run``, submitted as a Ray job to a cluster.

The job's runtime environment carries this package (``py_modules``) and a staged working folder: the
spec's folder (so that relative paths in the spec still resolve) plus our ``sql/`` files (found through
``$CCS_RAY_SQL_DIR`` by the report stage). The cluster's Python must have the dependencies (torch,
open_clip_torch, ...) or they are listed with ``pip``. Results should go to storage the cluster can reach
(``--results s3://...``): a relative local root lands in the job's temporary working folder.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from pathlib import Path

import ccs_ray

from .analytics import SQL_DIR_ENV, sql_dir
from .errors import UserError

STAGED_SQL = "_ccs_ray_sql"


class SubmitError(UserError, RuntimeError):
    """The cluster refused the job (unreachable address, authentication)."""


def job_request(spec, spec_path: str, overrides: list[str], pip: list[str] | None = None) -> dict:
    """``submit_job`` keyword arguments for a spec: entrypoint and runtime environment (staged in a temp folder)."""
    path = Path(spec_path)
    if not path.is_file():
        raise FileNotFoundError(f"job spec not found: {spec_path} (submit needs a local spec file)")
    staged = Path(tempfile.mkdtemp(prefix="ccs-ray-job-"))
    shutil.copytree(path.parent, staged, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results", "__pycache__"))
    shutil.copytree(sql_dir(), staged / STAGED_SQL)
    args = ["python", "-m", "ccs_ray.cli", "run", path.name, "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    args += ["--set", f'results.root="{spec.results_root}"']
    runtime_env = {"working_dir": str(staged), "py_modules": [str(Path(ccs_ray.__file__).parent)],
                   "env_vars": {SQL_DIR_ENV: STAGED_SQL}}
    if pip:
        runtime_env["pip"] = pip
    return {"entrypoint": shlex.join(args), "runtime_env": runtime_env,
            "metadata": {"ccs_ray_spec": spec.name}}


def _submit_when_agent_ready(client, request: dict, wait_s: float = 90.0) -> str:
    """``submit_job``, retried while a freshly started head has no job agent yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**request)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def submit(spec, spec_path: str, overrides: list[str], address: str, pip: list[str] | None = None) -> int:
    """Submit, print the job id and how to follow it; returns the exit code."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    request = job_request(spec, spec_path, overrides, pip)
    try:
        job_id = _submit_when_agent_ready(JobSubmissionClient(address), request)
    except AuthenticationError as e:
        raise SubmitError(f"{address} requires a Ray auth token: set RAY_AUTH_MODE=token with the cluster's token "
                          f"in ~/.ray/auth_token or $RAY_AUTH_TOKEN ({str(e).splitlines()[0]})") from e
    except ConnectionError as e:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {e}") from e
    finally:
        shutil.rmtree(request["runtime_env"]["working_dir"], ignore_errors=True)
    print(f"submitted job {job_id}")
    print(f"follow its logs:  ray job logs --follow {job_id} --address {address}")
    print(f"its status:       ray job status {job_id} --address {address}")
    if "://" not in spec.results_root and not Path(spec.results_root).is_absolute():
        print(f"note: results go to {spec.results_root} inside the job's working folder; pass --results s3://... "
              f"(or another URI the cluster can reach) to keep them")
    return 0
