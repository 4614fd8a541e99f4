"""Engine settings: one frozen dataclass, built once at the edge.

``Settings.from_env(environ)`` reads ``TSENGINE_<FIELD>`` variables (upper-case field names, e.g.
``TSENGINE_FSYNC=always``); ``Engine.open(path, **overrides)`` takes the same names as keyword
arguments. Inner code receives a ``Settings`` and never reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsengine.errors import InvalidInput

__all__ = ["FSYNC_POLICIES", "Settings"]

FSYNC_POLICIES = ("always", "interval", "none")


@dataclass(frozen=True)
class Settings:
    """Every tunable of the storage engine, with its default and its reason."""

    #: WAL durability: "always" (every write waits for an fsync shared by concurrent writers),
    #: "interval" (fsync every ``fsync_interval_s``; a crash loses at most that much) or "none".
    fsync: str = "interval"
    #: Seconds between background fsyncs under the "interval" policy.
    fsync_interval_s: float = 1.0
    #: A WAL segment is closed and a new one started past this size.
    wal_segment_bytes: int = 64 * 1024 * 1024
    #: Upper bound of memory held by all ring-buffer chunks; past it writes get Overloaded (429).
    max_buffer_bytes: int = 1024 * 1024 * 1024
    #: Seconds a writer is told to wait when the buffer bound is reached.
    overload_retry_after_s: float = 1.0
    #: Rows of the first chunk of a table; later chunks grow x4 up to ``max_chunk_rows``.
    min_chunk_rows: int = 8192
    #: Rows after which a chunk is frozen and persisted (bigger = fewer, larger files).
    max_chunk_rows: int = 1 << 20
    #: A chunk older than this is frozen and persisted even if not full.
    max_chunk_age_s: float = 300.0
    #: Seconds between checks of the background persister for aged chunks.
    persist_check_interval_s: float = 1.0
    #: Series (distinct tag sets) a table may hold in memory; a write bringing more is refused
    #: whole (LimitExceeded) while writes to existing series go on. 0 = no limit.
    max_series_per_table: int = 1_000_000
    #: Parquet row-group size: small enough for min/max statistics to skip most of a file
    #: for a one-host query, large enough for zstd and scan speed (FINDINGS: 1k rows is too small).
    row_group_rows: int = 16384
    #: zstd level for Parquet pages.
    zstd_level: int = 3
    #: Store float columns whose every value has at most this many decimals as scaled
    #: integers (Parquet DECIMAL on INT64, delta-coded): lossless, and 3-5x smaller.
    max_scaled_decimals: int = 6
    #: Name of this writer node; part of every Parquet file name.
    node_id: str = "n0"
    #: Compaction merges a partition once it holds at least this many files.
    compact_min_files: int = 2
    #: A day's hour files are merged into one day file once the day ended this long ago
    #: (late samples for it after that land in hour files and are merged in next time).
    day_compaction_grace_s: float = 3600.0
    #: A day with more rows than this stays in hour files (compaction holds a partition in memory).
    max_compaction_rows: int = 20_000_000
    #: Seconds between compaction + retention passes of the persister thread; 0 turns them off
    #: (the server's scheduler runs them as its ``cleanup`` task instead).
    maintenance_interval_s: float = 1800.0
    #: Retention in hours per "db" or "db.table" (0 or missing = keep forever).
    retention_hours: Mapping[str, float] = field(default_factory=dict)
    #: Tables created under these names (in any database) are append-only: their rows are never
    #: de-duplicated (spans, events and alert history are logs whose rows may share tags and time).
    #: Applies when a table is created; ``Engine.declare_table`` sets it for any other table.
    append_only_tables: tuple[str, ...] = ("spans", "events", "alerts_history")
    #: DuckDB: memory limit and threads of the query connection.
    query_memory_limit: str = "4GB"
    query_threads: int = 2
    #: Seconds after which a user query is interrupted.
    query_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise InvalidInput(f"cannot use setting fsync={self.fsync!r}: expected one of {FSYNC_POLICIES}")
        for name in ("fsync_interval_s", "max_chunk_age_s", "persist_check_interval_s", "query_timeout_s"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"cannot use setting {name}={getattr(self, name)!r}: must be > 0")
        for name in (
            "wal_segment_bytes",
            "max_buffer_bytes",
            "min_chunk_rows",
            "max_chunk_rows",
            "row_group_rows",
        ):
            if getattr(self, name) < 1:
                raise InvalidInput(f"cannot use setting {name}={getattr(self, name)!r}: must be >= 1")
        if isinstance(self.append_only_tables, str) or not all(
            isinstance(t, str) for t in self.append_only_tables
        ):
            raise InvalidInput("cannot use setting append_only_tables: must be a list of table names")
        object.__setattr__(self, "append_only_tables", tuple(self.append_only_tables))
        if self.min_chunk_rows > self.max_chunk_rows:
            raise InvalidInput("cannot use settings: min_chunk_rows is larger than max_chunk_rows")
        if not self.node_id.replace("_", "").replace("-", "").isalnum():
            raise InvalidInput(f"cannot use setting node_id={self.node_id!r}: use [A-Za-z0-9_-]")

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidInput(f"cannot use settings {sorted(unknown)}: unknown setting")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = "TSENGINE_") -> Settings:
        """Build settings from ``<prefix><FIELD>`` variables; errors name the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = prefix + f.name.upper()
            if key not in env:
                continue
            raw = env[key]
            default = getattr(cls(), f.name)
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, str):
                    values[f.name] = raw
                elif isinstance(default, tuple):  # append_only_tables: "spans,events"
                    values[f.name] = tuple(item.strip() for item in raw.split(",") if item.strip())
                else:  # retention_hours: "default=24,default.cpu=1"
                    values[f.name] = {
                        k.strip(): float(v)
                        for k, v in (item.split("=", 1) for item in raw.split(",") if item)
                    }
            except ValueError as exc:
                raise InvalidInput(f"cannot read {key}={raw!r}: {exc}") from exc
        return cls(**values)
