"""Hypothesis: arbitrary bodies to ``POST /v1/traces`` never get a 500 and store all or nothing.

The ``live`` fixture of :mod:`tests.integration.conftest` (a real server in a background
thread, its engine wrapped in a write-recording spy). A 200 must come from exactly one write of
every span the pure decoder accepts (zero rows when it accepts none), with the rejected count in
the answer; any other answer must be a 400/413/415 error with a message (the server's JSON error or the
OTLP ``google.rpc.Status``) with nothing written. A body mixing valid spans with spans of bad
ids, times or enums (either encoding) must get a 200: those spans are rejected one by one.
"""

from __future__ import annotations

import gzip

import orjson
from hypothesis import event, given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.integration.conftest import LiveServer, SpyEngine, otlp_error_message
from tests.integration.test_server_fuzz import FUZZ
from tests.integration.test_server_traces import SPANS, crafted_request, otlp_json
from tests.unit.protocols.test_otlp_traces import _defective_request
from tsengine.protocols import otlp_traces

_VALID = crafted_request().SerializeToString()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, bool, bool]:
    """(body, content type, gzip it, it must decode: a 200)."""
    content_type = draw(st.sampled_from(["application/x-protobuf", "application/json"]))
    kind = draw(st.sampled_from(["random", "mutated", "valid", "defective"]))
    if kind == "defective":  # valid and bad spans mixed: a 200 with partial success, never a 400
        content_type, body, _, bad = draw(_defective_request())
        event(f"defective: {len(bad)} bad span(s)")
    elif kind == "random":
        body = draw(st.binary(max_size=400))
    else:
        base = _VALID if content_type == "application/x-protobuf" else otlp_json(crafted_request())
        if kind == "mutated":
            data = bytearray(base)
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            cut = draw(st.integers(0, len(data)))
            body = bytes(data[:cut])
        else:
            body = base
    return body, content_type, draw(st.booleans()), kind in ("valid", "defective")


@FUZZ
@given(bodies())
def test_arbitrary_bodies_never_500(
    live: tuple[LiveServer, SpyEngine], case: tuple[bytes, str, bool, bool]
) -> None:
    server, spy = live
    body, content_type, gzipped, decodes = case
    headers = {"Content-Type": content_type}
    sent = body
    if gzipped:
        sent, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    before = len(spy.writes)
    status, answer = server.post("/v1/traces", sent, headers)
    event(f"HTTP {status}")
    assert status < 500, (status, answer)
    assert status == 200 or not decodes, (status, answer)
    new = spy.writes[before:]
    if status == 200:
        expected = otlp_traces.parse(body, content_type=content_type)
        assert new == [expected.accepted], (new, expected)  # one call, even when it writes nothing
        if content_type == "application/x-protobuf":
            rejected = ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
        else:
            rejected = int(orjson.loads(answer).get("partialSuccess", {}).get("rejectedSpans", 0))
        assert rejected == expected.rejected
    else:
        assert status in (400, 413, 415), (status, answer)
        assert new == [], (status, answer, new)
        assert otlp_error_message(answer, server.last_content_type), answer


def test_valid_body_stores_every_span(live: tuple[LiveServer, SpyEngine]) -> None:
    server, spy = live
    status, _ = server.post("/v1/traces", _VALID, {"Content-Type": "application/x-protobuf"})
    assert status == 200
    assert spy.writes[-1] == len(SPANS)
