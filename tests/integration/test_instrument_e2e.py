"""End to end: real apps instrumented with ``setup_telemetry_for_app``, serving real HTTP on
loopback, exporting to a real tsengine server — and that server going away and coming back.

* a FastAPI app served by an in-process ``uvicorn.Server`` and an aiohttp app on
  ``web.AppRunner``/``TCPSite``, both on 127.0.0.1, driven by httpx and aiohttp clients;
* a tsengine server (``server.create_app`` over its own engine and data directory) on a free
  port, queried over ``POST /api/v1/sql``.

Everything runs on the test's event loop except the exporter's worker thread, which is what
reaches the tsengine server; explicit flushes go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server import ServerConfig, create_app
from tests.integration.conftest import free_port, poll
from tsengine.instrument import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    HttpExporter,
    Summary,
    Telemetry,
    TelemetryConfig,
    Timer,
    setup_telemetry_for_app,
)
from tsengine.instrument._alerts import ALERT_CATEGORY

ROUTE = "/items/{item_id}"


class TsengineServer:
    """A tsengine server on a fixed port over a data directory; stop() closes server and engine."""

    def __init__(self, path: Path, port: int) -> None:
        self.path, self.port = path, port
        self._server: TestServer | None = None
        self._engine: Any = None

    async def start(self) -> None:
        from tsengine import Engine

        self._engine = await asyncio.to_thread(Engine.open, self.path, fsync="none")
        self._server = TestServer(create_app(self._engine, ServerConfig(port=0)), port=self.port)
        await self._server.start_server(auto_decompress=False)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
            self._engine = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def sql(self, sql: str) -> list[list[Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v1/sql", json={"sql": sql}) as resp,
        ):
            body = await resp.json()
            assert resp.status == 200, body
            return list(body["rows"])

    async def count(self, sql: str) -> int:
        """``SELECT count(*) ...`` — 0 while the table does not exist yet."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v1/sql", json={"sql": sql}) as resp,
        ):
            body = await resp.json()
            if resp.status != 200:
                return 0
            return int(body["rows"][0][0])


@pytest.fixture
async def tsengine_server(tmp_path: Path) -> AsyncIterator[TsengineServer]:
    server = TsengineServer(tmp_path / "server-data", free_port())
    await server.start()
    yield server
    await server.stop()


def make_telemetry(**config: Any) -> Telemetry:
    config.setdefault("system_metrics_enabled", False)
    config.setdefault("slow_request_threshold_s", 60.0)  # no "slow request" events on a busy machine
    config.setdefault("service_name", "shop")
    return Telemetry(TelemetryConfig(**config), registry=CollectorRegistry())


def exporter_for(server: TsengineServer, **kw: Any) -> HttpExporter:
    kw.setdefault("interval_s", 3600.0)  # snapshots only when the test asks
    kw.setdefault("timeout_s", 2.0)
    return HttpExporter(server.url, **kw)


# -- the apps --------------------------------------------------------------------------------------


def fastapi_app(rt: Telemetry) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        rt.events.track("item_viewed", category="user_action", attributes={"item_id": item_id})
        return {"id": item_id}

    @app.get("/pay/{order_id}")
    async def pay(order_id: int) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": "payment provider down"}, status_code=503)

    setup_telemetry_for_app(app, telemetry=rt)
    return app


def aiohttp_app(rt: Telemetry) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        item_id = int(request.match_info["item_id"])
        rt.events.track("item_viewed", category="user_action", attributes={"item_id": item_id})
        return web.json_response({"id": item_id})

    app = web.Application()
    app.router.add_get("/items/{item_id}", item)
    setup_telemetry_for_app(app, telemetry=rt)
    return app


