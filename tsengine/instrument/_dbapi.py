"""DB-API 2.0 wrappers timing every ``execute`` through the performance monitor.

``instrument_connection(conn, monitor)`` returns a proxy whose cursors (and ``execute``
shortcut, as sqlite3 has) record each statement as ``db_query_duration_seconds{operation}``.
The operation is the statement's verb and first table (``select users``), derived from the
SQL text without its literals, so parameters and values never become labels. Everything else
is delegated to the wrapped object unchanged; exceptions propagate untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tsengine.instrument._performance import PerformanceMonitor

__all__ = ["InstrumentedConnection", "InstrumentedCursor", "instrument_connection", "sql_operation"]

_VERB_RE = re.compile(r"\s*(?:--[^\n]*\n\s*)*(\w+)")
_TABLE_RE = re.compile(r"\b(?:from|into|update|table|join)\s+[\"`\[]?([A-Za-z_][\w.]*)", re.IGNORECASE)


def sql_operation(sql: str) -> str:
    """``"SELECT * FROM users WHERE id=?"`` → ``"select users"``; unknown shapes → the verb or ``other``."""
    verb = _VERB_RE.match(sql)
    if verb is None:
        return "other"
    op = verb.group(1).lower()
    table = _TABLE_RE.search(sql)
    return f"{op} {table.group(1).lower()}" if table else op


class InstrumentedCursor:
    """A DB-API cursor whose ``execute``/``executemany`` are timed."""

    def __init__(self, cursor: Any, monitor: PerformanceMonitor) -> None:
        self._cursor = cursor
        self._monitor = monitor

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> InstrumentedCursor:
        with self._monitor.time_db_query(sql_operation(sql)):
            self._cursor.execute(sql, *args, **kwargs)
        return self

    def executemany(self, sql: str, *args: Any, **kwargs: Any) -> InstrumentedCursor:
        with self._monitor.time_db_query(sql_operation(sql)):
            self._cursor.executemany(sql, *args, **kwargs)
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __enter__(self) -> InstrumentedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


class InstrumentedConnection:
    """A DB-API connection handing out :class:`InstrumentedCursor` objects."""

    def __init__(self, connection: Any, monitor: PerformanceMonitor) -> None:
        self._connection = connection
        self._monitor = monitor

    def cursor(self, *args: Any, **kwargs: Any) -> InstrumentedCursor:
        return InstrumentedCursor(self._connection.cursor(*args, **kwargs), self._monitor)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> InstrumentedCursor:
        """Shortcut some drivers offer (sqlite3): a new cursor, executed."""
        return self.cursor().execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def __enter__(self) -> InstrumentedConnection:
        self._connection.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._connection.__exit__(*exc)


def instrument_connection(connection: Any, monitor: PerformanceMonitor) -> InstrumentedConnection:
    """Wrap a DB-API 2.0 connection so every statement is timed by ``monitor``."""
    return InstrumentedConnection(connection, monitor)
