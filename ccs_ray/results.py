"""A results root in Python and in notebooks: ``ccs_ray.open(root)`` -> :class:`Results`.

- :meth:`Results.sql`: any SQL over the views of :mod:`ccs_ray.analytics` (one per table, and the macros) as a
  DuckDB relation: ``.df()`` is a pandas DataFrame, ``.pl()`` a polars one (each needs its package installed),
  ``.arrow()`` a pyarrow table, ``.fetchall()`` tuples; printed, it is a table.
- :meth:`Results.heads`: one row per analysed head of a model (canned query ``head_details``).
- :meth:`Results.card`: one head's card (:class:`HeadCard`): shown inline in Jupyter, as text elsewhere.
- :meth:`Results.report`: writes the HTML report.

The connection is read-only by default (:func:`ccs_ray.analytics.connect`): a statement that reads or writes
another file is refused with a one-line :class:`~ccs_ray.analytics.ReadOnlyError` naming the way out,
``ccs_ray.open(root, read_only=False)``. The views are listed when opened: open the root again after a run
that wrote a table it did not hold yet. Unknown models, runs, judges and heads are a
:class:`~ccs_ray.reporting.cards.HeadError` that names those the results hold.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import duckdb

from ccs_ray.analytics import canned_subquery, connect, relation
from ccs_ray.reporting import build_report, card_page
from ccs_ray.reporting.cards import HeadError, find_card, format_card, judge_of

# The card is shown in an iframe of its own, so that its page's styles stay inside it; sandboxed, so that
# nothing in it runs; same-origin, so that the notebook can fit the frame's height to the card once loaded.
CARD_FRAME_PX = 640  # the frame's height until it is fitted (or where the notebook runs no script)
_FIT_HEIGHT = "this.style.height = (this.contentDocument.documentElement.scrollHeight + 4) + 'px'"
_HEAD_COLUMNS = ("head_label", "layer", "head", "ccs", "level", "label")  # first in heads(); the rest follow


@dataclass(frozen=True)
class HeadCard:
    """One head's card: ``text`` as ``ccs-ray head`` prints it, ``page`` the standalone HTML card page (the one
    ``ccs-ray head --open`` writes). Jupyter shows the page inline; ``repr`` and ``str`` are the text."""

    model: str
    head: str
    run_id: str
    text: str
    page: str

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        """The card page in a sandboxed iframe: no style or script of it reaches the notebook."""
        title = html.escape(f"{self.head} of {self.model} (run {self.run_id})", quote=True)
        return (f'<iframe title="{title}" srcdoc="{html.escape(self.page, quote=True)}" '
                f'sandbox="allow-same-origin" style="width: 100%; height: {CARD_FRAME_PX}px; border: 0" '
                f'onload="{_FIT_HEIGHT}"></iframe>')


class Results:
    """The results under ``root`` (any fsspec URI; a root holding one spec's folder opens that folder), through
    one DuckDB connection (``conn``, read-only unless ``read_only=False``). Closes with ``close()`` or as a
    context manager."""

    def __init__(self, root: str, read_only: bool = True):
        self.root, self.read_only = str(root), read_only
        self.conn = connect(self.root, read_only=read_only)

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writable"
        return f"Results({self.root!r}, {mode}; models: {', '.join(self.models()) or 'none'})"

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def sql(self, query: str, params: list | None = None) -> duckdb.DuckDBPyRelation | None:
        """``query`` as a DuckDB relation (``.df()``, ``.pl()``, ``.arrow()``, ``.fetchall()``), read each time it is
        read; ``?`` placeholders take ``params``. None for a statement with no result."""
        return relation(self.conn, query, params)

    def models(self) -> list[str]:
        """The models the results hold spans or CCS of, sorted."""
        rows = self.conn.sql("SELECT model FROM judged_spans UNION SELECT model FROM ccs ORDER BY model").fetchall()
        return [model for (model,) in rows]

    def heads(self, model: str, run_id: str | None = None, judge: str | None = None) -> duckdb.DuckDBPyRelation:
        """One row per head of ``model`` with a CCS, in layer and head order: head_label, layer, head, ccs, level
        (high, medium, low), label, then the rest of canned query ``head_details`` (held-out CCS, label fidelity,
        heuristic, the top span texts, judge, run_id, model). ``run_id``: default the latest run with CCS;
        ``judge``: default the report's (the majority vote ``combined`` where there is one)."""
        if model not in self.models():
            raise HeadError(f"no results for model {model!r}; models: {', '.join(self.models()) or 'none'}")
        runs = self._values("run_id", "ccs WHERE model = ?", [model])
        run_id = run_id or (runs[-1] if runs else None)
        if run_id is None or run_id not in runs:
            raise HeadError(f"no CCS of {model}" + (f" in run {run_id!r}" if run_id else "")
                            + f"; runs with CCS: {', '.join(runs) or 'none (the judge stage has not run)'}")
        judges = self._values("judge", "ccs WHERE model = ? AND run_id = ?", [model, run_id])
        judge = judge or judge_of([{"judge": j} for j in judges])
        if judge not in judges:
            raise HeadError(f"no judge {judge!r} of {model} in run {run_id}; judges: {', '.join(judges)}")
        columns = ", ".join(_HEAD_COLUMNS)
        return self.conn.sql(f"SELECT {columns}, * EXCLUDE ({columns}) FROM {canned_subquery('head_details')} "
                             "WHERE model = ? AND run_id = ? AND judge = ? ORDER BY layer, head",
                             params=[model, run_id, judge])

    def card(self, model: str, head: str, run_id: str | None = None) -> HeadCard:
        """The card of ``head`` (``L11.H5``) of ``model`` in ``run_id`` (default: the latest run that has it)."""
        card = find_card(self.conn, model, head, run_id)
        return HeadCard(card["model"], card["head_label"], card["run_id"], format_card(card),
                        card_page(self.conn, self.root, card))

    def report(self, path: str, heads: list[str] | None = None) -> str:
        """Write the HTML report to ``path`` (any fsspec URI); ``heads`` (``["L11.H5", ...]``): show only these
        heads in the head explorer and cards. Returns ``path``."""
        return build_report(self.root, str(path), heads=heads)

    def _values(self, column: str, source: str, params: list) -> list[str]:
        """The distinct values of ``column`` in ``source`` (a table and its condition), sorted."""
        rows = self.conn.sql(f"SELECT DISTINCT {column} FROM {source} ORDER BY 1", params=params).fetchall()
        return [value for (value,) in rows]


def open(root: str, read_only: bool = True) -> Results:
    """The results under ``root`` (:class:`Results`); ``read_only=False`` for a writable connection."""
    return Results(root, read_only=read_only)
