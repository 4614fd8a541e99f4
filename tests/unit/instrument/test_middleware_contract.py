"""What both middlewares (aiohttp and ASGI) promise alike: telemetry failing never fails a request.

Each test runs once per adapter, on the real app of that adapter's own test module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tsengine.instrument import Metric, RequestInfo, Telemetry

from .test_aiohttp import make_app as make_aiohttp_app
from .test_asgi import make_app as make_asgi_app

#: GET a path, return the status.
Get = Callable[[str], Awaitable[int]]


@pytest.fixture(params=["aiohttp", "asgi"])
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test; also its module's name and its error-counter ``component``."""
    return str(request.param)


@pytest.fixture
async def get(adapter: str, rt: Telemetry, aiohttp_client: Any) -> AsyncIterator[Get]:
    if adapter == "aiohttp":
        client = await aiohttp_client(make_aiohttp_app(rt))

        async def get_aiohttp(path: str) -> int:
            return int((await client.get(path)).status)

        yield get_aiohttp
        return
    transport = httpx.ASGITransport(app=make_asgi_app(rt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

        async def get_asgi(path: str) -> int:
            return (await c.get(path)).status_code

        yield get_asgi


def broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError("registry exploded")


async def test_telemetry_raising_never_breaks_the_app(
    get: Get, adapter: str, rt: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rt.performance, "record_request", broken)
    assert await get("/items/5") == 200
    assert await get("/secret") in (401, 403)  # the handler's own error still reaches the client
    monkeypatch.setattr(f"tsengine.instrument.{adapter}.pick_correlation_id", broken)
    assert await get("/items/6") == 200
    assert rt.registry.get_sample_value("tsengine_instrument_errors_total", {"component": adapter}) == 3


async def test_registry_raising_on_every_metric_never_breaks_the_app(
    get: Get, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Even the SDK's own error counter fails here: the failure can only be logged.
    monkeypatch.setattr(Metric, "labels", broken)
    with caplog.at_level(logging.ERROR, logger="tsengine.instrument"):
        assert await get("/items/3") == 200
    assert "telemetry middleware failed at finish" in caplog.text


async def test_request_hook_ends_even_when_recording_fails(
    get: Get, rt: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[int | None] = []

    class Hook:
        def on_request_start(self, info: RequestInfo) -> object:
            return "span"

        def on_request_end(self, info: RequestInfo, token: object) -> None:
            ended.append(info.status)

    rt.hooks.add_request_hook(Hook())
    monkeypatch.setattr(rt.performance, "record_request", broken)
    assert await get("/items/1") == 200
    assert ended == [200]
