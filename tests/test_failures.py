"""Every failure during a run tells the truth: one line with the root cause, an honest ``runs`` row, a resume command
that works when pasted into a shell, a vanished results root never recreated, no process outliving a killed driver.

Faults are real: a full tmpfs and a read-only bind mount (where this process may mount; else those tests are
skipped with the reason), a results root deleted mid-scan, SIGTERM and Ctrl-C, a real local Ray cluster whose actors
raise, and ``ccs-ray`` run as a user runs it (a subprocess on the session's cluster).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from ccs_ray import cli, tables
from ccs_ray.failures import ANSI, reason
from ccs_ray.files import RootGone, WriteError, WriteGuard, atomic_write, guard_writes
from ccs_ray.watchdog import alive, ray_descendants

SMOKE = str(Path(__file__).resolve().parents[1] / "jobs" / "smoke.toml")
MODEL = "ccs-tiny/none"


def _mount(*args: str) -> None:
    out = subprocess.run(["mount", *args], capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"this process cannot mount ({out.stderr.strip()}): the storage faults need a tmpfs or bind mount")


@pytest.fixture
def mounts():
    """``mount(*args)``; every mount made is unmounted after the test."""
    made: list[Path] = []

    def mount(*args: str) -> None:
        _mount(*args)
        made.append(Path(args[-1]))

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def sigterm_restored():
    """SIGTERM's handler as it was, after a test whose ``ccs-ray run`` installed its own."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_a_refused_write_names_its_cause_and_uri_and_leaves_nothing(tmp_path, mounts):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounts("--bind", str(folder), str(folder))
    mounts("-o", "remount,bind,ro", str(folder))
    with pytest.raises(WriteError) as e:
        atomic_write(f"{folder}/part.parquet", b"x")
    assert str(e.value) == f"read-only file system while writing {folder}/part.parquet" and e.value.errno == 30
    full = tmp_path / "full"
    full.mkdir()
    mounts("-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full))
    with pytest.raises(WriteError, match=f"^no space left on device while writing {full}/big$"):
        atomic_write(f"{full}/big", b"x" * 65536)
    assert list(full.iterdir()) == [] and list(folder.iterdir()) == []


def test_a_guarded_write_never_recreates_a_vanished_root(tmp_path):
    root = tmp_path / "results"
    (root / "_state" / "r1").mkdir(parents=True)
    (root / "_state" / "r1" / "run.json").write_text("{}")
    guard = WriteGuard(str(root), f"{root}/_state/r1/run.json")
    with guard_writes(guard):
        atomic_write(f"{root}/shards/run_id=r1/a.parquet", b"a")
        atomic_write(f"{tmp_path}/elsewhere/b", b"b")  # outside the root: not guarded
        shutil.rmtree(root)
        with pytest.raises(RootGone, match=f"the results root {root} disappeared during the run"):
            atomic_write(f"{root}/shards/run_id=r1/c.parquet", b"c")
    assert not root.exists() and (tmp_path / "elsewhere" / "b").exists()
    atomic_write(f"{root}/after", b"d")  # no guard in force any more: a later run may create it
    assert (root / "after").exists()


def test_the_root_cause_of_a_failure_in_an_actor_is_one_plain_line(ray_cluster, tmp_path):
    import ray

    @ray.remote
    def write(uri):
        raise WriteError.of(OSError(28, "No space left on device"), uri)

    @ray.remote
    def plain():
        raise OSError(13, "Permission denied", "/data/x")

    with pytest.raises(ray.exceptions.RayTaskError) as wrapped:
        ray.get(write.remote("s3://bucket/run/part.parquet"))
    assert "\n" in str(wrapped.value)  # Ray's text: the remote traceback
    assert reason(wrapped.value) == "no space left on device while writing s3://bucket/run/part.parquet"
    with pytest.raises(ray.exceptions.RayTaskError) as wrapped:
        ray.get(plain.remote())
    assert reason(wrapped.value) == "permission denied (/data/x)"
    try:
        try:
            ray.get(plain.remote())
        except ray.exceptions.RayTaskError as e:
            raise RuntimeError("stage spans failed") from e
    except RuntimeError as e:
        assert reason(e) == "permission denied (/data/x)"
    assert reason(ValueError("\x1b[36mcoloured\x1b[39m\nsecond line")) == "ValueError: coloured"


def _runs(root: Path) -> list[dict]:
    return tables.read_table(str(root), "runs").to_pylist()


def _resume_line(err: str) -> tuple[str, str]:
    """(the message of the one ``ccs-ray:`` line, which ends the output, and the command it ends with)."""
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("ccs-ray: ")] == lines[-1:], err[-3000:]
    assert not ANSI.search(err) and "Traceback" not in err and "RayTaskError" not in err and "Error" not in err
    message, command = lines[-1].split("; resume with: ")
    return message, command


