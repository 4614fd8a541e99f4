"""OTLP/HTTP traces: an ``ExportTraceServiceRequest`` (protobuf or JSON) → rows of the ``spans`` table.

In: the (already un-gzipped) body of ``POST /v1/traces`` and its ``Content-Type``
(``application/x-protobuf`` or ``application/json``). Out: a :class:`SpanBatch` — one
:class:`~tsengine.model.TableBatch` of the spans that are valid, and the count and reasons of
those that are not (the server answers them as the OTLP ``partial_success``). Called by the
server's trace route; pure (no I/O, no engine), thread-safe, CPU-bound (a few µs per span).

One row per span, ``time`` = the span's start (ns). Columns (documented in ``docs/tracing.md``):

* tags (dictionary-coded, low cardinality): ``service`` (the resource's ``service.name``,
  ``unknown_service`` without one), ``name``, ``kind`` (``internal``, ``server``, ``client``,
  ``producer``, ``consumer``, ``unspecified``), ``status`` (``unset``, ``ok``, ``error``);
* fields: ``trace_id`` (32 lowercase hex), ``span_id`` (16 hex), ``parent_span_id`` (16 hex,
  NULL for a root span), ``end_ns`` and ``duration_ns`` (int64), ``status_message`` (NULL when
  empty), ``attributes`` (JSON object), ``events`` (JSON array of ``{"time_ns", "name",
  "attributes"}``, NULL when none), ``links`` (JSON array of ``{"trace_id", "span_id",
  "attributes"}``, NULL when none), ``resource`` (the resource's attributes, JSON object) and
  ``scope_name`` (the instrumentation scope, NULL when empty).

Attribute values become JSON as they are: strings, booleans, int64 (JSON numbers), doubles
(non-finite ones as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), bytes as base64,
arrays and key-value lists nested. Trace state, flags and dropped counts are not stored.

The spans table is append-only (the server declares it so): two spans with the same service,
name, kind, status and start time are two rows.

Errors: an undecodable body or an unsupported content type → :class:`~tsengine.errors.ParseError`
(the whole request is refused, HTTP 400). A span that decodes but cannot be stored — an id of
the wrong length or all zeros, a start time of 0 or past 2262, an end before its start, an
unknown kind or status code, a service or name longer than ``max_tag_bytes`` — is *rejected*
alone: it is counted in :attr:`SpanBatch.rejected` with its path (e.g.
``resource_spans[0].scope_spans[1].spans[2]``) and reason, and every other span is kept. The
same holds in both encodings: in OTLP/JSON a span (or one of its links) whose id is not a hex
string, whose start, end or event time is not an unsigned 64-bit integer, or whose kind or status
code is an unknown name is rejected alone too, where protobuf's own JSON parser would refuse the
whole document (or quietly read an unknown enum name as 0). What is malformed beyond a span's ids,
times and enums (not JSON, a list where an object belongs, a string where a number belongs...)
leaves the document undecodable: 400.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from tsengine.errors import ParseError
from tsengine.model import TableBatch
from tsengine.protocols._otlp_encoding import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    PROTOBUF_TYPES,
    encode_message,
    media_type,
    unsupported_type,
)
from tsengine.protocols._otlp_trace_view import ExportTraceServiceRequestView
from tsengine.protocols._partial import PartialBatch

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "KINDS",
    "SPANS_TABLE",
    "STATUSES",
    "SpanBatch",
    "encode_response",
    "parse",
]


#: The table every span lands in (per database).
SPANS_TABLE = "spans"
#: SpanKind enum value → the ``kind`` tag.
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
#: Status.code enum value → the ``status`` tag.
STATUSES = ("unset", "ok", "error")
TAGS = ("service", "name", "kind", "status")
UNKNOWN_SERVICE = "unknown_service"
#: Reasons quoted in the partial_success error message; the rest are only counted.
MAX_REASONS = 5
_MAX_TIME_NS = 2**63 - 1
_N_KINDS = len(KINDS)
_N_STATUSES = len(STATUSES)
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_LINK_ID_KEYS = _ID_KEYS[:4]
_SPAN_TIME_KEYS = ("startTimeUnixNano", "start_time_unix_nano", "endTimeUnixNano", "end_time_unix_nano")
_EVENT_TIME_KEYS = ("timeUnixNano", "time_unix_nano")
_MAX_UINT64 = 2**64 - 1
_DIGITS = re.compile(r"[0-9]+")
_KIND_NAMES = frozenset(f"SPAN_KIND_{k.upper()}" for k in KINDS)
_STATUS_NAMES = frozenset(f"STATUS_CODE_{c.upper()}" for c in STATUSES)
#: (resource_spans index, scope_spans index) → {span index: why the span cannot be stored}
_Flagged = dict[tuple[int, int], dict[int, str]]


@dataclass(frozen=True)
class SpanBatch(PartialBatch):
    """The decoded request: the rows of the valid spans, and what was rejected and why."""

    items: ClassVar[str] = "span(s)"


def parse(
    body: bytes, *, content_type: str, db: str = "default", max_tag_bytes: int | None = None
) -> SpanBatch:
    """Decode an OTLP traces export into rows of the ``spans`` table.

    Args:
        body: the request body, not compressed (the server undoes ``Content-Encoding``).
        content_type: the request's ``Content-Type``; parameters such as charset are ignored.
        db: database the batch belongs to.
        max_tag_bytes: a span whose service or name is longer (UTF-8 bytes) is rejected.

    Raises:
        ParseError: an undecodable body or an unsupported content type.
    """
    request, flagged = _decode(body, content_type)
    cols = _Columns(max_tag_bytes)
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        too_long = max_tag_bytes is not None and len(service.encode()) > max_tag_bytes
        resource_json = orjson.dumps(resource).decode()
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            item = f"resource_spans[{r}].scope_spans[{s}]"
            if too_long:
                cols.reject_all(
                    scope_spans.spans,
                    item,
                    f"service {service[:40]!r}... is longer than {max_tag_bytes} bytes",
                )
            else:
                cols.add(
                    scope_spans.spans,
                    item,
                    service,
                    resource_json,
                    scope_spans.scope.name or None,
                    flagged=flagged.get((r, s)),
                )
    return SpanBatch(cols.build(db), cols.rejected, tuple(cols.reasons))


def encode_response(result: SpanBatch | None, content_type: str) -> bytes:
    """The ``ExportTraceServiceResponse`` body in the request's encoding.

    Fully accepted: an empty message (``b""`` or ``{}``); else ``partial_success`` with
    ``rejected_spans`` and ``error_message``, as the OTLP specification requires.
    """
    response = ExportTraceServiceResponse()
    if result is not None and result.rejected:
        response.partial_success.rejected_spans = result.rejected
        response.partial_success.error_message = result.error_message
    return encode_message(response, content_type)


def _decode(body: bytes, content_type: str) -> tuple[Any, _Flagged]:
    """The request as :data:`ExportTraceServiceRequestView` (span attributes left encoded), and
    the spans of an OTLP/JSON body already known to be unstorable (see :func:`_prepare_json`)."""
    media = media_type(content_type)
    if media in PROTOBUF_TYPES:
        try:
            return ExportTraceServiceRequestView.FromString(body), {}
        except (DecodeError, RecursionError) as exc:
            raise ParseError(f"cannot decode OTLP traces: not an ExportTraceServiceRequest ({exc})") from exc
    request = ExportTraceServiceRequest()
    if media == CONTENT_TYPE_JSON:
        try:
            doc = orjson.loads(body)
            # OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping of
            # ``bytes`` is base64: translate them before json_format reads the rest as it is
            # (camelCase or snake_case keys, enums as integers, int64 as strings or numbers).
            flagged = _prepare_json(doc)
            json_format.ParseDict(doc, request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise ParseError(f"cannot decode OTLP traces JSON: {exc}") from exc
    else:
        raise unsupported_type("traces", content_type)
    # One code path for both encodings: JSON becomes the same protobuf bytes.
    return ExportTraceServiceRequestView.FromString(request.SerializeToString()), flagged


def _prepare_json(doc: Any) -> _Flagged:
    """Make an OTLP/JSON document readable by json_format, span by span; in place.

    Hex ``traceId``/``spanId``/``parentSpanId`` of spans and links become base64; start, end and
    event times become ints. A span with an id that is not a hex string, a time that is not an
    unsigned 64-bit integer or an unknown kind or status name is *flagged* (returned with the
    reason) and its offending value removed, so that json_format reads the document and the
    span alone is rejected. Only well-formed places are visited (lists of objects): json_format
    refuses the rest, so the indexes here are json_format's whenever the document decodes.
    """
    flagged: _Flagged = {}
    for r, rs in _objects(doc, "resourceSpans", "resource_spans"):
        for s, ss in _objects(rs, "scopeSpans", "scope_spans"):
            for i, span in _objects(ss, "spans"):
                problems = _convert_ids(span, _ID_KEYS, "")
                problems += _convert_times(span, _SPAN_TIME_KEYS, "")
                problems += _check_enum(span, ("kind",), _KIND_NAMES, "kind", "a SpanKind")
                status = span.get("status")
                if isinstance(status, dict):
                    problems += _check_enum(status, ("code",), _STATUS_NAMES, "status code", "a StatusCode")
                for j, link in _objects(span, "links"):
                    problems += _convert_ids(link, _LINK_ID_KEYS, f"links[{j}].")
                for j, event in _objects(span, "events"):
                    problems += _convert_times(event, _EVENT_TIME_KEYS, f"events[{j}].")
                if problems:
                    flagged.setdefault((r, s), {})[i] = problems[0]
    return flagged


def _objects(doc: Any, *keys: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """The objects of the list under ``keys`` (a field's spellings) with their index in the list.

    Indexes count every item, objects or not: json_format makes an element even of some
    non-objects (a string becomes an empty message), and the indexes must be its own.

    Raises:
        ParseError: the field is given under two spellings (json_format would keep one of them).
    """
    if not isinstance(doc, dict):
        return ()
    present = [key for key in keys if key in doc]
    if len(present) > 1:
        raise ParseError(f"cannot decode OTLP traces JSON: both {present[0]!r} and {present[1]!r} are given")
    items = doc[present[0]] if present else None
    if not isinstance(items, list):
        return ()
    return [(i, d) for i, d in enumerate(items) if isinstance(d, dict)]


def _convert_ids(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> list[str]:
    """Hex ids → base64 in place; the reasons of those that are not hex strings (removed)."""
    problems = []
    for key in keys:
        value = obj.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                continue
            except ValueError:
                problems.append(f"{where}{key} {value[:40]!r} is not hex")
        else:
            problems.append(f"{where}{key} is a JSON {type(value).__name__}, not a hex string")
        del obj[key]
    return problems


def _convert_times(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> list[str]:
    """Times (numbers or decimal strings) → ints in place; the reasons of the others (removed)."""
    problems = []
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        ns = _uint64(value)
        if ns is None:
            problems.append(f"{where}{key} {str(value)[:40]!r} is not an unsigned 64-bit integer")
            del obj[key]
        else:
            obj[key] = ns
    return problems


def _uint64(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if _DIGITS.fullmatch(value):
            value = int(value)
        else:
            try:
                value = float(value)  # "1.7e18", as json_format reads it
            except ValueError:
                return None
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_UINT64:
        return value
    return None


def _check_enum(
    obj: dict[str, Any], keys: tuple[str, ...], names: frozenset[str], what: str, enum: str
) -> list[str]:
    """An enum given by name must be a known one (json_format would read an unknown name as 0)."""
    problems = []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value not in names:
            problems.append(f"{what} {value[:40]!r} is not {enum}")
            del obj[key]
    return problems


def _value(value: Any) -> Any:
    """An AnyValue as JSON-able Python."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("int_value", "bool_value"):
        return getattr(value, kind)
    if kind == "double_value":
        d = value.double_value
        if math.isfinite(d):
            return d
        return "NaN" if math.isnan(d) else ("Infinity" if d > 0 else "-Infinity")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _attributes(attributes: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes}


class _Columns:
    """The spans table's rows, gathered span by span and turned into columns once per request."""

    def __init__(self, max_tag_bytes: int | None) -> None:
        # One tuple per span (one append is cheaper than a dozen); ids stay raw bytes until
        # build() hex-encodes each id column in one vectorised pass.
        self.rows: list[tuple[Any, ...]] = []
        #: encoded KeyValue → (key, JSON-able value): decoded once per request
        self.known_attributes: dict[bytes, tuple[str, Any]] = {}
        self.max_tag_bytes = max_tag_bytes
        self.rejected = 0
        self.reasons: list[str] = []

    def _reject(self, item: str, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{item}: {reason}")

    def reject_all(self, spans: Any, item: str, reason: str) -> None:
        for i in range(len(spans)):
            self._reject(f"{item}.spans[{i}]", reason)

    def add(
        self,
        spans: Any,
        item: str,
        service: str,
        resource: str,
        scope_name: str | None,
        *,
        flagged: dict[int, str] | None = None,
    ) -> None:
        """Append the rows of one scope's spans; count and explain the ones that cannot be stored.

        ``flagged``: spans already known to be unstorable (span index → reason). The hot loop of
        span ingestion: locals only, one tuple per span.
        """
        append = self.rows.append
        known = self.known_attributes
        limit = self.max_tag_bytes
        # A name of at most limit // 4 characters fits in limit bytes whatever its characters.
        short = (limit // 4) if limit is not None else 1 << 62
        kinds, statuses = KINDS, STATUSES
        for i, span in enumerate(spans):
            if flagged and i in flagged:
                self._reject(f"{item}.spans[{i}]", flagged[i])
                continue
            trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
            start, end = span.start_time_unix_nano, span.end_time_unix_nano
            kind, status = span.kind, span.status
            code = status.code
            name = span.name
            if not (
                len(trace_id) == 16
                and trace_id != _ZERO_TRACE_ID
                and len(span_id) == 8
                and span_id != _ZERO_SPAN_ID
                and (not parent or len(parent) == 8)
                and 0 < start <= end <= _MAX_TIME_NS
                and 0 <= kind < _N_KINDS
                and 0 <= code < _N_STATUSES
                and (len(name) <= short or limit is None or len(name.encode()) <= limit)
            ):
                self._reject(f"{item}.spans[{i}]", _reason(span, limit))
                continue
            attributes: dict[str, Any] = {}
            for raw in span.attributes:
                kv = known.get(raw)
                if kv is None:
                    kv = known[raw] = _key_value(raw)
                attributes[kv[0]] = kv[1]
            events = span.events
            links = span.links
            append(
                (
                    start,
                    end,
                    service,
                    name,
                    kinds[kind],
                    statuses[code],
                    trace_id,
                    span_id,
                    parent if parent else _ZERO_SPAN_ID,
                    status.message or None,
                    orjson.dumps(attributes),
                    _events_json(events) if events else None,
                    _links_json(links) if links else None,
                    resource,
                    scope_name,
                )
            )

    def build(self, db: str) -> TableBatch | None:
        if not self.rows:
            return None
        (start, end, service, name, kind, status, trace_id, span_id, parent, message, attributes,
         events, links, resource, scope_name) = zip(*self.rows, strict=True)  # fmt: skip
        time = np.array(start, dtype=np.int64)
        end_ns = np.array(end, dtype=np.int64)
        parent_hex = _hex_column(parent, 8)
        no_parent = pa.array(np.frombuffer(b"".join(parent), dtype="S8") == _ZERO_SPAN_ID)
        fields: dict[str, pa.Array] = {
            "trace_id": _hex_column(trace_id, 16),
            "span_id": _hex_column(span_id, 8),
            "parent_span_id": pc.if_else(no_parent, pa.scalar(None, pa.string()), parent_hex),
            "end_ns": pa.array(end_ns),
            "duration_ns": pa.array(end_ns - time),
        }
        # orjson's bytes are valid UTF-8: one cast instead of a str per span.
        fields["attributes"] = pa.array(attributes, pa.binary()).cast(pa.string())
        for col, values in (
            ("status_message", message),
            ("events", events),
            ("links", links),
            ("resource", resource),
            ("scope_name", scope_name),
        ):
            fields[col] = pa.array(values, pa.string())
        return TableBatch.build(
            SPANS_TABLE,
            time,
            tags={
                "service": pa.array(service, pa.string()),
                "name": pa.array(name, pa.string()),
                "kind": pa.array(kind, pa.string()),
                "status": pa.array(status, pa.string()),
            },
            fields=fields,
            db=db,
        )


def _hex_column(ids: tuple[bytes, ...], size: int) -> pa.Array:
    """Lowercase hex strings of equal-length ids, in one pass (no Python string per id)."""
    hexed = np.frombuffer(b"".join(ids).hex().encode("ascii"), dtype=f"S{2 * size}")
    return pa.array(hexed, pa.binary(2 * size)).cast(pa.binary()).cast(pa.string())


def _events_json(events: Any) -> str:
    return orjson.dumps(
        [
            {"time_ns": e.time_unix_nano, "name": e.name, "attributes": _attributes(e.attributes)}
            for e in events
        ]
    ).decode()


def _links_json(links: Any) -> str:
    return orjson.dumps(
        [
            {
                "trace_id": x.trace_id.hex(),
                "span_id": x.span_id.hex(),
                "attributes": _attributes(x.attributes),
            }
            for x in links
        ]
    ).decode()


def _key_value(raw: bytes) -> tuple[str, Any]:
    try:
        kv = KeyValue.FromString(raw)
    except (DecodeError, RecursionError) as exc:
        raise ParseError(f"cannot decode OTLP traces: a span attribute is not a KeyValue ({exc})") from exc
    return kv.key, _value(kv.value)


def _reason(span: Any, max_tag_bytes: int | None) -> str:
    """Why a span that failed the fast check cannot be stored."""
    for what, raw, size in (("trace_id", span.trace_id, 16), ("span_id", span.span_id, 8)):
        if len(raw) != size:
            return f"{what} has {len(raw)} bytes, expected {size}"
        if not any(raw):
            return f"{what} is all zeros"
    parent = span.parent_span_id
    if parent and len(parent) != 8:
        return f"parent_span_id has {len(parent)} bytes, expected 8 or none"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not 0 < start <= _MAX_TIME_NS:
        return f"start_time_unix_nano {start} is not a time between 1970 and 2262"
    if not start <= end <= _MAX_TIME_NS:
        return f"end_time_unix_nano {end} is before the start {start} or past 2262"
    if not 0 <= span.kind < _N_KINDS:
        return f"kind {span.kind} is not a SpanKind"
    if not 0 <= span.status.code < _N_STATUSES:
        return f"status code {span.status.code} is not a StatusCode"
    return f"name {span.name[:40]!r}... is longer than {max_tag_bytes} bytes"
