"""DuckDB over a results root: views, macros and canned queries (``ccs-ray sql`` is :mod:`ccs_ray.sqlshell`).

:func:`connect` opens an in-memory DuckDB whose views (``ccs_ray/sql/views.sql``, one per table of
:mod:`ccs_ray.tables`; an empty, typed view for a table with no files yet) read the root's Parquet through
a read-only fsspec filesystem registered with DuckDB under the ``ccsresults://`` protocol, so local and
remote roots (``s3://``, ``memory://`` ...) read alike. A read-only connection (the default) then disables
DuckDB's own file systems and locks its configuration: no statement can write into the results, or anywhere
else, nor read any other file; :func:`query` and :func:`relation` turn such a refusal into a one-line
:class:`ReadOnlyError` that says how to open a writable connection (``connect(root, read_only=False)``, or
``ccs_ray.open(root, read_only=False)``), where ``read_csv``, ``COPY ... TO``, ``ATTACH`` and ``INSTALL`` work.
The SQL files ship inside the package (``ccs_ray/sql/``), so an installed wheel and a Ray job's
``py_modules`` copy find them alike.

Every ``ccsresults://`` path stays inside the results root: on a local root each path is resolved (symlinks and
``..`` followed, as the operating system would open it) before it is used, and one that leads outside the root is
refused with a one-line :class:`OutsideRootError` (read-only and writable connections alike; a symlink that stays
inside the root works). ``glob`` leaves out matches that lead outside. Remote roots have no symlinks, and there
``..`` is a literal part of a key.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from . import stats
from .errors import UserError
from .files import read_parquet
from .reference import reference_tables
from .scores import concept_families
from .tables import REFERENCE_TABLES, SCHEMAS, TABLES

SQL_DIR = Path(__file__).resolve().parent / "sql"
PROTOCOL = "ccsresults"
_VIEW = re.compile(r"^CREATE VIEW (\w+) AS .*;$", re.M)
# DuckDB's own file systems; a read-only connection disables them all (ours is a Python one).
_DUCKDB_FILESYSTEMS = ("LocalFileSystem", "HTTPFileSystem", "S3FileSystem", "HuggingFaceFileSystem",
                       "GCSFileSystem", "AzureBlobStorageFileSystem")


READ_ONLY_HINT = ("the results are open read-only (no other file is read or written, no setting changed); for "
                  "read_csv, COPY, ATTACH or INSTALL open them writable: ccs_ray.open(root, read_only=False) or "
                  "ccs_ray.analytics.connect(root, read_only=False)")
# What a read-only connection's refusals say: DuckDB's for its disabled file systems (a PermissionException)
# and its locked configuration, ReadOnlyResults' for the results root.
_REFUSALS = ("the configuration has been locked", "the results root is read-only")


class SqlError(RuntimeError):
    """A query DuckDB refused: its message, then the views (with columns) and canned queries."""


class ReadOnlyError(SqlError):
    """A statement a read-only connection refused (reading or writing another file, changing a setting): one line,
    what was refused and how to open a writable connection."""


class OutsideRootError(SqlError, UserError):
    """A ``ccsresults://`` path that leads outside the results root (a symlink to elsewhere, ``..``): one line
    naming the path, where it leads and the root."""


class ResultsRootError(UserError, ValueError):
    """A results root that cannot be opened: missing, or holding several specs' results."""


