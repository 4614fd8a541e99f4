"""Automatic spans: SERVER spans from the FastAPI and aiohttp middleware, CLIENT spans from the
aiohttp TraceConfig and the httpx hooks against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastapi import FastAPI, HTTPException

from tsengine.instrument import (
    EventCategory,
    Span,
    SpanKind,
    StatusCode,
    Telemetry,
    TelemetryConfig,
    current_span,
    httpx_event_hooks,
    inject,
    setup_telemetry_for_app,
)
from tsengine.instrument.aiohttp import trace_config

from .conftest import FakeClock

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN = 0xB7AD6B7169203331


@pytest.fixture
def trt(clock: FakeClock) -> Iterator[Telemetry]:
    rt = Telemetry(
        TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=True), clock=clock
    )
    yield rt
    rt.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_spans(rt: Telemetry) -> list[Span]:
    return [s for s in rt.tracer.finished_spans() if s.kind is SpanKind.SERVER]


# -- FastAPI ----------------------------------------------------------------------------------------


def fastapi_app(rt: Telemetry) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{id}")
    async def user(id: int) -> dict[str, Any]:
        rt.events.track("user_viewed", category=EventCategory.USER_ACTION)
        span = current_span()
        assert span is not None
        return {"id": id, "span": f"{span.span_id:016x}"}

    @app.get("/denied")
    async def denied() -> None:
        raise HTTPException(status_code=403, detail="no")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler bug")

    setup_telemetry_for_app(app, telemetry=rt)
    return app


@pytest.fixture
async def fastapi_client(trt: Telemetry) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fastapi_app(trt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_fastapi_server_span_continues_the_incoming_trace(
    fastapi_client: httpx.AsyncClient, trt: Telemetry
) -> None:
    resp = await fastapi_client.get("/users/42", headers={"traceparent": PARENT, "tracestate": "v=1"})
    assert resp.status_code == 200
    (span,) = server_spans(trt)
    assert span.name == "GET /users/{id}"
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (PARENT_TRACE, PARENT_SPAN, "v=1")
    assert span.parent_remote
    assert resp.json()["span"] == f"{span.span_id:016x}"  # current inside the handler
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.path": "/users/42",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
    }
    assert span.status_code is StatusCode.UNSET
    ev = trt.events.get_events(name="user_viewed")[0]
    assert (ev.trace_id, ev.span_id) == (f"{PARENT_TRACE:032x}", f"{span.span_id:016x}")


async def test_fastapi_statuses_errors_and_unmatched_paths(
    fastapi_client: httpx.AsyncClient, trt: Telemetry
) -> None:
    assert (await fastapi_client.get("/denied")).status_code == 403
    assert (await fastapi_client.get("/boom")).status_code == 500
    assert (await fastapi_client.get("/nowhere")).status_code == 404
    spans = {s.attributes["url.path"]: s for s in server_spans(trt)}
    assert spans["/denied"].status_code is StatusCode.UNSET  # 4xx: the client's error
    boom = spans["/boom"]
    assert boom.name == "GET /boom" and boom.status_code is StatusCode.ERROR
    assert [e[0] for e in boom.events] == ["exception"]
    assert boom.events[0][2]["exception.type"] == "RuntimeError"
    assert spans["/nowhere"].name == "GET" and "http.route" not in spans["/nowhere"].attributes
    assert all(s.parent_span_id == 0 for s in spans.values())  # no incoming context: new traces


async def test_invalid_traceparent_starts_a_new_trace(
    fastapi_client: httpx.AsyncClient, trt: Telemetry
) -> None:
    await fastapi_client.get("/users/1", headers={"traceparent": PARENT.upper()})
    (span,) = server_spans(trt)
    assert span.trace_id != PARENT_TRACE and span.parent_span_id == 0


async def test_tracing_off_means_no_spans(clock: FakeClock) -> None:
    rt = Telemetry(TelemetryConfig(system_metrics_enabled=False), clock=clock)
    transport = httpx.ASGITransport(app=fastapi_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(AssertionError):  # the handler finds no current span
            await client.get("/users/1", headers={"traceparent": PARENT})
    assert rt.tracer.finished_spans() == []


# -- aiohttp server, aiohttp and httpx clients -------------------------------------------------------


def aiohttp_app(rt: Telemetry, seen: list[dict[str, str]]) -> web.Application:
    async def user(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response({"id": request.match_info["id"]})

    async def fail(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPServiceUnavailable()

    async def crash(request: web.Request) -> web.Response:
        raise ZeroDivisionError("bug")

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    app.router.add_get("/fail", fail)
    app.router.add_get("/crash", crash)
    setup_telemetry_for_app(app, telemetry=rt)
    return app


@pytest.fixture
async def server(trt: Telemetry) -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    srv = TestServer(aiohttp_app(trt, seen), host="127.0.0.1")
    await srv.start_server()
    yield srv, seen
    await srv.close()


async def test_aiohttp_server_spans(server: tuple[TestServer, list[dict[str, str]]], trt: Telemetry) -> None:
    srv, _ = server
    async with aiohttp.ClientSession() as session:
        async with session.get(srv.make_url("/users/7"), headers={"traceparent": PARENT}) as resp:
            assert resp.status == 200
        async with session.get(srv.make_url("/fail")) as resp:
            assert resp.status == 503
        async with session.get(srv.make_url("/crash")) as resp:
            assert resp.status == 500
    spans = {s.attributes["url.path"]: s for s in server_spans(trt)}
    user = spans["/users/7"]
    assert (
        user.name == "GET /users/{id}"
        and user.trace_id == PARENT_TRACE
        and user.parent_span_id == PARENT_SPAN
    )
    assert spans["/fail"].status_code is StatusCode.ERROR and spans["/fail"].events == []
    crash = spans["/crash"]
    assert (
        crash.status_code is StatusCode.ERROR and crash.events[0][2]["exception.type"] == "ZeroDivisionError"
    )


async def test_aiohttp_client_spans_inject_traceparent(
    server: tuple[TestServer, list[dict[str, str]]], trt: Telemetry
) -> None:
    srv, seen = server
    async with aiohttp.ClientSession(trace_configs=[trace_config(trt.performance)]) as session:
        with trt.tracer.start_as_current_span("job") as job:
            async with session.get(srv.make_url("/users/1?token=secret")) as resp:
                assert resp.status == 200
            async with session.get(srv.make_url("/fail")) as resp:
                assert resp.status == 503
    clients = [s for s in trt.tracer.finished_spans(job.trace_id) if s.kind is SpanKind.CLIENT]
    assert [c.name for c in clients] == ["GET", "GET"]
    ok, failed = clients
    assert ok.parent_span_id == job.span_id
    assert seen[0]["traceparent"] == f"00-{job.trace_id:032x}-{ok.span_id:016x}-01"
    assert ok.attributes["url.full"] == f"http://127.0.0.1:{srv.port}/users/1"  # no query string
    assert ok.attributes["http.response.status_code"] == 200 and ok.status_code is StatusCode.UNSET
    assert failed.status_code is StatusCode.ERROR
    # The instrumented server continued the client's spans: one trace, server under client.
    by_parent = {
        s.parent_span_id: s for s in trt.tracer.finished_spans(job.trace_id) if s.kind is SpanKind.SERVER
    }
    assert by_parent[ok.span_id].name == "GET /users/{id}"
    assert by_parent[failed.span_id].name == "GET /fail"


async def test_aiohttp_client_span_on_connection_error(trt: Telemetry) -> None:
    async with aiohttp.ClientSession(trace_configs=[trace_config(trt.performance)]) as session:
        with trt.tracer.start_as_current_span("job") as job, pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{free_port()}/")
    (client,) = [s for s in trt.tracer.finished_spans(job.trace_id) if s.kind is SpanKind.CLIENT]
    assert client.status_code is StatusCode.ERROR
    assert [e[0] for e in client.events] == ["exception"]


async def test_httpx_client_spans_inject_traceparent(
    server: tuple[TestServer, list[dict[str, str]]], trt: Telemetry
) -> None:
    srv, seen = server
    async with httpx.AsyncClient(event_hooks=httpx_event_hooks(trt.performance, asynchronous=True)) as client:
        with trt.tracer.start_as_current_span("job") as job:
            resp = await client.get(str(srv.make_url("/users/3")))
            assert resp.status_code == 200
    (span,) = [s for s in trt.tracer.finished_spans(job.trace_id) if s.kind is SpanKind.CLIENT]
    assert span.parent_span_id == job.span_id
    assert seen[-1]["traceparent"] == f"00-{job.trace_id:032x}-{span.span_id:016x}-01"
    assert span.attributes["server.address"] == "127.0.0.1"


def test_sync_httpx_hooks_inject_into_the_request(trt: Telemetry) -> None:
    received: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.headers.get("traceparent"))
        return httpx.Response(502)

    with (
        httpx.Client(
            transport=httpx.MockTransport(handler), event_hooks=httpx_event_hooks(trt.performance)
        ) as c,
        trt.tracer.start_as_current_span("job") as job,
    ):
        c.get("http://upstream.internal/x")
    (span,) = [s for s in trt.tracer.finished_spans(job.trace_id) if s.kind is SpanKind.CLIENT]
    assert received == [f"00-{job.trace_id:032x}-{span.span_id:016x}-01"]
    assert span.status_code is StatusCode.ERROR


def test_manual_inject_into_outgoing_headers(trt: Telemetry) -> None:
    headers: dict[str, str] = {}
    with trt.tracer.start_as_current_span("publish", SpanKind.PRODUCER) as span:
        inject(headers)
    assert headers == {"traceparent": f"00-{span.trace_id:032x}-{span.span_id:016x}-01"}
