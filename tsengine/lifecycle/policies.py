"""Retention policies: how many hours of raw data each database and table keeps.

In: the engine's ``Settings.retention_hours`` (defaults, built at the edge from the config file
and ``METRICS_RETENTION_HOURS``/``EVENTS_RETENTION_HOURS``, see :func:`defaults_from_env`) and
the overrides an operator set at run time (``PUT /api/v1/retention/{db}[/{table}]``,
:meth:`tsengine.engine.Engine.set_retention`). Out: :meth:`RetentionPolicies.hours_for`, the
hours a ``db.table`` keeps (0 or None = forever).

Lookup order for table ``T`` of database ``D``: an override for ``D.T``, an override for ``D``,
the default for ``D.T``, the default for ``D``, the default for ``*.T``, the default for ``*``
(every table). An override of ``None`` (JSON ``null``) means "keep forever", hiding any
default; deleting an override brings the default back. Hours are finite numbers >= 0 (or
None), defaults included.

Overrides persist in ``<data>/_lifecycle/retention.json`` (atomic replace: tmp, fsync,
rename), so they survive a restart. Thread-safe (one lock); :meth:`set` blocks for the write.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from pathlib import Path

from tsengine.durable import atomic_write
from tsengine.errors import InvalidInput, StorageError
from tsengine.model.names import validate_db, validate_table

__all__ = ["LIFECYCLE_DIR", "RetentionPolicies", "defaults_from_env", "policy_key"]

#: Directory of the data directory holding the lifecycle's own state (skipped as a database).
LIFECYCLE_DIR = "_lifecycle"
_FILE = "retention.json"
#: ``retention_hours`` key applying to every table that has no more specific entry.
ALL = "*"


def policy_key(db: str, table: str | None = None) -> str:
    """``db`` or ``db.table`` (validated): the key of a policy."""
    validate_db(db)
    if table is None:
        return db
    validate_table(table)
    return f"{db}.{table}"


def defaults_from_env(environ: Mapping[str, str], events_table: str = "events") -> dict[str, float]:
    """Default policies from ``METRICS_RETENTION_HOURS`` (every table) and
    ``EVENTS_RETENTION_HOURS`` (the ``events`` table of every database read at open, and of
    ``default``). Called at the edge (CLI, app factory); errors name the variable."""
    out: dict[str, float] = {}
    for key, target in (("METRICS_RETENTION_HOURS", ALL), ("EVENTS_RETENTION_HOURS", f"*.{events_table}")):
        raw = environ.get(key)
        if raw is None or not raw.strip():
            continue
        try:
            hours = float(raw)
        except ValueError:
            raise InvalidInput(f"cannot read {key}={raw!r}: expected a number of hours") from None
        if not 0 <= hours < math.inf:
            raise InvalidInput(f"cannot read {key}={raw!r}: must be a finite number >= 0")
        out[target] = hours
    return out


def _check_hours(value: object, what: str) -> float | None:
    if value is None:
        return None
    # Not infinity either: a cutoff is computed as an integer number of nanoseconds.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise InvalidInput(
            f"cannot set retention of {what}: hours must be a finite number >= 0 or null, got {value!r}"
        )
    return float(value)


class RetentionPolicies:
    """Defaults plus persisted run-time overrides; see the module docstring."""

    def __init__(self, data_dir: Path, defaults: Mapping[str, float]) -> None:
        self._path = data_dir / LIFECYCLE_DIR / _FILE
        self._defaults: dict[str, float | None] = {k: _check_hours(v, k) for k, v in defaults.items()}
        self._lock = threading.Lock()
        self._overrides: dict[str, float | None] = {}
        if self._path.exists():
            try:
                doc = json.loads(self._path.read_bytes())
                self._overrides = {str(k): _check_hours(v, k) for k, v in doc["overrides"].items()}
            except (ValueError, KeyError, TypeError, InvalidInput) as exc:
                raise StorageError(f"cannot read retention policies: {exc}", path=str(self._path)) from exc

    def hours_for(self, db: str, table: str | None) -> float | None:
        """Hours of raw data ``db.table`` keeps (``table=None``: the database's own policy);
        None or 0 = forever."""
        specific = [] if table is None else [f"{db}.{table}"]
        with self._lock:
            overrides = self._overrides
            for key in (*specific, db):
                if key in overrides:
                    return overrides[key]
        by_name = [] if table is None else [f"*.{table}"]
        for key in (*specific, db, *by_name, ALL):
            if key in self._defaults:
                return self._defaults[key]
        return None

    def set(self, db: str, table: str | None, hours: object) -> float | None:
        """Override the policy of ``db`` or ``db.table`` (None = keep forever); persisted."""
        key = policy_key(db, table)
        value = _check_hours(hours, key)
        with self._lock:
            new = {**self._overrides, key: value}
            self._save(new)
            self._overrides = new
        return value

    def delete(self, db: str, table: str | None) -> bool:
        """Remove an override (the default applies again); False if there was none."""
        key = policy_key(db, table)
        with self._lock:
            if key not in self._overrides:
                return False
            new = {k: v for k, v in self._overrides.items() if k != key}
            self._save(new)
            self._overrides = new
        return True

    def set_default(self, key: str, hours: float | None, *, replace: bool = True) -> None:
        """Add (or, with ``replace``, replace) a default; None = keep forever, hiding less
        specific defaults. Not persisted: the edge sets defaults at every open."""
        if not replace and key in self._defaults:
            return
        self._defaults[key] = _check_hours(hours, key)

    def describe(self) -> dict[str, dict[str, float | None]]:
        """``{"defaults": {...}, "overrides": {...}}`` (JSON-able)."""
        with self._lock:
            return {"defaults": dict(self._defaults), "overrides": dict(self._overrides)}

    def _save(self, overrides: Mapping[str, float | None]) -> None:
        data = json.dumps({"version": 1, "overrides": overrides}, sort_keys=True).encode()
        atomic_write(self._path, lambda f: f.write(data))