class _SharedReader:
    """A file opened for reading whose position belongs to each thread: DuckDB may read one handle from several
    threads (seek, then read, as two calls), so each read seeks and reads under one lock at the calling
    thread's own position."""

    def __init__(self, f):
        self._f, self._lock, self._at = f, threading.Lock(), threading.local()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            with self._lock:
                base = self._f.seek(0, 2)
        else:
            base = self.tell() if whence == 1 else 0
        self._at.pos = base + offset
        return self._at.pos

    def tell(self) -> int:
        return getattr(self._at, "pos", 0)

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            self._f.seek(self.tell())
            data = self._f.read(size)
        self._at.pos = self.tell() + len(data)
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class ResultsFileSystem(DirFileSystem):
    """The results root as an fsspec filesystem (paths relative to the root), for DuckDB's ``ccsresults://``;
    files opened for reading are :class:`_SharedReader`. On a local root every path is resolved before use and
    one that leads outside the root is an :class:`OutsideRootError`; :meth:`glob` leaves such matches out."""

    protocol = PROTOCOL

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._real = os.path.realpath(self.path) if isinstance(self.fs, LocalFileSystem) else None

    def _outside(self, joined: str) -> str | None:
        """Where ``joined`` (a path of the wrapped filesystem) leads when that is outside a local root, else None."""
        real = os.path.realpath(joined)
        return None if self._real is None or os.path.commonpath([real, self._real]) == self._real else real

    def _join(self, path):
        if self._real is None or not isinstance(path, str):
            return super()._join(path)  # a remote root; or a list or dict, whose paths each come back here
        rel = self._strip_protocol(path)
        joined = f"{self.path.rstrip('/')}/{rel}" if rel else self.path
        real = self._outside(joined)
        if real is not None:
            raise OutsideRootError(f"{PROTOCOL}://{rel} leads to {real}, outside the results root {self.path}")
        return joined

    def glob(self, path, **kwargs):
        found = super().glob(path, **kwargs)
        if self._real is None:
            return found
        kept = [p for p in found if self._outside(f"{self.path.rstrip('/')}/{p}") is None]
        return {p: found[p] for p in kept} if isinstance(found, dict) else kept

    def open(self, path, mode="rb", *args, **kwargs):
        f = super().open(path, mode, *args, **kwargs)
        return _SharedReader(f) if mode == "rb" else f


class ReadOnlyResults(ResultsFileSystem):
    """:class:`ResultsFileSystem` that refuses every write."""

    def _refused(self, what: str, path) -> PermissionError:
        return PermissionError(f"the results root is read-only: cannot {what} {path}")

    def open(self, path, mode="rb", *args, **kwargs):
        if set(mode) - {"r", "b", "t"}:
            raise self._refused(f"open (mode {mode!r})", path)
        return super().open(path, mode, *args, **kwargs)

    def _open(self, path, mode="rb", *args, **kwargs):
        if set(mode) - {"r", "b", "t"}:
            raise self._refused(f"open (mode {mode!r})", path)
        return super()._open(path, mode, *args, **kwargs)

    def mkdir(self, path, *args, **kwargs):
        raise self._refused("create folder", path)

    makedirs = mkdir

    def rm(self, path, *args, **kwargs):
        raise self._refused("remove", path)

    def mv(self, path1, path2, *args, **kwargs):
        raise self._refused("move", path1)

    def pipe_file(self, path, *args, **kwargs):
        raise self._refused("write", path)

    touch = pipe_file


