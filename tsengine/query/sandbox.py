"""The read-only sandbox for user SQL.

User SQL (``engine.sql()``, ``POST /api/v1/sql``, alert rules) runs on the engine's one DuckDB
connection, next to the schemas, views, variables and registered Arrow tables the engine itself
creates. Users may only read. Two walls keep them there:

1. :func:`check_sql` parses the text with DuckDB's own parser (``extract_statements`` for the
   statement type, ``json_serialize_sql()`` for the syntax tree) and accepts exactly one
   read-only statement. It walks the whole tree, so nothing hides in a CTE, a subquery, a join,
   a set operation, a lateral, a function argument, a window, a PIVOT or a DESCRIBE.
2. :func:`configure_connection` hardens the connection itself: no external access except the
   data and temp directories, no extension loading, no Python replacement scans, and the
   configuration locked. Even SQL the first wall misses cannot read or write outside those
   directories nor change a setting.

:func:`translate_error` turns DuckDB's exceptions into the tsengine tree at the boundary (a
refusal of either wall becomes :class:`~tsengine.errors.SandboxViolation`), and
:func:`run_with_timeout` bounds the time of one query.

What is allowed (and why):

* ``SELECT`` / ``WITH`` / ``FROM`` / ``VALUES`` / ``TABLE``, PIVOT/UNPIVOT with an explicit
  ``IN`` list, and ``DESCRIBE`` / ``SUMMARIZE`` / ``SHOW`` (they are SELECTs over a table or a
  query, which are checked like any other). Every ordinary scalar, aggregate and window
  function, except the few in :data:`DENIED_FUNCTIONS`.
* Table functions except those in :data:`DENIED_TABLE_FUNCTIONS` (files, the network, raw
  memory, SQL in a string, side effects, other sessions' data). The read-only ``pragma_*``
  table functions (``pragma_version()``, ``pragma_table_info('t')``...) and the catalog ones
  (``duckdb_tables()``, ``duckdb_settings()``...) stay: they only describe the engine.
* ``EXPLAIN`` and ``EXPLAIN ANALYZE`` of a statement that passes the check on its own:
  ANALYZE runs exactly the query the user could run anyway, under the same timeout.

Refused, each with a message naming it: more than one statement; every statement type other
than SELECT and EXPLAIN (COPY, EXPORT/IMPORT DATABASE, ATTACH/DETACH/USE, INSTALL/LOAD,
SET/RESET/PRAGMA, CALL — write ``SELECT * FROM fn()`` instead —, CREATE/ALTER/DROP of
anything, INSERT/UPDATE/DELETE/MERGE/TRUNCATE, CHECKPOINT/VACUUM/ANALYZE, transactions,
PREPARE/EXECUTE); a PIVOT without an ``IN`` list (DuckDB runs it as ``CREATE TYPE`` + SELECT);
a table name that looks like a file path or URL (``FROM '/etc/passwd'``, ``FROM 'x.parquet'``:
DuckDB's replacement scans would read the file).

Thread safety: every function here may be called from any thread. :func:`check_sql` parses on
a private in-memory connection behind a lock (parsing takes well under a millisecond); it never
touches the engine's connection.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

import duckdb
import pyarrow as pa

from tsengine.errors import Overloaded, QueryError, SandboxViolation, StorageError, TsengineError

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_TABLE_FUNCTIONS",
    "check_sql",
    "configure_connection",
    "run_with_timeout",
    "translate_error",
]

T = TypeVar("T")

_FILES = "reads or lists files"
_MEMORY = "reads raw process memory"
_SQL_STRING = "runs SQL given as a string, which the sandbox cannot check"
_SIDE_EFFECT = "changes engine state"
_PRIVATE = "exposes other sessions' queries or engine internals"

#: Table functions (and table macros) refused in FROM, with the reason. Names are compared in
#: lower case whatever their schema. Functions of extensions that are not installed here are
#: listed too, so that installing one later does not open a hole.
DENIED_TABLE_FUNCTIONS: Mapping[str, str] = {
    **dict.fromkeys(
        [
            "read_csv",
            "read_csv_auto",
            "read_single_csv_file",
            "sniff_csv",
            "read_json",
            "read_json_auto",
            "read_json_objects",
            "read_json_objects_auto",
            "read_ndjson",
            "read_ndjson_auto",
            "read_ndjson_objects",
            "read_single_json_file",
            "read_parquet",
            "parquet_scan",
            "read_single_parquet_file",
            "parquet_metadata",
            "parquet_schema",
            "parquet_file_metadata",
            "parquet_kv_metadata",
            "parquet_full_metadata",
            "parquet_page_index",
            "parquet_bloom_probe",
            "read_text",
            "read_blob",
            "glob",
            "read_duckdb",
            "iceberg_scan",
            "iceberg_metadata",
            "iceberg_snapshots",
            "delta_scan",
            "read_xlsx",
            "read_avro",
            "st_read",
            "sqlite_scan",
            "postgres_scan",
            "mysql_scan",
        ],
        _FILES,
    ),
    **dict.fromkeys(
        ["arrow_scan", "arrow_scan_dumb", "python_arrow_scan", "pandas_scan", "python_map_function"],
        _MEMORY,
    ),
    # histogram()/histogram_values() as *table* macros call query_table(source); the histogram()
    # aggregate is a different function and stays allowed.
    **dict.fromkeys(
        ["query", "query_table", "json_execute_serialized_sql", "histogram", "histogram_values"],
        _SQL_STRING,
    ),
    **dict.fromkeys(
        [
            "checkpoint",
            "force_checkpoint",
            "enable_logging",
            "disable_logging",
            "truncate_duckdb_logs",
            "enable_profiling",
            "disable_profiling",
            "add_grammar_extension",
            "remove_grammar_extension",
            "create_external_resource",
            "register_external_resource",
            "register_external_resource_type",
            "deregister_external_resource",
            "destroy_external_resource",
            "seq_scan",
        ],
        _SIDE_EFFECT,
    ),
    **dict.fromkeys(
        ["duckdb_logs", "duckdb_logs_parsed", "duckdb_log_contexts", "duckdb_variables"], _PRIVATE
    ),
}

#: Scalar, aggregate and window functions refused anywhere, with the reason. Everything else
#: is allowed: DuckDB 2.0.1 has no scalar function that reads or writes outside the process
#: (there is no ``getenv()``; ``current_setting()`` only reads settings).
DENIED_FUNCTIONS: Mapping[str, str] = {
    "getvariable": "reads the engine's internal variables",
    "nextval": _SIDE_EFFECT,
    "setval": _SIDE_EFFECT,
    "setseed": "changes the random state of a shared session",
    "write_log": _SIDE_EFFECT,
    # binds (not only parses) its argument, and binding a table function reads the file
    "json_serialize_plan": _SQL_STRING,
    "json_execute_serialized_sql": _SQL_STRING,
}

#: File name endings DuckDB's replacement scans turn into a file read (``FROM 'x.csv'``).
_FILE_SUFFIXES = (
    "csv",
    "tsv",
    "txt",
    "dat",
    "parquet",
    "json",
    "jsonl",
    "ndjson",
    "geojson",
    "db",
    "duckdb",
    "sqlite",
    "xlsx",
    "avro",
    "arrow",
    "ipc",
    "feather",
    "orc",
)
_COMPRESSION_SUFFIXES = ("", ".gz", ".zst", ".zstd", ".bz2", ".xz", ".lz4", ".snappy", ".br")

_PARSER_LOCK = threading.Lock()
_parser_con: duckdb.DuckDBPyConnection | None = None


def _violation(what: str, hint: str = "") -> SandboxViolation:
    return SandboxViolation(f"cannot run query: {what} is not allowed (read-only sandbox){hint}")


# -- the first wall: the parser check -----------------------------------------------------------


def check_sql(sql: str) -> str:
    """Return ``sql`` as one read-only statement, or refuse it (see :func:`check_sql_tables`)."""
    return check_sql_tables(sql)[0]


def check_sql_tables(sql: str) -> tuple[str, frozenset[str]]:
    """Return ``sql`` as one read-only statement and the table names it reads, or refuse it.

    Args:
        sql: the user's SQL text; ``?`` and ``$name`` parameters are fine.

    Returns:
        The statement text, stripped of surrounding blanks, trailing comments and one trailing
        ``;`` (so a caller may wrap it in a subquery) — run this text, not the original: it is
        exactly what was checked —, and the unqualified names of every table reference in it
        (CTE names included: a superset of the tables read).

    Raises:
        SandboxViolation: the text is not exactly one read-only statement; the message names
            what was refused.
        QueryError: the text does not parse (DuckDB's message), or is empty.

    Thread-safe; blocks for the parse only (well under a millisecond for ordinary queries).
    """
    statements = _extract(sql)
    if not statements:
        raise QueryError("cannot run query: no SQL statement given")
    if len(statements) > 1:
        raise _violation(f"more than one statement ({len(statements)})")
    text = _strip(statements[0][1])
    tables = _check_statement(statements[0][0], text, explain_allowed=True)
    return text, frozenset(tables)


def _strip(text: str) -> str:
    """Cut trailing comments and one trailing ``;``, so callers may wrap the text safely."""
    raw = text.encode("utf-8")
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error:
        return text.strip()
    code = [i for i, (_, kind) in enumerate(tokens) if kind != duckdb.token_type.comment]
    if code and raw[tokens[code[-1]][0] :].startswith(b";"):
        code.pop()
    if not code:
        return ""
    last = code[-1]
    end = tokens[last + 1][0] if last + 1 < len(tokens) else len(raw)
    return raw[:end].decode("utf-8").strip()


def _parser() -> duckdb.DuckDBPyConnection:
    """The private parsing connection, created on first use (no import-time side effects)."""
    global _parser_con
    if _parser_con is None:
        con = duckdb.connect(":memory:")
        # It only ever parses, but it is locked down all the same.
        for stmt in (
            "SET autoload_known_extensions = false",
            "SET autoinstall_known_extensions = false",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(stmt)
        _parser_con = con
    return _parser_con


def _extract(sql: str) -> list[tuple[duckdb.StatementType | None, str]]:
    """Split ``sql`` into (type, text) pairs; the type is None when the binding does not know it."""
    if not isinstance(sql, str):
        raise QueryError(f"cannot run query: SQL must be a string, not {type(sql).__name__}")
    with _PARSER_LOCK:
        con = _parser()
        try:
            return [(stmt.type, stmt.query) for stmt in con.extract_statements(sql)]
        except duckdb.Error as exc:
            raise translate_error(exc) from exc
        except ValueError:
            # The Python binding lags the parser: a statement type it cannot name (29 is
            # UPDATE EXTENSIONS in 2.0.1). Such text is refused below, named by its keywords.
            return [(None, sql)]


def _serialize(text: str) -> dict[str, Any]:
    with _PARSER_LOCK:
        raw = _parser().execute("SELECT json_serialize_sql(?)", [text]).fetchone()
    if raw is None or raw[0] is None:
        raise QueryError("cannot run query: the statement could not be parsed")
    try:
        tree: dict[str, Any] = json.loads(raw[0])
    except RecursionError:
        raise QueryError("cannot run query: the statement is nested too deeply") from None
    return tree


def _leading_keywords(text: str, limit: int = 5) -> str:
    """``CREATE OR REPLACE MACRO`` for ``create or replace macro m() ...``: names a statement."""
    raw = text.encode("utf-8")
    words: list[str] = []
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error:
        return ""
    for index, (pos, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            continue
        if kind != duckdb.token_type.keyword or len(words) == limit:
            break
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(raw)
        words.append(raw[pos:end].decode("utf-8", "replace").strip().upper())
    return " ".join(words)


def _check_statement(kind: duckdb.StatementType | None, text: str, *, explain_allowed: bool) -> set[str]:
    """Refuse anything but a read; returns the table names the statement references."""
    if kind == duckdb.StatementType.SELECT:
        return _check_tree(text)
    if kind == duckdb.StatementType.EXPLAIN and explain_allowed:
        return _check_explained(text)
    words = _leading_keywords(text) or (kind.name if kind is not None else "this statement")
    if kind == duckdb.StatementType.MULTI and words.startswith(("PIVOT", "UNPIVOT")):
        # DuckDB runs it as CREATE TYPE ... AS ENUM (SELECT DISTINCT ...) followed by the SELECT.
        raise _violation(f"{words.split()[0]} without an explicit IN (...) list")
    if kind == duckdb.StatementType.CALL and words == "CALL":
        raise _violation("CALL", "; use SELECT * FROM fn(...) instead")
    raise _violation(words)


def _check_explained(text: str) -> set[str]:
    """Check the statement after ``EXPLAIN [ANALYZE] [VERBOSE] [(options)]``.

    The inner statement is a suffix of the text. Each candidate suffix must itself parse as
    exactly one statement that passes the check; one that does not parse is refused.
    """
    raw = text.encode("utf-8")
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]

    def word(i: int) -> str:
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(raw)
        return raw[tokens[i][0] : end].decode("utf-8", "replace").strip().lower()

    i = 1  # tokens[0] is EXPLAIN
    while i < len(tokens) and word(i) in ("analyze", "analyse", "verbose"):
        i += 1
    candidates = [i]
    if i < len(tokens) and word(i) == "(":  # either an option list or a parenthesised query
        depth, j = 0, i
        while j < len(tokens):
            depth += {"(": 1, ")": -1}.get(word(j), 0)
            j += 1
            if depth == 0:
                break
        candidates.append(j)
    for start in candidates:
        inner = raw[tokens[start][0] :].decode("utf-8") if start < len(tokens) else ""
        try:
            statements = _extract(inner)
        except QueryError:
            continue
        if len(statements) == 1:
            return _check_statement(statements[0][0], _strip(statements[0][1]), explain_allowed=False)
    raise QueryError("cannot run query: could not find the statement that EXPLAIN explains")


def _check_tree(text: str) -> set[str]:
    tree = _serialize(text)
    tables: set[str] = set()
    if tree.get("error"):
        # A SELECT the serializer cannot express; refusing keeps the wall closed.
        raise QueryError(f"cannot run query: {tree.get('error_message', 'unsupported statement')}")
    # Iterative walk over every node: which clause a table or function sits in does not matter.
    stack: list[Any] = [tree.get("statements", [])]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        node_type = node.get("type")
        if node_type == "TABLE_FUNCTION":
            _check_table_function(node.get("function"))
        elif node_type == "BASE_TABLE":
            _check_table_name(node.get("qualified_name"), node.get("table_name"))
            if isinstance(node.get("table_name"), str):
                tables.add(node["table_name"])
        elif node_type == "SHOW_REF" and node.get("table_name"):
            _check_table_name(None, node.get("table_name"))
        if "function_name" in node:
            _check_function_name(node.get("function_name"))
        stack.extend(value for value in node.values() if isinstance(value, dict | list))
    return tables


def archive_tables(sql: str) -> set[tuple[str, str]]:
    """``(schema, table)`` of every table the (already checked) statement reads from the
    ``archive`` schema or an ``archive_<db>`` schema: archived data, bound on demand."""
    found: set[tuple[str, str]] = set()
    stack: list[Any] = [_serialize(sql).get("statements", [])]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            schema = node.get("schema_name")
            if (
                node.get("type") == "BASE_TABLE"
                and isinstance(schema, str)
                and isinstance(node.get("table_name"), str)
                and (schema.lower() == "archive" or schema.lower().startswith("archive_"))
            ):
                found.add((schema, node["table_name"]))
            stack.extend(value for value in node.values() if isinstance(value, dict | list))
    return found


def _check_table_function(function: object) -> None:
    name = function.get("function_name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _violation("a table function of an unknown form")
    if name.lower() in DENIED_TABLE_FUNCTIONS:
        raise _violation(f"table function {name}() ({DENIED_TABLE_FUNCTIONS[name.lower()]})")


def _check_function_name(name: object) -> None:
    if not isinstance(name, str):
        raise _violation("a function of an unknown form")
    lowered = name.lower()
    if lowered in DENIED_FUNCTIONS:
        raise _violation(f"function {name}() ({DENIED_FUNCTIONS[lowered]})")
    if lowered.startswith("__internal"):
        raise _violation(f"internal function {name}()")


def _check_table_name(qualified: object, table_name: object) -> None:
    parts: list[str] = []
    if isinstance(qualified, dict) and isinstance(qualified.get("path"), list):
        parts = [str(part) for part in qualified["path"]]
    if isinstance(table_name, str) and (not parts or parts[-1] != table_name):
        parts.append(table_name)
    # DuckDB joins a qualified name with '.' before trying it as a file.
    name = ".".join(parts)
    if _looks_like_path(name):
        raise _violation(f"the file path or URL {name!r} in FROM")


def _looks_like_path(name: str) -> bool:
    lowered = name.lower()
    if "/" in lowered or "\\" in lowered or "://" in lowered:
        return True
    base = lowered.partition("?")[0]  # DuckDB also scans 'x.csv?...' (a glob)
    return any(
        base.endswith(f".{suffix}{compression}")
        for suffix in _FILE_SUFFIXES
        for compression in _COMPRESSION_SUFFIXES
    )


# -- the second wall: the connection --------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_connection(
    con: duckdb.DuckDBPyConnection, *, data_dir: str, temp_dir: str, memory_limit: str, threads: int
) -> None:
    """Harden a fresh connection so that user SQL can read nothing but the engine's files.

    After this, the connection (and every cursor of it) can still create schemas and views,
    ``SET VARIABLE``, ``register()`` Arrow tables and read Parquet under ``data_dir``; it can
    no longer touch files outside ``data_dir`` and ``temp_dir``, load or install extensions,
    scan Python variables by name, or change any setting (``lock_configuration``).

    Args:
        con: a connection nothing has run on yet; call once, before handing out cursors.
        data_dir: the engine's data directory (made absolute).
        temp_dir: where DuckDB spills (otherwise it creates ``.tmp`` in the working directory).
        memory_limit: DuckDB's ``memory_limit``, e.g. ``"2GB"``.
        threads: DuckDB worker threads.

    Raises:
        QueryError: a value DuckDB refuses (e.g. a malformed memory limit).

    Blocks briefly; not thread-safe (call before other threads use ``con``).
    """
    allowed = [os.path.join(os.path.abspath(d), "") for d in (data_dir, temp_dir)]  # trailing '/'
    statements = [
        "SET autoload_known_extensions = false",
        "SET autoinstall_known_extensions = false",
        "SET allow_community_extensions = false",
        # The engine registers Arrow tables explicitly; never scan a Python variable by name.
        # This only reaches `con` itself (cursors read their own default); what stops the scan
        # on cursors is enable_external_access = false below.
        "SET python_enable_replacements = false",
        f"SET temp_directory = {_literal(os.path.abspath(temp_dir))}",
        # must precede enable_external_access = false: afterwards it can no longer be widened
        f"SET allowed_directories = [{', '.join(_literal(d) for d in allowed)}]",
        "SET enable_external_access = false",
        f"SET memory_limit = {_literal(memory_limit)}",
        f"SET threads = {int(threads)}",
        "SET lock_configuration = true",  # last: nothing can be changed after this
    ]
    for stmt in statements:
        try:
            con.execute(stmt)
        except duckdb.Error as exc:
            raise QueryError(f"cannot configure DuckDB: {stmt!r} failed: {exc}") from exc


# -- errors and time ------------------------------------------------------------------------------

_USER_ERRORS = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    duckdb.NotImplementedException,
    duckdb.ConstraintException,
    duckdb.DataError,
    duckdb.ProgrammingError,
)


def translate_error(exc: duckdb.Error, *, timeout_s: float | None = None) -> TsengineError:
    """Map a DuckDB exception to the tsengine tree; raise the result ``from exc``.

    * PermissionException (the connection's wall) and a change to the locked configuration
      → :class:`SandboxViolation`;
    * parser, binder, catalog, conversion and other errors in the SQL → :class:`QueryError`
      with DuckDB's message;
    * InterruptException → :class:`QueryError` saying it timed out (after ``timeout_s`` when
      given) or was interrupted;
    * OutOfMemoryException → :class:`Overloaded` (retry later);
    * IOException → :class:`StorageError` (a file of the data directory failed us);
    * anything else → :class:`TsengineError` (500).
    """
    message = str(exc)
    if isinstance(exc, duckdb.PermissionException):
        return _violation("access outside the engine's data", f": {message}")
    if isinstance(exc, duckdb.InvalidInputException) and "configuration has been locked" in message:
        return _violation("changing a setting", f": {message}")
    if isinstance(exc, duckdb.InterruptException):
        if timeout_s is not None:
            return QueryError(f"cannot run query: timed out after {timeout_s:g} s")
        return QueryError("cannot run query: interrupted")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return Overloaded(f"cannot run query: out of memory: {message}", retry_after_s=5.0)
    if isinstance(exc, duckdb.IOException):
        return StorageError(f"cannot run query: {message}")
    if isinstance(exc, _USER_ERRORS):
        return QueryError(f"cannot run query: {message}")
    return TsengineError(f"cannot run query: {message}")


_Params = Sequence[object] | Mapping[str, object] | None


#: DuckDB 2.x warns that Arrow from a DB-API result costs a copy of the rows; the relation API
#: it suggests binds the statement twice, which for the engine's views (union_by_name over
#: many files) costs more than the copy: q1 of the benchmark went from 42 ms to 20 ms.
ARROW_COPY_WARNING = "Arrow output on a DB-API result makes an extra copy"


def _to_arrow(result: duckdb.DuckDBPyConnection) -> pa.Table:
    return result.to_arrow_table()


@overload
def run_with_timeout(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: _Params, timeout_s: float
) -> pa.Table: ...


@overload
def run_with_timeout(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    params: _Params,
    timeout_s: float,
    *,
    fetch: Callable[[duckdb.DuckDBPyConnection], T],
) -> T: ...


def run_with_timeout(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    params: _Params,
    timeout_s: float,
    *,
    fetch: Callable[[duckdb.DuckDBPyConnection], Any] = _to_arrow,
) -> Any:
    """Run ``sql`` on ``cursor`` and fetch its result, interrupting it after ``timeout_s``.

    Does not check the SQL: pass it through :func:`check_sql` first. The bound covers
    execution and the fetch. A ``threading.Timer`` calls ``cursor.interrupt()``; a lock makes
    sure it can only interrupt this query, never a later one on the same cursor.

    Args:
        cursor: a cursor of a connection hardened by :func:`configure_connection`, used by
            this thread only.
        sql: the statement, as returned by :func:`check_sql`.
        params: ``?``/``$n`` or ``$name`` parameters, or None.
        timeout_s: the bound in seconds (> 0).
        fetch: reads the result of ``cursor.execute(sql, params)``; defaults to
            ``to_arrow_table()`` (a ``pyarrow.Table``; see :data:`ARROW_COPY_WARNING`).

    Raises:
        QueryError: the query timed out (the message says after how long) or DuckDB rejected it.
        SandboxViolation, Overloaded, StorageError, TsengineError: see :func:`translate_error`.

    Blocks the calling thread for at most about ``timeout_s``; call it off the event loop.
    """
    if timeout_s <= 0:
        raise ValueError(f"BUG: timeout_s must be > 0, got {timeout_s!r}")
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def interrupt() -> None:
        with lock:
            if state["running"]:
                state["fired"] = True
                cursor.interrupt()

    timer = threading.Timer(timeout_s, interrupt)
    timer.daemon = True
    timer.start()
    try:
        return fetch(cursor.execute(sql, params) if params is not None else cursor.execute(sql))
    except duckdb.Error as exc:
        with lock:
            fired = state["fired"]
        raise translate_error(exc, timeout_s=timeout_s if fired else None) from exc
    finally:
        with lock:
            state["running"] = False
        timer.cancel()
