"""Query parameters of the trace and event APIs: database, times, durations, booleans, limits.

Pure functions; each raises :class:`~tsengine.errors.InvalidInput` (400) naming the parameter,
the value and the accepted forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from tsengine.errors import InvalidInput
from tsengine.model import validate_db

__all__ = ["parse_bool", "parse_db", "parse_duration_ns", "parse_limit", "parse_time_ns", "time_range"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_MAX_NS = 2**63 - 1
#: Window of a search or dependency query when ``start`` is not given.
DEFAULT_WINDOW_NS = 3600 * 10**9


def parse_db(query: Mapping[str, str]) -> str:
    """The ``db`` parameter (default ``default``); InvalidName if it is not a database name."""
    return validate_db(query.get("db") or "default")


def parse_time_ns(name: str, value: str) -> int:
    """``value`` as Unix nanoseconds: an integer (ns) or RFC 3339 (``2026-11-27T10:00:00Z``)."""
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        ns = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"cannot read parameter {name!r}: {value[:40]!r} is neither integer nanoseconds nor "
                f"an RFC 3339 time"
            ) from None
        if moment.tzinfo is None:
            raise InvalidInput(f"cannot read parameter {name!r}: {value[:40]!r} has no time zone")
        ns = int(moment.timestamp()) * 10**9 + moment.microsecond * 1_000
    if not 0 <= ns <= _MAX_NS:
        raise InvalidInput(f"cannot read parameter {name!r}: {value[:40]!r} is outside 1970..2262")
    return ns


def parse_duration_ns(name: str, value: str) -> int:
    """``value`` as nanoseconds: ``250ms``, ``1.5s``, ``2m``, ``100us``; a bare number is ns."""
    m = _DURATION.match(value)
    if m is None:
        raise InvalidInput(
            f"cannot read parameter {name!r}: {value[:40]!r} is not a duration such as 250ms, 1.5s or 2m"
        )
    ns = round(float(m.group(1)) * _UNIT_NS[m.group(2) or "ns"])
    if ns > _MAX_NS:
        raise InvalidInput(f"cannot read parameter {name!r}: {value[:40]!r} is too long")
    return ns


def parse_bool(name: str, value: str | None) -> bool | None:
    """``true``/``false`` (also ``1``/``0``); None or empty → None (no filter)."""
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidInput(f"cannot read parameter {name!r}: {value[:40]!r} is not true or false")


def parse_limit(value: str | None, *, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise InvalidInput(f"cannot read parameter 'limit': {value[:40]!r} is not an integer in 1..{maximum}")
    return int(value)


def time_range(query: Mapping[str, str], now_ns: int) -> tuple[int, int]:
    """``(start, end)`` from ``start``/``end`` (defaults: the hour before ``end``, and now)."""
    end = parse_time_ns("end", query["end"]) if query.get("end") else now_ns
    start = parse_time_ns("start", query["start"]) if query.get("start") else max(0, end - DEFAULT_WINDOW_NS)
    if start > end:
        raise InvalidInput(f"cannot read parameters 'start' and 'end': start {start} is after end {end}")
    return start, end
