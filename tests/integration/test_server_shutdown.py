"""Admission of writes, and graceful shutdown: in-flight requests finish, new ones are refused."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
from aiohttp import web

from server import ServerConfig, create_app
from tests.integration.conftest import assert_error, poll


class GatedEngine:
    """The real engine; ``write_batches`` waits until the test opens the gate."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def write_batches(self, batches: list[Any]) -> int:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self._engine.write_batches(batches)


async def _entered(engine: GatedEngine) -> bool:
    return engine.entered.is_set()


async def test_writes_beyond_the_admission_bound_get_503(make_client, engines):
    engine = GatedEngine(engines())
    client = await make_client(
        ServerConfig(port=0, max_concurrent_writes=1, write_queue_timeout_s=0.05), engine=engine
    )
    first = asyncio.create_task(client.post("/write", data=b"m v=1 1"))
    await poll(lambda: _entered(engine), timeout_s=10, what="the first write to reach the engine")
    server_state = (await (await client.get("/health/telemetry")).json())["server"]
    assert server_state["writes_in_flight"] == 1 and server_state["writes_waiting"] == 0
    resp = await client.post("/write", data=b"m v=2 2")
    await assert_error(resp, 503, "ServiceUnavailable", "1 writes are in progress")
    assert resp.headers["Retry-After"] == "1"
    engine.gate.set()
    assert (await first).status == 204
    assert (await client.post("/write", data=b"m v=3 3")).status == 204


async def test_shutdown_finishes_in_flight_requests(engines, unused_tcp_port_factory, no_blocking):
    engine = GatedEngine(engines())
    app = create_app(engine, ServerConfig(port=0))
    runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=10)
    await runner.setup()
    port = unused_tcp_port_factory()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        in_flight = asyncio.create_task(http.post(f"{url}/write", data=b"m v=1 1"))
        await poll(lambda: _entered(engine), timeout_s=10, what="the write to reach the engine")
        cleanup = asyncio.create_task(runner.cleanup())

        async def refused() -> bool:
            try:
                async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/health") as r:
                    return r.status == 503
            except aiohttp.ClientConnectionError:
                return True

        await poll(refused, timeout_s=10, what="the server to stop taking new requests")
        assert not in_flight.done()
        engine.gate.set()
        resp = await in_flight
        assert resp.status == 204
        await cleanup
    assert engine.sql("SELECT v FROM m").column("v").to_pylist() == [1.0]


async def test_writes_get_503_once_draining(client):
    from server.keys import DRAINING_KEY

    client.app[DRAINING_KEY].set()
    resp = await client.post("/write", data=b"m v=1 1")
    await assert_error(resp, 503, "ServiceUnavailable", "shutting down")
    assert resp.headers["Retry-After"] == "5"
    resp = await client.get("/health")
    assert resp.status == 503 and await resp.json() == {"status": "draining"}
    assert (await client.post("/api/v1/sql", json={"sql": "SELECT 1"})).status == 200
