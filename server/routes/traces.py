"""Traces: OTLP/HTTP span ingestion, trace lookup and search, the dependency map, the live stream.

* ``POST /v1/traces`` (write) — an ``ExportTraceServiceRequest``, ``application/x-protobuf`` or
  ``application/json``, gzip allowed, ``db`` selects the database. The valid spans are written to
  the append-only ``spans`` table in one engine call, then offered to stream subscribers. 200
  with an ``ExportTraceServiceResponse`` in the request's encoding, ``partial_success`` naming
  the rejected spans; an undecodable body → 400; overload → 429/503 with Retry-After.
* ``GET /api/v1/traces/{trace_id}?start=&end=`` (read) — the span tree (:mod:`server.tracing.tree`);
  404 when no span has that id. ``start``/``end`` (optional, as Tempo's) bound the spans' start
  times, which prunes files; without them every stored span of the trace is read.
* ``GET /api/v1/traces?service=&operation=&min_duration=&max_duration=&error=&start=&end=&limit=``
  (read) — one row per trace, newest first (:func:`server.tracing.queries.search_traces`).
* ``GET /api/v1/services/dependencies?start=&end=`` (read) — caller → callee edges.
* ``GET /api/v1/traces/stream?service=&error=`` (read) — server-sent events, one ``span`` event
  per stored span; a comment line every ``KEEPALIVE_S``; a client that falls a whole buffer
  behind is disconnected (:mod:`server.tracing.hub`).
"""

from __future__ import annotations

from aiohttp import web

from server.auth import requires
from server.body import otlp_content_type
from server.ingest import ingest
from server.keys import CONFIG_KEY, ENGINE_KEY, METRICS_KEY, TRACE_DECODER_KEY, TRACE_HUB_KEY, run_blocking
from server.routes import json_response
from server.tracing import queries
from server.tracing.hub import SpanFilter, serve_stream
from server.tracing.params import (
    parse_bool,
    parse_db,
    parse_duration_ns,
    parse_limit,
    parse_time_ns,
    time_range,
)
from server.tracing.tree import build_tree
from tsengine.errors import InvalidInput, NotFound
from tsengine.model import TableBatch
from tsengine.protocols import otlp_traces

__all__ = ["ROUTES"]

PROTOCOL = "otlp_traces"
MAX_SEARCH_LIMIT = 1000


@requires("write")
async def export(request: web.Request) -> web.StreamResponse:
    content_type = otlp_content_type(request, "traces")
    app = request.app
    engine, config, metrics = app[ENGINE_KEY], app[CONFIG_KEY], app[METRICS_KEY]
    db = parse_db(request.query)
    decoder = app[TRACE_DECODER_KEY]
    decoded: list[otlp_traces.SpanBatch] = []

    def parse(body: bytes) -> list[TableBatch]:  # on an ingest worker
        result = decoder.decode(
            body, content_type=content_type, db=db, max_tag_bytes=config.max_label_value_bytes
        )
        decoded.append(result)
        if result.batch is None:
            return []
        engine.declare_table(otlp_traces.SPANS_TABLE, db=db, append_only=True)
        return [result.batch]

    def respond() -> web.StreamResponse:  # after the engine acknowledged the write
        result = decoded[0] if decoded else None
        if result is not None:
            metrics.spans.labels("accepted").inc(result.accepted)
            metrics.spans.labels("rejected").inc(result.rejected)
            if result.batch is not None:
                app[TRACE_HUB_KEY].publish(result.batch)
        body = otlp_traces.encode_response(result, content_type)
        return web.Response(status=200, body=body, content_type=content_type)

    return await ingest(request, PROTOCOL, parse, response=respond)


@requires("read")
async def get_trace(request: web.Request) -> web.StreamResponse:
    trace_id = request.match_info["trace_id"].lower()
    db = parse_db(request.query)
    q = request.query
    start = parse_time_ns("start", q["start"]) if q.get("start") else None
    end = parse_time_ns("end", q["end"]) if q.get("end") else None
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"cannot find trace {trace_id}: start {start} is after end {end}")
    rows, truncated = await run_blocking(
        request, "query", queries.trace_spans, request.app[ENGINE_KEY], db, trace_id, start, end
    )
    if not rows:
        where = "" if start is None and end is None else " starting in the start/end window"
        raise NotFound(f"cannot find trace {trace_id}: no span of it is stored in database {db!r}{where}")
    return json_response(build_tree(trace_id, rows, truncated=truncated))


@requires("read")
async def search(request: web.Request) -> web.StreamResponse:
    q = request.query
    engine = request.app[ENGINE_KEY]
    db = parse_db(request.query)
    start, end = time_range(q, engine.clock.now_ns())
    f = queries.SearchFilter(
        start_ns=start,
        end_ns=end,
        service=q.get("service") or None,
        operation=q.get("operation") or None,
        min_duration_ns=parse_duration_ns("min_duration", q["min_duration"])
        if q.get("min_duration")
        else None,
        max_duration_ns=parse_duration_ns("max_duration", q["max_duration"])
        if q.get("max_duration")
        else None,
        error=parse_bool("error", q.get("error")),
        limit=parse_limit(q.get("limit"), default=20, maximum=MAX_SEARCH_LIMIT),
    )
    traces = await run_blocking(request, "query", queries.search_traces, engine, db, f)
    return json_response({"start_ns": start, "end_ns": end, "traces": traces})


@requires("read")
async def service_dependencies(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    db = parse_db(request.query)
    start, end = time_range(request.query, engine.clock.now_ns())
    edges = await run_blocking(request, "query", queries.dependencies, engine, db, start, end)
    return json_response({"start_ns": start, "end_ns": end, "edges": edges})


@requires("read")
async def stream(request: web.Request) -> web.StreamResponse:
    spans_filter = SpanFilter(
        db=parse_db(request.query),
        service=request.query.get("service") or None,
        error=parse_bool("error", request.query.get("error")),
    )
    metrics = request.app[METRICS_KEY]
    return await serve_stream(
        request,
        request.app[TRACE_HUB_KEY],
        spans_filter,
        clients=metrics.span_stream_clients,
        dropped=metrics.span_stream_dropped,
    )


ROUTES = [
    web.post("/v1/traces", export),
    web.get("/api/v1/traces/stream", stream),
    web.get("/api/v1/traces", search),
    web.get("/api/v1/traces/{trace_id:[0-9a-fA-F]{32}}", get_trace),
    web.get("/api/v1/services/dependencies", service_dependencies),
]
