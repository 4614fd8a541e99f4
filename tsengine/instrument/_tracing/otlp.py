"""Hand-written protobuf encoder of OTLP ``ExportTraceServiceRequest`` (no protobuf import).

Who calls it: the OTLP span exporter's worker thread, once per batch. What comes in: finished
:class:`Span` objects and the resource attributes (``service.name``…). What goes out: the
bytes of ``opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`` — one
``ResourceSpans`` with one ``ScopeSpans`` per tracer name — that any OTLP/HTTP receiver (a
tsengine server's ``/v1/traces``, an OpenTelemetry collector) decodes. The tests decode it with
the official ``opentelemetry.proto`` messages.

Why by hand: the message is small and fixed, and writing the wire format directly keeps
protobuf (and its import time) out of the SDK and is faster than building message objects.

Wire format reminder: a field is ``varint(number << 3 | wire_type)`` then the value — varint
(0) for ints, bools and enums, 8 little-endian bytes (1) for ``fixed64``/``double``, 4 (5) for
``fixed32``, and a varint length + bytes (2) for strings, bytes and sub-messages. Attribute
values follow ``AnyValue``: str, bool, int (int64), float (double), bytes, and lists of those
(``ArrayValue``); anything else is sent as its ``str()``. The varint and length-field helpers
are the SDK's one set (:mod:`tsengine.instrument._otlp_metrics_export`, also used for metrics
and logs); the tags are precomputed here because this encoder runs per span.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

from tsengine.instrument._otlp_metrics_export import _len_field, _varint
from tsengine.instrument._tracing.span import Span

__all__ = ["encode_export_request", "encode_span"]

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_pack_d = struct.Struct("<d").pack
_U64 = (1 << 64) - 1

#: Span.flags bits: the low 8 are the W3C trace flags; 0x100 says whether the parent's
#: remoteness is known, 0x200 that the parent is remote (OTLP 1.1+).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


# Tags (field number << 3 | wire type), precomputed.
_T1_LEN = b"\x0a"
_T2_LEN = b"\x12"
_T3_LEN = b"\x1a"
_T4_LEN = b"\x22"
_T5_LEN = b"\x2a"
_T7_LEN = b"\x3a"
_T9_LEN = b"\x4a"
_T11_LEN = b"\x5a"
_T13_LEN = b"\x6a"
_T15_LEN = b"\x7a"
_T2_VARINT = b"\x10"
_T3_VARINT = b"\x18"
_T6_VARINT = b"\x30"
_T10_VARINT = b"\x50"
_T1_FIXED64 = b"\x09"
_T4_FIXED64 = b"\x21"
_T7_FIXED64 = b"\x39"
_T8_FIXED64 = b"\x41"
_T6_FIXED32 = b"\x35"
_T16_FIXED32 = b"\x85\x01"


def _any_value(value: Any) -> bytes:
    """The bytes of an ``AnyValue`` message (without its own tag and length)."""
    t = type(value)
    if t is str:
        return _len_field(_T1_LEN, value.encode("utf-8", "surrogatepass"))
    if t is bool:
        return _T2_VARINT + (b"\x01" if value else b"\x00")
    if t is int:
        return _T3_VARINT + _varint(value & _U64)
    if t is float:
        return _T4_FIXED64 + _pack_d(value)
    if isinstance(value, bytes | bytearray):
        return _len_field(_T7_LEN, bytes(value))
    if isinstance(value, list | tuple):
        array = b"".join(_len_field(_T1_LEN, _any_value(v)) for v in value)
        return _len_field(_T5_LEN, array)
    if isinstance(value, int):  # int and float subclasses (IntEnum…); numpy scalars go to str
        return _T3_VARINT + _varint(int(value) & _U64)
    if isinstance(value, float):
        return _T4_FIXED64 + _pack_d(float(value))
    return _len_field(_T1_LEN, str(value).encode("utf-8", "surrogatepass"))


def _key_values(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    """Repeated ``KeyValue`` fields with ``tag``."""
    parts = []
    for key, value in attributes.items():
        kv = _len_field(_T1_LEN, str(key).encode("utf-8", "surrogatepass")) + _len_field(
            _T2_LEN, _any_value(value)
        )
        parts.append(_len_field(tag, kv))
    return b"".join(parts)


def encode_span(span: Span) -> bytes:
    """The bytes of one ``Span`` message (without its tag and length)."""
    out = [
        _T1_LEN + b"\x10" + span.trace_id.to_bytes(16, "big"),
        _T2_LEN + b"\x08" + span.span_id.to_bytes(8, "big"),
    ]
    if span.trace_state:
        out.append(_len_field(_T3_LEN, span.trace_state.encode()))
    if span.parent_span_id:
        out.append(_T4_LEN + b"\x08" + span.parent_span_id.to_bytes(8, "big"))
    out.append(_len_field(_T5_LEN, span.name.encode("utf-8", "surrogatepass")))
    out.append(_T6_VARINT + _varint(int(span.kind)))
    out.append(_T7_FIXED64 + _pack_q(span.start_time_ns & _U64))
    out.append(_T8_FIXED64 + _pack_q(span.end_time_ns & _U64))
    if span._attributes:
        out.append(_key_values(_T9_LEN, span._attributes))
    events = getattr(span, "_events", None)
    if events:
        for name, time_ns, attrs in events:
            ev = (
                _T1_FIXED64
                + _pack_q(time_ns & _U64)
                + _len_field(_T2_LEN, name.encode("utf-8", "surrogatepass"))
            )
            if attrs:
                ev += _key_values(_T3_LEN, attrs)
            out.append(_len_field(_T11_LEN, ev))
    links = getattr(span, "_links", None)
    if links:
        for link in links:
            ctx = link.context
            lk = (
                _T1_LEN
                + b"\x10"
                + ctx.trace_id.to_bytes(16, "big")
                + _T2_LEN
                + b"\x08"
                + ctx.span_id.to_bytes(8, "big")
            )
            if ctx.trace_state:
                lk += _len_field(_T3_LEN, ctx.trace_state.encode())
            if link.attributes:
                lk += _key_values(_T4_LEN, link.attributes)
            flags = (ctx.trace_flags & 0xFF) | _HAS_IS_REMOTE | (_IS_REMOTE if ctx.is_remote else 0)
            lk += _T6_FIXED32 + _pack_i(flags)
            out.append(_len_field(_T13_LEN, lk))
    if span.dropped:
        out.append(_T10_VARINT + _varint(span.dropped))
    code = int(span.status_code)
    if code:
        status = _T3_VARINT + _varint(code)
        if span.status_message:
            status = _len_field(_T2_LEN, span.status_message.encode("utf-8", "surrogatepass")) + status
        out.append(_len_field(_T15_LEN, status))
    flags = (span.trace_flags & 0xFF) | _HAS_IS_REMOTE | (_IS_REMOTE if span.parent_remote else 0)
    out.append(_T16_FIXED32 + _pack_i(flags))
    return b"".join(out)


def encode_export_request(
    spans: Iterable[Span],
    resource: Mapping[str, Any],
    *,
    scope_version: str = "",
) -> bytes:
    """``ExportTraceServiceRequest`` bytes: one resource, one scope per tracer name."""
    by_scope: dict[str, list[bytes]] = {}
    for span in spans:
        by_scope.setdefault(span._tracer.name, []).append(_len_field(_T2_LEN, encode_span(span)))
    scope_spans: list[bytes] = []
    for scope_name, encoded in by_scope.items():
        scope = _len_field(_T1_LEN, scope_name.encode())
        if scope_version:
            scope += _len_field(_T2_LEN, scope_version.encode())
        scope_spans.append(_len_field(_T2_LEN, _len_field(_T1_LEN, scope) + b"".join(encoded)))
    resource_msg = _key_values(_T1_LEN, resource)
    resource_spans = _len_field(_T1_LEN, resource_msg) + b"".join(scope_spans)
    return _len_field(_T1_LEN, resource_spans)
