"""Downsampling: rollup tables computed by DuckDB from raw data, incrementally.

For each raw table ``db.T`` selected and each :class:`~tsengine.lifecycle.config.Resolution`
``R`` (finest first), the table ``db.T_<R.name>`` holds one row per series (tag set) and bucket
of ``R.every_s`` seconds, ``time`` = the bucket's start, and for every numeric field ``f``:

* ``f_min``, ``f_max``, ``f_last`` (the value at the latest time in the bucket): the field's type;
* ``f_sum``: DOUBLE for a float field, the field's integer type otherwise (NULL on overflow);
* ``f_count``: BIGINT, the non-null values in the bucket.

Boolean and string fields are not rolled up. A bucket is computed once it has ended; each
``(table, resolution)`` has a **watermark** (the end of the last bucket computed, persisted in
``<data>/_lifecycle/rollups.json``), and every pass re-computes from ``watermark - lateness``
so that late rows within the lateness fix their buckets: the rewritten rows have the same tags
and time, and the engine's field-by-field de-duplication makes them replace the old ones.
Rows arriving later than that are not reflected (documented limit).

Work is cut in units of at most a day (one query, one write, one watermark save each), so a pass
may be stopped between units (:class:`threading.Event`) and resumes where it stopped; a crash
between the write and the save re-computes the unit, which the de-duplication makes harmless.

Raw data is held back from retention until every rollup of its table has covered it and it has
left the lateness window (:meth:`Rollups.hold_ns`): rollups are computed before raw data
expires, and a re-computation never reads a range whose raw rows are gone.

Blocking (DuckDB queries, engine writes); called by the lifecycle's cleanup pass.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from tsengine.durable import atomic_write
from tsengine.lifecycle.config import Resolution
from tsengine.lifecycle.policies import LIFECYCLE_DIR
from tsengine.model.batch import FieldType
from tsengine.query.views import quote_ident

if TYPE_CHECKING:
    from tsengine.engine import Engine

__all__ = ["Rollups", "rollup_name"]

NS_PER_DAY = 86_400_000_000_000
_NUMERIC = (FieldType.FLOAT, FieldType.INTEGER, FieldType.UNSIGNED)
SUFFIXES = ("min", "max", "sum", "count", "last")


def rollup_name(table: str, resolution: Resolution) -> str:
    return f"{table}_{resolution.name}"


class Rollups:
    """The rollup state of one engine; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        resolutions: tuple[Resolution, ...],
        *,
        lateness_s: float,
        tables: tuple[str, ...],
    ) -> None:
        self.engine = engine
        self.resolutions = resolutions
        self.lateness_ns = int(lateness_s * 1e9)
        self.selectors = tables
        self._path = engine.path / LIFECYCLE_DIR / "rollups.json"
        self._lock = threading.Lock()
        self.watermarks: dict[str, int] = {}
        if self._path.exists():
            self.watermarks = {
                k: int(v) for k, v in json.loads(self._path.read_bytes())["watermarks"].items()
            }

    # -- which tables -----------------------------------------------------------------------

    def targets(self) -> set[tuple[str, str]]:
        """Every rollup table name the current sources would write."""
        return {
            (db, rollup_name(t, r)) for db, t in self.sources(include_rollups=True) for r in self.resolutions
        }

    def sources(self, *, include_rollups: bool = False) -> list[tuple[str, str]]:
        """Raw tables to roll up: selected, and not themselves a rollup of another table."""
        if not self.resolutions:
            return []
        tables = self.engine.tables()
        names = set(tables)
        out = []
        for db, t in tables:
            if not include_rollups and any(
                t.endswith("_" + r.name) and (db, t[: -len(r.name) - 1]) in names for r in self.resolutions
            ):
                continue
            if self.selectors and db not in self.selectors and f"{db}.{t}" not in self.selectors:
                continue
            out.append((db, t))
        return out

    def hold_ns(self, db: str, table: str) -> int | None:
        """Raw rows at or after this time must stay: a rollup has not covered them yet, or may
        re-compute them (the lateness window). None = the table is not rolled up."""
        if (db, table) not in set(self.sources()):
            return None
        done = min(self.watermarks.get(self._key(db, table, r), -(2**62)) for r in self.resolutions)
        return done - self.lateness_ns

    @staticmethod
    def _key(db: str, table: str, r: Resolution) -> str:
        return f"{db}.{table}/{r.name}"

    # -- computing --------------------------------------------------------------------------

    def run(self, now_ns: int, *, stop: threading.Event | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, int]:  # fmt: skip
        """Compute every closed bucket not yet computed (and re-compute the lateness window).

        Returns ``{"rollup_rows": n, "rollup_units": m}``. Stops between units when ``stop``
        is set; ``progress(units_done)`` is called after each unit.
        """
        rows = units = 0
        with self._lock:
            for db, table in self.sources():
                for r in self.resolutions:
                    for written in self._run_one(db, table, r, now_ns, stop):
                        rows += written
                        units += 1
                        if progress is not None:
                            progress(units)
                    if stop is not None and stop.is_set():
                        return {"rollup_rows": rows, "rollup_units": units}
        return {"rollup_rows": rows, "rollup_units": units}

    def _run_one(self, db: str, table: str, r: Resolution, now_ns: int, stop: threading.Event | None):  # type: ignore[no-untyped-def]
        b = r.every_ns
        end = now_ns // b * b  # buckets that have ended
        key = self._key(db, table, r)
        wm = self.watermarks.get(key)
        if wm is None:
            first = self._min_time(db, table)
            if first is None:
                return
            lo = first // b * b
        else:
            lo = (wm - self.lateness_ns) // b * b
        step = max(b, NS_PER_DAY // b * b)
        start = lo
        while start < end:
            if stop is not None and stop.is_set():
                return
            stop_at = min(start + step, end)
            yield self._compute(db, table, r, start, stop_at)
            self.watermarks[key] = max(self.watermarks.get(key, stop_at), stop_at)
            self._save()
            start = stop_at

    def _min_time(self, db: str, table: str) -> int | None:
        res = self.engine.sql(f"SELECT epoch_ns(min(time)) AS t FROM {quote_ident(db)}.{quote_ident(table)}")
        value = res.column("t")[0].as_py()
        return None if value is None else int(value)

    def _compute(self, db: str, table: str, r: Resolution, start_ns: int, end_ns: int) -> int:
        schema = self.engine.schema(table, db)
        fields = [(n, t) for n, t in schema.fields.items() if t in _NUMERIC]
        if not fields:
            return 0
        b = r.every_ns
        tags = [quote_ident(t) for t in schema.tags]
        cols = [*tags, f"(epoch_ns(time) // {b}) * {b} AS time"]
        for name, ftype in fields:
            q = quote_ident(name)
            sum_type = {
                FieldType.FLOAT: "DOUBLE",
                FieldType.INTEGER: "BIGINT",
                FieldType.UNSIGNED: "UBIGINT",
            }[ftype]
            cols += [
                f"min({q}) AS {quote_ident(name + '_min')}",
                f"max({q}) AS {quote_ident(name + '_max')}",
                f"TRY_CAST(sum({q}) AS {sum_type}) AS {quote_ident(name + '_sum')}",
                f"count({q}) AS {quote_ident(name + '_count')}",
                f"arg_max({q}, time) FILTER (WHERE {q} IS NOT NULL) AS {quote_ident(name + '_last')}",
            ]
        sql = (
            f"SELECT {', '.join(cols)} FROM {quote_ident(db)}.{quote_ident(table)} "
            f"WHERE time >= make_timestamp_ns({int(start_ns)}::BIGINT) "
            f"AND time < make_timestamp_ns({int(end_ns)}::BIGINT) "
            f"GROUP BY ALL"
        )
        result = self.engine.sql(sql)
        if not result.num_rows:
            return 0
        # Tags may be all-NULL in a bucket: keep them strings so the rollup's schema stays put.
        arrays = {}
        for name in result.column_names:
            col = result.column(name)
            if name in schema.tags and not pa.types.is_string(col.type):
                col = col.cast(pa.string())
            arrays[name] = col
        data = pa.table(arrays)
        return self.engine.write_arrow(rollup_name(table, r), data, tags=schema.tags, db=db)

    def _save(self) -> None:
        raw = json.dumps({"version": 1, "watermarks": self.watermarks}, sort_keys=True).encode()
        atomic_write(Path(self._path), lambda f: f.write(raw))

    # -- reading ----------------------------------------------------------------------------

    def query_range_sql(self, db: str, table: str, start_ns: int | None = None, end_ns: int | None = None, *,
                        raw_from_ns: int | None, rollup_from_ns: dict[str, int | None]) -> str:  # fmt: skip
        """SQL reading ``[start_ns, end_ns)`` (None: unbounded) of ``db.table`` from the finest
        data kept for each part of the range, every row in the rollup shape (a raw row is a
        bucket of one value).

        ``raw_from_ns``: raw rows are kept from this time on (None = all); ``rollup_from_ns``:
        the same per resolution name. Each boundary is rounded up to the next coarser level's
        bucket, so that no bucket is read from two levels.
        """
        schema = self.engine.schema(table, db)
        fields = [n for n, t in schema.fields.items() if t in _NUMERIC]
        tags = [quote_ident(t) for t in schema.tags]
        existing = set(self.engine.tables(db))
        levels = [(table, raw_from_ns, 0)] if (db, table) in existing else []
        levels += [
            (rollup_name(table, r), rollup_from_ns.get(r.name), r.every_ns)
            for r in self.resolutions
            if (db, rollup_name(table, r)) in existing
        ]
        parts = []
        upper = end_ns
        for i, (name, kept_from, bucket_ns) in enumerate(levels):
            lower = (
                kept_from if start_ns is None else start_ns if kept_from is None else max(start_ns, kept_from)
            )
            if lower is not None and i + 1 < len(levels) and kept_from is not None:
                coarser = levels[i + 1][2]
                lower = -(-lower // coarser) * coarser
            if lower is not None and upper is not None and lower >= upper:
                continue
            cols = [*tags, "time"]
            for f in fields:
                q = quote_ident(f)
                if not bucket_ns:
                    cols += [f"{q} AS {quote_ident(f + '_' + s)}" for s in ("min", "max", "sum")]
                    cols += [f"CAST({q} IS NOT NULL AS BIGINT) AS {quote_ident(f + '_count')}",
                             f"{q} AS {quote_ident(f + '_last')}"]  # fmt: skip
                else:
                    cols += [quote_ident(f"{f}_{s}") for s in SUFFIXES]
            where = [f"time >= make_timestamp_ns({int(lower)}::BIGINT)"] if lower is not None else []
            where += [f"time < make_timestamp_ns({int(upper)}::BIGINT)"] if upper is not None else []
            parts.append(
                f"SELECT {', '.join(cols)} FROM {quote_ident(db)}.{quote_ident(name)}"
                + (f" WHERE {' AND '.join(where)}" if where else "")
            )
            upper = lower
            if lower is None or (start_ns is not None and lower <= start_ns):
                break
        if not parts:
            return f"SELECT * FROM {quote_ident(db)}.{quote_ident(table)} WHERE false"
        return " UNION ALL BY NAME ".join(parts)
