"""OTLP/HTTP logs: an ``ExportLogsServiceRequest`` (protobuf or JSON) → rows of the ``events`` table.

In: the (already un-gzipped) body of ``POST /v1/logs``, its ``Content-Type``
(``application/x-protobuf`` or ``application/json``) and the server's clock reading. Out: a
:class:`LogBatch` — one :class:`~tsengine.model.TableBatch` of the log records that are valid,
and the count and reasons of those that are not (answered as the OTLP ``partial_success``).
Called by the server's log route; pure (no I/O, no engine), thread-safe, CPU-bound.

One row of ``events`` per log record, the shape the SDK's exporters write
(:mod:`tsengine.protocols._events`):

* ``time``: the record's ``time_unix_nano``, else its ``observed_time_unix_nano``, else ``now_ns``;
* ``service``: the resource's ``service.name`` (``unknown_service`` without one);
* ``category``: the record's ``event.category`` attribute (one of the SDK's categories), else ``log``;
* ``severity``: ``severity_number`` mapped onto the SDK's five (TRACE and DEBUG → ``debug``,
  INFO → ``info``, WARN → ``warning``, ERROR → ``error``, FATAL → ``critical``); when it is
  unspecified, ``severity_text`` (``warn``, ``fatal``... case-insensitive); else ``info``;
* ``name``: the record's ``event_name``, else its ``event.name`` attribute, else the scope's
  name, else ``log``;
* ``message``: the body — a string as it is, any other value as JSON;
* ``attributes``: the record's attributes as a JSON object (without ``event.category`` and
  ``event.name``, which are tags already); ``resource``: the resource's attributes (JSON);
* ``trace_id``/``span_id`` (lowercase hex) when set; ``user_id``/``session_id``/``correlation_id``
  from the ``enduser.id``/``session.id``/``correlation.id`` attributes when set; ``id``: the
  integer ``event.id`` attribute (what tsengine's SDK sends), else a new random int64.

Attribute values become JSON as in :mod:`tsengine.protocols.otlp_traces`.

Errors: an undecodable body or an unsupported content type → :class:`~tsengine.errors.ParseError`
(HTTP 400). A record that decodes but cannot be stored — a trace id other than 16 bytes or a
span id other than 8, a time past 2262, a severity number outside 0..24, an unknown
``event.category``, a service or name longer than ``max_tag_bytes`` — is rejected alone, with
its path (``resource_logs[0].scope_logs[1].log_records[2]``) and reason.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tsengine.errors import ParseError
from tsengine.protocols._events import CATEGORIES, EventRows, new_event_id
from tsengine.protocols._otlp_encoding import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    PROTOBUF_TYPES,
    encode_message,
    media_type,
    unsupported_type,
)
from tsengine.protocols._partial import PartialBatch
from tsengine.protocols.otlp_traces import _attributes, _value

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "LOG_CATEGORY",
    "LogBatch",
    "encode_response",
    "parse",
    "severity_of",
]

#: The category of a record without an ``event.category`` attribute (an SDK category too).
LOG_CATEGORY = "log"
DEFAULT_NAME = "log"
UNKNOWN_SERVICE = "unknown_service"
MAX_REASONS = 5
_MAX_TIME_NS = 2**63 - 1
#: SeverityNumber 1..24 in groups of four: TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
_BY_NUMBER = ("debug", "debug", "info", "warning", "error", "critical")
_BY_TEXT = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "fatal": "critical",
    "critical": "critical",
    "crit": "critical",
}
_TAG_ATTRIBUTES = ("event.category", "event.name")
_CONTEXT_ATTRIBUTES = {
    "enduser.id": "user_id",
    "session.id": "session_id",
    "correlation.id": "correlation_id",
}
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id")


@dataclass(frozen=True)
class LogBatch(PartialBatch):
    """The decoded request: the rows of the valid records, and what was rejected and why."""

    items: ClassVar[str] = "log record(s)"


def severity_of(number: int, text: str) -> str | None:
    """The SDK severity of an OTLP ``severity_number``/``severity_text``; None if out of range."""
    if number:
        return _BY_NUMBER[(number - 1) // 4] if 1 <= number <= 24 else None
    # Texts such as "INFO2" or "Warning" name their group by their letters.
    return _BY_TEXT.get(text.strip().rstrip("0123456789").lower(), "info")


def parse(
    body: bytes,
    *,
    content_type: str,
    db: str = "default",
    now_ns: int,
    max_tag_bytes: int | None = None,
    new_id: Callable[[], int] = new_event_id,
) -> LogBatch:
    """Decode an OTLP logs export into rows of the ``events`` table.

    Raises:
        ParseError: an undecodable body or an unsupported content type.
    """
    request = _decode(body, content_type)
    rows = EventRows()
    rejected = 0
    reasons: list[str] = []
    for r, resource_logs in enumerate(request.resource_logs):
        resource = _attributes(resource_logs.resource.attributes)
        service = resource.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        resource_json = orjson.dumps(resource).decode()
        for s, scope_logs in enumerate(resource_logs.scope_logs):
            scope_name = scope_logs.scope.name
            for i, record in enumerate(scope_logs.log_records):
                reason = _add(
                    rows,
                    record,
                    service=service,
                    scope_name=scope_name,
                    resource_json=resource_json,
                    now_ns=now_ns,
                    max_tag_bytes=max_tag_bytes,
                    new_id=new_id,
                )
                if reason is not None:
                    rejected += 1
                    if len(reasons) < MAX_REASONS:
                        reasons.append(f"resource_logs[{r}].scope_logs[{s}].log_records[{i}]: {reason}")
    return LogBatch(rows.build(db), rejected, tuple(reasons))


def _add(
    rows: EventRows,
    record: Any,
    *,
    service: str,
    scope_name: str,
    resource_json: str,
    now_ns: int,
    max_tag_bytes: int | None,
    new_id: Callable[[], int],
) -> str | None:
    """Append one record's row; the reason it cannot be stored, or None."""
    trace_id, span_id = record.trace_id, record.span_id
    if len(trace_id) not in (0, 16):
        return f"trace_id has {len(trace_id)} bytes, expected 16 or none"
    if len(span_id) not in (0, 8):
        return f"span_id has {len(span_id)} bytes, expected 8 or none"
    time_ns = record.time_unix_nano or record.observed_time_unix_nano or now_ns
    if time_ns > _MAX_TIME_NS:
        return f"time_unix_nano {time_ns} is past 2262"
    severity = severity_of(record.severity_number, record.severity_text)
    if severity is None:
        return f"severity_number {record.severity_number} is not a SeverityNumber (0..24)"
    attributes = _attributes(record.attributes)
    category = attributes.pop("event.category", LOG_CATEGORY)
    if category not in CATEGORIES:
        return f"event.category {str(category)[:40]!r} is not one of {', '.join(sorted(CATEGORIES))}"
    name_attr = attributes.pop("event.name", None)
    name = record.event_name or (name_attr if isinstance(name_attr, str) else "")
    name = name or scope_name or DEFAULT_NAME
    if max_tag_bytes is not None:
        for what, value in (("service", service), ("name", name)):
            if len(value.encode()) > max_tag_bytes:
                return f"{what} {value[:40]!r}... is longer than {max_tag_bytes} bytes"
    context: dict[str, str] = {}
    if any(trace_id):
        context["trace_id"] = trace_id.hex()
    if any(span_id):
        context["span_id"] = span_id.hex()
    for attr, column in _CONTEXT_ATTRIBUTES.items():
        value = attributes.get(attr)
        if isinstance(value, str) and value:
            context[column] = value
    # The id the sender gave the event (tsengine's SDK sends ``event.id``), else a new one.
    sent_id = attributes.pop("event.id", None)
    event_id = sent_id if type(sent_id) is int and -(1 << 63) <= sent_id < (1 << 63) else new_id()
    body = record.body
    if body.WhichOneof("value") is None:
        message = ""
    elif body.WhichOneof("value") == "string_value":
        message = body.string_value
    else:
        message = orjson.dumps(_value(body)).decode()
    rows.add(
        time_ns,
        service=service,
        category=category,
        severity=severity,
        name=name,
        event_id=event_id,
        message=message,
        attributes_json=orjson.dumps(attributes).decode(),
        context=context,
        resource_json=resource_json,
    )
    return None