def resolve_root(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``root`` -> (filesystem, path) of the folder holding the table folders.

    A root with no table folder but exactly one subfolder that has them (``./results`` holding
    ``./results/<spec name>``) resolves to that subfolder; several such subfolders are an error.
    """
    fs, path = fsspec.core.url_to_fs(str(root))
    path = path.rstrip("/") or "/"
    if not fs.isdir(path):
        raise ResultsRootError(f"results root not found: {root}")
    if _table_folders(fs, path):
        return fs, path
    specs = sorted(p for p in fs.ls(path, detail=False) if fs.isdir(p) and _table_folders(fs, p))
    if len(specs) == 1:
        return fs, specs[0].rstrip("/")
    if specs:
        names = ", ".join(p.rsplit("/", 1)[-1] for p in specs)
        example = f"{str(root).rstrip('/')}/{specs[0].rsplit('/', 1)[-1]}"
        raise ResultsRootError(
            f"results root {root} holds the results of several specs ({names}); pick one with "
            f"--results, e.g. --results {example}")
    return fs, path  # a fresh root: every view is empty


def _table_folders(fs, path: str) -> list[str]:
    return [n for n in (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) if n in SCHEMAS]


def connect(root: str, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per results table under ``root`` and the macros of ``sql/macros.sql``;
    a table with no files under ``root`` (not written yet) is an empty view with the table's typed columns.
    The reference tables (``paper_*``) read the installed package's data (:mod:`ccs_ray.reference`).

    ``read_only`` (the default) refuses every write to files, the results included, and every read of other
    files. ``read_only=False`` is a writable connection: ``read_csv`` of your own files, ``COPY ... TO`` files
    (the results root included: take care), ``ATTACH`` and ``INSTALL`` work. A part cut short or not Parquet is a
    :class:`~ccs_ray.files.IncompleteFileError` that names it.
    """
    fs, path = resolve_root(root)
    results = (ReadOnlyResults if read_only else ResultsFileSystem)(path=path, fs=fs)
    conn = duckdb.connect(":memory:")
    conn.register_filesystem(results)
    views = {m.group(1): m.group(0) for m in _VIEW.finditer(_read_sql("views.sql"))}
    if sorted(views) != sorted(TABLES):
        raise RuntimeError(f"{SQL_DIR / 'views.sql'} defines views {sorted(views)}; tables.py has {sorted(TABLES)}")
    for table, data in reference_tables().items():  # the installed package's, whatever the root holds
        conn.register("_reference", data)
        conn.execute(f"CREATE TABLE _{table} AS SELECT * FROM _reference")
        conn.unregister("_reference")
        conn.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}")
    for table, statement in views.items():
        if table in REFERENCE_TABLES:
            continue
        parts = results.glob(f"{table}/**/*.parquet")
        if parts:
            try:
                conn.execute(_with_every_column(conn, table, statement.replace("${ROOT}/", f"{PROTOCOL}://")))
            except duckdb.Error:
                for part in parts:  # a part cut short: name it by its real URI, with what to do
                    read_parquet(fs, f"{path}/{part}")
                raise
        else:
            conn.execute(f"CREATE VIEW {table} AS SELECT {_null_columns(conn, SCHEMAS[table])} LIMIT 0")
    stats.register(conn)  # interval functions the macros and canned queries call
    _register_concept_families(conn)
    conn.execute(macros_sql())
    if read_only:
        conn.execute(f"SET disabled_filesystems = '{','.join(_DUCKDB_FILESYSTEMS)}'")
        conn.execute("SET autoinstall_known_extensions = false")
        conn.execute("SET autoload_known_extensions = false")
        conn.execute("SET lock_configuration = true")
    return conn


def _register_concept_families(conn) -> None:
    """The table ``concept_families(family, word)``: one row per concept family and normalised word
    (:func:`ccs_ray.scores.concept_families`, the default families; a head's label family is the family whose
    words hold its normalised label)."""
    families = concept_families()
    data = pa.table({"family": [f for f, words in families.items() for _ in words],
                     "word": [w for words in families.values() for w in sorted(words)]})
    conn.register("_families", data)
    conn.execute("CREATE TABLE concept_families AS SELECT * FROM _families ORDER BY family, word")
    conn.unregister("_families")


def _null_columns(conn, schema: pa.Schema, names: list[str] | None = None) -> str:
    """``CAST(NULL AS <type>) AS "<name>", ...`` for the columns ``names`` (default all) of ``schema``."""
    types = dict(zip(schema.names, conn.from_arrow(schema.empty_table()).types, strict=True))
    return ", ".join(f'CAST(NULL AS {types[n]}) AS "{n}"' for n in (schema.names if names is None else names))


def _with_every_column(conn, table: str, statement: str) -> str:
    """The view ``statement`` of ``table``, plus a null column for each schema column that none of the
    files has (results written by an earlier version); ``union_by_name`` fills the partly missing ones."""
    select = statement.split(" AS ", 1)[1].strip().rstrip(";")
    have = {row[0] for row in conn.execute(f"DESCRIBE {select}").fetchall()}
    missing = [n for n in SCHEMAS[table].names if n not in have]
    if not missing:
        return statement
    return f"CREATE VIEW {table} AS SELECT *, {_null_columns(conn, SCHEMAS[table], missing)} FROM ({select})"


