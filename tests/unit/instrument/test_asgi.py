"""The pure ASGI middleware on a real FastAPI app, through httpx.ASGITransport and a lifespan driver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Response
from prometheus_client.parser import text_string_to_metric_families

from tsengine.instrument import (
    EventCategory,
    RequestInfo,
    Telemetry,
    TelemetryConfig,
    current_context,
    setup_telemetry_for_app,
)
from tsengine.instrument.asgi import TelemetryMiddleware

from .test_system import FakePsutil


def make_app(rt: Telemetry, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "cid": current_context().correlation_id}

    @app.get("/secret")
    async def secret() -> None:
        raise HTTPException(status_code=401, detail="no")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler bug")

    @app.get("/own-id")
    async def own_id() -> Response:
        return Response("x", headers={"X-Correlation-ID": "mine"})

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    setup_telemetry_for_app(app, telemetry=rt, **options)
    return app


@pytest.fixture
async def client(rt: Telemetry) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(rt, excluded_paths=["/healthz"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def requests_total(rt: Telemetry, route: str, status: str, method: str = "GET") -> float | None:
    return rt.registry.get_sample_value(
        "http_requests_total", {"method": method, "route": route, "status": status}
    )


async def test_route_template_not_raw_path(client: httpx.AsyncClient, rt: Telemetry) -> None:
    for i in range(5):
        assert (await client.get(f"/items/{i}")).status_code == 200
    assert requests_total(rt, "/items/{item_id}", "200") == 5
    assert (
        rt.registry.get_sample_value(
            "http_request_duration_seconds_count", {"method": "GET", "route": "/items/{item_id}"}
        )
        == 5
    )
    series = rt.registry.get("http_requests").series_count
    assert series == 1


async def test_unmatched_paths_share_one_series(client: httpx.AsyncClient, rt: Telemetry) -> None:
    for i in range(5):
        assert (await client.get(f"/nope/{i}")).status_code == 404
    assert requests_total(rt, "<unmatched>", "404") == 5


async def test_statuses_and_errors(client: httpx.AsyncClient, rt: Telemetry) -> None:
    assert (await client.get("/secret")).status_code == 401
    assert (await client.get("/boom")).status_code == 500
    assert (await client.get("/items/abc")).status_code == 422
    assert requests_total(rt, "/secret", "401") == 1
    assert requests_total(rt, "/boom", "500") == 1
    assert requests_total(rt, "/items/{item_id}", "422") == 1
    st = rt.performance.stats("request", "GET /boom")
    assert st is not None and st["errors"] == 1


async def test_correlation_id_in_and_out(client: httpx.AsyncClient) -> None:
    r = await client.get("/items/1", headers={"X-Request-ID": "req-42"})
    assert r.headers["x-correlation-id"] == "req-42"
    assert r.json()["cid"] == "req-42"
    r = await client.get("/items/1", headers={"X-Correlation-ID": "corr-7", "X-Request-ID": "req-42"})
    assert r.json()["cid"] == "corr-7"
    r = await client.get("/items/1")
    generated = r.headers["x-correlation-id"]
    assert len(generated) == 32 and r.json()["cid"] == generated
    r = await client.get("/items/1", headers={"X-Request-ID": "x" * 500})
    assert r.headers["x-correlation-id"] != "x" * 500
    assert current_context().correlation_id is None
    r = await client.get("/own-id", headers={"X-Request-ID": "req-42"})
    assert r.headers.get_list("x-correlation-id") == ["mine"]


async def test_metrics_endpoint(client: httpx.AsyncClient) -> None:
    await client.get("/items/1")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert "http_requests" in fams and "http_request_duration_seconds" in fams
    om = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")


async def test_health_endpoint_and_excluded_paths(client: httpx.AsyncClient, rt: Telemetry) -> None:
    assert (await client.get("/healthz")).status_code == 200
    r = await client.get("/health/telemetry")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok"
    assert set(doc["components"]) >= {"metrics", "events", "system_metrics", "performance", "exporter"}
    # Neither the excluded path nor the telemetry endpoints are measured.
    assert rt.registry.get("http_requests") is None


async def test_request_hooks_see_route_and_status(client: httpx.AsyncClient, rt: Telemetry) -> None:
    seen: list[tuple[Any, ...]] = []

    class Hook:
        def on_request_start(self, info: RequestInfo) -> object:
            return info.headers.get("traceparent")

        def on_request_end(self, info: RequestInfo, token: object) -> None:
            seen.append((info.framework, info.route, info.status, token, info.correlation_id))

    rt.hooks.add_request_hook(Hook())
    await client.get("/items/9", headers={"traceparent": "00-abc-def-01", "X-Request-ID": "r1"})
    assert seen == [("asgi", "/items/{item_id}", 200, "00-abc-def-01", "r1")]


async def test_security_events(client: httpx.AsyncClient, rt: Telemetry) -> None:
    for _ in range(20):
        await client.get("/secret")
    for i in range(30):
        await client.get(f"/wp-admin/{i}.php")
    events = {e.name: e for e in rt.events.get_events(category=EventCategory.SECURITY)}
    assert events["auth_failure_burst"].attributes["client"] == "10.1.2.3"
    assert events["auth_failure_burst"].attributes["count"] == 20
    assert "/wp-admin/29.php" in events["path_probing"].attributes["recent_paths"]
    # Quiet for the rest of the window: one event per burst, not one per request.
    await client.get("/secret")
    assert len(rt.events.get_events(name="auth_failure_burst")) == 1


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol as a server does (startup, then shutdown)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 10))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 10))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(task, 10)


async def test_lifespan_starts_and_stops_background_work() -> None:
    rt = Telemetry(TelemetryConfig(system_metrics_interval_s=60), psutil_module=FakePsutil())
    app = make_app(rt)
    async with lifespan(app):
        assert rt.system.running
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/items/3")).status_code == 200
            health = (await c.get("/health/telemetry")).json()
        assert health["components"]["system_metrics"]["running"] is True
    assert not rt.system.running


async def test_disabled_telemetry_installs_nothing(clock: Any) -> None:
    rt = Telemetry(TelemetryConfig(enabled=False), clock=clock)
    app = make_app(rt)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/items/1")).status_code == 200
        assert (await c.get("/metrics")).status_code == 404
        assert "x-correlation-id" not in (await c.get("/items/1")).headers
    assert rt.registry.collect() == []


async def test_disabled_at_runtime_passes_through(client: httpx.AsyncClient, rt: Telemetry) -> None:
    rt.apply(rt.config.replace(enabled=False))
    assert (await client.get("/items/1")).status_code == 200
    assert (await client.get("/metrics")).status_code == 404
    assert rt.registry.get("http_requests") is None


async def test_wraps_a_raw_asgi_app(rt: Telemetry) -> None:
    async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = TelemetryMiddleware(raw, telemetry=rt)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/anything/123")
        assert r.status_code == 204 and "x-correlation-id" in r.headers
        body = (await c.get("/health/telemetry")).content
    assert json.loads(body)["status"] == "ok"
    assert requests_total(rt, "<unmatched>", "204") == 1


def test_setup_refuses_unknown_apps(rt: Telemetry) -> None:
    with pytest.raises(TypeError, match="cannot instrument"):
        setup_telemetry_for_app(object(), telemetry=rt)
