"""``ccs-ray sql``: one query, a canned query or the interactive loop over a results root, printed as an aligned
table, CSV, JSON records or Parquet (:mod:`ccs_ray.analytics` opens the root and runs the SQL).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Literal, TextIO, overload

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .analytics import ResultsRootError, SqlError, canned_sql, connect, describe_canned, describe_views, query
from .choices import SQL_FORMATS


@overload
def format_table(table: pa.Table, fmt: Literal["table", "csv", "json"] = "table") -> str: ...


@overload
def format_table(table: pa.Table, fmt: str) -> str | bytes: ...


def format_table(table: pa.Table, fmt: str = "table") -> str | bytes:
    """Render a result as an aligned text table, CSV, JSON records (str) or Parquet (bytes)."""
    if fmt not in SQL_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(SQL_FORMATS)}")
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    rows = table.to_pylist()
    if fmt == "json":
        return json.dumps(rows, default=str, indent=1) + "\n"
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


def interactive(root: str, stdin: TextIO | None = None, stdout: TextIO | None = None, fmt: str = "table") -> int:
    """Read SQL from ``stdin`` (default: sys.stdin; statements end with ';') and print results in ``fmt``
    (table, csv or json) to ``stdout`` (default: sys.stdout) until EOF or ``.quit``.

    Commands: ``.views`` (views and columns), ``.queries`` (canned queries), ``.run NAME`` (run one),
    ``.format table|csv|json``, ``.quit``. An error prints and the loop goes on.
    """
    if fmt not in SQL_FORMATS[:-1]:
        raise ValueError(f"the interactive mode prints {', '.join(SQL_FORMATS[:-1])}, not {fmt!r}: for parquet, "
                         f"give a QUERY or --query NAME and -o FILE")
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    conn = connect(root)
    prompt = stdin.isatty()
    buffer: list[str] = []

    def run(sql: str) -> None:
        try:
            text = format_table(query(conn, sql), fmt)
            assert isinstance(text, str)  # not parquet: checked above
            stdout.write(text)
        except SqlError as e:
            stdout.write(f"Error: {e}\n")

    if prompt:
        stdout.write(f"ccs-ray sql on {root}: end statements with ';', .views, .queries, .run NAME, .quit\n")
    while True:
        if prompt:
            stdout.write("... " if buffer else "ccs> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        command = line.strip()
        if not buffer and command.startswith("."):
            name, _, arg = command.partition(" ")
            if name in (".quit", ".exit"):
                break
            elif name == ".views":
                stdout.write(describe_views(conn) + "\n")
            elif name == ".queries":
                stdout.write(describe_canned() + "\n")
            elif name == ".run":
                try:
                    run(canned_sql(arg.strip()))
                except SqlError as e:
                    stdout.write(f"Error: {e}\n")
            elif name == ".format" and arg.strip() in SQL_FORMATS[:-1]:
                fmt = arg.strip()
            else:
                stdout.write(f"unknown command {command!r}; commands: .views, .queries, .run NAME, "
                             f".format table|csv|json, .quit\n")
            continue
        buffer.append(line)
        if command.endswith(";"):
            run("".join(buffer))
            buffer.clear()
    if "".join(buffer).strip():
        run("".join(buffer))
    conn.close()
    return 0


def main_sql(query: str | None, root: str, fmt: str = "table", out: str | None = None,
             canned: str | None = None) -> int:
    """``ccs-ray sql``: run ``query`` or the canned query ``canned`` (or, with neither, the interactive
    loop) and print the result, or write it to ``out``. Returns the exit code: 0, 1 (query error), 2 (bad use)."""
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
    except SqlError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except (ResultsRootError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
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
