"""``ccs-ray submit``: the same run as ``ccs-ray run``, submitted as a Ray job to a cluster.

The job goes to the Ray dashboard at ``--address`` (else ``$RAY_ADDRESS``). Its runtime environment carries
this package (``py_modules``, with the SQL files of the report inside it) and, as the working folder, a copy
of the spec's folder, so that relative paths in the spec still resolve. ``--runtime-env FILE`` (a Ray
runtime env as JSON, or YAML) adds to it: its ``pip`` list comes first, then the ``--pip`` requirements;
its other keys (``env_vars``, ``conda``, ``container`` ...) are copied, but ``working_dir`` and
``py_modules`` are ours and are an error there. The cluster's Python must have the dependencies (torch,
open_clip_torch, ...) or they are listed with ``pip``. Results should go to storage the cluster can reach
(``--results s3://...``): a relative local root lands in the job's temporary working folder, and on a cluster of
several nodes the job's own preflight refuses a local root in seconds (each node would write its part to its own
disk) unless ``results.shared = true`` declares it a file system every node mounts at the same path. ``--follow``
prints the job's logs as they come, then its final status; the exit code is 0 only if it succeeded. A dashboard
that accepts no connection within seconds is reported before anything is staged.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import ccs_ray

from .errors import UserError
from .spec import resolve_spec

OURS = ("working_dir", "py_modules")  # runtime env keys that submit sets itself


class SubmitError(UserError, RuntimeError):
    """A job that cannot be submitted: no address, a bad runtime env file, a cluster that refuses it."""


def _read_runtime_env(path: str) -> dict:
    """The Ray runtime env dict of a JSON or YAML (``.yaml``/``.yml``) file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SubmitError(f"cannot read the runtime env file {path}: {e.strerror or e}") from e
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SubmitError(f"the runtime env file {path} is YAML and PyYAML is not installed: "
                              f"pip install pyyaml, or write the file as JSON") from None
        load, errors = yaml.safe_load, yaml.YAMLError
    else:
        load, errors = json.loads, ValueError
    try:
        env = load(text)
    except errors as e:
        raise SubmitError(f"cannot parse the runtime env file {path}: {' '.join(str(e).split())}") from e
    if not isinstance(env, dict):
        raise SubmitError(f"the runtime env file {path} holds a {type(env).__name__}; it must be a mapping of "
                          f"Ray runtime env keys (env_vars, pip, ...)")
    clash = [key for key in OURS if key in env]
    if clash:
        raise SubmitError(f"the runtime env file {path} sets {', '.join(clash)}, which ccs-ray submit sets itself "
                          f"(the spec's folder and the ccs_ray package): remove {', '.join(clash)} from it")
    return env


def _with_pip(env: dict, pip: list[str], path: str | None) -> dict:
    """``env`` with the requirements ``pip`` after those of its own ``pip`` (a list, or a dict's ``packages``)."""
    theirs = env.get("pip")
    if theirs is None:
        return {**env, "pip": list(pip)}
    if isinstance(theirs, list):
        return {**env, "pip": theirs + list(pip)}
    if isinstance(theirs, dict) and isinstance(theirs.get("packages"), list):
        return {**env, "pip": {**theirs, "packages": theirs["packages"] + list(pip)}}
    raise SubmitError(f"the runtime env file {path} gives pip as {theirs!r}, which --pip cannot extend: give pip "
                      f"there as a list of requirements, or move the --pip requirements into it")


def job_request(spec, spec_path: str, overrides: list[str], pip: list[str] | None = None,
                runtime_env: str | None = None) -> dict:
    """``submit_job`` keyword arguments for a spec: entrypoint and runtime environment (the spec's folder staged
    in a temp folder, which the caller removes), with ``pip`` requirements and the runtime env file ``runtime_env``."""
    path = Path(resolve_spec(spec_path))  # a built-in name (``quickstart``) ships as a file in the package
    if not path.is_file():
        raise FileNotFoundError(f"job spec not found: {spec_path} (submit needs a local spec file)")
    env = _read_runtime_env(runtime_env) if runtime_env else {}
    if pip:
        env = _with_pip(env, pip, runtime_env)
    staged = Path(tempfile.mkdtemp(prefix="ccs-ray-job-"))
    shutil.copytree(path.parent, staged, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results", "__pycache__"))
    args = ["python", "-m", "ccs_ray.cli", "run", path.name]  # no terminal: progress as plain log lines
    for item in overrides:
        args += ["--set", item]
    args += ["--set", f'results.root="{spec.results_root}"']
    env.update(working_dir=str(staged), py_modules=[str(Path(ccs_ray.__file__).parent)])
    return {"entrypoint": shlex.join(args), "runtime_env": env, "metadata": {"ccs_ray_spec": spec.name}}


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


def _follow(client, job_id: str, address: str) -> int:
    """Print the job's logs until it ends, then its status; 0 if it succeeded, else 1."""
    import aiohttp
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(tail())
    except (RuntimeError, OSError, aiohttp.ClientError) as e:
        raise SubmitError(f"lost the logs of job {job_id} ({e}); it may still be running: "
                          f"ray job logs --follow {job_id} --address {address}") from e
    info = client.get_job_info(job_id)
    succeeded = info.status == JobStatus.SUCCEEDED
    print(f"job {job_id} {info.status.value}" + ("" if succeeded or not info.message else f": {info.message}"))
    return 0 if succeeded else 1


def submit(spec, spec_path: str, overrides: list[str], address: str | None = None, pip: list[str] | None = None,
           runtime_env: str | None = None, follow: bool = False) -> int:
    """Submit the run as a Ray job to the dashboard at ``address`` (default ``$RAY_ADDRESS``) and print its id;
    with ``follow``, print its logs until it ends. Returns the exit code (``follow``: 0 only if it succeeded)."""
    given = f"--address {address}" if address else f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '')}"
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("no Ray cluster to submit to: pass --address http://HEAD:8265 (the head's dashboard) "
                          "or set RAY_ADDRESS")
    from .cluster import unreachable_address

    why = unreachable_address(address)
    if why:
        raise SubmitError(f"{given}: no Ray dashboard answers there ({why}); pass the head's dashboard, "
                          f"http://HEAD:8265, and check that the cluster is up (ray status on the head)")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    request = job_request(spec, spec_path, overrides, pip, runtime_env)
    try:
        client = JobSubmissionClient(address)
        job_id = _submit_when_agent_ready(client, request)
    except AuthenticationError as e:
        raise SubmitError(f"{address} requires a Ray auth token: set RAY_AUTH_MODE=token with the cluster's token "
                          f"in ~/.ray/auth_token or $RAY_AUTH_TOKEN ({str(e).splitlines()[0]})") from e
    except ConnectionError as e:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {e}") from e
    finally:
        shutil.rmtree(request["runtime_env"]["working_dir"], ignore_errors=True)
    print(f"submitted job {job_id}")
    if "://" not in spec.results_root and not Path(spec.results_root).is_absolute():
        print(f"note: results go to {spec.results_root} inside the job's working folder; pass --results s3://... "
              f"(or another URI the cluster can reach) to keep them")
    if follow:
        return _follow(client, job_id, address)
    print(f"follow its logs:  ray job logs --follow {job_id} --address {address}")
    print(f"its status:       ray job status {job_id} --address {address}")
    return 0
