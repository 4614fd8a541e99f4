"""The lifecycle: one cleanup pass over an engine — downsampling, retention (archive or drop),
storage budget, compaction — plus the ``archive`` SQL schema and the range query helper.

In: an open :class:`~tsengine.engine.Engine` and a :class:`~tsengine.lifecycle.config.StorageConfig`.
Out: :meth:`Lifecycle.run` returns the counts of each step (the server's ``cleanup`` task result;
``tsengine compact``/``archive`` print them).

Who calls it: ``server.cleanup`` (the scheduled ``cleanup`` task and the retention/archive admin
routes) and the CLI's long jobs. Creating a :class:`Lifecycle` takes compaction and retention
over from the engine's persister thread (``engine.maintenance_external``): they then run only
in :meth:`run`. An embedded engine without a lifecycle keeps its own thread (compaction and
plain-delete retention every ``maintenance_interval_s``).

Order of a pass, and why: **rollups** first (raw data must be rolled up before it expires; the
retention step also holds back raw files a rollup has not covered yet), **retention** (expired
files archived if an archive is configured, else deleted), **budget** (oldest files archived or
dropped while Parquet + WAL exceed ``max_local_bytes``; each eviction round is one row in the
``events`` table — tags ``service=tsengine``, ``category=system``, ``severity=warning``,
``name=storage_budget_exceeded``; fields ``id``, ``message``, ``attributes`` (JSON) — and counted
in :attr:`Lifecycle.counters`), **compaction** last (fewer, larger files for what remains).

Opening reconciles the archive (see :func:`tsengine.lifecycle.archive.reconcile`). Blocking;
one pass at a time (a lock); the ``stop`` event ends a pass between units of work.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tsengine.errors import NotFound, TsengineError
from tsengine.lifecycle.archive import Archiver, ArchiveStore, Hook, reconcile
from tsengine.lifecycle.budget import plan_evictions, wal_bytes
from tsengine.lifecycle.config import StorageConfig
from tsengine.lifecycle.rollups import Rollups, rollup_name
from tsengine.persist.manifest import FileEntry
from tsengine.persist.paths import NS_PER_HOUR

if TYPE_CHECKING:
    from tsengine.engine import Engine

__all__ = ["AUTO_SUFFIX", "Lifecycle"]

#: ``<table>_auto``: the SQL view reading the finest resolution kept for each time range.
AUTO_SUFFIX = "auto"

log = logging.getLogger("tsengine.lifecycle")

Progress = Callable[[str, int, int], None]  # (step, done, total)


class Lifecycle:
    """Retention, downsampling, archival, budget and compaction of one engine."""

    def __init__(
        self,
        engine: Engine,
        config: StorageConfig | None = None,
        *,
        archive: ArchiveStore | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or StorageConfig()
        self.lock = threading.Lock()
        self.counters: dict[str, int] = {
            "archived_files": 0,
            "dropped_files": 0,
            "budget_evictions": 0,
            "rollup_rows": 0,
            "compacted_files": 0,
        }
        for key, hours in self.config.retention.items():
            engine.retention.set_default(key, hours)
        self.rollups = Rollups(
            engine,
            self.config.resolutions,
            lateness_s=self.config.lateness_s,
            tables=self.config.rollup_tables,
        )
        store = archive
        if store is None and self.config.archive is not None:
            store = ArchiveStore.from_config(self.config.archive)
        self.archiver = Archiver(engine, store, hook=hook) if store is not None else None
        self._datasets: dict[tuple[str, str], tuple[int, Any]] = {}
        engine.maintenance_external = True
        self._apply_rollup_retention()
        if self.archiver is not None:
            result = reconcile(self.archiver)
            if any(result.values()):
                log.warning("archive reconciled after an interrupted move: %s", result)
            engine.query.archive = self
        self.refresh_views()

    def _apply_rollup_retention(self) -> None:
        for db, table in self.rollups.sources(include_rollups=True):
            for r in self.config.resolutions:
                # An explicit default for the rollup table (engine settings, storage.retention) wins.
                key = f"{db}.{rollup_name(table, r)}"
                if key not in self.config.retention:
                    self.engine.retention.set_default(key, r.retention_hours, replace=False)

    # -- the pass ---------------------------------------------------------------------------

    def run(self, *, stop: threading.Event | None = None, progress: Progress | None = None) -> dict[str, Any]:
        """One cleanup pass; returns the counts of each step (see the module docstring)."""
        with self.lock:
            now_ns = self.engine.clock.now_ns()
            result: dict[str, Any] = {}
            self._apply_rollup_retention()
            result["downsampling"] = self.rollups.run(
                now_ns, stop=stop, progress=(lambda n: progress("downsampling", n, 0)) if progress else None
            )
            self.counters["rollup_rows"] += result["downsampling"]["rollup_rows"]
            self._apply_rollup_retention()  # rollup tables created just now
            if stop is not None and stop.is_set():
                return result
            result["retention"] = self.apply_retention(now_ns, stop=stop, progress=progress)
            if stop is not None and stop.is_set():
                return result
            result["budget"] = self.enforce_budget(stop=stop, progress=progress)
            if stop is not None and stop.is_set():
                return result
            result["compaction"] = {"files_removed": self.compact()}
            self.refresh_views()
            return result

    def _evict(self, files: list[tuple[str, str, FileEntry]], step: str, stop: threading.Event | None,
               progress: Progress | None) -> dict[str, int]:  # fmt: skip
        archived = dropped = freed = 0
        for i, (db, table, entry) in enumerate(files):
            if stop is not None and stop.is_set():
                break
            if self.archiver is not None:
                self.archiver.move(db, table, entry)
                archived += 1
            else:
                dropped += self.engine.drop_files(db, table, [entry.file.relpath()])
            freed += entry.bytes
            if progress is not None:
                progress(step, i + 1, len(files))
        self.counters["archived_files"] += archived
        self.counters["dropped_files"] += dropped
        return {"archived": archived, "dropped": dropped, "bytes_freed": freed}

    def apply_retention(self, now_ns: int | None = None, *, stop: threading.Event | None = None,
                        progress: Progress | None = None) -> dict[str, int]:  # fmt: skip
        """Archive (or drop) every file past its table's retention; raw files a rollup has
        not covered yet are held back (counted as ``held``)."""
        expired = self.engine.expired_files(now_ns)
        todo, held = [], 0
        for db, table, entry in expired:
            hold = self.rollups.hold_ns(db, table)
            if hold is not None and (entry.file.hour + entry.file.span) * NS_PER_HOUR > hold:
                held += 1
                continue
            todo.append((db, table, entry))
        return {**self._evict(todo, "retention", stop, progress), "held": held}

    def local_bytes(self) -> int:
        """Bytes of local Parquet files (listed) plus WAL segments."""
        return self.engine.disk_usage() + wal_bytes(self.engine.path)

    def enforce_budget(self, *, stop: threading.Event | None = None,
                       progress: Progress | None = None) -> dict[str, int]:  # fmt: skip
        """Archive or drop the oldest files while local bytes exceed ``max_local_bytes``."""
        limit = self.config.max_local_bytes
        used = self.local_bytes()
        files = [(db, t, e) for db, t in self.engine.tables() for e in self.engine.table_files(db, t)]
        plan = plan_evictions(files, used, limit)
        if not plan:
            return {"archived": 0, "dropped": 0, "bytes_freed": 0, "local_bytes": used}
        done = self._evict(plan, "budget", stop, progress)
        self.counters["budget_evictions"] += 1
        self._record_event(used, limit, done, plan)
        return {**done, "local_bytes": self.local_bytes()}

    def _record_event(self, used: int, limit: int, done: dict[str, int], plan: list[Any]) -> None:
        action = "archived" if self.archiver is not None else "dropped"
        oldest = min(e.min_ns for _, _, e in plan)
        newest = max(e.max_ns for _, _, e in plan)
        attributes = {"local_bytes": used, "max_local_bytes": limit, "action": action, **done,
                      "oldest_ns": oldest, "newest_ns": newest,
                      "tables": sorted({f"{db}.{t}" for db, t, _ in plan})}  # fmt: skip
        message = (
            f"storage budget exceeded: {used} of {limit} bytes; {action} {done[action]} oldest files "
            f"({done['bytes_freed']} bytes)"
        )
        log.warning("%s", message)
        try:
            self._write_event(message, attributes)
        except TsengineError:  # e.g. an events table of another shape: the eviction stands
            log.exception("cannot record the storage budget event in %s.%s", self.config.events_db,
                          self.config.events_table)  # fmt: skip

    def _write_event(self, message: str, attributes: dict[str, Any]) -> None:
        self.engine.write(
            self.config.events_table,
            [self.engine.clock.now_ns()],
            tags={"service": ["tsengine"], "category": ["system"], "severity": ["warning"],
                  "name": ["storage_budget_exceeded"]},
            fields={"id": [uuid.uuid4().hex], "message": [message], "attributes": [json.dumps(attributes)]},
            db=self.config.events_db,
        )  # fmt: skip

    def compact(self) -> int:
        removed = self.engine.compact()
        self.counters["compacted_files"] += removed
        return removed

    def archive_now(
        self,
        *,
        db: str | None = None,
        table: str | None = None,
        older_than_ns: int | None = None,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> dict[str, int]:
        """Archive every local file of the selected tables whose rows are all older than
        ``older_than_ns`` (default: expired ones only, as the retention step would)."""
        if self.archiver is None:
            raise NotFound("cannot archive: no archive is configured (storage.archive)")
        with self.lock:
            if older_than_ns is None:
                files = self.engine.expired_files()
            else:
                files = [(d, t, e) for d, t in self.engine.tables() for e in self.engine.table_files(d, t)
                         if (e.file.hour + e.file.span) * NS_PER_HOUR <= older_than_ns]  # fmt: skip
            files = [f for f in files if (db is None or f[0] == db) and (table is None or f[1] == table)]
            files.sort(key=lambda f: (f[2].max_ns, f[0], f[1]))
            return self._evict(files, "archive", stop, progress)

    # -- reading ----------------------------------------------------------------------------

    def archive_relation(self, db: str, table: str) -> tuple[pa.Schema, Any, int] | None:
        """For the query layer's ``archive`` schema: (schema, dataset, version) or None."""
        if self.archiver is None:
            return None
        manifest = self.archiver.manifest(db, table)
        if manifest is None or not manifest.files:
            return None
        version = self.archiver.version
        cached = self._datasets.get((db, table))
        if cached is None or cached[0] != version:
            cached = (version, self.archiver.store.dataset(manifest))
            self._datasets[(db, table)] = cached
        schema = manifest.arrow_schema()
        # The view (SELECT * over the registration) is re-created only when the shape changes.
        return schema, cached[1], hash(schema.to_string())

    def query_range(self, table: str, start_ns: int, end_ns: int, *, db: str = "default") -> pa.Table:
        """Rows of ``[start_ns, end_ns)`` from the finest data kept for each part of the range:
        raw where raw is kept, else the finest rollup kept, each row in the rollup shape
        (``<field>_min/_max/_sum/_count/_last``; a raw row is a bucket of one value)."""
        return self.engine.sql(self._range_sql(db, table, start_ns, end_ns) + " ORDER BY time")

    def _range_sql(self, db: str, table: str, start_ns: int | None, end_ns: int | None) -> str:
        now = self.engine.clock.now_ns()
        policies = self.engine.retention

        def kept_from(name: str) -> int | None:
            hours = policies.hours_for(db, name)
            return None if not hours else now - int(hours * 3600e9)

        return self.rollups.query_range_sql(
            db, table, start_ns, end_ns, raw_from_ns=kept_from(table),
            rollup_from_ns={r.name: kept_from(rollup_name(table, r)) for r in self.config.resolutions},
        )  # fmt: skip

    def refresh_views(self) -> int:
        """(Re)define ``<table>_auto`` for every rolled-up table: the finest data kept for each
        time range, in the rollup shape (boundaries as of now; refreshed by every pass)."""
        defined = 0
        tables = set(self.engine.tables())
        for db, table in self.rollups.sources():
            name = f"{table}_{AUTO_SUFFIX}"
            if (db, name) in tables:  # a user table of that name wins
                continue
            sql = self._range_sql(db, table, None, None)
            self.engine.sql(f"SELECT * FROM ({sql}) LIMIT 0")  # creates the views it reads
            bases = {table, *(rollup_name(table, r) for r in self.config.resolutions)}
            self.engine.query.define_view(db, name, sql, bases)
            defined += 1
        return defined

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/health/telemetry`` (cheap: no I/O beyond a WAL listing)."""
        return {
            "archive": self.archiver.store.description if self.archiver else None,
            "max_local_bytes": self.config.max_local_bytes,
            "local_bytes": self.local_bytes(),
            "rollups": [r.name for r in self.config.resolutions],
            "watermarks": dict(self.rollups.watermarks),
            **self.counters,
        }
