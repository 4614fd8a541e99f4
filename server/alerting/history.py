"""The ``alerts_history`` table: every transition and notification, and the analytics over it.

Who calls it: :class:`server.alerting.service.AlertService` (writes a round's records; on the
background pool: ``engine.write`` blocks) and the history/stats API (reads, on the query pool).
In: :class:`Record` objects. Out: rows of ``<history_db>.alerts_history`` written through the
engine like any table, so SQL, retention and the Parquet files see them.

Columns: ``time`` (engine clock; rows of one round are 1 ns apart so none of them merge);
tags ``rule``, ``instance`` (the alert's id), ``event`` (``pending``, ``firing``, ``resolved``,
``inactive``, ``acknowledged``, ``notification_sent``, ``notification_failed``,
``evaluation_failed``, ``silence_created``, ``silence_deleted``, ``rule_changed``,
``rule_deleted``), ``channel``, ``kind`` (``notification``/``repeat``/``escalation``),
``severity``; fields ``value`` (float), ``labels`` (JSON text), ``message`` (text),
``duration_s`` (seconds from firing to acknowledgement or resolution), ``attempts`` (integer),
``actor`` (who acknowledged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tsengine.errors import InvalidInput

__all__ = ["TABLE", "History", "Record"]

TABLE = "alerts_history"
_NS = 1_000_000_000
_TAGS = ("rule", "instance", "event", "channel", "kind", "severity")
_FIELDS = ("value", "labels", "message", "duration_s", "attempts", "actor")


@dataclass(frozen=True)
class Record:
    """One history row (missing values stay absent in the table)."""

    event: str
    rule: str = ""
    instance: str = ""
    channel: str = ""
    kind: str = ""
    severity: str = ""
    value: float | None = None
    labels: Mapping[str, str] | None = None
    message: str = ""
    duration_s: float | None = None
    attempts: int | None = None
    actor: str | None = None


class History:
    """Writes and reads ``alerts_history`` through an engine (``write``/``sql``/``tables``)."""

    def __init__(self, engine: Any, db: str = "default") -> None:
        self.engine = engine
        self.db = db

    def write(self, records: list[Record], now_ns: int) -> int:
        """Write ``records`` as one batch (blocks until the engine's fsync policy is met)."""
        if not records:
            return 0
        tags = {t: [getattr(r, t) or "" for r in records] for t in _TAGS}
        fields: dict[str, Any] = {}
        for f in _FIELDS:
            col = [getattr(r, f) for r in records]
            if f == "labels":
                col = [None if v is None else orjson.dumps(dict(v), option=orjson.OPT_SORT_KEYS).decode()
                       for v in col]  # fmt: skip
            if any(v is not None for v in col):
                fields[f] = col  # an all-absent column is left out: its type cannot be inferred
        time = np.arange(len(records), dtype=np.int64) + now_ns
        return int(self.engine.write(TABLE, time, tags=tags, fields=fields, db=self.db))

    def _exists(self) -> bool:
        return (self.db, TABLE) in set(self.engine.tables(self.db))

    def query(
        self, *, since_ns: int, filters: Mapping[str, str], limit: int, until_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first: rows in ``[since_ns, until_ns]`` whose tags equal ``filters`` (blocks)."""
        bad = set(filters) - set(_TAGS)
        if bad:
            raise InvalidInput(f"cannot read alert history: unknown filter {sorted(bad)[0]!r} (use {_TAGS})")
        if not self._exists():
            return []
        cols = set(self.engine.schema(TABLE, self.db).fields)
        select = ", ".join([f'"{t}"' for t in _TAGS] + [f'"{f}"' for f in _FIELDS if f in cols])
        where = "".join(f' AND "{k}" = ?' for k in filters)
        params: list[Any] = [since_ns]
        if until_ns is not None:
            where = f" AND time <= make_timestamp_ns(?){where}"
            params.append(until_ns)
        rows = self.engine.sql(
            f"SELECT epoch_ns(time) AS time_ns, {select} FROM {TABLE} "
            f"WHERE time >= make_timestamp_ns(?){where} ORDER BY time DESC LIMIT {int(limit)}",
            [*params, *filters.values()],
            db=self.db,
        ).to_pylist()
        for row in rows:
            row["time"] = row.pop("time_ns") / _NS
            if row.get("labels"):
                row["labels"] = orjson.loads(row["labels"])
        return rows

    def stats(self, *, since_ns: int, top: int = 10) -> dict[str, Any]:
        """Time to acknowledge, time to resolve, the noisiest rules, delivery failures (blocks)."""
        out: dict[str, Any] = {
            "time_to_acknowledge": _empty_summary(), "time_to_resolve": _empty_summary(),
            "noisiest_rules": [], "notifications": [],
        }  # fmt: skip
        if not self._exists():
            return out
        cols = set(self.engine.schema(TABLE, self.db).fields)
        q = self.engine.sql
        if "duration_s" in cols:
            for key, event in (("time_to_acknowledge", "acknowledged"), ("time_to_resolve", "resolved")):
                row = q(
                    "SELECT count(duration_s) AS count, avg(duration_s) AS mean_s, "
                    "quantile_cont(duration_s, 0.5) AS median_s, quantile_cont(duration_s, 0.9) AS p90_s, "
                    f"max(duration_s) AS max_s FROM {TABLE} WHERE event = ? AND time >= make_timestamp_ns(?)",
                    [event, since_ns], db=self.db,
                ).to_pylist()[0]  # fmt: skip
                out[key] = row
        out["noisiest_rules"] = q(
            f"SELECT rule, count(*) AS firings, count(DISTINCT instance) AS instances FROM {TABLE} "
            "WHERE event = 'firing' AND time >= make_timestamp_ns(?) GROUP BY rule "
            f"ORDER BY firings DESC, rule LIMIT {int(top)}",
            [since_ns], db=self.db,
        ).to_pylist()  # fmt: skip
        out["notifications"] = q(
            f"SELECT channel, event, count(*) AS count FROM {TABLE} "
            "WHERE event IN ('notification_sent', 'notification_failed') AND time >= make_timestamp_ns(?) "
            "GROUP BY channel, event ORDER BY channel, event",
            [since_ns], db=self.db,
        ).to_pylist()  # fmt: skip
        return out


def _empty_summary() -> dict[str, Any]:
    return {"count": 0, "mean_s": None, "median_s": None, "p90_s": None, "max_s": None}
