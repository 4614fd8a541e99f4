"""OtlpLogsExporter: the event tracker's events as OTLP/HTTP log records, to ``{endpoint}/v1/logs``.

Who calls it: :class:`~tsengine.instrument.OtlpMetricsExporter`, which sends metrics to
``/v1/metrics`` and hands events to one of these (``TELEMETRY_EXPORT=otlp``), or the
application directly. What comes in: events (a subscription to the tracker). What goes out:
``POST {endpoint}/v1/logs`` with an ``ExportLogsServiceRequest`` (protobuf), accepted by
tsengine's ``/v1/logs`` — which stores the rows the native exporter would have written to
``events`` — and by any OpenTelemetry collector.

One ``LogRecord`` per event, following OpenTelemetry's event conventions:

* ``time_unix_nano`` and ``observed_time_unix_nano``: the event's time;
* ``severity_number``/``severity_text``: debug → DEBUG (5), info → INFO (9), warning → WARN (13),
  error → ERROR (17), critical → FATAL (21);
* ``event_name`` and the attribute ``event.name``: the event's name; ``body``: its message;
* attributes: the event's own (strings, booleans, integers and floats as such; anything else as
  JSON text), plus ``event.category``, ``event.id``, and the context ids as ``enduser.id``,
  ``session.id`` and ``correlation.id``;
* ``trace_id``/``span_id``: the event's, as bytes, when it carries them;
* the resource attribute ``service.name``; the scope ``tsengine.instrument``.

Queue, worker, audit spill and retry policy are those of every queued exporter
(:class:`~tsengine.instrument.HttpExporter`), one queued item per event. The wire format is
written by hand, so the SDK imports neither ``protobuf`` nor ``opentelemetry-proto``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tsengine.instrument._otlp_metrics_export import (
    SCOPE_NAME,
    _double,
    _fixed64,
    _key_value,
    _message,
    _string,
    _tag,
    _varint,
)
from tsengine.instrument._push import HttpExporter, _Batch

if TYPE_CHECKING:
    from tsengine.instrument._collector import DataPoint
    from tsengine.instrument._event import Event
    from tsengine.instrument._family import MetricFamily

__all__ = ["OtlpLogsExporter", "encode_logs_request"]

CONTENT_TYPE = "application/x-protobuf"
#: The SDK's severities as OpenTelemetry SeverityNumber and text.
SEVERITY_NUMBERS = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}
_SEVERITY_TEXT = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR", "critical": "FATAL"}
_CONTEXT = (("user_id", "enduser.id"), ("session_id", "session.id"), ("correlation_id", "correlation.id"))
_U64 = (1 << 64) - 1


class OtlpLogsExporter(HttpExporter):
    """Batched background push of events as OTLP/HTTP log records. See the module docstring.

    Args:
        endpoint: the base URL, ``http://host:port`` — ``/v1/logs`` is appended.
        token: sent as ``Authorization: Bearer`` (tsengine needs the ``write`` scope).
        db: the tsengine database (``?db=``; not sent when ``default``).
        **kwargs: the queue and worker settings of :class:`HttpExporter` (counted in events).
    """

    content_type = CONTENT_TYPE
    exports_events = True

    def _api_path(self, db: str) -> str:
        return "/v1/logs" + ("" if db == "default" else "?" + urllib.parse.urlencode({"db": db}))

    def export_metrics(self, families: Sequence[MetricFamily], *, time_ns: int) -> None:
        """Metrics go to ``/v1/metrics`` (:class:`~tsengine.instrument.OtlpMetricsExporter`)."""

    def export_data_points(self, points: Sequence[DataPoint]) -> None:
        """Not sent over OTLP."""

    def _encode(self, batch: _Batch) -> bytes:
        if batch.body is None:
            batch.body = encode_logs_request(batch.rows, service=self.service)
        return batch.body


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body: string 1, bool 2, int 3, double 4; others as JSON text."""
    if isinstance(value, str):
        return _string(1, value)
    if isinstance(value, bool):
        return _tag(2, 0) + (b"\x01" if value else b"\x00")
    if isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
        return _tag(3, 0) + _varint(value & _U64)
    if isinstance(value, float):
        return _double(4, value)
    return _string(1, json.dumps(value, default=str))


def _attribute(key: str, value: Any) -> bytes:
    return _message(6, _string(1, key) + _message(2, _any_value(value)))  # LogRecord.attributes = 6


def _log_record(ev: Event) -> bytes:
    severity = str(ev.severity)
    out = _fixed64(1, ev.time_ns) + _fixed64(11, ev.time_ns)
    out += _tag(2, 0) + _varint(SEVERITY_NUMBERS.get(severity, 9))
    out += _string(3, _SEVERITY_TEXT.get(severity, severity.upper()))
    if ev.message:
        out += _message(5, _string(1, ev.message))  # body: AnyValue{string_value}
    attrs: Mapping[str, Any] = ev.attributes or {}
    out += b"".join(_attribute(str(k), v) for k, v in attrs.items())
    out += _attribute("event.category", ev.category.value) + _attribute("event.name", ev.name)
    out += _attribute("event.id", ev.id)
    for field, key in _CONTEXT:
        value = getattr(ev, field)
        if value is not None:
            out += _attribute(key, str(value))
    for field, number, size in (("trace_id", 9, 16), ("span_id", 10, 8)):
        hex_id = getattr(ev, field)
        if hex_id:
            try:
                raw = bytes.fromhex(hex_id)
            except ValueError:
                continue
            if len(raw) == size:
                out += _message(number, raw)
    return out + _string(12, ev.name)  # event_name


def encode_logs_request(
    events: Sequence[Event], *, service: str | None, scope_version: str | None = None
) -> bytes:
    """An ``ExportLogsServiceRequest`` holding ``events`` (one resource, one scope)."""
    if scope_version is None:
        import tsengine

        scope_version = tsengine.__version__
    records = b"".join(_message(2, _log_record(ev)) for ev in events)  # ScopeLogs.log_records = 2
    resource = _key_value(1, "service.name", service) if service else b""
    scope = _string(1, SCOPE_NAME) + _string(2, scope_version)
    scope_logs = _message(1, scope) + records
    resource_logs = _message(1, resource) + _message(2, scope_logs)  # ResourceLogs.scope_logs = 2
    return _message(1, resource_logs)