def encode_response(result: LogBatch | None, content_type: str) -> bytes:
    """The ``ExportLogsServiceResponse`` in the request's encoding (``partial_success`` if any rejected)."""
    response = ExportLogsServiceResponse()
    if result is not None and result.rejected:
        response.partial_success.rejected_log_records = result.rejected
        response.partial_success.error_message = result.error_message
    return encode_message(response, content_type)


def _decode(body: bytes, content_type: str) -> Any:
    request = ExportLogsServiceRequest()
    media = media_type(content_type)
    if media in PROTOBUF_TYPES:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise ParseError(f"cannot decode OTLP logs: not an ExportLogsServiceRequest ({exc})") from exc
    elif media == CONTENT_TYPE_JSON:
        try:
            doc = orjson.loads(body)
            # OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping of bytes is base64.
            _hex_ids_to_base64(doc)
            json_format.ParseDict(doc, request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise ParseError(f"cannot decode OTLP logs JSON: {exc}") from exc
    else:
        raise unsupported_type("logs", content_type)
    return request


def _dicts(doc: Any, *keys: str) -> Iterable[dict[str, Any]]:
    if not isinstance(doc, dict):
        return ()
    for key in keys:
        items = doc.get(key)
        if isinstance(items, list):
            return [d for d in items if isinstance(d, dict)]
    return ()


def _hex_ids_to_base64(doc: Any) -> None:
    """Rewrite the hex ``traceId``/``spanId`` of log records in place (well-formed places only)."""
    for rl in _dicts(doc, "resourceLogs", "resource_logs"):
        for sl in _dicts(rl, "scopeLogs", "scope_logs"):
            for record in _dicts(sl, "logRecords", "log_records"):
                for key in _ID_KEYS:
                    value = record.get(key)
                    if isinstance(value, str) and value:
                        try:
                            record[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                        except ValueError:
                            raise ParseError(
                                f"cannot decode OTLP logs JSON: {key} {value[:40]!r} is not hex"
                            ) from None