def _read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text()


def macros_sql() -> str:
    """``sql/macros.sql`` with ``${RUN_TABLES}`` filled in: the (run_id, model) of every row of every table of a run
    (not the paper's reference tables), for the view ``run_status``."""
    rows = " UNION ".join(f"SELECT run_id, model FROM {t}" for t in TABLES if t not in REFERENCE_TABLES)
    return _read_sql("macros.sql").replace("${RUN_TABLES}", rows)


def canned_queries() -> dict[str, str]:
    """Canned query name -> SQL text (``sql/queries/<name>.sql``), sorted by name."""
    return {p.stem: p.read_text() for p in sorted((SQL_DIR / "queries").glob("*.sql"))}


def describe_canned() -> str:
    """One line per canned query: its name and the question its header comment asks."""
    lines = []
    for name, sql in canned_queries().items():
        header = " ".join(l[2:].strip() for l in sql.splitlines() if l.startswith("--"))
        lines.append(f"  {name}: {header}")
    return "\n".join(lines)


def describe_views(conn) -> str:
    """One line per view of ``conn``: ``name(col, col, ...)``."""
    rows = conn.execute(
        "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_name IN (SELECT view_name FROM duckdb_views() WHERE NOT internal) GROUP BY ALL "
        "ORDER BY table_name").fetchall()
    return "\n".join(f"  {name}({', '.join(cols)})" for name, cols in rows)


def _sql_error(conn, e: duckdb.Error) -> SqlError:
    """A DuckDB error as an OutsideRootError (a path that leads outside the root), a ReadOnlyError (a read-only
    connection's refusal) or a SqlError listing the views and canned queries."""
    last = (str(e).strip().splitlines() or [""])[-1]  # a Python exception comes back with its traceback: its last line
    if f"{OutsideRootError.__name__}: " in last:
        return OutsideRootError(last.split(f"{OutsideRootError.__name__}: ", 1)[1])
    if isinstance(e, duckdb.PermissionException) or any(r in str(e) for r in _REFUSALS):
        return ReadOnlyError(f"{last}; {READ_ONLY_HINT}")
    return SqlError(f"{e}\n\nviews:\n{describe_views(conn)}\n\ncanned queries (--query NAME):\n"
                    f"{', '.join(canned_queries())}")


def relation(conn, sql: str, params: list | None = None) -> duckdb.DuckDBPyRelation | None:
    """``sql`` (with ``?`` placeholders bound to ``params``) on ``conn`` -> a DuckDB relation, read each time it is
    read (None for a statement with no result); DuckDB errors -> ReadOnlyError or SqlError."""
    try:
        return conn.sql(sql, params=params)
    except duckdb.Error as e:
        raise _sql_error(conn, e) from None


def query(conn, sql: str) -> pa.Table:
    """Run ``sql`` on ``conn`` -> a pyarrow Table (empty for statements with no result); DuckDB errors ->
    ReadOnlyError or SqlError."""
    rel = relation(conn, sql)
    try:
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as e:
        raise _sql_error(conn, e) from None


def canned_sql(name: str) -> str:
    """The SQL of canned query ``name``; an unknown name is a one-line :class:`SqlError` that lists the names."""
    queries = canned_queries()
    if name not in queries:
        raise SqlError(f"no canned query {name!r}; canned queries: {', '.join(queries)}")
    return queries[name]


def canned_subquery(name: str) -> str:
    """Canned query ``name`` as a parenthesised subquery, to select from."""
    return f"({canned_sql(name).strip().rstrip(';')}\n)"


def canned_rows(conn, name: str, where: str = "true") -> list[dict]:
    """Rows (dicts) of canned query ``name`` on ``conn`` that meet a SQL condition over its columns."""
    return query(conn, f"SELECT * FROM {canned_subquery(name)} WHERE {where}").to_pylist()
