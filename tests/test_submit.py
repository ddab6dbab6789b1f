"""``ccs-ray submit`` against a real Ray head (``ray start --head --block`` in a subprocess, token auth on):
a missing token is a clear error; with it, the smoke job runs as a Ray job and leaves its tables and report."""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


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
    # Every fixed port of its own: the test session's cluster runs on this machine too (its agents hold the defaults).
    ports = [f"--{flag}={_free_port()}" for flag in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", *ports, f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats"],
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


def _cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "ccs_ray.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_submit_runs_the_job_on_a_cluster(ray_head, tmp_path):
    address, env, env_token = ray_head
    results = tmp_path / "results"
    refused = _cli(["submit", "jobs/smoke.toml", "--address", address, "--results", str(results)], env)
    assert refused.returncode == 2 and "RAY_AUTH_MODE=token" in refused.stderr

    out = _cli(["submit", "jobs/smoke.toml", "--address", address, "--results", str(results)], env_token)
    assert out.returncode == 0, out.stderr[-3000:]
    job_id = re.search(r"submitted job (\S+)", out.stdout).group(1)
    assert f"ray job logs --follow {job_id} --address {address}" in out.stdout
    logs = subprocess.run([RAY, "job", "logs", "--follow", job_id, "--address", address], env=env_token,
                          capture_output=True, text=True, timeout=300)
    status = subprocess.run([RAY, "job", "status", job_id, "--address", address], env=env_token,
                            capture_output=True, text=True, timeout=60)
    assert f"'{job_id}' succeeded" in status.stdout, status.stdout + status.stderr + logs.stdout[-3000:]
    n_heads = duckdb.sql(f"SELECT count(*) FROM read_parquet('{results}/ccs/**/*.parquet') "
                         f"WHERE judge = 'combined'").fetchall()[0][0]
    assert n_heads == 4 * 4  # ccs-tiny: every head of its 4 layers scored
    assert (results / "report.html").stat().st_size > 0
