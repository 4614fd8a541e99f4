"""Distributed tracing end to end: four services on loopback, one trace per request, in tsengine.

A → B → C are aiohttp services instrumented by tsengine's SDK (server spans from the middleware,
client spans from the aiohttp ``TraceConfig``); B also calls D, a service instrumented by the real
OpenTelemetry SDK (its propagator extracts the ``traceparent`` tsengine injected, its
``OTLPSpanExporter`` posts to tsengine's ``/v1/traces``). C fails on every third request with an
exception. Every span lands in a real tsengine server; the trace tree, the error origin and the
dependency map are read back through the HTTP API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind as OtelSpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server import ServerConfig, create_app
from tests.integration.conftest import free_port, poll
from tsengine import Engine
from tsengine.instrument import Telemetry, TelemetryConfig
from tsengine.instrument.aiohttp import setup_aiohttp, trace_config

REQUESTS = 12
SPANS_PER_TRACE = 7  # A server, A→B client, B server, B→D client, D server, B→C client, C server


def _failing(n: int) -> bool:
    return n % 3 == 0


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _telemetry(service: str, endpoint: str) -> Telemetry:
    return Telemetry(
        TelemetryConfig(
            service_name=service,
            distributed_tracing_enabled=True,
            tracing_sampling_rate=1.0,
            system_metrics_enabled=False,
            exporter_endpoint=endpoint,
            tracing_exporter_flush_interval_s=0.1,
        )
    )


@pytest.fixture
async def tsengine_url(tmp_path: Path) -> AsyncIterator[str]:
    engine = Engine.open(tmp_path / "ts", fsync="none")
    server = TestServer(create_app(engine, ServerConfig()), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        engine.close()


async def test_one_trace_across_tsengine_and_opentelemetry_services(tsengine_url: str) -> None:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []
    rts = {name: _telemetry(name, tsengine_url) for name in ("svc-a", "svc-b", "svc-c")}
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-d"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{tsengine_url}/v1/traces"), schedule_delay_millis=100)
    )
    otel_tracer = provider.get_tracer("e2e")
    propagator = TraceContextTextMapPropagator()
    try:
        # C: fails on every third request with an exception (the error's origin).
        async def c_handler(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            if _failing(n):
                raise RuntimeError(f"order {n} cannot be priced")
            return web.json_response({"priced": n})

        app_c = web.Application()
        app_c.router.add_get("/price/{n}", c_handler)
        setup_aiohttp(app_c, telemetry=rts["svc-c"], manage_background=False)
        runner, c_url = await _serve(app_c)
        runners.append(runner)

        # D: the OpenTelemetry SDK continues the context tsengine injected.
        async def d_handler(request: web.Request) -> web.Response:
            ctx = propagator.extract(dict(request.headers))
            with otel_tracer.start_as_current_span("GET /stock", context=ctx, kind=OtelSpanKind.SERVER):
                return web.json_response({"in_stock": True})

        app_d = web.Application()
        app_d.router.add_get("/stock", d_handler)
        runner, d_url = await _serve(app_d)
        runners.append(runner)

        # B: calls D, then C; answers 502 when C failed.
        b_session = aiohttp.ClientSession(trace_configs=[trace_config(rts["svc-b"].performance)])
        sessions.append(b_session)

        async def b_handler(request: web.Request) -> web.Response:
            n = request.match_info["n"]
            async with b_session.get(f"{d_url}/stock") as r:
                await r.read()
            async with b_session.get(f"{c_url}/price/{n}") as r:
                await r.read()
                if r.status != 200:
                    return web.json_response({"error": "pricing failed"}, status=502)
            return web.json_response({"ok": n})

        app_b = web.Application()
        app_b.router.add_get("/orders/{n}", b_handler)
        setup_aiohttp(app_b, telemetry=rts["svc-b"], manage_background=False)
        runner, b_url = await _serve(app_b)
        runners.append(runner)

        # A: the edge service; passes B's status on.
        a_session = aiohttp.ClientSession(trace_configs=[trace_config(rts["svc-a"].performance)])
        sessions.append(a_session)

        async def a_handler(request: web.Request) -> web.Response:
            async with a_session.get(f"{b_url}/orders/{request.match_info['n']}") as r:
                body = await r.read()
                return web.Response(status=r.status, body=body, content_type="application/json")

        app_a = web.Application()
        app_a.router.add_get("/checkout/{n}", a_handler)
        setup_aiohttp(app_a, telemetry=rts["svc-a"], manage_background=False)
        runner, a_url = await _serve(app_a)
        runners.append(runner)

        for rt in rts.values():
            rt.start()

        async with aiohttp.ClientSession() as plain:  # the user's browser: no trace context
            statuses = []
            for n in range(REQUESTS):
                async with plain.get(f"{a_url}/checkout/{n}") as r:
                    statuses.append(r.status)
        assert statuses == [502 if _failing(n) else 200 for n in range(REQUESTS)]
    finally:
        for s in sessions:
            await s.close()
        for runner in runners:
            await runner.cleanup()
        loop = asyncio.get_running_loop()
        for rt in rts.values():  # flushes the span exporters
            await loop.run_in_executor(None, rt.stop, 10.0)
        await loop.run_in_executor(None, provider.shutdown)

    failures = sum(_failing(n) for n in range(REQUESTS))
    async with aiohttp.ClientSession(tsengine_url) as api:

        async def sql(query: str) -> list[list[Any]]:
            async with api.post("/api/v1/sql", json={"sql": query}) as r:
                assert r.status == 200, await r.text()
                return list((await r.json())["rows"])

        async def all_spans() -> list[list[Any]] | None:
            rows = await sql("SELECT count(*) FROM spans")
            return rows if rows[0][0] >= REQUESTS * SPANS_PER_TRACE else None

        await poll(all_spans, timeout_s=30, what="every span in tsengine")

        # One trace id per request, each spanning all four services.
        traces = await sql(
            "SELECT trace_id, count(*), count(DISTINCT service) FROM spans GROUP BY trace_id ORDER BY 1"
        )
        assert len(traces) == REQUESTS
        assert all(row[1:] == [SPANS_PER_TRACE, 4] for row in traces), traces

        # The tree of each trace, and where its error began.
        failed_traces = 0
        for trace_id, _, _ in traces:
            async with api.get(f"/api/v1/traces/{trace_id}") as r:
                assert r.status == 200
                tree = await r.json()
            spans = {s["span_id"]: s for s in tree["spans"]}
            roots = [s for s in tree["spans"] if s["depth"] == 0]
            assert [(s["service"], s["name"], s["kind"]) for s in roots] == [
                ("svc-a", "GET /checkout/{n}", "server")
            ], roots

            a_client = [spans[c] for c in roots[0]["children"]]
            assert [(s["service"], s["kind"]) for s in a_client] == [("svc-a", "client")]
            (b_server,) = (spans[c] for c in a_client[0]["children"])
            assert (b_server["service"], b_server["name"]) == ("svc-b", "GET /orders/{n}")
            b_calls = sorted((spans[c]["service"], spans[c]["kind"]) for c in b_server["children"])
            assert b_calls == [("svc-b", "client"), ("svc-b", "client")]
            callees = sorted(
                (spans[g]["service"], spans[g]["name"])
                for c in b_server["children"]
                for g in spans[c]["children"]
            )
            assert callees == [("svc-c", "GET /price/{n}"), ("svc-d", "GET /stock")]
            c_server = next(s for s in tree["spans"] if s["service"] == "svc-c")
            if tree["error_count"]:
                failed_traces += 1
                assert tree["error_origins"] == [c_server["span_id"]]
                assert c_server["error_origin"] is True
                assert c_server["status"] == "error"
                assert any(e.get("name") == "exception" for e in c_server["events"]), c_server["events"]
                assert roots[0]["status"] == "error"  # A answered 502: the failure reached the root
            else:
                assert tree["error_origins"] == []
        assert failed_traces == failures

        # The dependency map: A→B, B→C, B→D with their counts and error counts.
        async with api.get("/api/v1/services/dependencies") as r:
            assert r.status == 200
            edges = {(e["caller"], e["callee"]): e for e in (await r.json())["edges"]}
        assert set(edges) == {("svc-a", "svc-b"), ("svc-b", "svc-c"), ("svc-b", "svc-d")}
        assert (edges["svc-a", "svc-b"]["calls"], edges["svc-a", "svc-b"]["errors"]) == (REQUESTS, failures)
        assert (edges["svc-b", "svc-c"]["calls"], edges["svc-b", "svc-c"]["errors"]) == (REQUESTS, failures)
        assert (edges["svc-b", "svc-d"]["calls"], edges["svc-b", "svc-d"]["errors"]) == (REQUESTS, 0)
        for edge in edges.values():
            assert 0 < edge["p50_ns"] <= edge["p95_ns"] <= edge["p99_ns"]
