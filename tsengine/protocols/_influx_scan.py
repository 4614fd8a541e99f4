"""Entry-at-a-time scanner for InfluxDB line protocol: the exact grammar, used where speed is not due.

:mod:`tsengine.protocols.influx` parses the common case column-wise with numpy and Arrow; every
entry it declines (escapes, quoted strings, odd whitespace, anything malformed) comes here. This
module is therefore the definition of the grammar, and its error reasons are the ones callers see.

The grammar is InfluxDB's (``models/points.go`` of 1.x/2.x for what is accepted, the
``line-protocol/v2`` reference decoder for escaping, which the two agree on)::

    entry       = measurement ("," tag_key "=" tag_value)* " "+ field ("," field)* [" "+ timestamp] " "*
    field       = field_key "=" (float | integer "i" | unsigned "u" | boolean | '"' string '"')

* A backslash escapes the character after it *for scanning*: a ``,``, ``=`` or space preceded by
  a backslash does not end a name. When names are unescaped only ``\\,`` and ``\\ `` (measurement)
  or ``\\,``, ``\\=`` and ``\\ `` (tag keys, tag values, field keys) lose their backslash; any
  other backslash is kept literally.
* Strings may contain newlines; ``\\"`` and ``\\\\`` are their only escapes.
* Unquoted values take no escapes: ``1.5``/``-1e3`` are floats, ``12i`` int64, ``12u`` uint64,
  ``t T true True TRUE f F false False FALSE`` booleans; NaN and infinities are rejected.
* Timestamps are signed integers in the request's precision; after conversion to nanoseconds
  they must lie in InfluxDB's range ``[MinInt64 + 2, MaxInt64 - 1]``.

Pure functions over ``bytes``; no state, thread-safe.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from tsengine.errors import InvalidName
from tsengine.model import FieldType, validate_column, validate_table

__all__ = [
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "PRECISION_NS",
    "Entry",
    "LineError",
    "convert_value",
    "scan_entry",
    "to_time_ns",
]

#: Multiplier to nanoseconds per accepted ``precision`` (InfluxDB 1.x names plus 2.x ``us``/``ns``).
PRECISION_NS = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}

# InfluxDB reserves the two lowest int64 values and the highest one as sentinels
# (models.MinNanoTime / MaxNanoTime), so points there are refused.
MIN_TIME_NS = -(2**63) + 2
MAX_TIME_NS = 2**63 - 2

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1

# A name runs until an unescaped delimiter or the end of the line. "Escaped" means "right after
# a backslash", so a run of backslashes escapes the character that follows it (InfluxDB scans
# names exactly so); a backslash at the end of a line is kept.
_MEASUREMENT_RE = re.compile(rb"(?:[^\\, \n]|\\+[^\n]|\\+(?=\n|\Z))*")
_KEY_RE = re.compile(rb"(?:[^\\,= \n]|\\+[^\n]|\\+(?=\n|\Z))*")
_MEASUREMENT_UNESCAPE_RE = re.compile(rb"\\([, ])")
_KEY_UNESCAPE_RE = re.compile(rb"\\([,= ])")

_STRING_RE = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_STRING_UNESCAPE_RE = re.compile(rb'\\([\\"])')
_VALUE_RE = re.compile(rb"[^, \n]*")
_SPACES_RE = re.compile(rb" *")
_TIME_TOKEN_RE = re.compile(rb"[^ \n]*")
_EOL_RE = re.compile(rb"\r?(?:\n|\Z)")

_FLOAT_RE = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(rb"-?[0-9]+")
_UINT_RE = re.compile(rb"[0-9]+")
_BOOLEANS = {
    b"t": True,
    b"T": True,
    b"true": True,
    b"True": True,
    b"TRUE": True,
    b"f": False,
    b"F": False,
    b"false": False,
    b"False": False,
    b"FALSE": False,
}
_NUMBER_START = frozenset(b"-0123456789.")
_BOOLEAN_START = frozenset(b"tTfF")


class LineError(Exception):
    """A reason an entry does not parse; the caller adds the line number."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Entry:
    """One parsed point. ``time`` is in the request's precision, None when the line has none."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: dict[str, tuple[FieldType, object]]
    time: int | None


def _show(raw: bytes, limit: int = 64) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "..."


@functools.lru_cache(maxsize=4096)
def _measurement(raw: bytes) -> str:
    """Unescaped, validated measurement name (names repeat on every line: cached)."""
    name = _MEASUREMENT_UNESCAPE_RE.sub(rb"\1", raw).decode()
    try:
        return validate_table(name)
    except InvalidName as exc:
        raise LineError(f"invalid measurement name: {exc.reason}") from None


@functools.lru_cache(maxsize=4096)
def _unescape_key(raw: bytes) -> str:
    return _KEY_UNESCAPE_RE.sub(rb"\1", raw).decode()


@functools.lru_cache(maxsize=4096)
def _column(raw: bytes, kind: str) -> str:
    """Unescaped, validated tag or field key (cached like measurements)."""
    name = _unescape_key(raw)
    try:
        return validate_column(name)
    except InvalidName as exc:
        raise LineError(f"invalid {kind} name: {exc.reason}") from None


def _scan_key_section(buf: bytes, pos: int) -> tuple[str, tuple[tuple[str, str], ...], int]:
    """Measurement and tags starting at ``pos``; returns them and the position of the delimiter after."""
    m = _MEASUREMENT_RE.match(buf, pos)
    assert m is not None
    raw = m.group()
    if not raw:
        raise LineError("missing measurement")
    measurement = _measurement(raw)
    pos = m.end()
    tags: list[tuple[str, str]] = []
    seen: set[str] = set()
    while pos < len(buf) and buf[pos] == 0x2C:  # ","
        m = _KEY_RE.match(buf, pos + 1)
        assert m is not None
        raw_key = m.group()
        pos = m.end()
        if not raw_key:
            raise LineError("missing tag key")
        key = _unescape_key(raw_key)
        if pos >= len(buf) or buf[pos] != 0x3D:  # "="
            raise LineError(f"missing tag value for tag {key!r}")
        m = _KEY_RE.match(buf, pos + 1)
        assert m is not None
        raw_value = m.group()
        pos = m.end()
        if not raw_value:
            raise LineError(f"missing tag value for tag {key!r}")
        if pos < len(buf) and buf[pos] == 0x3D:
            raise LineError(f"invalid tag format: unescaped '=' in the value of tag {key!r}")
        if key in seen:
            raise LineError(f"duplicate tag {key!r}")
        seen.add(key)
        tags.append((_column(raw_key, "tag key"), _unescape_key(raw_value)))
    return measurement, tuple(tags), pos


def convert_value(raw: bytes, key: str) -> tuple[FieldType, object]:
    """Type and value of an unquoted field value, as InfluxDB stores it."""
    if not raw:
        raise LineError(f"missing value for field {key!r}")
    first = raw[0]
    if first in _BOOLEAN_START:
        value = _BOOLEANS.get(raw)
        if value is None:
            raise LineError(f'invalid boolean "{_show(raw)}" for field {key!r}')
        return FieldType.BOOLEAN, value
    if first not in _NUMBER_START:
        raise LineError(f'invalid field value "{_show(raw)}" for field {key!r}')
    last = raw[-1]
    if last == 0x69:  # "i"
        if not _INT_RE.fullmatch(raw, 0, len(raw) - 1):
            raise LineError(f'invalid field value "{_show(raw)}" for field {key!r}')
        number = int(raw[:-1])
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise LineError(f'integer out of range: "{_show(raw)}" for field {key!r}')
        return FieldType.INTEGER, number
    if last == 0x75:  # "u"
        if not _UINT_RE.fullmatch(raw, 0, len(raw) - 1):
            raise LineError(f'invalid field value "{_show(raw)}" for field {key!r}')
        number = int(raw[:-1])
        if number > _UINT64_MAX:
            raise LineError(f'unsigned integer out of range: "{_show(raw)}" for field {key!r}')
        return FieldType.UNSIGNED, number
    if not _FLOAT_RE.fullmatch(raw):
        raise LineError(f'invalid field value "{_show(raw)}" for field {key!r}')
    real = float(raw)
    if not math.isfinite(real):
        raise LineError(f'float out of range: "{_show(raw)}" for field {key!r}')
    return FieldType.FLOAT, real


def _scan_fields(buf: bytes, pos: int) -> tuple[dict[str, tuple[FieldType, object]], int]:
    fields: dict[str, tuple[FieldType, object]] = {}
    while True:
        m = _KEY_RE.match(buf, pos)
        assert m is not None
        raw_key = m.group()
        pos = m.end()
        if not raw_key:
            raise LineError("missing field key")
        if pos >= len(buf) or buf[pos] != 0x3D:
            key = _unescape_key(raw_key)
            raise LineError(f"invalid field format: missing '=' after field key {key!r}")
        pos += 1
        key = _column(raw_key, "field key")
        if pos < len(buf) and buf[pos] == 0x22:  # '"'
            m = _STRING_RE.match(buf, pos)
            if m is None:
                raise LineError(f"unterminated string in field {key!r}")
            value: tuple[FieldType, object] = (
                FieldType.STRING,
                _STRING_UNESCAPE_RE.sub(rb"\1", m.group(1)).decode(),
            )
        else:
            m = _VALUE_RE.match(buf, pos)
            assert m is not None
            raw = m.group()
            if raw.endswith(b"\r") and _EOL_RE.match(buf, m.end() - 1):
                raw = raw[:-1]
            value = convert_value(raw, key)
        pos = m.end()
        previous = fields.get(key)
        if previous is not None and previous[0] is not value[0]:
            raise LineError(
                f"conflicting types for field {key!r} on one line: {previous[0].value} and {value[0].value}"
            )
        fields[key] = value  # a repeated key: the last value wins, as in InfluxDB
        if pos < len(buf) and buf[pos] == 0x2C:
            pos += 1
            continue
        if pos < len(buf) and buf[pos] not in b" \r\n":
            raise LineError(f"unexpected character {chr(buf[pos])!r} after the value of field {key!r}")
        return fields, pos


def scan_entry(buf: bytes, pos: int) -> tuple[Entry | None, int]:
    """Parse the entry starting at ``pos`` (a line start).

    Returns the entry (None for a blank or comment line) and the position after its line end.
    A quoted string may span lines, so the end may be several lines further.

    Raises:
        LineError: the entry does not parse. The rest of its line is not consumed.
    """
    n = len(buf)
    while pos < n and buf[pos] in b" \t":
        pos += 1
    eol = _EOL_RE.match(buf, pos)
    if eol is not None:
        return None, eol.end()
    if buf[pos] == 0x23:  # "#"
        nl = buf.find(b"\n", pos)
        return None, n if nl < 0 else nl + 1
    measurement, tags, pos = _scan_key_section(buf, pos)
    if pos >= n or buf[pos] != 0x20:
        raise LineError("missing fields")
    pos = _SPACES_RE.match(buf, pos).end()  # type: ignore[union-attr]
    if _EOL_RE.match(buf, pos):
        raise LineError("missing fields")
    fields, pos = _scan_fields(buf, pos)
    pos = _SPACES_RE.match(buf, pos).end()  # type: ignore[union-attr]
    ts: int | None = None
    eol = _EOL_RE.match(buf, pos)
    if eol is None:
        m = _TIME_TOKEN_RE.match(buf, pos)
        assert m is not None
        raw, end = m.group(), m.end()
        if raw.endswith(b"\r") and _EOL_RE.match(buf, end - 1):
            raw, end = raw[:-1], end - 1
        if not _INT_RE.fullmatch(raw):
            raise LineError(f'invalid timestamp "{_show(raw)}"')
        ts = int(raw)
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise LineError(f'invalid timestamp "{_show(raw)}": out of the int64 range')
        pos = _SPACES_RE.match(buf, end).end()  # type: ignore[union-attr]
        eol = _EOL_RE.match(buf, pos)
        if eol is None:
            nl = buf.find(b"\n", pos)
            rest = buf[pos : n if nl < 0 else nl]
            raise LineError(f'unexpected text after the timestamp: "{_show(rest)}"')
    return Entry(measurement, tags, fields, ts), eol.end()


def to_time_ns(ts: int, multiplier: int) -> int:
    """``ts`` in the request's precision converted to nanoseconds, range-checked like InfluxDB."""
    ns = ts * multiplier
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise LineError(f"timestamp {ts} out of range (1677-09-21 to 2262-04-11)")
    return ns
