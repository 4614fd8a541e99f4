"""Rows of the ``events`` table: the one builder of its columns, and the JSON event parser.

Who calls it: :mod:`tsengine.protocols.otlp_logs` (OTLP log records) and the server's
``POST /api/v1/events`` route (:func:`parse_json`). What comes in: events as Python values.
What goes out: one :class:`~tsengine.model.TableBatch` of table ``events`` in the shape the
SDK's exporters write (``tsengine.instrument._push``): tags ``service``, ``category``,
``severity``, ``name``; fields ``id`` (int64), ``message``, ``attributes`` (JSON text) and the
context ids ``user_id``, ``session_id``, ``correlation_id``, ``trace_id``, ``span_id`` — a
context id column only when some row sets it, as the SDK writes it only when set. OTLP logs
add ``resource`` (the resource's attributes, JSON text), as the ``spans`` table has.

Pure: no I/O, no engine; thread-safe. Categories and severities are the SDK's
(:class:`~tsengine.instrument.EventCategory`, :class:`~tsengine.instrument.EventSeverity`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from tsengine.errors import ParseError
from tsengine.instrument._event import EventCategory, EventSeverity
from tsengine.model import TableBatch

__all__ = [
    "CATEGORIES",
    "CONTEXT_IDS",
    "EVENTS_TABLE",
    "SEVERITIES",
    "EventRows",
    "new_event_id",
    "parse_json",
]

EVENTS_TABLE = "events"
#: Stored category values (the SDK's).
CATEGORIES = frozenset(c.value for c in EventCategory)
#: Stored severity name → rank (the SDK's order: a filter keeps this rank and above).
SEVERITIES: dict[str, int] = {str(s): int(s) for s in EventSeverity}
CONTEXT_IDS = ("user_id", "session_id", "correlation_id", "trace_id", "span_id")
_MAX_TIME_NS = 2**63 - 1
_KEYS = frozenset(
    {"time", "id", "service", "category", "severity", "name", "message", "attributes", *CONTEXT_IDS}
)
_REQUIRED = ("service", "category", "severity", "name")
_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


def new_event_id() -> int:
    """A random positive int64: unique with overwhelming probability, no coordination needed."""
    return secrets.randbits(63) or 1


class EventRows:
    """Events gathered one by one, turned into columns once (:meth:`build`)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.ids: dict[str, list[str | None]] = {}
        self.resources: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(
        self,
        time_ns: int,
        *,
        service: str,
        category: str,
        severity: str,
        name: str,
        event_id: int,
        message: str = "",
        attributes_json: str = "{}",
        context: dict[str, str] | None = None,
        resource_json: str | None = None,
    ) -> None:
        n = len(self.rows)
        self.rows.append((time_ns, service, category, severity, name, event_id, message, attributes_json))
        for key, value in (context or {}).items():
            self.ids.setdefault(key, [None] * n).append(value)
        for column in self.ids.values():
            if len(column) == n:
                column.append(None)
        if resource_json is not None or self.resources is not None:
            if self.resources is None:
                self.resources = [None] * n
            self.resources.append(resource_json)

    def build(self, db: str) -> TableBatch | None:
        if not self.rows:
            return None
        time, service, category, severity, name, ids, message, attributes = zip(*self.rows, strict=True)
        fields: dict[str, Any] = {
            "id": pa.array(ids, pa.int64()),
            "message": pa.array(message, pa.string()),
            "attributes": pa.array(attributes, pa.string()),
        }
        for key in CONTEXT_IDS:  # in the SDK's order, whatever order rows named them in
            if key in self.ids:
                fields[key] = pa.array(self.ids[key], pa.string())
        if self.resources is not None:
            fields["resource"] = pa.array(self.resources, pa.string())
        tags = {
            "service": pa.array(service, pa.string()),
            "category": pa.array(category, pa.string()),
            "severity": pa.array(severity, pa.string()),
            "name": pa.array(name, pa.string()),
        }
        return TableBatch.build(EVENTS_TABLE, list(time), tags=tags, fields=fields, db=db)


def _items(body: bytes, content_type: str) -> Iterator[tuple[dict[str, int], Any]]:
    """(where, decoded JSON value) of each event: a JSON object, a JSON array, or NDJSON lines.

    ``where`` names the event in errors: ``{"item": index}``, or ``{"line": n}`` for NDJSON.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in _NDJSON:
        for n, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                yield {"line": n}, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"cannot read event: invalid JSON ({exc})", line=n) from exc
        return
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"cannot read events: invalid JSON ({exc})") from exc
    for i, obj in enumerate(doc if isinstance(doc, list) else [doc]):
        yield {"item": i}, obj


def _time_ns(value: Any, where: dict[str, int]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        ns = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ParseError(
                f"field 'time': {value[:40]!r} is not an RFC 3339 time with a zone", **where
            ) from None
        ns = int(moment.timestamp()) * 10**9 + moment.microsecond * 1_000
    else:
        raise ParseError("field 'time': expected integer nanoseconds or an RFC 3339 string", **where)
    if not 0 < ns <= _MAX_TIME_NS:
        raise ParseError(f"field 'time': {ns} is not a time between 1970 and 2262", **where)
    return ns


def _string(obj: dict[str, Any], key: str, where: dict[str, int], *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ParseError(f"field {key!r}: expected a non-empty string", **where)
    return value


def parse_json(
    body: bytes,
    *,
    content_type: str,
    db: str,
    now_ns: int,
    new_id: Callable[[], int] = new_event_id,
) -> TableBatch | None:
    """``POST /api/v1/events`` bodies: one event object, an array of them, or NDJSON.

    All or nothing: the first bad event raises :class:`ParseError` naming its index (``item``;
    ``line`` for NDJSON) and the field. ``time`` defaults to ``now_ns``, ``id`` to ``new_id()``.
    None for no events.
    """
    rows = EventRows()
    for where, obj in _items(body, content_type):
        if not isinstance(obj, dict):
            raise ParseError("expected a JSON object", **where)
        unknown = set(obj) - _KEYS
        if unknown:
            raise ParseError(f"unknown fields {sorted(unknown)} (expected {sorted(_KEYS)})", **where)
        for key in _REQUIRED:
            _string(obj, key, where, required=True)
        category, severity = obj["category"], obj["severity"].lower()
        if category not in CATEGORIES:
            raise ParseError(
                f"field 'category': {category[:40]!r} is not one of {', '.join(sorted(CATEGORIES))}", **where
            )
        if severity not in SEVERITIES:
            raise ParseError(
                f"field 'severity': {obj['severity'][:40]!r} is not one of {', '.join(SEVERITIES)}", **where
            )
        message = _string(obj, "message", where, required=False) or ""
        attributes = obj.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise ParseError("field 'attributes': expected a JSON object", **where)
        event_id = obj.get("id")
        if event_id is None:
            event_id = new_id()
        elif isinstance(event_id, bool) or not isinstance(event_id, int) or not 0 <= event_id < 2**63:
            raise ParseError("field 'id': expected an integer in 0..2^63-1", **where)
        context = {}
        for key in CONTEXT_IDS:
            value = _string(obj, key, where, required=False)
            if value is not None:
                context[key] = value
        rows.add(
            _time_ns(obj["time"], where) if obj.get("time") is not None else now_ns,
            service=obj["service"],
            category=category,
            severity=severity,
            name=obj["name"],
            event_id=event_id,
            message=message,
            attributes_json=orjson.dumps(attributes or {}).decode(),
            context=context,
        )
    return rows.build(db)
