"""The query layer: one DuckDB connection, a cursor per thread, a view per table.

``QueryLayer.sql(text, params)`` checks the text against the sandbox, finds the tables it
names, asks the engine (through the narrow :class:`SnapshotSource` protocol) for a consistent
snapshot of each, binds the snapshot to this thread's cursor (variables and Arrow
registrations), runs the query with a time limit and returns an Arrow table. Databases are
DuckDB schemas; the tables of ``default`` are also reachable unqualified (through alias views
in ``main``, since the search path is locked with the rest of the configuration).

Thread safety: any number of threads may call :meth:`sql` at once; each uses its own cursor.
View DDL is serialised by a lock. Blocking: yes — call it off the event loop.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from tsengine.errors import QueryError, TsengineError
from tsengine.model.schema import TableSchema
from tsengine.query import sandbox
from tsengine.query.views import (
    ROW_COLUMN,
    TableSnapshot,
    list_literal,
    quote_ident,
    view_names,
    view_sql,
)

__all__ = ["ArchiveSource", "QueryLayer", "SnapshotSource"]

_EMPTY_LIVE = pa.table({"time": pa.array([], pa.timestamp("ns"))})
_EMPTY_DIRTY_LIVE = pa.table({"time": pa.array([], pa.timestamp("ns")), ROW_COLUMN: pa.array([], pa.int64())})


class SnapshotSource(Protocol):
    """What the query layer needs of the engine."""

    def snapshot(self, names: AbstractSet[str]) -> list[TableSnapshot]:
        """Snapshots of every table (any database) whose name is in ``names``; pins files."""
        ...

    def release(self, snaps: list[TableSnapshot]) -> None:
        """Unpin what :meth:`snapshot` pinned."""
        ...


class ArchiveSource(Protocol):
    """Archived tables for the ``archive`` schema (see :mod:`tsengine.lifecycle.archive`)."""

    def archive_relation(self, db: str, table: str) -> tuple[pa.Schema, Any, int] | None:
        """(Arrow schema, ``pyarrow.dataset`` of its files, version) of an archived table."""
        ...


class QueryLayer:
    def __init__(
        self,
        data_dir: Path,
        source: SnapshotSource,
        *,
        empty_parquet: Path,
        temp_dir: Path,
        memory_limit: str = "4GB",
        threads: int = 2,
        timeout_s: float = 60.0,
    ) -> None:
        self._source = source
        # Once per process, not at import: see sandbox.ARROW_COPY_WARNING.
        warnings.filterwarnings("ignore", message=sandbox.ARROW_COPY_WARNING, category=UserWarning)
        self._empty = str(empty_parquet)
        self._timeout_s = timeout_s
        self._con = duckdb.connect(":memory:", config={"enable_object_cache": True})
        sandbox.configure_connection(
            self._con,
            data_dir=str(data_dir),
            temp_dir=str(temp_dir),
            memory_limit=memory_limit,
            threads=threads,
        )
        # `time` columns are UTC TIMESTAMP_NS, which DuckDB will not compare with the TIMESTAMP
        # WITH TIME ZONE its now() returns: `WHERE time > now() - INTERVAL 1 HOUR` would be a
        # binder error. now() is therefore the current UTC time as a plain TIMESTAMP (what
        # InfluxQL's and PromQL's now mean); current_timestamp keeps DuckDB's type.
        self._con.execute("CREATE MACRO main.now() AS timezone('UTC', get_current_timestamp())")
        self._local = threading.local()
        self._ddl_lock = threading.Lock()
        self._views: dict[tuple[str, str], tuple[int, bool]] = {}  # (db, table) -> view version
        self._schemas: set[str] = set()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._closed = False
        #: Set by the lifecycle when an archive is configured: ``archive.<table>`` (tables of
        #: ``default``) and ``archive_<db>.<table>`` then read archived files through pyarrow.
        self.archive: ArchiveSource | None = None
        self._archive_views: dict[tuple[str, str], tuple[str, int]] = {}
        #: Engine-defined views over tables (the lifecycle's ``<table>_auto``): view name ->
        #: the table names a query of it must snapshot.
        self._derived: dict[str, frozenset[str]] = {}

    # -- views ------------------------------------------------------------------------------

    def _bind_empty(self, cur: duckdb.DuckDBPyConnection, view_id: int) -> None:
        names = view_names(view_id)
        empty = list_literal([self._empty])
        cur.execute(f"SET VARIABLE {names.clean_files} = {empty}")
        cur.execute(f"SET VARIABLE {names.dirty_files} = {empty}")
        cur.register(names.clean_live, _EMPTY_LIVE)
        cur.register(names.dirty_live, _EMPTY_DIRTY_LIVE)

    def ensure_view(self, db: str, schema: TableSchema, view_id: int, version: tuple[int, bool]) -> None:
        """(Re)create the view of a table if the snapshot needs a newer one than it has.

        Versions only grow (see ``TableSnapshot.view_version``), and the newest view serves every
        older snapshot, so a view is never replaced by an older shape.
        """
        key = (db, schema.table)
        current = self._views.get(key)
        if current is not None and current >= version:
            return
        with self._ddl_lock:
            current = self._views.get(key)
            if current is not None and current >= version:
                return
            cur = self._con.cursor()
            try:
                if db not in self._schemas:
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(db)}")
                    self._schemas.add(db)
                self._bind_empty(cur, view_id)
                cur.execute(view_sql(db, schema, view_id, dedup=version[1]))
                if db == "default":
                    t = quote_ident(schema.table)
                    cur.execute(f'CREATE OR REPLACE VIEW main.{t} AS SELECT * FROM "default".{t}')
            finally:
                cur.close()
            self._views[key] = version

    # -- queries ----------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
            self._local.bound = {}  # what this cursor's variables and registrations hold
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    def sql(
        self, text: str, params: Sequence[Any] | dict[str, Any] | None = None, *, db: str = "default"
    ) -> pa.Table:
        """Run one read-only statement; returns an Arrow table.

        Unqualified table names resolve in ``db`` (through temporary views on this cursor, which
        shadow the ``default`` aliases for the length of the query).

        Raises:
            SandboxViolation: the statement is not a plain read.
            QueryError: DuckDB rejected it, or it ran past the time limit.
        """
        if self._closed:
            raise QueryError("cannot run query: the engine is closed")
        stmt, names = sandbox.check_sql_tables(text)
        if self._derived and not names.isdisjoint(self._derived):
            names = names.union(*(self._derived[n] for n in names if n in self._derived))
        archived = sandbox.archive_tables(stmt) if self.archive and "archive" in stmt.lower() else set()
        snaps = self._source.snapshot(names)
        cur = self._cursor()
        bound: dict[str, Any] = self._local.bound
        aliases: list[str] = []
        try:
            for s in snaps:
                self.ensure_view(s.db, s.schema, s.view_id, s.view_version)
                self._bind(cur, bound, s)
                if s.db == db != "default":
                    t = quote_ident(s.table)
                    cur.execute(f"CREATE OR REPLACE TEMP VIEW {t} AS SELECT * FROM {quote_ident(db)}.{t}")
                    aliases.append(t)
            for schema_name, table in archived:
                self._bind_archive(cur, bound, schema_name, table)
            return sandbox.run_with_timeout(cur, stmt, params, self._timeout_s)
        except TsengineError:
            raise
        except duckdb.Error as exc:
            raise sandbox.translate_error(exc) from exc
        finally:
            for t in aliases:
                cur.execute(f"DROP VIEW IF EXISTS temp.main.{t}")
            # Let go of live rows now (memory) rather than at this cursor's next query.
            for s in snaps:
                names_ = view_names(s.view_id)
                for reg, empty in ((names_.clean_live, _EMPTY_LIVE), (names_.dirty_live, _EMPTY_DIRTY_LIVE)):
                    if bound.get(reg) is not empty:
                        cur.register(reg, empty)
                        bound[reg] = empty
            for key in archived:
                known = self._archive_views.get(key)
                if known is not None and bound.get(known[0]) is not None:
                    cur.unregister(known[0])
                    bound[known[0]] = None
            self._source.release(snaps)

    def _bind(self, cur: duckdb.DuckDBPyConnection, bound: dict[str, Any], snap: TableSnapshot) -> None:
        """Point this cursor's variables and registrations at ``snap`` (skipping what is set)."""
        names = view_names(snap.view_id)
        for var, files in ((names.clean_files, snap.clean_files), (names.dirty_files, snap.dirty_files)):
            key = tuple(files) or (self._empty,)
            if bound.get(var) != key:
                cur.execute(f"SET VARIABLE {var} = {list_literal(list(key))}")
                bound[var] = key
        for reg, live, empty in (
            (names.clean_live, snap.clean_live, _EMPTY_LIVE),
            (names.dirty_live, snap.dirty_live, _EMPTY_DIRTY_LIVE),
        ):
            obj = live if live is not None else empty
            if bound.get(reg) is not obj:
                cur.register(reg, obj)
                bound[reg] = obj

    def define_view(self, db: str, name: str, sql: str, tables: AbstractSet[str]) -> None:
        """Create or replace the engine-defined view ``db.name`` (SQL the engine built, reading
        ``tables``); queries naming it snapshot ``tables``. Run a query over ``sql`` on the same
        thread first: the view is bound on this thread's cursor, which then has every view and
        variable it reads."""
        with self._ddl_lock:
            cur = self._cursor()
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(db)}")
            cur.execute(f"CREATE OR REPLACE VIEW {quote_ident(db)}.{quote_ident(name)} AS {sql}")
            if db == "default":
                q = quote_ident(name)
                cur.execute(f'CREATE OR REPLACE VIEW main.{q} AS SELECT * FROM "default".{q}')
            self._derived[name] = frozenset(self._derived.get(name, frozenset()) | set(tables))

    def _bind_archive(
        self, cur: duckdb.DuckDBPyConnection, bound: dict[str, Any], schema_name: str, table: str
    ) -> None:
        """Register the archived table's dataset on this cursor behind the view ``schema.table``."""
        assert self.archive is not None
        db = "default" if schema_name.lower() == "archive" else schema_name[len("archive_") :]
        rel = self.archive.archive_relation(db, table)
        if rel is None:
            raise QueryError(f"cannot run query: table {db}.{table} has no archived data")
        arrow_schema, dataset, version = rel
        key = (schema_name, table)
        with self._ddl_lock:
            known = self._archive_views.get(key)
            if known is None or known[1] != version:
                reg = known[0] if known else f"__tsa{len(self._archive_views) + 1}"
                ddl = self._con.cursor()
                try:
                    ddl.register(reg, arrow_schema.empty_table())
                    ddl.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema_name)}")
                    ddl.execute(
                        f"CREATE OR REPLACE VIEW {quote_ident(schema_name)}.{quote_ident(table)} "
                        f"AS SELECT * FROM {reg}"
                    )
                finally:
                    ddl.close()
                self._archive_views[key] = (reg, version)
            reg = self._archive_views[key][0]
        cur.register(reg, dataset)
        bound[reg] = dataset

    def internal(self, text: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run SQL the engine built itself (never user text) on this thread's cursor."""
        cur = self._cursor()
        try:
            return sandbox.run_with_timeout(cur, text, params, self._timeout_s)
        except duckdb.Error as exc:
            raise sandbox.translate_error(exc) from exc

    def close(self) -> None:
        self._closed = True
        with self._cursors_lock:
            for cur in self._cursors:
                with contextlib.suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
        self._con.close()
