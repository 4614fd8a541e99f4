"""The hand-written OTLP encoder, decoded by the official opentelemetry.proto messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from tsengine.instrument import SpanContext, SpanKind, StatusCode, Tracer
from tsengine.instrument._tracing.otlp import encode_export_request

from .conftest import FakeClock

pytestmark = pytest.mark.peer  # decodes with the OpenTelemetry protobuf definitions


def decode(body: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    return req


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: plain(kv.value) for kv in kvs}


def test_a_trace_decodes_field_for_field(clock: FakeClock) -> None:
    tracer = Tracer(clock=clock, name="shop.checkout")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1, "vendor=x", is_remote=True
    )
    server = tracer.start_span(
        "GET /orders/{id}", SpanKind.SERVER, parent=remote, attributes={"http.route": "/orders/{id}"}
    )
    clock.advance(0.001)
    child = tracer.start_span("db", SpanKind.CLIENT, parent=server)
    child.set_attributes(
        {"s": "é✓", "b": True, "i": -5, "f": 0.5, "l": [1, 2], "o": SpanKind.CLIENT, "x": object}
    )
    child.add_event("exception", {"exception.type": "KeyError"})
    child.add_link(SpanContext(7, 8, 1, "", False), {"why": "batch"})
    child.set_status(StatusCode.ERROR, "boom")
    clock.advance(0.002)
    child.end()
    server.end()
    body = encode_export_request([child, server], {"service.name": "shop", "n": 3})

    req = decode(body)
    (rs,) = req.resource_spans
    assert attrs(rs.resource.attributes) == {"service.name": "shop", "n": 3}
    (ss,) = rs.scope_spans
    assert ss.scope.name == "shop.checkout"
    pb_child, pb_server = ss.spans
    assert pb_server.trace_id == remote.trace_id.to_bytes(16, "big")
    assert pb_server.parent_span_id == remote.span_id.to_bytes(8, "big")
    assert pb_server.span_id == server.span_id.to_bytes(8, "big")
    assert pb_server.trace_state == "vendor=x"
    assert pb_server.kind == PbSpan.SPAN_KIND_SERVER
    assert pb_server.name == "GET /orders/{id}"
    assert (pb_server.start_time_unix_nano, pb_server.end_time_unix_nano) == (
        server.start_time_ns,
        server.end_time_ns,
    )
    assert pb_server.flags == 0x301  # sampled, parent remoteness known, parent remote
    assert not pb_server.HasField("status")
    assert attrs(pb_server.attributes) == {"http.route": "/orders/{id}"}

    assert pb_child.parent_span_id == server.span_id.to_bytes(8, "big")
    assert pb_child.kind == PbSpan.SPAN_KIND_CLIENT and pb_child.flags == 0x101
    assert attrs(pb_child.attributes) == {
        "s": "é✓",
        "b": True,
        "i": -5,
        "f": 0.5,
        "l": [1, 2],
        "o": 3,
        "x": "<class 'object'>",
    }
    (event,) = pb_child.events
    assert event.name == "exception" and attrs(event.attributes) == {"exception.type": "KeyError"}
    assert event.time_unix_nano == child.events[0][1]
    (link,) = pb_child.links
    assert (link.trace_id, link.span_id) == ((7).to_bytes(16, "big"), (8).to_bytes(8, "big"))
    assert attrs(link.attributes) == {"why": "batch"} and link.flags == 0x101
    assert pb_child.status.code == PbStatus.STATUS_CODE_ERROR and pb_child.status.message == "boom"


def test_scopes_are_grouped_by_tracer_name(clock: FakeClock) -> None:
    spans = []
    for name in ("a", "b", "a"):
        span = Tracer(clock=clock, name=name).start_span("s")
        span.end()
        spans.append(span)
    (rs,) = decode(encode_export_request(spans, {})).resource_spans
    assert [(s.scope.name, len(s.spans)) for s in rs.scope_spans] == [("a", 2), ("b", 1)]


scalars = st.one_of(
    st.text(max_size=30),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
values = st.one_of(scalars, st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5))


@given(
    name=st.text(max_size=50),
    attributes=st.dictionaries(st.text(min_size=1, max_size=20), values, max_size=10),
    status=st.sampled_from(list(StatusCode)),
    message=st.text(max_size=40),
)
def test_round_trip_through_the_official_decoder(
    name: str, attributes: dict[str, Any], status: StatusCode, message: str
) -> None:
    span = Tracer().start_span(name, SpanKind.PRODUCER, attributes=attributes)
    span.set_status(status, message)
    span.end()
    (rs,) = decode(encode_export_request([span], {"service.name": "svc"})).resource_spans
    (pb,) = rs.scope_spans[0].spans
    assert pb.name == name
    assert pb.kind == PbSpan.SPAN_KIND_PRODUCER
    assert attrs(pb.attributes) == attributes
    assert pb.status.code == int(span.status_code)
    assert pb.status.message == span.status_message
    assert int.from_bytes(pb.trace_id, "big") == span.trace_id
