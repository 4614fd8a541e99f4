"""Hypothesis: arbitrary bodies to ``POST /api/v1/events`` and ``POST /v1/logs`` never get a 500.

The harness of :mod:`tests.integration.test_server_fuzz`: a real server in a background thread
over a spied engine; a 2xx answer must come from exactly one write of every row the route's
pure parser finds in the body, any other answer (400/413/415) from no write at all.
"""

from __future__ import annotations

import gzip
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.integration.test_server_fuzz import check
from tsengine.protocols import otlp_logs
from tsengine.protocols._events import parse_json

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_event = st.fixed_dictionaries(
    {
        "service": st.sampled_from(["shop", "", 3]),
        "category": st.sampled_from(["business", "security", "log", "nope"]),
        "severity": st.sampled_from(["info", "ERROR", "loud"]),
        "name": st.text(max_size=6),
    },
    optional={
        "time": st.one_of(st.integers(-5, 2**64 - 1), st.just("2026-11-27T10:00:00Z"), st.text(max_size=5)),
        "message": st.one_of(st.text(max_size=10), st.integers(-(2**62), 2**62)),
        "attributes": st.one_of(
            st.dictionaries(st.text(max_size=4), st.integers(-(2**62), 2**62), max_size=3), st.just([1])
        ),
        "user_id": st.one_of(st.text(max_size=4), st.none()),
        "colour": st.just("red"),
    },
)


def _events_parse(content_type: str) -> Any:
    def parse(raw: bytes) -> list[Any]:
        batch = parse_json(raw, content_type=content_type, db="default", now_ns=1)
        return [batch] if batch is not None else []

    return parse


@FUZZ
@given(
    items=st.one_of(st.lists(_event, max_size=5), st.binary(max_size=200)),
    ndjson=st.booleans(),
    gz=st.booleans(),
)
def test_post_events(live: Any, items: Any, ndjson: bool, gz: bool) -> None:
    if isinstance(items, bytes):
        body = items
    elif ndjson:
        body = b"\n".join(orjson.dumps(i) for i in items)
    else:
        body = orjson.dumps(items)
    content_type = "application/x-ndjson" if ndjson else "application/json"
    headers = {"Content-Type": content_type}
    if gz:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    check(live, "/api/v1/events", body, headers, _events_parse(content_type))


def _logs_request(records: list[tuple[int, int, str, bytes]]) -> bytes:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for time_ns, severity, body, trace_id in records:
        rec = sl.log_records.add(time_unix_nano=time_ns, severity_number=severity, trace_id=trace_id)
        rec.body.string_value = body
    return req.SerializeToString()


_records = st.lists(
    st.tuples(
        st.integers(0, 2**64 - 1),
        st.integers(0, 30),
        st.text(max_size=8),
        st.sampled_from([b"", b"\x01" * 16, b"\x01" * 3]),
    ),
    max_size=5,
).map(_logs_request)


@FUZZ
@given(body=st.one_of(_records, st.binary(max_size=300)), as_json=st.booleans())
def test_post_logs(live: Any, body: bytes, as_json: bool) -> None:
    content_type = otlp_logs.CONTENT_TYPE_JSON if as_json else otlp_logs.CONTENT_TYPE_PROTOBUF

    def parse(raw: bytes) -> list[Any]:
        result = otlp_logs.parse(raw, content_type=content_type, now_ns=1, max_tag_bytes=1024)
        return [result.batch] if result.batch is not None else []

    check(live, "/v1/logs", body, {"Content-Type": content_type}, parse)
