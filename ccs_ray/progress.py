"""Progress of a stage: a bar on a terminal, plain lines in logs.

``Progress(desc, total, unit)`` draws a tqdm bar when stderr is a terminal; otherwise (a submitted job's
log, a redirected run) it prints one plain line every :data:`LINE_EVERY_S` seconds and one at the end::

    judge ViT-B-32/openai: 12/48 heads (25%), 0.8 heads/s, calls=73, retries=2, cost_usd=0.0113

``update(n, **figures)`` advances by ``n`` and sets the running figures shown after the count.
On a terminal, the steps that have no bar (checks before a run, starting Ray, the setup of a stage) say what they
do: :func:`say` one line, :class:`Steps` one line per step whose elapsed seconds count up every :data:`TICK_S`, so
that a terminal is never silent for long.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_EVERY_S = 30.0
#: Seconds between two updates of a step's elapsed time on a terminal.
TICK_S = 1.0


def say(text: str, enabled: bool = True) -> None:
    """``text`` as one line on stderr when ``enabled`` and stderr is a terminal (logs get the bars' lines only)."""
    if enabled and sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


class Steps:
    """Steps without a bar, one after another (``next(text)`` ends the previous one): on a terminal each is one line,
    ``text`` and its elapsed seconds, updated every :data:`TICK_S` until the next step or :meth:`close`."""

    def __init__(self, enabled: bool = True):
        self.on = enabled and sys.stderr.isatty()
        self.text, self.t0 = "", 0.0
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.ticker: threading.Thread | None = None

    def next(self, text: str) -> None:
        if not self.on:
            return
        with self.lock:
            self._end()
            self.text, self.t0 = text, time.monotonic()
            _write(text)
        if self.ticker is None:
            self.ticker = threading.Thread(target=self._tick, name="ccs-ray-steps", daemon=True)
            self.ticker.start()

    def _tick(self) -> None:
        while not self.stop.wait(TICK_S):
            with self.lock:
                if self.text:
                    _write(f"\r{self.text} {time.monotonic() - self.t0:.0f} s")

    def _end(self) -> None:
        if self.text:
            _write("\n")
            self.text = ""

    def close(self) -> None:
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._end()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write(text: str) -> None:
    print(text, end="", file=sys.stderr, flush=True)


class Progress:
    """Progress over ``total`` units of one stage; ``enabled=False`` shows nothing."""

    def __init__(self, desc: str, total: int, unit: str, enabled: bool = True):
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.done, self.t0 = 0, time.monotonic()
        self.figures: dict[str, object] = {}
        self.last_line = self.t0
        self.bar = tqdm(total=total, unit=unit, desc=desc) if enabled and sys.stderr.isatty() else None

    def update(self, n: int = 1, **figures) -> None:
        self.done += n
        self.figures.update(figures)
        if self.bar is not None:
            self.bar.update(n)
            if figures:
                self.bar.set_postfix({k: _short(v) for k, v in self.figures.items()}, refresh=False)
        elif self.enabled and time.monotonic() - self.last_line >= LINE_EVERY_S:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        elapsed = max(self.last_line - self.t0, 1e-9)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={_short(v)}" for k, v in self.figures.items())
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}, {self.done / elapsed:.2g} {self.unit}/s{extra}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value
