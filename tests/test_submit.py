"""``ccs-ray submit``: the job request (runtime env file merged with ours, ``--pip``, bad files), the address
(``RAY_ADDRESS`` fallback, none at all), ``follow`` against a stand-in client; then against a real Ray head
(``ray start --head --block`` in a subprocess, token auth on): a missing token is a clear error; with it, the smoke
job runs as a Ray job, followed to its end, and leaves its tables and report."""

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest
import ray.job_submission
from ray.job_submission import JobStatus

import ccs_ray
from ccs_ray.errors import UserError
from ccs_ray.spec import load_spec
from ccs_ray.submit import SubmitError, job_request, submit

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
SMOKE = str(REPO / "jobs" / "smoke.toml")


@pytest.fixture
def spec():
    return load_spec(SMOKE, ['results.root="s3://bucket/smoke"'])


@pytest.fixture
def dashboard():
    """The address of a loopback socket that accepts connections, standing in for a dashboard (the job API itself is
    :class:`FakeClient`'s)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _request(spec, **kwargs) -> dict:
    """``job_request`` for the smoke spec, its staged folder removed (after checking that the spec is in it)."""
    request = job_request(spec, SMOKE, ["scan.batch_size=8"], **kwargs)
    staged = Path(request["runtime_env"]["working_dir"])
    assert (staged / "smoke.toml").is_file()
    shutil.rmtree(staged)
    return request


def test_job_request_ships_the_package_with_its_sql(spec):
    request = _request(spec)
    assert set(request["runtime_env"]) == {"working_dir", "py_modules"}
    [package] = request["runtime_env"]["py_modules"]
    assert Path(package) == Path(ccs_ray.__file__).parent and (Path(package) / "sql" / "views.sql").is_file()
    assert request["entrypoint"] == ("python -m ccs_ray.cli run smoke.toml --set scan.batch_size=8 "
                                     "--set 'results.root=\"s3://bucket/smoke\"'")
    assert request["metadata"] == {"ccs_ray_spec": "smoke"}


def test_a_built_in_spec_name_is_submitted_from_any_folder(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    request = job_request(spec, "smoke", [])
    staged = Path(request["runtime_env"]["working_dir"])
    assert (staged / "smoke.toml").read_text() == Path(SMOKE).read_text()
    assert request["entrypoint"].startswith("python -m ccs_ray.cli run smoke.toml ")
    shutil.rmtree(staged)


def test_runtime_env_file_merges_with_ours(spec, tmp_path):
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"env_vars": {"HF_HOME": "/cache"}, "pip": ["open_clip_torch==2.24.0"],
                                    "config": {"setup_timeout_seconds": 900}}))
    env = _request(spec, pip=["s3fs>=2023.1", "gcsfs"], runtime_env=str(env_file))["runtime_env"]
    assert env["env_vars"] == {"HF_HOME": "/cache"}
    assert env["pip"] == ["open_clip_torch==2.24.0", "s3fs>=2023.1", "gcsfs"]
    assert env["config"] == {"setup_timeout_seconds": 900}
    assert env["py_modules"] == [str(Path(ccs_ray.__file__).parent)]
    assert _request(spec, pip=["s3fs"])["runtime_env"]["pip"] == ["s3fs"]


def test_runtime_env_yaml_with_pip_packages(spec, tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("pip:\n  packages: [torch==2.4.0]\n  pip_check: false\nenv_vars:\n  A: '1'\n")
    env = _request(spec, pip=["s3fs"], runtime_env=str(env_file))["runtime_env"]
    assert env["pip"] == {"packages": ["torch==2.4.0", "s3fs"], "pip_check": False}
    assert env["env_vars"] == {"A": "1"}


@pytest.mark.parametrize("name, text, pip, message", [
    ("missing.json", None, None, "cannot read the runtime env file"),
    ("env.json", "{not json", None, "cannot parse the runtime env file"),
    ("env.yaml", "pip: [a\n", None, "cannot parse the runtime env file"),
    ("env.json", '["pip"]', None, "holds a list; it must be a mapping"),
    ("env.json", '{"working_dir": "."}', None, "sets working_dir, which ccs-ray submit sets itself"),
    ("env.yml", "py_modules: [x]", None, "sets py_modules, which ccs-ray submit sets itself"),
    ("env.json", '{"pip": "requirements.txt"}', ["s3fs"], "gives pip as 'requirements.txt', which --pip cannot"),
])
def test_bad_runtime_env_file_is_an_error_naming_it(spec, tmp_path, name, text, pip, message):
    env_file = tmp_path / name
    if text is not None:
        env_file.write_text(text)
    with pytest.raises(SubmitError, match=message) as e:
        job_request(spec, SMOKE, [], pip=pip, runtime_env=str(env_file))
    assert str(env_file) in str(e.value) and isinstance(e.value, UserError)


def test_yaml_without_pyyaml_says_to_use_json(spec, tmp_path, monkeypatch):
    (tmp_path / "env.yaml").write_text("pip: [s3fs]\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(SubmitError, match="PyYAML is not installed: pip install pyyaml, or write the file as JSON"):
        job_request(spec, SMOKE, [], runtime_env=str(tmp_path / "env.yaml"))


def test_no_address_is_an_error(spec, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SubmitError, match="pass --address http://HEAD:8265 .* or set RAY_ADDRESS"):
        submit(spec, SMOKE, [])


def test_an_unreachable_dashboard_is_one_line_within_seconds(spec, monkeypatch):
    """Nothing listens on the port, or nothing answers (a listener whose queue is full drops connections, as a
    blackholed host does): one line naming the address, before anything is staged or a client is built."""
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address: pytest.fail("client built"))
    monkeypatch.setattr("ccs_ray.cluster.CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr("ccs_ray.submit.job_request", lambda *a, **k: pytest.fail("job staged"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(SubmitError) as refused:
        submit(spec, SMOKE, [], address=f"http://127.0.0.1:{closed}")
    assert str(refused.value).startswith(f"--address http://127.0.0.1:{closed}: no Ray dashboard answers there (")
    assert "\n" not in str(refused.value) and time.perf_counter() - t0 < 1
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        waiting = [socket.socket() for _ in range(3)]
        for w in waiting:
            w.setblocking(False)
            w.connect_ex(("127.0.0.1", port))
        monkeypatch.setenv("RAY_ADDRESS", f"http://127.0.0.1:{port}")
        t0 = time.perf_counter()
        with pytest.raises(SubmitError, match=rf"^RAY_ADDRESS=http://127.0.0.1:{port}: no Ray dashboard answers "
                                              rf"there \(no answer within 1 s\)"):
            submit(spec, SMOKE, [])
        assert time.perf_counter() - t0 < 3
        for w in waiting:
            w.close()


class FakeClient:
    """A stand-in JobSubmissionClient: records what it is given; the job logs two lines and ends as ``status``."""

    def __init__(self, address, status=JobStatus.SUCCEEDED):
        self.address, self.status, self.requests = address, status, []
        FakeClient.last = self

    def submit_job(self, **request):
        assert Path(request["runtime_env"]["working_dir"]).is_dir()
        self.requests.append(request)
        return "raysubmit_1"

    async def tail_job_logs(self, job_id):
        for chunk in ("scan done\n", "report done\n"):
            await asyncio.sleep(0)
            yield chunk

    def get_job_info(self, job_id):
        return types.SimpleNamespace(status=self.status, message="boom" if self.status == JobStatus.FAILED else None)


def test_ray_address_is_the_default(spec, monkeypatch, capsys, dashboard):
    monkeypatch.setenv("RAY_ADDRESS", dashboard)
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeClient)
    assert submit(spec, SMOKE, []) == 0
    assert FakeClient.last.address == dashboard
    assert not Path(FakeClient.last.requests[0]["runtime_env"]["working_dir"]).exists()  # the staged copy is gone
    out = capsys.readouterr().out
    assert "submitted job raysubmit_1" in out
    assert f"ray job logs --follow raysubmit_1 --address {dashboard}" in out


def test_submit_command_plans_without_the_cluster_then_submits(monkeypatch, capsys, dashboard):
    """``ccs-ray submit --dry-run`` prints the plan and submits nothing; without it, the job is submitted."""
    from ccs_ray import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeClient)
    monkeypatch.setattr(FakeClient, "last", None, raising=False)
    assert cli.main(["submit", SMOKE, "--dry-run", "--json", "--address", dashboard]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(m["key"], m["heads"]) for m in plan["models"]] == [("ccs-tiny/none", 16)] and plan["stages"]
    assert FakeClient.last is None  # planned, not submitted
    assert cli.main(["submit", SMOKE, "--address", dashboard]) == 0
    assert FakeClient.last.address == dashboard and len(FakeClient.last.requests) == 1
    assert "submitted job raysubmit_1" in capsys.readouterr().out


@pytest.mark.parametrize("status, code", [(JobStatus.SUCCEEDED, 0), (JobStatus.FAILED, 1), (JobStatus.STOPPED, 1)])
def test_follow_prints_the_logs_and_exits_with_the_job(spec, monkeypatch, capsys, dashboard, status, code):
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address: FakeClient(address, status))
    assert submit(spec, SMOKE, [], address=dashboard, follow=True) == code
    out = capsys.readouterr().out
    final = "job raysubmit_1 FAILED: boom" if status == JobStatus.FAILED else f"job raysubmit_1 {status.value}"
    assert out.endswith(f"submitted job raysubmit_1\nscan done\nreport done\n{final}\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A separate single-node Ray cluster with a dashboard; yields (dashboard address, environment with its token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env_token = dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    dash = _free_port()
    # Its own temp dir: Ray's job supervisor gives a job's driver the address recorded in its temp dir as the latest
    # cluster started there, which the default /tmp/ray shares with every `ray start` and simulated cluster on this
    # machine (a record written late, or by another test, sends the job to a dead or foreign cluster). Short, as it
    # holds the cluster's unix sockets.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # Every fixed port of its own: the test session's cluster runs on this machine too (its agents hold the defaults).
    ports = [f"--{flag}={_free_port()}" for flag in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", *ports, f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env_token, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # it answers (401 without the token): up
            break
        except OSError:
            if time.time() > deadline or head.poll() is not None:
                head.kill()
                pytest.fail("the Ray head did not start")
            time.sleep(1)
    try:
        yield address, env, env_token
    finally:
        head.terminate()  # --block: stopping it stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(temp_dir, ignore_errors=True)


FOLLOW = """
import sys
from ccs_ray.spec import load_spec
from ccs_ray.submit import submit
spec_path, results = sys.argv[1:]
stages = ['stages=["scan", "spans", "judge", "report"]']  # what a job needs to show it ran; prune is tested elsewhere
sys.exit(submit(load_spec(spec_path, [f'results.root="{results}"', *stages]), spec_path, stages, follow=True))
"""


def _cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.xdist_group("ray_start")  # `ray start` records the machine's current cluster: one such test at a time
def test_submit_runs_the_job_on_a_cluster(ray_head, tmp_path):
    address, env, env_token = ray_head
    results = tmp_path / "results"
    refused = _cli(["submit", "jobs/smoke.toml", "--address", address, "--results", str(results)], env)
    assert refused.returncode == 2 and "RAY_AUTH_MODE=token" in refused.stderr

    # submit(..., follow=True), the address from RAY_ADDRESS: it prints the job's logs and ends with its status
    out = subprocess.run([sys.executable, "-c", FOLLOW, SMOKE, str(results)], env=dict(env_token, RAY_ADDRESS=address),
                         cwd=tmp_path, capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    job_id = re.search(r"submitted job (\S+)", out.stdout).group(1)
    assert out.stdout.rstrip().endswith(f"job {job_id} SUCCEEDED"), out.stdout[-3000:]
    assert f"Running entrypoint for job {job_id}" in out.stdout, out.stdout[-3000:]  # the job's logs
    n_heads = duckdb.sql(f"SELECT count(*) FROM read_parquet('{results}/ccs/**/*.parquet') "
                         f"WHERE judge = 'combined'").fetchall()[0][0]
    assert n_heads == 4 * 4  # ccs-tiny: every head of its 4 layers scored
    assert (results / "report.html").stat().st_size > 0
