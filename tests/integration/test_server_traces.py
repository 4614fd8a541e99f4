"""Traces over HTTP on a real server: OTLP ingest (SDK, protobuf, JSON), tree, search, dependencies.

The crafted trace is a three-service call chain with a failure at its end::

    A  GET /checkout (server, error)
    └─ A  POST /pay (client, error)              A → B
       └─ B  POST /pay (server, error)
          ├─ B  validate (internal, ok)
          └─ B  SELECT (client, error)           B → C
             └─ C  SELECT (server, error, exception event)   ← where the error originated

plus a second, healthy trace A → B.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2

from tests.integration.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    assert_error,
    assert_otlp_error,
    bearer,
    engine_of,
    query,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
TRACE_1 = "0af7651916cd43dd8448eb211c80319c"
TRACE_2 = "1bf7651916cd43dd8448eb211c80319d"

KIND = {"internal": 1, "server": 2, "client": 3}

# (trace, span, parent, service, name, kind, error, start ms, end ms, exception)
SPANS = [
    (TRACE_1, "a000000000000001", None, "A", "GET /checkout", "server", True, 0, 100, None),
    (TRACE_1, "a000000000000002", "a000000000000001", "A", "POST /pay", "client", True, 10, 90, None),
    (TRACE_1, "b000000000000001", "a000000000000002", "B", "POST /pay", "server", True, 12, 88, None),
    (TRACE_1, "b000000000000002", "b000000000000001", "B", "validate", "internal", False, 13, 20, None),
    (TRACE_1, "b000000000000003", "b000000000000001", "B", "SELECT", "client", True, 21, 80, None),
    (TRACE_1, "c000000000000001", "b000000000000003", "C", "SELECT", "server", True, 22, 79, "Timeout"),
    (TRACE_2, "a000000000000003", None, "A", "GET /checkout", "server", False, 1000, 1030, None),
    (TRACE_2, "a000000000000004", "a000000000000003", "A", "POST /pay", "client", False, 1005, 1025, None),
    (TRACE_2, "b000000000000004", "a000000000000004", "B", "POST /pay", "server", False, 1006, 1024, None),
]


def crafted_request(spans: list[tuple] = SPANS) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    by_service: dict[str, Any] = {}
    for trace, span_id, parent, service, name, kind, error, start, end, exception in spans:
        scope = by_service.get(service)
        if scope is None:
            rs = request.resource_spans.add()
            rs.resource.attributes.add(key="service.name").value.string_value = service
            scope = by_service[service] = rs.scope_spans.add()
            scope.scope.name = "shop"
        span = scope.spans.add(
            trace_id=bytes.fromhex(trace),
            span_id=bytes.fromhex(span_id),
            parent_span_id=bytes.fromhex(parent) if parent else b"",
            name=name,
            kind=KIND[kind],
            start_time_unix_nano=T0 + start * MS,
            end_time_unix_nano=T0 + end * MS,
        )
        span.attributes.add(key="peer", value=common_pb2.AnyValue(string_value=f"{service}-1"))
        if error:
            span.status.code = 2
            span.status.message = "failed"
        if exception:
            event = span.events.add(name="exception", time_unix_nano=T0 + end * MS)
            event.attributes.add(key="exception.type", value=common_pb2.AnyValue(string_value=exception))
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON per the specification: camelCase keys, ids as hex."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = bytes(__import__("base64").b64decode(span[key])).hex()
    return orjson.dumps(doc)


async def post(client: Any, body: bytes, headers: dict[str, str], db: str = "default") -> Any:
    return await client.post(f"/v1/traces?db={db}", data=body, headers=headers)


@pytest.fixture
async def loaded(make_client: Any) -> Any:
    client = await make_client(clock=None)
    resp = await post(client, crafted_request().SerializeToString(), PROTOBUF)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(await resp.read()).partial_success.rejected_spans == 0
    return client


WINDOW = f"start={T0}&end={T0 + 10_000 * MS}"


async def test_spans_land_in_the_spans_table(loaded: Any) -> None:
    rows = await query(
        loaded,
        "SELECT service, name, kind, status, span_id, parent_span_id, duration_ns, "
        "json_extract_string(attributes, '$.peer'), json_extract_string(resource, '$.\"service.name\"') "
        "FROM spans WHERE trace_id = '" + TRACE_1 + "' ORDER BY time",
    )
    assert len(rows) == 6
    assert rows[0] == [
        "A",
        "GET /checkout",
        "server",
        "error",
        "a000000000000001",
        None,
        100 * MS,
        "A-1",
        "A",
    ]
    assert rows[5][:4] == ["C", "SELECT", "server", "error"]
    assert engine_of(loaded).schema("spans").append_only


async def test_trace_tree_marks_where_the_error_originated(loaded: Any) -> None:
    resp = await loaded.get(f"/api/v1/traces/{TRACE_1.upper()}")
    tree = await resp.json()
    assert resp.status == 200, tree
    assert tree["trace_id"] == TRACE_1
    assert (tree["span_count"], tree["error_count"], tree["services"]) == (6, 5, ["A", "B", "C"])
    assert tree["duration_ns"] == 100 * MS
    assert tree["error_origins"] == ["c000000000000001"]
    order = [(s["span_id"], s["depth"]) for s in tree["spans"]]
    assert order == [
        ("a000000000000001", 0),
        ("a000000000000002", 1),
        ("b000000000000001", 2),
        ("b000000000000002", 3),
        ("b000000000000003", 3),
        ("c000000000000001", 4),
    ]
    c = tree["spans"][-1]
    assert (c["offset_ns"], c["duration_ns"], c["error_origin"]) == (22 * MS, 57 * MS, True)
    assert c["events"][0]["attributes"]["exception.type"] == "Timeout"
    assert tree["spans"][2]["children"] == ["b000000000000002", "b000000000000003"]
    assert not any(s["error_origin"] for s in tree["spans"][:-1])

    resp = await loaded.get("/api/v1/traces/" + "f" * 32)
    await assert_error(resp, 404, "NotFound", "cannot find trace")


async def test_own_exception_makes_a_second_origin(make_client: Any) -> None:
    client = await make_client()
    spans = [list(s) for s in SPANS[:6]]
    spans[2][9] = "ValueError"  # B's server span raised its own exception besides C's failure
    resp = await post(client, crafted_request([tuple(s) for s in spans]).SerializeToString(), PROTOBUF)
    assert resp.status == 200
    tree = await (await client.get(f"/api/v1/traces/{TRACE_1}")).json()
    assert tree["error_origins"] == ["b000000000000001", "c000000000000001"]


async def test_search(loaded: Any) -> None:
    async def search(params: str) -> list[dict[str, Any]]:
        resp = await loaded.get(f"/api/v1/traces?{WINDOW}&{params}")
        body = await resp.json()
        assert resp.status == 200, body
        return body["traces"]

    both = await search("")
    assert [t["trace_id"] for t in both] == [TRACE_2, TRACE_1]  # newest first
    t1 = both[1]
    assert t1 == {
        "trace_id": TRACE_1,
        "root_service": "A",
        "root_operation": "GET /checkout",
        "start_ns": T0,
        "duration_ns": 100 * MS,
        "span_count": 6,
        "error_count": 5,
        "services": ["A", "B", "C"],
    }
    assert [t["trace_id"] for t in await search("service=C")] == [TRACE_1]
    assert [t["trace_id"] for t in await search("service=B&operation=validate")] == [TRACE_1]
    assert [t["trace_id"] for t in await search("error=true")] == [TRACE_1]
    assert [t["trace_id"] for t in await search("error=false")] == [TRACE_2]
    assert [t["trace_id"] for t in await search("min_duration=50ms")] == [TRACE_1]
    assert [t["trace_id"] for t in await search("max_duration=0.05s")] == [TRACE_2]
    assert [t["trace_id"] for t in await search("limit=1")] == [TRACE_2]
    assert await search("service=nobody") == []
    resp = await loaded.get(f"/api/v1/traces?{WINDOW}&min_duration=soon")
    await assert_error(resp, 400, "InvalidInput", "min_duration")
    resp = await loaded.get("/api/v1/traces?start=yesterday")
    await assert_error(resp, 400, "InvalidInput", "'start'")


async def test_dependencies(loaded: Any) -> None:
    resp = await loaded.get(f"/api/v1/services/dependencies?{WINDOW}")
    body = await resp.json()
    assert resp.status == 200, body
    edges = {(e["caller"], e["callee"]): e for e in body["edges"]}
    assert set(edges) == {("A", "B"), ("B", "C")}
    ab, bc = edges[("A", "B")], edges[("B", "C")]
    assert (ab["calls"], ab["errors"]) == (2, 1)
    # The caller's CLIENT span is the call's latency: 80 ms and 20 ms.
    assert (ab["p50_ns"], ab["p99_ns"]) == (50 * MS, int(79.4 * MS))
    assert (bc["calls"], bc["errors"], bc["p50_ns"]) == (1, 1, 59 * MS)
    empty = await (await loaded.get("/api/v1/services/dependencies?db=other")).json()
    assert empty["edges"] == []


async def trace_answers(client: Any, db: str) -> tuple[Any, Any, Any]:
    """(tree of TRACE_1, search, dependencies) of a database."""
    answers = []
    for url in (
        f"/api/v1/traces/{TRACE_1}?db={db}",
        f"/api/v1/traces?{WINDOW}&db={db}",
        f"/api/v1/services/dependencies?{WINDOW}&db={db}",
    ):
        resp = await client.get(url)
        body = await resp.json()
        assert resp.status == 200, body
        answers.append(body)
    return answers[0], answers[1]["traces"], answers[2]["edges"]


async def test_a_retried_export_counts_once(make_client: Any) -> None:
    """The same request stored twice (an SDK retry after a lost answer) answers as if stored once."""
    client = await make_client()
    body = crafted_request().SerializeToString()
    assert (await post(client, body, PROTOBUF, db="once")).status == 200
    for _ in range(2):
        assert (await post(client, body, PROTOBUF, db="twice")).status == 200
        await asyncio.to_thread(engine_of(client).flush)  # one copy in Parquet, one in memory...
    once = await trace_answers(client, "once")
    tree, traces, edges = once
    assert (tree["span_count"], tree["error_count"], len(tree["spans"])) == (6, 5, 6)
    assert [(t["span_count"], t["error_count"]) for t in traces] == [(3, 0), (6, 5)]
    assert [(e["caller"], e["callee"], e["calls"], e["errors"]) for e in edges] == [
        ("A", "B", 2, 1),
        ("B", "C", 1, 1),
    ]
    assert await query(client, "SELECT count(*) FROM twice.spans") == [[2 * len(SPANS)]]  # both stored
    assert await trace_answers(client, "twice") == once
    await asyncio.to_thread(engine_of(client).compact)  # ...then both in one file
    assert await trace_answers(client, "twice") == once
    # A third copy over JSON, in the ring buffer: still once.
    assert (await post(client, otlp_json(crafted_request()), JSON, db="twice")).status == 200
    assert await trace_answers(client, "twice") == once


async def test_trace_lookup_in_a_window(loaded: Any) -> None:
    async def lookup(params: str) -> Any:
        return await loaded.get(f"/api/v1/traces/{TRACE_1}?{params}")

    resp = await lookup(f"start={T0}&end={T0 + 100 * MS}")
    assert resp.status == 200
    assert (await resp.json())["span_count"] == 6
    tree = await (await lookup("start=2023-11-14T22:13:20Z")).json()  # T0 in RFC 3339, no end
    assert tree["span_count"] == 6
    tree = await (await lookup(f"end={T0 + 12 * MS}")).json()  # spans starting by 12 ms
    assert [s["span_id"] for s in tree["spans"]] == [
        "a000000000000001",
        "a000000000000002",
        "b000000000000001",
    ]
    resp = await lookup(f"start={T0 + 1000 * MS}")
    await assert_error(resp, 404, "NotFound", "cannot find trace", "start/end window")
    resp = await lookup(f"start={T0 + 1}&end={T0}")
    await assert_error(resp, 400, "InvalidInput", "is after end")
    resp = await lookup("end=later")
    await assert_error(resp, 400, "InvalidInput", "'end'")


async def test_json_and_protobuf_give_the_same_rows(make_client: Any) -> None:
    client = await make_client()
    request = crafted_request()
    assert (await post(client, request.SerializeToString(), PROTOBUF, db="p")).status == 200
    resp = await post(client, gzip.compress(otlp_json(request)), {**JSON, "Content-Encoding": "gzip"}, db="j")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {}
    sql = "SELECT * FROM {}.spans ORDER BY trace_id, span_id"
    p = await query(client, sql.format("p"))
    assert len(p) == len(SPANS)
    assert p == await query(client, sql.format("j"))


async def test_twin_spans_are_both_stored(make_client: Any) -> None:
    """Same service, name, kind, status and start (a millisecond clock): two rows, always."""
    client = await make_client()
    twins = [
        (TRACE_1, "d000000000000001", None, "A", "tick", "internal", False, 5, 6, None),
        (TRACE_1, "d000000000000002", None, "A", "tick", "internal", False, 5, 7, None),
    ]
    for _ in range(2):  # the second request repeats one of them as well
        resp = await post(client, crafted_request(twins).SerializeToString(), PROTOBUF)
        assert resp.status == 200
    await asyncio.to_thread(engine_of(client).flush)
    await asyncio.to_thread(engine_of(client).compact)
    assert await query(client, "SELECT count(*), count(DISTINCT span_id) FROM spans") == [[4, 2]]


async def test_partial_success_and_bad_bodies(make_client: Any) -> None:
    client = await make_client()
    request = crafted_request(SPANS[:2])
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"short"
    resp = await post(client, request.SerializeToString(), PROTOBUF)
    assert resp.status == 200
    answer = ExportTraceServiceResponse.FromString(await resp.read())
    assert answer.partial_success.rejected_spans == 1
    assert "spans[1]: trace_id has 5 bytes" in answer.partial_success.error_message
    assert await query(client, "SELECT span_id FROM spans") == [["a000000000000001"]]

    resp = await post(client, b"\x0a\xff\xff", PROTOBUF)
    await assert_otlp_error(resp, 400, "cannot decode OTLP traces")
    resp = await post(client, b"{", JSON)
    await assert_otlp_error(resp, 400, "cannot decode OTLP traces JSON")
    resp = await post(client, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":7}]}]}]}', JSON)
    await assert_otlp_error(resp, 400, "cannot decode OTLP traces JSON")
    resp = await post(client, b"", {"Content-Type": "text/plain"})
    await assert_otlp_error(resp, 415, "OTLP traces")
    # Nothing valid at all: still a 200 (the spec's partial success), nothing written.
    resp = await post(client, ExportTraceServiceRequest().SerializeToString(), PROTOBUF)
    assert resp.status == 200 and await resp.read() == b""


async def test_json_bad_ids_and_times_are_rejected_span_by_span(make_client: Any) -> None:
    """A non-hex id, a short id and a bad time in OTLP/JSON: each span alone, as in protobuf."""
    client = await make_client()
    doc = orjson.loads(otlp_json(crafted_request(SPANS[:5])))
    spans = [span for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    spans[0]["spanId"] = "not hex!"  # A's two spans: resource_spans[0]
    spans[1]["traceId"] = "0af7"
    spans[3]["startTimeUnixNano"] = "soon"  # B's second span: resource_spans[1].scope_spans[0].spans[1]
    resp = await post(client, orjson.dumps(doc), JSON)
    assert resp.status == 200, await resp.text()
    answer = (await resp.json())["partialSuccess"]
    assert int(answer["rejectedSpans"]) == 3
    assert answer["errorMessage"] == (
        "rejected 3 span(s): resource_spans[0].scope_spans[0].spans[0]: spanId 'not hex!' is not hex; "
        "resource_spans[0].scope_spans[0].spans[1]: trace_id has 2 bytes, expected 16; "
        "resource_spans[1].scope_spans[0].spans[1]: "
        "startTimeUnixNano 'soon' is not an unsigned 64-bit integer"
    )
    rows = await query(client, "SELECT span_id FROM spans ORDER BY span_id")
    assert rows == [["b000000000000001"], ["b000000000000003"]]


async def test_overload_answers_429_with_retry_after(make_client: Any) -> None:
    client = await make_client(max_buffer_bytes=1)
    resp = await post(client, crafted_request().SerializeToString(), PROTOBUF)
    await assert_otlp_error(resp, 429, "write buffers are full")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_scopes(auth_client: Any) -> None:
    client = auth_client
    body = crafted_request().SerializeToString()
    resp = await client.post("/v1/traces", data=body, headers={**PROTOBUF, **bearer(READ_TOKEN)})
    assert resp.status == 403
    resp = await client.post("/v1/traces", data=body, headers={**PROTOBUF, **bearer(WRITE_TOKEN)})
    assert resp.status == 200
    resp = await client.get(f"/api/v1/traces/{TRACE_1}", headers=bearer(WRITE_TOKEN))
    assert resp.status == 403
    resp = await client.get(f"/api/v1/traces/{TRACE_1}", headers=bearer(READ_TOKEN))
    assert resp.status == 200


@pytest.mark.peer
async def test_opentelemetry_sdk_spans_land_in_spans(auth_client: Any) -> None:
    client = auth_client
    endpoint = str(client.make_url("/v1/traces"))

    def trace_and_export() -> tuple[str, str]:
        # The SDK exporter is synchronous: it and its imports run in a thread, off the event loop.
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode

        exporter = OTLPSpanExporter(
            endpoint=endpoint,
            headers=bearer(WRITE_TOKEN),
            compression=Compression.Gzip,
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracer = provider.get_tracer("shop.web", "1.0")
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.route", "/cart")
            with tracer.start_as_current_span("load cart", kind=SpanKind.INTERNAL) as child:
                child.set_attribute("items", 3)
                child.add_event("cache miss", {"key": "cart:1"})
                child.set_status(Status(StatusCode.ERROR, "db down"))
        provider.shutdown()  # flushes the batch processor: one export
        return format(root.get_span_context().trace_id, "032x"), format(
            child.get_span_context().span_id, "016x"
        )

    trace_id, child_id = await asyncio.to_thread(trace_and_export)
    rows = await query(
        client,
        "SELECT service, name, kind, status, status_message, span_id, parent_span_id IS NULL, scope_name, "
        "json_extract(attributes, '$.items')::INT, json_extract_string(events, '$[0].name') "
        f"FROM spans WHERE trace_id = '{trace_id}' ORDER BY time",
        token=ADMIN_TOKEN,
    )
    assert rows[0][:4] == ["shop", "GET /cart", "server", "unset"]
    assert rows[0][6] is True
    assert rows[1] == [
        "shop",
        "load cart",
        "internal",
        "error",
        "db down",
        child_id,
        False,
        "shop.web",
        3,
        "cache miss",
    ]
    resp = await client.get(f"/api/v1/traces/{trace_id}", headers=bearer(READ_TOKEN))
    tree = await resp.json()
    assert tree["error_origins"] == [child_id]


async def test_self_metrics_count_spans(make_client: Any) -> None:
    client = await make_client()
    request = crafted_request(SPANS[:3])
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b""
    assert (await post(client, request.SerializeToString(), PROTOBUF)).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'tsengine_spans_total{outcome="accepted"} 2' in text
    assert 'tsengine_spans_total{outcome="rejected"} 1' in text
    assert 'tsengine_ingest_rows_total{protocol="otlp_traces"} 2' in text
    assert "tsengine_span_stream_clients 0" in text
