"""The aiohttp adapter on a real aiohttp app through pytest-aiohttp's ``aiohttp_client``."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tsengine.instrument import (
    EventCategory,
    RequestInfo,
    Telemetry,
    TelemetryConfig,
    current_context,
    setup_telemetry_for_app,
)
from tsengine.instrument.aiohttp import TELEMETRY_KEY

from .test_system import FakePsutil


def make_app(rt: Telemetry) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.json_response(
            {"id": request.match_info["item_id"], "cid": current_context().correlation_id}
        )

    async def secret(request: web.Request) -> web.Response:
        raise web.HTTPForbidden()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("handler bug")

    async def own_id(request: web.Request) -> web.Response:
        return web.Response(text="x", headers={"X-Correlation-ID": "mine"})

    app = web.Application()
    app.router.add_get("/own-id", own_id)
    app.router.add_get("/items/{item_id}", item)
    app.router.add_get("/secret", secret)
    app.router.add_get("/boom", boom)
    setup_telemetry_for_app(app, telemetry=rt)
    return app


@pytest.fixture
async def client(aiohttp_client: Any, rt: Telemetry) -> Any:
    return await aiohttp_client(make_app(rt))


def requests_total(rt: Telemetry, route: str, status: str) -> float | None:
    return rt.registry.get_sample_value(
        "http_requests_total", {"method": "GET", "route": route, "status": status}
    )


async def test_route_templates_statuses_and_errors(client: Any, rt: Telemetry) -> None:
    for i in range(3):
        assert (await client.get(f"/items/{i}")).status == 200
    assert (await client.get("/secret")).status == 403
    assert (await client.get("/boom")).status == 500
    assert (await client.get("/no/such/path")).status == 404
    assert requests_total(rt, "/items/{item_id}", "200") == 3
    assert requests_total(rt, "/secret", "403") == 1
    assert requests_total(rt, "/boom", "500") == 1
    assert requests_total(rt, "<unmatched>", "404") == 1


async def test_correlation_id(client: Any) -> None:
    r = await client.get("/items/1", headers={"X-Request-ID": "req-9"})
    assert r.headers["X-Correlation-ID"] == "req-9"
    assert (await r.json())["cid"] == "req-9"
    r = await client.get("/secret", headers={"X-Correlation-ID": "c-1"})
    assert r.headers["X-Correlation-ID"] == "c-1"
    r = await client.get("/items/1")
    assert len(r.headers["X-Correlation-ID"]) == 32
    r = await client.get("/own-id", headers={"X-Request-ID": "req-9"})
    assert r.headers.getall("X-Correlation-ID") == ["mine"]


async def test_metrics_and_health_endpoints(client: Any, rt: Telemetry) -> None:
    await client.get("/items/1")
    r = await client.get("/metrics")
    assert r.status == 200
    fams = {f.name for f in text_string_to_metric_families(await r.text())}
    assert {"http_requests", "http_request_duration_seconds"} <= fams
    r = await client.get("/health/telemetry")
    assert (await r.json())["status"] == "ok"
    # The telemetry endpoints themselves are not measured.
    assert requests_total(rt, "/metrics", "200") is None
    assert client.app[TELEMETRY_KEY] is rt


async def test_hooks_and_security_events(client: Any, rt: Telemetry) -> None:
    seen: list[tuple[Any, ...]] = []

    class Hook:
        def on_request_start(self, info: RequestInfo) -> object:
            return info.headers.get("traceparent")

        def on_request_end(self, info: RequestInfo, token: object) -> None:
            seen.append((info.framework, info.route, info.status, token))

    rt.hooks.add_request_hook(Hook())
    await client.get("/items/1", headers={"traceparent": "00-t-s-01"})
    assert seen == [("aiohttp", "/items/{item_id}", 200, "00-t-s-01")]
    for _ in range(20):
        await client.get("/secret")
    (ev,) = rt.events.get_events(category=EventCategory.SECURITY)
    assert ev.name == "auth_failure_burst"


async def test_cleanup_ctx_starts_and_stops_the_sampler(aiohttp_client: Any) -> None:
    rt = Telemetry(TelemetryConfig(system_metrics_interval_s=60), psutil_module=FakePsutil())
    client = await aiohttp_client(make_app(rt))
    assert rt.system.running
    await client.close()
    assert not rt.system.running
