"""``ccs-ray sql``: one query, a canned query or the interactive shell over a results root, printed as an aligned
table, CSV, JSON records or Parquet (:mod:`ccs_ray.analytics` opens the root and runs the SQL).

JSON output is strict (:mod:`ccs_ray.jsonout`: NaN and infinities are null). A query DuckDB refuses is one line:
the first paragraph of DuckDB's message and where to look (:data:`SHELL_HINT`, :data:`QUERY_HINT`); ``ccs-ray sql
QUERY`` prints it to stderr and exits 2. A path that leads outside the results root
(:class:`~ccs_ray.analytics.OutsideRootError`) is refused the same way, in one line that names the path, where it
leads and the root.

The shell (:func:`interactive`) reads statements ending with ';' and the meta-commands of :data:`COMMANDS`. On a
terminal it edits lines with the standard library's ``readline`` (GNU readline or libedit): Up and Down walk
through the lines entered, in this and earlier sessions, kept in :func:`history_path` (a history that cannot be
read or written is left alone; the shell goes on).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TextIO, overload

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import jsonout
from .analytics import (
    OutsideRootError,
    ResultsRootError,
    SqlError,
    canned_sql,
    connect,
    describe_canned,
    describe_views,
    query,
)
from .choices import SQL_FORMATS
from .tables import SUMMARIES

SHELL_FORMATS = SQL_FORMATS[:-1]  # what the shell prints (parquet is binary: a QUERY and -o FILE)
COMMANDS = {
    ".tables": "the results tables, with what a row is",
    ".views": "every view (tables and summaries) with its columns",
    ".queries": "the canned queries, with the question each answers",
    ".run NAME": "run a canned query",
    f".format {'|'.join(SHELL_FORMATS)}": "how results print",
    ".help": "these commands",
    ".quit": "leave (also .exit or Ctrl-D)",
}
SHELL_HINT = "(.views lists the views and their columns; .queries the canned queries)"
QUERY_HINT = "(ccs-ray sql without a QUERY opens a shell: .views lists the views, .queries the canned queries)"
HISTORY_FILE = "sql_history"  # under $XDG_STATE_HOME/ccs-ray
HISTORY_LENGTH = 1000  # lines kept
PROMPT, CONTINUED = "ccs> ", "...> "  # a new statement, a statement's next line


@overload
def format_table(table: pa.Table, fmt: Literal["table", "csv", "json"] = "table") -> str: ...


@overload
def format_table(table: pa.Table, fmt: str) -> str | bytes: ...


def format_table(table: pa.Table, fmt: str = "table") -> str | bytes:
    """Render a result as an aligned text table, CSV, JSON records (str, strict JSON) or Parquet (bytes)."""
    if fmt not in SQL_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(SQL_FORMATS)}")
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    rows = table.to_pylist()
    if fmt == "json":
        return jsonout.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([_cell(v) for v in row.values()] for row in rows)
        return out.getvalue()
    cells = [table.column_names] + [[_cell(v) for v in row.values()] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.column_names))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({table.num_rows} row{'s' * (table.num_rows != 1)})")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def run_sql(sql: str, root: str, fmt: str = "table") -> str | bytes:
    """Run one query over the results under ``root`` (read-only) and format the result."""
    if fmt not in SQL_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(SQL_FORMATS)}")
    with connect(root) as conn:
        return format_table(query(conn, sql), fmt)


def run_canned(name: str, root: str, fmt: str = "table") -> str | bytes:
    """Run canned query ``name`` over the results under ``root`` and format the result."""
    return run_sql(canned_sql(name), root, fmt)


def error_line(error: Exception, hint: str) -> str:
    """A refused query as one line: the first paragraph of its message (DuckDB's, with its 'Did you mean' or
    candidate columns, not the query's position or the views listed after it), then ``hint``."""
    first = " ".join(str(error).strip().split("\n\n", 1)[0].split())
    return f"Error: {first} {hint}"


def history_path() -> Path:
    """The shell's history file: ``$XDG_STATE_HOME/ccs-ray/sql_history``, else ``~/.local/state/ccs-ray/...``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "ccs-ray" / HISTORY_FILE


def _line_reader(stdin: TextIO, stdout: TextIO) -> Callable[[str], str | None]:
    """prompt -> the next line of input without its end, None at its end. On a terminal (``stdin`` and ``stdout``
    the process's own) lines are edited with readline and kept in :func:`history_path`; otherwise read as they come,
    with the prompt written only when ``stdin`` is a terminal."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty() and stdout.isatty():
        try:
            import readline
        except ImportError:  # a Python built without it: plain lines
            pass
        else:
            return _edited_lines(readline)

    def plain(prompt: str) -> str | None:
        if stdin.isatty():
            stdout.write(prompt)
            stdout.flush()
        line = stdin.readline()
        return line.rstrip("\n") if line else None

    return plain


def _edited_lines(readline) -> Callable[[str], str | None]:
    """:func:`_line_reader` on a terminal: ``input`` with ``readline``'s editing, each line added to the history
    file as it is entered."""
    path = history_path()
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(path)
    except OSError:  # none yet, or unreadable: a fresh history
        pass

    def edited(prompt: str) -> str | None:
        try:
            line = input(prompt)
        except EOFError:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:  # a read-only home, a full disk: this session keeps its history in memory
            pass
        return line

    return edited


def interactive(root: str, stdin: TextIO | None = None, stdout: TextIO | None = None, fmt: str = "table") -> int:
    """The shell: read SQL from ``stdin`` (default: sys.stdin; statements end with ';') and print results in ``fmt``
    (table, csv or json) to ``stdout`` (default: sys.stdout) until the input ends or ``.quit``. Meta-commands:
    :data:`COMMANDS`. An error prints one line (:func:`error_line`) and the shell goes on; Ctrl-C drops the
    statement being typed, or stops the one running."""
    if fmt not in SHELL_FORMATS:
        raise ValueError(f"the interactive mode prints {', '.join(SHELL_FORMATS)}, not {fmt!r}: for parquet, "
                         f"give a QUERY or --query NAME and -o FILE")
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    read = _line_reader(stdin, stdout)
    buffer: list[str] = []

    def run(sql: str) -> None:
        try:
            text = format_table(query(conn, sql), fmt)
            assert isinstance(text, str)  # not parquet: checked above
            stdout.write(text)
        except SqlError as e:
            stdout.write(error_line(e, SHELL_HINT) + "\n")
        except KeyboardInterrupt:  # Ctrl-C while a result is read: the shell goes on
            stdout.write("interrupted\n")

    if stdin.isatty():
        stdout.write(f"ccs-ray sql on {root}: end statements with ';'; .help lists the commands\n")
    with connect(root) as conn:
        while True:
            try:
                line = read(CONTINUED if buffer else PROMPT)
            except KeyboardInterrupt:
                stdout.write("\n")
                buffer.clear()
                continue
            if line is None:
                break
            command = line.strip()
            if not buffer and command.startswith("."):
                name, _, arg = command.partition(" ")
                arg = arg.strip()
                if name in (".quit", ".exit"):
                    break
                if name == ".tables":
                    stdout.write("".join(f"  {t}: {s}\n" for t, s in SUMMARIES.items()))
                elif name == ".views":
                    stdout.write(describe_views(conn) + "\n")
                elif name == ".queries":
                    stdout.write(describe_canned() + "\n")
                elif name == ".run":
                    try:
                        run(canned_sql(arg))
                    except SqlError as e:
                        stdout.write(error_line(e, SHELL_HINT) + "\n")
                elif name == ".format" and arg in SHELL_FORMATS:
                    fmt = arg
                elif name == ".help":
                    stdout.write("".join(f"  {c}: {what}\n" for c, what in COMMANDS.items()))
                else:
                    stdout.write(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}\n")
                continue
            if command or buffer:
                buffer.append(line)
            if command.endswith(";"):
                run("\n".join(buffer))
                buffer.clear()
        if "\n".join(buffer).strip():
            run("\n".join(buffer))
    return 0


def main_sql(query: str | None, root: str, fmt: str = "table", out: str | None = None,
             canned: str | None = None) -> int:
    """``ccs-ray sql``: run ``query`` or the canned query ``canned`` (or, with neither, the shell) and print the
    result, or write it to ``out``. Returns the exit code: 0, or 2 (a query refused, printed as one line; bad use)."""
    try:
        if query and canned:
            raise ValueError("give a QUERY or --query NAME, not both")
        if query is None and canned is None:
            return interactive(root, fmt=fmt)
        if canned:
            result = run_canned(canned, root, fmt)
        elif query is not None:
            result = run_sql(query, root, fmt)
        else:  # an empty canned name
            raise ValueError("give a QUERY or --query NAME")
    except (ResultsRootError, OutsideRootError, ValueError) as e:  # one line, and nothing the views could help with
        print(f"Error: {e}", file=sys.stderr)
        return 2
    except SqlError as e:
        print(error_line(e, QUERY_HINT), file=sys.stderr)
        return 2
    if out:
        with fsspec.open(out, "wb" if isinstance(result, bytes) else "w") as f:
            f.write(result)
    elif isinstance(result, bytes):
        if sys.stdout.isatty():
            print("Error: parquet output is binary; write it to a file with -o FILE", file=sys.stderr)
            return 2
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(result)
    return 0


def views_sql(root: str) -> str:
    """The SQL that gives plain DuckDB (``duckdb -init FILE``, or ``duckdb.sql`` in Python) the views and macros
    of ``ccs-ray sql`` over ``root``: the tables ``connect`` builds from the package's data, inline; one view per
    results table, reading the root's Parquet by its path or URI (a typed empty view where it has no files); the
    macros and derived views of ``sql/macros.sql``. The interval functions (Python, :mod:`ccs_ray.stats`) are
    macros that answer NULL of their type: ``ccs-ray sql`` computes them."""
    import duckdb

    from .analytics import PROTOCOL, macros_sql, resolve_root
    from .files import fs_uri
    from .tables import REFERENCE_TABLES, TABLES

    fs, path = resolve_root(root)
    where = fs_uri(fs, path).replace("'", "''")
    plain = {name for (name,) in duckdb.connect().execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    lines = [f"-- ccs-ray views and macros over {where}, for plain DuckDB: duckdb -init THIS_FILE",
             "-- written by `ccs-ray sql --views-file`; the interval functions answer NULL here (ccs-ray sql computes "
             "them)."]
    with connect(root) as conn:
        for name, params, returns in conn.execute(
                "SELECT DISTINCT function_name, parameters, return_type FROM duckdb_functions() "
                "WHERE function_type = 'scalar' ORDER BY function_name").fetchall():
            if name not in plain:
                lines.append(f"CREATE MACRO {name}({', '.join(params)}) AS CAST(NULL AS {returns});")
        for (table,) in conn.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                                     "ORDER BY table_name").fetchall():
            columns = ", ".join(f'"{name}" {kind}' for name, kind, *_ in conn.execute(f"DESCRIBE {table}").fetchall())
            lines.append(f"CREATE TABLE {table} ({columns});")
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            if rows:
                lines.append(f"INSERT INTO {table} VALUES\n  "
                             + ",\n  ".join("(" + ", ".join(map(_literal, row)) + ")" for row in rows) + ";")
        base = [t for t in TABLES if t not in REFERENCE_TABLES] + list(REFERENCE_TABLES)
        views = dict(conn.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
        lines += [views[t].replace(f"'{PROTOCOL}://", f"'{where}/") for t in base]
    lines.append(macros_sql())
    return "\n".join(lines) + "\n"


def _literal(value) -> str:
    """``value`` (a DuckDB row's cell: NULL, bool, number, text or a list of them) as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else f"'{value}'::DOUBLE"
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def write_views_file(root: str, out: str) -> str:
    """``ccs-ray sql --views-file ROOT``: write :func:`views_sql` of ``root`` to ``out``; returns what to run."""
    text = views_sql(root)
    with fsspec.open(out, "w") as f:
        f.write(text)
    return f"wrote {out} for the results root {root}; open it with: duckdb -init {out}"