@pytest.mark.slow
def test_a_full_disk_in_the_scan_actors_is_one_line_recorded_and_resumed_as_printed(ray_cluster, tmp_path, mounts,
                                                                                    monkeypatch, capfd,
                                                                                    sigterm_restored):
    monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)  # the CLI sets it for its process
    root = tmp_path / "my results <v2>"  # a root a pasted command must quote
    model_dir = root / "_state" / "r1" / quote(MODEL, safe="")
    model_dir.mkdir(parents=True)
    mounts("-t", "tmpfs", "-o", "size=4k", "tmpfs", str(model_dir))  # the scan actors' files: no room
    args = ["run", SMOKE, "--set", 'stages=["scan"]', "--set", "data.source=probe://?n=32&seed=0&size=32",
            "--results", str(root), "--run-id", "r1", "--no-progress"]  # the last five: not in the resume command
    assert cli.main(args) == 1
    time.sleep(1.0)  # Ray reports a failed call it was never asked for when the call's object is freed
    message, command = _resume_line(capfd.readouterr().err)  # what reached the terminal, Ray's output included
    assert re.fullmatch(rf"ccs-ray: stage scan failed: no space left on device while writing "
                        rf"{re.escape(str(model_dir))}/\S+ \(--debug shows the traceback\)", message), message
    (row,) = _runs(root)
    assert (row["status"], row["stage"]) == ("failed", "scan") and row["error"].startswith("no space left on device")
    subprocess.run(["umount", "-l", str(model_dir)], check=True)
    pasted = shlex.split(command)  # as a POSIX shell reads the pasted line
    assert pasted == ["ccs-ray", *args[:-5], "--results", str(root), "--resume", "--run-id", "r1"]
    assert cli.main(pasted[1:]) == 0
    (row,) = _runs(root)
    assert (row["status"], row["n_images"]) == ("done", 32)


@pytest.mark.slow
def test_a_root_deleted_mid_scan_is_reported_and_nothing_of_the_run_reappears(ray_cluster, tmp_path, monkeypatch,
                                                                              capsys, sigterm_restored):
    from ccs_ray.stages import scan

    root = tmp_path / "results"
    done_rows = scan._done_rows

    def delete_root_after_the_first_checkpoint(records):
        shutil.rmtree(root, ignore_errors=True)
        return done_rows(records)

    monkeypatch.setattr(scan, "_done_rows", delete_root_after_the_first_checkpoint)
    code = cli.main(["run", SMOKE, "--set", 'stages=["scan"]', "--set", "scan.checkpoint_every=1", "--results",
                     str(root), "--run-id", "d1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"ccs-ray: stage scan failed: the results root {root} disappeared during the run")
    assert err.endswith(f"start a new run with: ccs-ray run {SMOKE} --set 'stages=[\"scan\"]' --set "
                        f"scan.checkpoint_every=1 --results {root}")
    time.sleep(1.0)  # the run's actors are gone; none of their writes may land later
    assert not root.exists()


def test_ctrl_c_and_sigterm_are_recorded_interrupted_with_a_resume_line(ray_cluster, tmp_path, monkeypatch, capsys,
                                                                         sigterm_restored):
    from ccs_ray.stages import report

    root = tmp_path / "a root"
    for run_id, stop, status, how in (("c1", _ctrl_c, 130, "Ctrl-C (SIGINT)"), ("t1", _sigterm, 143, "SIGTERM")):
        monkeypatch.setattr(report, "build_report", stop)
        code = cli.main(["run", SMOKE, "--set", 'stages=["report"]', "--results", str(root), "--run-id", run_id,
                         "--no-progress"])
        message, command = _resume_line(capsys.readouterr().err)
        assert code == status
        assert message == (f"ccs-ray: run {run_id} interrupted by {how} during stage report "
                           f"(--debug shows the traceback)")
        assert command == (f"ccs-ray run {SMOKE} --set 'stages=[\"report\"]' --results '{root}' --resume "
                           f"--run-id {run_id}")
        (row,) = [r for r in _runs(root) if r["run_id"] == run_id]
        assert (row["status"], row["stage"], row["error"]) == ("interrupted", "report", f"interrupted by {how}")
    monkeypatch.setattr(report, "build_report", lambda results, out: out)
    assert cli.main(shlex.split(command)[1:]) == 0
    assert {r["run_id"]: r["status"] for r in _runs(root)} == {"c1": "interrupted", "t1": "done"}


def _ctrl_c(results, out):
    raise KeyboardInterrupt


def _sigterm(results, out):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises in this thread before the sleep ends
    raise AssertionError("SIGTERM did not stop the run")


@pytest.mark.slow
def test_no_process_of_a_local_cluster_outlives_its_killed_driver(tmp_path):
    """Ray's agents alone would live 60 s more; the watchdog ends them with the driver."""
    code = ("import sys, time; from ccs_ray.cluster import ensure_ray; ensure_ray(num_cpus=1); "
            "import ray; ray.get(ray.remote(lambda: 1).remote()); print('up', flush=True); time.sleep(300)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert driver.stdout is not None and driver.stdout.readline().strip() == "up"
    cluster = ray_descendants(driver.pid)
    assert len(cluster) >= 4  # the control store, raylet, both agents, a worker ...
    killed = time.monotonic()
    driver.kill()
    driver.wait()
    while any(alive(pid, start) for pid, start in cluster.items()) and time.monotonic() - killed < 60:
        time.sleep(0.1)
    alive_after = time.monotonic() - killed
    assert alive_after < 5, f"the cluster's processes lived {alive_after:.1f} s after the driver was killed"
    print(json.dumps({"processes_alive_after_s": round(alive_after, 2)}))
