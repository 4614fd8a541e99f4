"""The ``storage`` section of the server's config file, parsed into :class:`StorageConfig`.

::

    storage:
      retention: {default: 720, default.cpu: 168}      # hours per "db" or "db.table" ("*" = all)
      max_local_bytes: 10GB                            # storage budget: Parquet + WAL (0 = none)
      archive: {type: local, path: /mnt/archive}       # or {type: s3, bucket, prefix, endpoint,
                                                       #     scheme, access_key, secret_key, region}
      downsampling:
        lateness: 1h                                   # late rows this old still fix their buckets
        tables: [default.cpu, metrics]                 # "db" or "db.table"; missing = every table
        resolutions:
          - {name: 1m, every: 60s, retention_hours: 720}
          - {name: 1h, every: 1h}                      # no retention_hours = keep forever

Built once at the edge (:func:`StorageConfig.from_mapping`); every error names the key.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsengine.errors import InvalidInput

__all__ = ["Resolution", "StorageConfig"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZES = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 1024, "MIB": 1024**2,
          "GIB": 1024**3, "TIB": 1024**4}  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9]+\Z")


def _seconds(raw: Any, where: str) -> float:
    seconds = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h|d)?\s*", raw)
        if m:
            with contextlib.suppress(ValueError):  # "1.2.3"
                seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds is not None and 0 <= seconds < math.inf:  # YAML's .inf would overflow a ns count
        return seconds
    raise InvalidInput(f"cannot read config {where}={raw!r}: expected seconds or a duration like '5m'")


def _bytes(raw: Any, where: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", raw)
        if m and m.group(2).upper() in _SIZES:
            try:
                return int(float(m.group(1)) * _SIZES[m.group(2).upper()])
            except ValueError:
                pass
    raise InvalidInput(f"cannot read config {where}={raw!r}: expected bytes or a size like '10GB'")


@dataclass(frozen=True)
class Resolution:
    """One rollup level: table ``<raw table>_<name>``, buckets of ``every_s`` seconds."""

    name: str
    every_s: int
    retention_hours: float | None = None

    @property
    def every_ns(self) -> int:
        return self.every_s * 1_000_000_000


@dataclass(frozen=True)
class StorageConfig:
    """Retention defaults, budget, archive and downsampling settings; see the module docstring."""

    #: Default retention hours per "db", "db.table", "*.table" or "*" (overridable at run time).
    retention: Mapping[str, float] = field(default_factory=dict)
    #: Storage budget in bytes of local Parquet + WAL; 0 = no budget.
    max_local_bytes: int = 0
    #: Archive store settings (see ``ArchiveStore.from_config``); None = expired data is deleted.
    archive: Mapping[str, Any] | None = None
    #: Rollup levels, finest first; empty = no downsampling.
    resolutions: tuple[Resolution, ...] = ()
    #: Late rows up to this many seconds old re-compute their buckets.
    lateness_s: float = 3600.0
    #: "db" or "db.table" selectors of tables to roll up; empty = every table.
    rollup_tables: tuple[str, ...] = ()
    #: Where storage events (budget evictions) are written: an ``events``-shaped table.
    events_db: str = "default"
    events_table: str = "events"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "storage") -> StorageConfig:
        known = {"retention", "max_local_bytes", "archive", "downsampling", "events_db", "events_table"}
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(
                f"cannot read config {source}: unknown keys {sorted(unknown)} (known: {sorted(known)})"
            )
        retention: dict[str, float] = {}
        for key, hours in (data.get("retention") or {}).items():
            if isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0:
                raise InvalidInput(
                    f"cannot read config {source}.retention.{key}={hours!r}: hours must be >= 0"
                )
            retention[str(key)] = float(hours)
        archive = data.get("archive")
        if archive is not None and not isinstance(archive, Mapping):
            raise InvalidInput(f"cannot read config {source}.archive: must be a mapping")
        down = data.get("downsampling") or {}
        if not isinstance(down, Mapping):
            raise InvalidInput(f"cannot read config {source}.downsampling: must be a mapping")
        resolutions = []
        for i, r in enumerate(down.get("resolutions") or []):
            where = f"{source}.downsampling.resolutions[{i}]"
            if not isinstance(r, Mapping) or not isinstance(r.get("name"), str) or not _NAME.match(r["name"]):
                raise InvalidInput(
                    f"cannot read config {where}: needs a name of letters and digits (e.g. '1m')"
                )
            every = _seconds(r.get("every"), f"{where}.every")
            if every < 1 or every != int(every):
                raise InvalidInput(
                    f"cannot read config {where}.every: must be a whole number of seconds >= 1"
                )
            hours = r.get("retention_hours")
            if hours is not None and (
                isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0
            ):
                raise InvalidInput(f"cannot read config {where}.retention_hours={hours!r}: must be >= 0")
            resolutions.append(Resolution(r["name"], int(every), None if hours is None else float(hours)))
        if [r.every_s for r in resolutions] != sorted({r.every_s for r in resolutions}):
            raise InvalidInput(
                f"cannot read config {source}.downsampling.resolutions: "
                "list them finest first, each coarser than the one before"
            )
        tables = down.get("tables") or []
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise InvalidInput(
                f"cannot read config {source}.downsampling.tables: must be a list of 'db[.table]'"
            )
        return cls(
            retention=retention,
            max_local_bytes=_bytes(data.get("max_local_bytes", 0), f"{source}.max_local_bytes"),
            archive=dict(archive) if archive is not None else None,
            resolutions=tuple(resolutions),
            lateness_s=_seconds(down.get("lateness", 3600.0), f"{source}.downsampling.lateness"),
            rollup_tables=tuple(tables),
            events_db=str(data.get("events_db", "default")),
            events_table=str(data.get("events_table", "events")),
        )
