"""On a terminal a run is never silent for long: ``ccs-ray run jobs/smoke.toml`` in a pseudo-terminal says what
preflight checks and what each step between the stages does, and no gap between two outputs outside a progress
bar reaches :data:`MAX_SILENCE_S`."""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_SILENCE_S = 10.0
# a tqdm bar's count ("3/16 [") or a step's elapsed seconds ("... 4 s"): output that updates while its step runs
UPDATING = re.compile(r"\d+/\d+ \[|\.\.\. \d+ s$")


def _run_in_terminal(args: list[str], timeout: float = 400) -> tuple[int, list[tuple[float, str]]]:
    """(exit status, [(seconds since start, text)] of each output chunk) of ``ccs-ray ARGS`` in a pseudo-terminal
    of 120 x 40 characters."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdout and stderr are the terminal
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        os.chdir(REPO)
        os.execvpe(sys.executable, [sys.executable, "-m", "ccs_ray.cli", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    t0, chunks = time.monotonic(), []
    while time.monotonic() - t0 < timeout:
        if not select.select([fd], [], [], 1.0)[0]:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append((time.monotonic() - t0, data.decode(errors="replace")))
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), chunks


@pytest.mark.slow
def test_a_run_on_a_terminal_says_what_it_does_and_is_never_silent_for_long(tmp_path):
    code, chunks = _run_in_terminal(["run", "jobs/smoke.toml", "--results", str(tmp_path / "results")])
    text = "".join(t for _, t in chunks)
    assert code == 0, text[-3000:]
    for line in ("checking the spec smoke", "checking the weights of 1 model", "checking the data source probe://",
                 "checking the classification dataset probe-shapes", "starting a local Ray", "scan: starting",
                 "judge ccs-tiny/none: starting", "prune ccs-tiny/none: loading the model",
                 "prune ccs-tiny/none: encoding the text side of 3 datasets", "report: starting"):
        assert line in text, (line, text[-3000:])
    assert text.index("checking the spec") < text.index("starting a local Ray") < text.index("scan: starting")
    gaps = [(now - before, last) for (before, last), (now, _) in zip(chunks, chunks[1:], strict=False)
            if not UPDATING.search(last.rstrip("\r\n ").rsplit("\r", 1)[-1])]
    worst = max(gaps, default=(0.0, ""))
    assert worst[0] < MAX_SILENCE_S, f"{worst[0]:.1f} s of silence after {worst[1]!r}"