@contextlib.asynccontextmanager
async def serve_uvicorn(app: Any) -> AsyncIterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await poll(lambda: asyncio.sleep(0, server.started or task.done()), timeout_s=20, what="uvicorn")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve_aiohttp(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get_httpx(
    base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with httpx.AsyncClient(base_url=base) as client:
        resp = await client.get(path, headers=headers)
        return resp.status_code, dict(resp.headers), resp.text


async def get_aiohttp(
    base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(base + path, headers=headers) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.text()


Getter = Callable[..., Any]
APPS = [
    pytest.param(fastapi_app, serve_uvicorn, get_httpx, id="fastapi-uvicorn"),
    pytest.param(aiohttp_app, serve_aiohttp, get_aiohttp, id="aiohttp"),
]


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "serve", "get"), APPS)
async def test_requests_metrics_and_events_reach_the_server(
    tsengine_server: TsengineServer, build: Callable[..., Any], serve: Any, get: Getter
) -> None:
    rt = make_telemetry()
    exporter = exporter_for(tsengine_server)
    rt.set_exporter(exporter)
    async with serve(build(rt)) as base:
        assert exporter.running  # app startup started the worker
        ids = {}
        for item_id, header in ((1, "X-Request-ID"), (2, "X-Correlation-ID"), (3, None)):
            headers = {header: f"req-{item_id}"} if header else None
            status, resp_headers, body = await get(base, f"/items/{item_id}", headers)
            assert (status, json.loads(body)) == (200, {"id": item_id})
            cid = resp_headers["x-correlation-id"]
            assert cid == f"req-{item_id}" if header else len(cid) >= 16
            ids[item_id] = cid
        status, _, _ = await get(base, "/items/not-a-number")  # 422 (FastAPI) / 500 (aiohttp int())
        assert status >= 400

        # The app's own /metrics: route templates, never raw ids.
        status, _, text = await get(base, "/metrics")
        assert status == 200
        assert f'route="{ROUTE}"' in text and "/items/1" not in text and "not-a-number" not in text
        assert "http_request_duration_seconds_bucket" in text
        status, _, health = await get(base, "/health/telemetry")
        assert status == 200 and json.loads(health)["service"] == "shop"

        exporter.export_now()
        assert await asyncio.to_thread(exporter.flush, 10.0) is True

    sql = tsengine_server.sql
    rows = await sql(
        "SELECT method, route, status, value FROM http_requests_total "
        "WHERE service = 'shop' ORDER BY status, time DESC LIMIT 1"
    )
    assert rows == [["GET", ROUTE, "200", 3.0]]
    assert await sql("SELECT DISTINCT route FROM http_request_duration_seconds_count") == [[ROUTE]]
    rows = await sql(
        "SELECT max(value) FROM http_request_duration_seconds_bucket "
        "WHERE route = '/items/{item_id}' AND le = '+Inf'"
    )
    assert rows == [[4.0]]
    events = await sql(
        "SELECT correlation_id, attributes, service FROM events WHERE name = 'item_viewed' ORDER BY id"
    )
    assert [(r[0], json.loads(r[1])["item_id"], r[2]) for r in events] == [
        (ids[1], 1, "shop"),
        (ids[2], 2, "shop"),
        (ids[3], 3, "shop"),
    ]
    assert not exporter.running  # app shutdown stopped the worker
    assert exporter.stats.values["dropped"] == exporter.stats.values["rejected"] == 0


def direct_metrics(registry: CollectorRegistry) -> tuple[Callable[[], None], Callable[[], float]]:
    """Metrics built with the constructors, as at import time: ``(update, total)``."""
    counter = Counter("rv_disabled_total", "d", ["kind"], registry=registry)
    bound = counter.labels("kept")
    gauge = Gauge("rv_depth", "g", registry=registry)
    histogram = Histogram("rv_seconds", "h", registry=registry)
    summary = Summary("rv_size_bytes", "s", registry=registry)
    timer = Timer(histogram)

    @histogram.time()
    def timed() -> None:
        return None

    def update() -> None:
        counter.labels("new").inc(5)
        bound.inc()
        gauge.set(7)
        histogram.observe(0.3)
        summary.observe(10)
        with timer:
            pass
        timed()

    def total() -> float:
        families = [f for m in (counter, gauge, histogram, summary) for f in m.collect()]
        return sum(s.value for f in families for s in f.samples)

    return update, total


@pytest.mark.parametrize(("build", "serve", "get"), APPS)
async def test_a_disabled_sdk_does_nothing_observable(
    build: Callable[..., Any], serve: Any, get: Getter
) -> None:
    rt = make_telemetry()
    update, total = direct_metrics(rt.registry)  # built before configure() turns everything off
    rt.apply(rt.config.replace(enabled=False))
    async with serve(build(rt)) as base:
        update()
        status, headers, _ = await get(base, "/items/1", {"X-Request-ID": "req-1"})
        assert status == 200
        assert "x-correlation-id" not in headers
        assert (await get(base, "/metrics"))[0] == 404
        assert (await get(base, "/health/telemetry"))[0] == 404
    assert total() == 0
    assert rt.registry.collect() == []
    assert rt.events.get_events() == []
    assert rt.exporter is None and not rt.system.running


@pytest.mark.parametrize(("build", "serve", "get"), APPS)
async def test_metrics_switched_off_reach_neither_metrics_nor_the_server(
    tsengine_server: TsengineServer, build: Callable[..., Any], serve: Any, get: Getter
) -> None:
    rt = make_telemetry()
    update, total = direct_metrics(rt.registry)
    rt.apply(rt.config.replace(metrics_enabled=False))
    exporter = exporter_for(tsengine_server)
    rt.set_exporter(exporter)
    async with serve(build(rt)) as base:
        update()
        assert (await get(base, "/items/1", {"X-Request-ID": "req-1"}))[0] == 200
        assert (await get(base, "/metrics"))[0] == 404
        exporter.export_now()
        assert await asyncio.to_thread(exporter.flush, 10.0) is True

    assert total() == 0
    # Events still flow (the exporter works), metrics do not.
    assert await tsengine_server.sql("SELECT correlation_id FROM events WHERE name = 'item_viewed'") == [
        ["req-1"]
    ]
    assert await tsengine_server.count("SELECT count(*) FROM rv_disabled_total") == 0
    assert await tsengine_server.count("SELECT count(*) FROM http_requests_total") == 0


async def test_server_outage_loses_nothing_beyond_the_queue_bound(tsengine_server: TsengineServer) -> None:
    max_queue, batch_size = 40, 10
    rt = make_telemetry()
    # No periodic snapshots (interval_s): the queue holds only the events, so the dropped
    # counter can be checked against them exactly. Retries come quickly (max_backoff_s).
    exporter = exporter_for(tsengine_server, max_queue=max_queue, batch_size=batch_size, max_backoff_s=0.3)
    rt.set_exporter(exporter)

    async def traffic(base: str, ids: range) -> None:
        async with httpx.AsyncClient(base_url=base) as client:
            for i in ids:
                resp = await client.get(f"/items/{i}", headers={"X-Request-ID": f"req-{i}"})
                assert resp.status_code == 200

    async def arrived(lo: int, hi: int) -> list[int]:
        rows = await tsengine_server.sql(
            "SELECT correlation_id FROM events WHERE name = 'item_viewed' ORDER BY correlation_id"
        )
        got = sorted(int(r[0].removeprefix("req-")) for r in rows)
        return [i for i in got if lo <= i < hi]

    async with serve_uvicorn(fastapi_app(rt)) as base:
        await traffic(base, range(0, 5))
        assert await asyncio.to_thread(exporter.flush, 10.0) is True
        assert await arrived(0, 5) == list(range(5))

        await tsengine_server.stop()  # the server goes away (its engine closed, data on disk)
        await traffic(base, range(100, 110))
        assert await asyncio.to_thread(exporter.flush, 0.3) is False  # a failed push...
        await poll(  # ...and the worker keeps retrying on its own
            lambda: asyncio.sleep(0, exporter.stats.values["retries"] >= 3), timeout_s=10, what="retries"
        )
        await traffic(base, range(110, 200))  # the app keeps serving; the queue overflows
        dropped = exporter.stats.values["dropped"]
        assert dropped > 0 and exporter.queued_rows == 100 - dropped <= max_queue
        assert dropped % batch_size == 0  # whole oldest batches

        await tsengine_server.start()  # back on the same port and data directory
        kept = list(range(100 + dropped, 200))  # the newest events, those that fitted in the queue

        async def queue_arrived() -> bool:
            return await arrived(100, 200) == kept

        await poll(queue_arrived, timeout_s=30, what="the queued events after the outage")
        assert exporter.queued_rows == 0

        await traffic(base, range(200, 205))  # and the app's traffic flows on
        assert await asyncio.to_thread(exporter.flush, 10.0) is True
        assert await arrived(200, 205) == list(range(200, 205))
    assert await arrived(0, 5) == list(range(5))  # what came before the outage survived the restart
    assert exporter.stats.values["dropped"] == dropped  # nothing else lost
    assert exporter.stats.values["rejected"] == 0
    assert await tsengine_server.count("SELECT count(*) FROM events") == 5 + len(kept) + 5


async def test_app_side_alerts_show_on_health_and_reach_the_server(tsengine_server: TsengineServer) -> None:
    rt = make_telemetry(alerts_enabled=True)
    exporter = exporter_for(tsengine_server)
    rt.set_exporter(exporter)
    async with serve_uvicorn(fastapi_app(rt)) as base:
        for i in range(10):
            status, _, _ = await get_httpx(base, f"/pay/{i}")
            assert status == 503
        status, _, body = await get_httpx(base, "/health/telemetry")
        (alert,) = json.loads(body)["components"]["alerts"]["firing"]
        assert (alert["name"], alert["labels"], alert["value"]) == (
            "high_error_rate",
            {"route": "GET /pay/{order_id}"},
            1.0,
        )
        assert await asyncio.to_thread(exporter.flush, 10.0) is True
    rows = await tsengine_server.sql(
        "SELECT name, category, severity, attributes FROM events WHERE name = 'high_error_rate'"
    )
    assert [r[:3] for r in rows] == [["high_error_rate", ALERT_CATEGORY.value, "error"]]
    attributes = json.loads(rows[0][3])
    assert attributes["state"] == "firing" and attributes["labels"] == {"route": "GET /pay/{order_id}"}
