"""The embedded storage engine: the write path, the persister, and the query entry points.

Write path (``write``/``write_arrow``/``write_rows``/``write_batches``)::

    columns ─► TableBatch (validated) ─► schema merge (type conflicts raise) ─► admission
            ─► WAL append ─► ring-buffer append ─► [lock released] ─► WAL fsync policy ─► return

Everything before the WAL append can fail and leaves no trace; nothing after it can fail, so a
call either writes all of its rows (every table it names) or none. Under ``fsync="always"`` a
call returns only after an fsync covering its record (shared with concurrent writers).

A background persister thread freezes chunks that are full or older than
``max_chunk_age_s`` and writes them as Parquet partition files; the table's manifest is then
rewritten and WAL segments whose records are all persisted are deleted. ``flush()`` does the
same synchronously. On open, manifests are reconciled with the files on disk and the WAL
records not yet covered by a manifest are replayed.

Queries (``sql``) run on DuckDB over per-table views (see :mod:`tsengine.query.views`);
``latest`` answers "last value of every series" from memory.

Thread safety: every public method may be called from any thread. One lock guards the
in-memory state; Parquet writing, fsync and DuckDB run outside it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tsengine.clock import Clock, SystemClock
from tsengine.durable import atomic_write
from tsengine.errors import InvalidInput, LimitExceeded, NotFound, Overloaded, StorageError, TsengineError
from tsengine.lifecycle.policies import RetentionPolicies
from tsengine.model.batch import TableBatch
from tsengine.model.names import validate_db, validate_table
from tsengine.model.schema import TableSchema
from tsengine.observe import EngineObserver
from tsengine.persist import compaction
from tsengine.persist.manifest import FileEntry, Manifest, reconcile
from tsengine.persist.parquet import sort_dedup_split, write_file
from tsengine.persist.paths import (
    EMPTY_PARQUET,
    LOCK_FILE,
    NS_PER_HOUR,
    TMP_DIR,
    PartitionFile,
    table_dir,
    unescape_name,
)
from tsengine.query.layer import QueryLayer
from tsengine.query.views import ROW_COLUMN, TableSnapshot
from tsengine.settings import Settings
from tsengine.write import record
from tsengine.write.buffer import INT64_MIN, Chunk, Plan, TableBuffer
from tsengine.write.wal import Wal

__all__ = ["Engine"]

log = logging.getLogger("tsengine.engine")


@dataclass
class TableState:
    """One table: its live buffer, its persisted manifest, and its view bookkeeping."""

    db: str
    buffer: TableBuffer
    manifest: Manifest
    view_id: int
    schema_version: int = 0
    #: Set (for good, in this process) once the table had rows needing de-duplication: its view
    #: then carries the de-duplicating branch, which costs a few ms of planning per query.
    view_dedup: bool = False
    persist_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def schema(self) -> TableSchema:
        return self.buffer.schema


class Engine:
    """An open tsengine data directory. Use :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(
        self, path: str | Path, settings: Settings | None = None, *, clock: Clock | None = None
    ) -> None:
        self.path = Path(path).resolve()
        self.settings = settings or Settings()
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._tables: dict[tuple[str, str], TableState] = {}
        self._buffer_bytes = 0
        self._readers = 0
        self._graveyard: list[Path] = []
        self._last_persist_ns = 0
        self._persist_errors = 0
        self._closed = False
        self._persist_wake = threading.Event()
        self._stop = threading.Event()
        self._persist_lock = threading.Lock()  # one persister at a time (thread or flush())
        #: Set by whoever runs compaction and retention itself (the server's ``cleanup`` task,
        #: the CLI's long jobs): the persister thread then leaves them alone.
        self.maintenance_external = False
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_data_dir(self.path)
        try:
            (self.path / TMP_DIR).mkdir(exist_ok=True)
            self.retention = RetentionPolicies(self.path, self.settings.retention_hours)
            self._empty = self.path / EMPTY_PARQUET
            # Rewritten on every open: a torn one would break every query.
            atomic_write(
                self._empty, lambda f: pq.write_table(pa.table({"time": pa.array([], pa.timestamp("ns"))}), f)
            )
            self._load_manifests()
            self.wal = Wal(
                self.path,
                fsync=self.settings.fsync,
                fsync_interval_s=self.settings.fsync_interval_s,
                segment_bytes=self.settings.wal_segment_bytes,
            )
            self._replay()
            next_seq = (
                max(
                    [
                        self.wal.last_seq,
                        *(
                            max(s.manifest.max_file_seq(), max(s.manifest.hwm.values(), default=0))
                            for s in self._tables.values()
                        ),
                    ]
                )
                + 1
            )
            self.wal.start(next_seq)
            self.query = QueryLayer(
                self.path,
                self,
                empty_parquet=self._empty,
                temp_dir=self.path / TMP_DIR,
                memory_limit=self.settings.query_memory_limit,
                threads=self.settings.query_threads,
                timeout_s=self.settings.query_timeout_s,
            )
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._persister = threading.Thread(target=self._persist_loop, name="tsengine-persister", daemon=True)
        self._persister.start()

    @classmethod
    def open(cls, path: str | Path, *, clock: Clock | None = None, **settings: Any) -> Engine:
        """Open (or create) a data directory. Keyword arguments override :class:`Settings`."""
        return cls(path, Settings().replace(**settings), clock=clock)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- open -------------------------------------------------------------------------------

    def _new_state(self, db: str, manifest: Manifest) -> TableState:
        max_ns = manifest.max_ns()
        buf = TableBuffer(db, manifest.schema, persisted_max_ns=INT64_MIN if max_ns is None else max_ns)
        return TableState(db=db, buffer=buf, manifest=manifest, view_id=len(self._tables) + 1)

    def _load_manifests(self) -> None:
        for db_dir in sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("_")):
            try:
                validate_db(db_dir.name)
            except TsengineError:
                continue
            for tdir in sorted(p for p in db_dir.iterdir() if p.is_dir()):
                manifest = Manifest.load(tdir)
                table = manifest.table if manifest else unescape_name(tdir.name)
                manifest, changed = reconcile(manifest, tdir, db_dir.name, table)
                if changed:
                    manifest.save(tdir)
                self._tables[(db_dir.name, table)] = self._new_state(db_dir.name, manifest)

    def _replay(self) -> None:
        records = 0
        for seq, payload in self.wal.replay():
            batches = record.decode(payload)
            todo = []
            for b in batches:
                state = self._tables.get((b.db, b.table))
                if state is not None and seq <= state.manifest.persisted_seq(self.settings.node_id):
                    continue
                todo.append(b)
            if todo:
                self._apply(todo, seq=seq, admit=False)
                records += 1
        if records:
            log.info("replayed %d WAL records into %s", records, self.path)

    # -- write ------------------------------------------------------------------------------

    def write(
        self,
        table: str,
        time: Any,
        *,
        tags: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        db: str = "default",
    ) -> int:
        """Write one columnar batch atomically; returns the number of rows written.

        ``time`` is int64 nanoseconds since the epoch (UTC); columns are numpy arrays, lists or
        Arrow arrays of equal length. Blocks until the fsync policy is met.

        Raises:
            InvalidInput: bad names, lengths or types; SchemaConflict for a type change.
            Overloaded: the buffer memory bound is reached (retry after ``retry_after_s``).
        """
        return self.write_batches([TableBatch.build(table, time, tags=tags, fields=fields, db=db)])

    def write_arrow(
        self,
        table: str,
        data: pa.Table | pa.RecordBatch,
        *,
        tags: Iterable[str] | None = None,
        db: str = "default",
    ) -> int:
        """Write an Arrow table/batch: a ``time`` column plus tags and fields.

        A column is a tag when named in ``tags``, dictionary-typed (dictionary<string>), or
        marked with :data:`tsengine.model.TAG_METADATA`; all others are fields.
        """
        return self.write_batches([TableBatch.from_arrow(table, data, tags=tags, db=db)])

    def write_rows(
        self, table: str, rows: Iterable[Mapping[str, Any]], *, tags: Iterable[str] = (), db: str = "default"
    ) -> int:
        """Row-at-a-time convenience: ``[{"time": ns, "host": "a", "v": 1.0}, ...]``.

        Keys named in ``tags`` are tags, ``time`` is the time, every other key is a field; a
        missing key or None means absent on that row.
        """
        rows = list(rows)
        tag_set = set(tags)
        names: dict[str, None] = {}
        for r in rows:
            for k in r:
                names.setdefault(k, None)
        if "time" not in names:
            raise InvalidInput(f"cannot write table {table!r}: rows have no 'time'")
        cols = {k: [r.get(k) for r in rows] for k in names}
        time = cols.pop("time")
        if any(t is None for t in time):
            raise InvalidInput(f"cannot write table {table!r}: a row has no 'time'")
        return self.write(
            table,
            np.asarray(time, dtype=np.int64),
            tags={k: v for k, v in cols.items() if k in tag_set},
            fields={k: v for k, v in cols.items() if k not in tag_set},
            db=db,
        )

    def write_batches(self, batches: list[TableBatch]) -> int:
        """Write several batches (any tables) as one atomic unit; returns rows written."""
        if self._closed:
            raise TsengineError("cannot write: the engine is closed")
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return 0
        payload = record.encode(batches)
        seq = self._apply(batches, payload=payload)
        self.wal.wait_durable(seq)
        return sum(b.num_rows for b in batches)

    def declare_table(self, table: str, *, db: str = "default", append_only: bool = False) -> None:
        """Create ``db.table`` with its table-level properties, or check that it has them.

        ``append_only``: the table's rows are never de-duplicated — two rows of one series and
        time both stay, through flush, compaction and restart (spans, events: rows that are
        distinct even when their tags and time agree). The property is in the table's manifest
        (saved durably) before this returns, so WAL replay and every later open keep it. Cheap
        when the table exists (a lookup under the lock); blocks on an fsync when it creates it.

        Raises:
            InvalidName: a bad database or table name.
            InvalidInput: the table exists with the other ``append_only`` setting.
        """
        validate_db(db)
        validate_table(table)
        if self._closed:
            raise TsengineError("cannot declare a table: the engine is closed")
        with self._lock:
            st = self._tables.get((db, table))
            if st is None:
                manifest = Manifest(db=db, schema=TableSchema(table, append_only=append_only))
                manifest.save(table_dir(self.path, db, table))
                st = self._tables[(db, table)] = self._new_state(db, manifest)
        if st.schema.append_only != append_only:
            raise InvalidInput(
                f"cannot declare table {db}.{table} with append_only={append_only}: it exists "
                f"with append_only={st.schema.append_only}"
            )

    def _apply(
        self, batches: list[TableBatch], *, payload: list[Any] | None = None, seq: int = 0, admit: bool = True
    ) -> int:
        s = self.settings
        grouped: dict[tuple[str, str], list[TableBatch]] = {}
        for b in batches:
            grouped.setdefault((b.db, b.table), []).append(b)
        with self._lock:
            # 1. Check and plan everything; nothing is changed, so any error leaves no trace.
            work: list[tuple[tuple[str, str], TableSchema, TableBatch, Plan]] = []
            for key, group in grouped.items():
                state = self._tables.get(key)
                schema = (
                    state.schema if state else TableSchema(key[1], append_only=key[1] in s.append_only_tables)
                )
                for b in group:
                    schema = schema.merge(b)
                batch = TableBatch.concat(group)
                buffer = state.buffer if state else TableBuffer(key[0], schema)
                plan = buffer.plan(batch, schema)
                limit = s.max_series_per_table
                if admit and limit and plan.new_series and buffer.num_series + len(plan.new_series) > limit:
                    raise LimitExceeded(
                        f"cannot write table {key[0]}.{key[1]}: {len(plan.new_series)} new series would "
                        f"exceed the limit of {limit} series per table"
                    )
                work.append((key, schema, batch, plan))
            # 2. Admission: room for every chunk this call needs.
            need: dict[tuple[str, str], int] = {}
            for key, _schema, batch, _plan in work:
                state = self._tables.get(key)
                active = state.buffer.active_chunk() if state else None
                if active is None or not active.fits(batch.num_rows):
                    if state:
                        need[key] = state.buffer.next_capacity(
                            batch.num_rows, s.min_chunk_rows, s.max_chunk_rows
                        )
                    else:
                        need[key] = max(s.min_chunk_rows, batch.num_rows)
            if admit and need:
                extra = sum(
                    cap * (12 + 4 * len(sch.tags) + 9 * len(sch.fields))
                    for key, sch, _b, _p in work
                    if (cap := need.get(key))
                )
                if self._buffer_bytes + extra > s.max_buffer_bytes:
                    self._persist_wake.set()
                    raise Overloaded(
                        f"cannot write: the write buffers are full ({self._buffer_bytes} of "
                        f"{s.max_buffer_bytes} bytes); persisting, retry shortly",
                        retry_after_s=s.overload_retry_after_s,
                    )
            # 3. The WAL makes it durable (or raises, leaving nothing behind).
            if payload is not None:
                seq = self.wal.append(payload)
            # 4. Apply: cannot fail from here on.
            for key, schema, _batch, plan in work:
                state = self._tables.get(key)
                if state is None:
                    state = self._tables[key] = self._new_state(key[0], Manifest(db=key[0], schema=schema))
                if state.buffer.schema is not schema:
                    state.buffer.schema = schema
                    state.schema_version += 1
                cap = need.get(key)
                if cap is not None:
                    active = state.buffer.active_chunk()
                    if active is not None:
                        active.frozen = True
                        self._persist_wake.set()
                    chunk = Chunk(cap, self.clock.monotonic_s())
                    state.buffer.chunks.append(chunk)
                    self._buffer_bytes += chunk.nbytes
                chunk = state.buffer.chunks[-1]
                before = chunk.nbytes
                state.buffer.apply(plan, chunk, seq)
                self._buffer_bytes += chunk.nbytes - before
                if chunk.n >= chunk.capacity:
                    chunk.frozen = True
                    self._persist_wake.set()
            if not admit and self._buffer_bytes > s.max_buffer_bytes:
                # Replaying a long WAL: persist as we go instead of growing past the bound.
                self._freeze_all()
                self._persist_frozen()
        return seq

    # -- persistence ------------------------------------------------------------------------

    def _persist_loop(self) -> None:
        interval = self.settings.maintenance_interval_s
        next_maintenance = self.clock.monotonic_s() + interval
        while not self._stop.is_set():
            self._persist_wake.wait(self.settings.persist_check_interval_s)
            self._persist_wake.clear()
            if self._stop.is_set():
                break
            try:
                self._freeze_aged()
                self._persist_frozen()
            except Exception:  # a task boundary: log, retry next round
                self._persist_errors += 1
                log.exception("background persist failed; will retry")
            if interval and not self.maintenance_external and self.clock.monotonic_s() >= next_maintenance:
                next_maintenance = self.clock.monotonic_s() + interval
                try:
                    self.compact()
                    self.apply_retention()
                except Exception:  # a task boundary: log, retry next round
                    log.exception("background compaction/retention failed; will retry")

    def _freeze_aged(self) -> None:
        now = self.clock.monotonic_s()
        with self._lock:
            for state in self._tables.values():
                active = state.buffer.active_chunk()
                if (
                    active is not None
                    and active.n
                    and now - active.created_s >= self.settings.max_chunk_age_s
                ):
                    active.frozen = True

    def _freeze_all(self) -> None:
        with self._lock:
            for state in self._tables.values():
                active = state.buffer.active_chunk()
                if active is not None:
                    if active.n:
                        active.frozen = True
                    else:  # an empty chunk is dropped, not persisted
                        state.buffer.chunks.remove(active)
                        self._buffer_bytes -= active.nbytes

    def _persist_frozen(self, upto_seq: int | None = None) -> None:
        """Persist frozen chunks, oldest first per table (only those up to ``upto_seq``)."""
        with self._persist_lock:
            while True:
                with self._lock:
                    todo = [
                        (state, chunk)
                        for state in self._tables.values()
                        if state.buffer.chunks
                        and (chunk := state.buffer.chunks[0]).frozen
                        and (upto_seq is None or chunk.max_seq <= upto_seq)
                    ]
                if not todo:
                    break
                for state, chunk in todo:
                    self._persist_chunk(state, chunk)
            self._truncate_wal()

    @property
    def observer(self) -> EngineObserver:
        """Receives the engine's self-measurements (see :mod:`tsengine.observe`)."""
        return self.wal.observer

    @observer.setter
    def observer(self, value: EngineObserver) -> None:
        self.wal.observer = value

    def _persist_chunk(self, state: TableState, chunk: Chunk) -> None:
        s = self.settings
        t0 = time.perf_counter()
        with self._lock:  # the dictionaries keep growing outside the lock
            schema = state.schema
            dict_arrays = {name: d.arrow() for name, d in state.buffer.dicts.items()}
        data = chunk.to_arrow(dict_arrays)
        tdir = table_dir(self.path, state.db, schema.table)
        entries = []
        for hour, part in sort_dedup_split(data, schema.tags, dedup=not schema.append_only):
            pf = PartitionFile(hour=hour, seq=chunk.max_seq, gen=0, node=s.node_id)
            written = write_file(
                pf.path(self.path, state.db, schema.table),
                part,
                schema,
                row_group_rows=s.row_group_rows,
                zstd_level=s.zstd_level,
                max_decimals=s.max_scaled_decimals,
            )
            entries.append(
                FileEntry(
                    pf, written.rows, written.min_ns, written.max_ns, written.bytes, hour in chunk.dirty_hours
                )
            )
        with state.persist_lock:
            new = state.manifest.copy()
            new.schema = schema
            for e in entries:
                new.files[e.file.relpath()] = e
            new.hwm[s.node_id] = max(new.hwm.get(s.node_id, 0), chunk.max_seq)
            new.save(tdir)
            with self._lock:
                state.manifest = new
                state.buffer.chunks.remove(chunk)
                self._buffer_bytes -= chunk.nbytes
                self._last_persist_ns = self.clock.now_ns()
        self.observer.persisted(time.perf_counter() - t0, chunk.n, len(entries))

    def _truncate_wal(self) -> None:
        with self._lock:
            pending = [c.min_seq for st in self._tables.values() for c in st.buffer.chunks if c.n]
            floor = min(pending) if pending else self.wal.last_seq + 1
        self.wal.remove_before(floor)

    def flush(self) -> None:
        """Persist every row written before the call to Parquet (blocking); trim the WAL.

        Rows written while it runs are left to the persister, so it returns under steady writes.
        """
        with self._lock:
            self._freeze_all()
            upto = self.wal.last_seq
        self._persist_frozen(upto)

    def compact(self, *, db: str | None = None, table: str | None = None) -> int:
        """Merge each partition's files into one and drop duplicates; returns files removed.

        Readers never see a row missing or doubled: the merged file replaces its inputs in the
        manifest in one step, and the inputs are deleted only after queries that may read them
        have finished.
        """
        removed = 0
        for state in self._states(db, table):
            with state.persist_lock:
                result = compaction.compact_table(
                    self.path, state.db, state.manifest, settings=self.settings, now_ns=self.clock.now_ns()
                )
                if result is None:
                    continue
                new, obsolete = result
                with self._lock:
                    state.manifest = new
                    self._bury(obsolete)
                removed += len(obsolete)
        return removed

    def apply_retention(self, now_ns: int | None = None) -> int:
        """Drop partitions past their retention (:attr:`retention` policies); returns files."""
        dropped = 0
        by_table: dict[tuple[str, str], list[str]] = {}
        for db, table, entry in self.expired_files(now_ns):
            by_table.setdefault((db, table), []).append(entry.file.relpath())
        for (db, table), relpaths in by_table.items():
            dropped += self.drop_files(db, table, relpaths)
        return dropped

    # -- lifecycle hooks (tsengine.lifecycle: retention, archival, storage budget) -------------

    def set_retention(self, db: str, table: str | None, hours: float | None) -> float | None:
        """Set the retention of ``db`` or ``db.table`` at run time (None = keep forever).

        Persisted in the data directory; applies from the next retention pass.
        """
        return self.retention.set(db, table, hours)

    def expired_files(self, now_ns: int | None = None) -> list[tuple[str, str, FileEntry]]:
        """Files whose every hour is past its table's retention, as (db, table, entry)."""
        now_ns = self.clock.now_ns() if now_ns is None else now_ns
        out: list[tuple[str, str, FileEntry]] = []
        for state in self._states(None, None):
            hours = self.retention.hours_for(state.db, state.schema.table)
            if not hours:
                continue
            cutoff_hour = (now_ns - int(hours * 3600e9)) // NS_PER_HOUR
            with self._lock:
                files = list(state.manifest.files.values())
            out.extend(
                (state.db, state.schema.table, e) for e in files if e.file.hour + e.file.span <= cutoff_hour
            )
        return out

    def drop_files(self, db: str, table: str, relpaths: Iterable[str], *, after_save: Any = None) -> int:
        """Remove listed files from a table's manifest, then delete them once no query reads them.

        Paths no longer listed are ignored; returns how many were dropped. ``after_save`` (tests
        of crash safety) is called once the new manifest is durable, before any file is deleted.
        """
        states = self._states(db, table)
        if not states:
            return 0
        state = states[0]
        with state.persist_lock:
            gone = [state.manifest.files[r] for r in relpaths if r in state.manifest.files]
            if not gone:
                return 0
            new = state.manifest.copy()
            for e in gone:
                del new.files[e.file.relpath()]
            new.save(table_dir(self.path, db, table))
            if after_save is not None:
                after_save()
            with self._lock:
                state.manifest = new
                self._bury([e.file.path(self.path, db, table) for e in gone])
        return len(gone)

    def table_files(self, db: str, table: str) -> list[FileEntry]:
        """The files a table's manifest lists now (a copy)."""
        with self._lock:
            st = self._tables.get((db, table))
            return list(st.manifest.files.values()) if st else []

    def _bury(self, paths: list[Path]) -> None:
        """Delete files no longer listed, once no query snapshot may still read them."""
        self._graveyard.extend(paths)
        if self._readers == 0:
            self._empty_graveyard()

    def _empty_graveyard(self) -> None:
        # A flush replaying the WAL after a crash can write a file under the very name of one
        # compaction retired meanwhile; a listed path is never deleted.
        listed = (
            {
                e.file.path(self.path, st.db, st.schema.table)
                for st in self._tables.values()
                for e in st.manifest.files.values()
            }
            if self._graveyard
            else set()
        )
        for p in self._graveyard:
            if p not in listed:
                p.unlink(missing_ok=True)
        self._graveyard.clear()

    def _states(self, db: str | None, table: str | None) -> list[TableState]:
        with self._lock:
            return [
                st
                for (d, t), st in self._tables.items()
                if (db is None or d == db) and (table is None or t == table)
            ]

    # -- query ------------------------------------------------------------------------------

    def sql(self, query: str, params: Any = None, *, db: str = "default") -> pa.Table:
        """Run one read-only SQL statement over every table; returns an Arrow table.

        Tables are ``"db".table``; unqualified names resolve in ``db``. ``time`` is
        TIMESTAMP_NS (UTC). Blocks; thread-safe.
        """
        validate_db(db)
        return self.query.sql(query, params, db=db)

    def snapshot(self, names: AbstractSet[str]) -> list[TableSnapshot]:
        """Consistent view of the named tables (SnapshotSource for the query layer)."""
        out = []
        with self._lock:
            self._readers += 1
            for (db, table), st in self._tables.items():
                if table in names:
                    out.append(self._snapshot_table(db, st))
        return out

    def release(self, snaps: list[TableSnapshot]) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._graveyard:
                self._empty_graveyard()

    def _snapshot_table(self, db: str, st: TableState) -> TableSnapshot:
        schema = st.schema
        dirty_hours: set[int] = set()
        if not schema.append_only:  # never de-duplicated, so never a dedup branch in its view
            dirty_hours = st.manifest.dirty_hours()
            for c in st.buffer.chunks:
                dirty_hours |= c.dirty_hours
        clean: list[str] = []
        dirty: list[str] = []
        for e in sorted(st.manifest.files.values(), key=lambda e: (e.file.seq, e.file.gen)):
            path = str(e.file.path(self.path, db, schema.table))
            (clean if dirty_hours.isdisjoint(e.file.hours) else dirty).append(path)
        dict_arrays = {name: d.arrow() for name, d in st.buffer.dicts.items()}
        live = [c.to_arrow(dict_arrays, c.n) for c in st.buffer.chunks if c.n]
        clean_live = dirty_live = None
        if live:
            if not dirty_hours:
                clean_live = pa.concat_tables(live, promote_options="default") if len(live) > 1 else live[0]
            else:
                allrows = pa.concat_tables(live, promote_options="default")
                t = allrows.column("time").combine_chunks().view(pa.int64()).to_numpy()
                mask = np.isin(t // NS_PER_HOUR, np.fromiter(dirty_hours, np.int64))
                clean_live = allrows.filter(pa.array(~mask))
                dirty_live = allrows.filter(pa.array(mask)).append_column(
                    ROW_COLUMN, pa.array(np.arange(int(mask.sum()), dtype=np.int64))
                )
        if dirty_hours:
            st.view_dedup = True
        return TableSnapshot(
            db=db,
            schema=schema,
            view_id=st.view_id,
            view_version=(st.schema_version, st.view_dedup),
            clean_files=clean,
            dirty_files=dirty,
            clean_live=clean_live,
            dirty_live=dirty_live,
        )

    def latest(self, table: str, *, db: str = "default", where: Mapping[str, Any] | None = None) -> pa.Table:
        """The last value of every field of every series (or of series matching ``where``).

        Answered from memory: the first call per table after open reads the persisted files once.
        Columns: tags, ``time`` (the series' latest time), then each field (NULL where that
        series never had the field).
        """
        from tsengine.query import latest as latest_mod

        key = (db, table)
        with self._lock:
            st = self._tables.get(key)
        if st is None:
            raise NotFound(f"cannot read latest values: table {db}.{table} does not exist")
        if not st.buffer.latest_loaded:
            with self._lock:  # list and pin the files, as a query snapshot does
                files = [str(e.file.path(self.path, db, table)) for e in st.manifest.files.values()]
                sql = latest_mod.persisted_sql(st.schema, files)
                self._readers += 1
            try:
                result = self.query.internal(sql) if sql else None
            finally:
                self.release([])
            with self._lock:
                if not st.buffer.latest_loaded:
                    if result is not None and result.num_rows:
                        latest_mod.merge(st.buffer, result)
                    st.buffer.latest_loaded = True
        with self._lock:
            return latest_mod.build(st.buffer, where)

    # -- introspection ----------------------------------------------------------------------

    def tables(self, db: str | None = None) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(k for k in self._tables if db is None or k[0] == db)

    def schema(self, table: str, db: str = "default") -> TableSchema:
        validate_table(table)
        with self._lock:
            st = self._tables.get((db, table))
            if st is None:
                raise NotFound(f"cannot describe table {db}.{table}: it does not exist")
            return st.schema

    def disk_usage(self, db: str | None = None) -> int:
        """Bytes of the Parquet files listed in the manifests."""
        return sum(e.bytes for st in self._states(db, None) for e in st.manifest.files.values())

    def stats(self) -> dict[str, Any]:
        """Counters for health and self-metrics (cheap; takes the lock briefly)."""
        with self._lock:
            pending = [c.min_seq for st in self._tables.values() for c in st.buffer.chunks if c.n]
            return {
                "tables": len(self._tables),
                "buffer_bytes": self._buffer_bytes,
                "max_buffer_bytes": self.settings.max_buffer_bytes,
                "live_rows": sum(c.n for st in self._tables.values() for c in st.buffer.chunks),
                "files": sum(len(st.manifest.files) for st in self._tables.values()),
                "wal_last_seq": self.wal.last_seq,
                # WAL records not yet in Parquet: what a restart would replay.
                "wal_unpersisted_records": self.wal.last_seq - min(pending) + 1 if pending else 0,
                "last_persist_ns": self._last_persist_ns,
                "persist_errors": self._persist_errors,
            }

    def close(self) -> None:
        """Persist live rows, stop background threads, close the WAL and DuckDB."""
        if self._closed:
            return
        self._stop.set()
        self._persist_wake.set()
        self._persister.join()
        try:
            self.flush()
        finally:
            self._closed = True
            self.wal.close()
            self.query.close()
            if self._readers == 0:
                self._empty_graveyard()
            os.close(self._lock_fd)  # releases the flock


def _lock_data_dir(path: Path) -> int:
    """Take an exclusive lock on the data directory: two engines on one WAL would corrupt it.

    The lock is the open file description's (flock), so a killed process releases it.
    """
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StorageError(
            f"cannot open data directory {path}: it is in use by pid {holder} (query a running "
            "server with `tsengine sql --url`, run its jobs with POST /api/v1/tasks/{name}/run)",
            path=str(path),
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
