"""Progress of a stage: a bar on a terminal, plain lines in logs.

``Progress(desc, total, unit)`` draws a tqdm bar when stderr is a terminal; otherwise (a submitted job's
log, a redirected run) it prints one plain line every :data:`LINE_EVERY_S` seconds and one at the end::

    judge ViT-B-32/openai: 12/48 heads (25%), 0.8 heads/s, calls=73, retries=2, cost_usd=0.0113

``update(n, **figures)`` advances by ``n`` and sets the running figures shown after the count.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_EVERY_S = 30.0


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
