"""``ccs-ray sql``: the interactive shell on a real terminal (a pseudo-terminal: line editing, Up to re-run a line,
a history kept across sessions, meta-commands, one-line errors), one-line errors of ``ccs-ray sql QUERY``, and
every column of every table and view usable unquoted in DuckDB SQL."""

import os
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from ccs_ray import analytics, sqlshell, tables
from ccs_ray.sqlshell import COMMANDS, PROMPT, QUERY_HINT, SHELL_HINT, history_path, main_sql

UP, LEFT = "\x1b[A", "\x1b[D"  # arrow keys as a terminal sends them
ANSWER = "SELECT 40 + 2 AS answer;"
WAIT_S = 60  # for the shell to start (imports, the root's views) or answer


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "results")
    tables.write_table(root, "ccs", [dict(layer=0, head=1, head_label="L0.H1", judge="combined", ccs=3)], "r1", "m")
    return root


class Terminal:
    """``ccs-ray sql`` on a pseudo-terminal: what it prints, and lines typed into it."""

    def __init__(self, root: str, state: Path):
        self.fd, child = os.openpty()
        env = {**os.environ, "XDG_STATE_HOME": str(state), "TERM": "dumb"}
        self.proc = subprocess.Popen([sys.executable, "-m", "ccs_ray.cli", "sql", "--results", root],
                                     stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
        os.close(child)
        self.seen = ""

    def expect(self, text: str) -> str:
        """Everything printed since the last call, up to and including ``text`` (fails after :data:`WAIT_S`)."""
        deadline = time.monotonic() + WAIT_S
        while text not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no {text!r} within {WAIT_S} s; printed: {self.seen!r}"
            self.seen += os.read(self.fd, 65536).decode(errors="replace")
        out, self.seen = self.seen.split(text, 1)
        return (out + text).replace("\r\n", "\n")

    def type(self, keys: str) -> str:
        """Type ``keys`` and Enter; what the shell printed after the line typed, until its next prompt."""
        os.write(self.fd, (keys + "\r").encode())
        return self.expect(PROMPT).split("\n", 1)[1]

    def close(self, keys: str) -> int:
        os.write(self.fd, keys.encode())
        try:
            return self.proc.wait(WAIT_S)
        finally:
            os.close(self.fd)


def test_shell_on_a_terminal_edits_lines_and_keeps_history(root, tmp_path):
    state = tmp_path / "state"
    shell = Terminal(root, state)
    assert "ccs-ray sql on" in shell.expect(PROMPT)
    assert shell.type(ANSWER) == "answer\n------\n42\n(1 row)\n" + PROMPT
    assert shell.type(UP) == "answer\n------\n42\n(1 row)\n" + PROMPT  # Up and Enter: the last line again
    assert shell.type("SELECT 'a' AS t;" + LEFT * 7 + "bc") == "t\n---\nabc\n(1 row)\n" + PROMPT  # edited
    assert shell.type(".tables") == "".join(f"  {t}: {s}\n" for t, s in tables.SUMMARIES.items()) + PROMPT
    assert "  spans(run_id, model, layer" in shell.type(".views")
    assert "  ccs_at_k: " in shell.type(".queries")
    assert shell.type(".help") == "".join(f"  {c}: {what}\n" for c, what in COMMANDS.items()) + PROMPT
    error = shell.type("SELECT oops FROM ccs;").removesuffix(PROMPT)
    assert error.count("\n") == 1 and error.startswith('Error: Binder Error: Referenced column "oops" not found')
    assert error.endswith(f"{SHELL_HINT}\n")
    assert shell.type(ANSWER) == "answer\n------\n42\n(1 row)\n" + PROMPT
    assert shell.close(".quit\r") == 0
    history = (state / "ccs-ray" / "sql_history").read_text().splitlines()
    assert history[-3:] == ["SELECT oops FROM ccs;", ANSWER, ".quit"] and ".tables" in history

    shell = Terminal(root, state)  # a new session: Up reaches the lines of the last one
    shell.expect(PROMPT)
    assert shell.type(UP * 2) == "answer\n------\n42\n(1 row)\n" + PROMPT  # Up twice: past .quit to the query
    assert shell.close("\x04") == 0  # Ctrl-D: the end of input


def test_history_that_cannot_be_written_leaves_the_shell_working(root, tmp_path):
    state = tmp_path / "state"
    state.write_text("a file where the history's folder would be")
    shell = Terminal(root, state)
    shell.expect(PROMPT)
    assert "\n42\n" in shell.type(ANSWER)
    assert "\n42\n" in shell.type(UP)  # the session keeps its history in memory
    assert shell.close(".quit\r") == 0


def test_history_path_follows_xdg_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert history_path() == tmp_path / "ccs-ray" / "sql_history"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert history_path() == tmp_path / "home" / ".local" / "state" / "ccs-ray" / "sql_history"


def test_piped_shell_meta_commands_and_one_line_errors(root):
    import io

    stdin = io.StringIO(".tables\n.run nope\nSELECT * FROM ccz;\nSELECT 1 +;\n.help\n")
    stdout = io.StringIO()
    assert sqlshell.interactive(root, stdin, stdout) == 0
    lines = stdout.getvalue().splitlines()
    errors = [l for l in lines if l.startswith("Error: ")]
    assert len(lines) == len(tables.SUMMARIES) + 3 + len(COMMANDS)
    assert errors[0] == f"Error: no canned query 'nope'; canned queries: {', '.join(analytics.canned_queries())} " \
                        f"{SHELL_HINT}"
    assert errors[1].startswith("Error: Catalog Error: Table with name ccz does not exist!") and "ccs" in errors[1]
    assert errors[2].startswith("Error: Parser Error: syntax error") and "LINE 1" not in errors[2]


def test_query_error_is_one_line_and_exit_2(root, capsys):
    assert main_sql("SELECT oops FROM ccs", root) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: Binder Error") and err.rstrip().endswith(QUERY_HINT)
    assert main_sql(None, root, canned="nope") == 2
    assert capsys.readouterr().err.startswith("Error: no canned query 'nope'; canned queries: ")


def _keywords() -> dict[str, str]:
    """DuckDB's keywords that cannot name a column unquoted -> their category."""
    return dict(duckdb.sql("SELECT keyword_name, keyword_category FROM duckdb_keywords() "
                           "WHERE keyword_category IN ('reserved', 'type_function')").fetchall())


def test_every_table_and_view_column_is_usable_unquoted(tmp_path):
    from synthetic_results import write_results

    root = str(tmp_path / "results")
    write_results(root, models=("ViT-B-32/openai",))
    tables.write_table(root, "conversions", [dict(source="s", item="i", from_mode="L",
                                                  logged_at=datetime.now(UTC))], "r", "ViT-B-32/openai")
    keywords = _keywords()
    assert "at" in keywords  # the check can fail: DuckDB 2 reserves the name earlier versions used
    with analytics.connect(root) as conn:
        views = [v for (v,) in conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        assert set(tables.TABLES) <= set(views)
        for view in views:
            columns = [r[0] for r in conn.execute(f"DESCRIBE {view}").fetchall()]
            if view in tables.SCHEMAS:
                assert columns[:len(tables.SCHEMAS[view])] == tables.SCHEMAS[view].names
            assert not {c: keywords[c] for c in columns if c in keywords}, view
            conn.execute(f"SELECT {', '.join(columns)} FROM {view} LIMIT 1").fetchall()  # unquoted: parses and binds

