"""Deliveries outside the state lock, and the bounds on what the alert service holds.

A real server; a webhook channel pointing at a real socket on 127.0.0.1 that accepts and never
answers until the test lets it; time driven by the engine's ManualClock (no sleeps).

Shown: a hanging channel does not delay an acknowledgement, a silence or a rule change; a second
round waits for the first round's deliveries and sends nothing twice; ``max_alerts`` bounds every
instance (refused past it: metric, rule error, a bounded state file); a rule's ``limit`` fails its
evaluation and leaves its instances unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server import ServerConfig
from server.keys import ALERTING_KEY
from tests.integration.conftest import engine_of, poll
from tsengine.clock import ManualClock

S = 1_000_000_000
Make = Callable[..., Awaitable[TestClient]]
#: What the API calls made while a delivery hangs may take (the channel's timeout is 8 s).
QUICK_S = 2.0


class SilentServer:
    """Accepts connections, reads, and answers only once ``release`` is set (then 200)."""

    def __init__(self) -> None:
        self.connections = 0
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    s = SilentServer()
    s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    yield s
    s.release.set()
    s.server.close()
    await s.server.wait_closed()


def config(**alerting: Any) -> ServerConfig:
    return ServerConfig(
        port=0,
        alerting={"default_rules": False, **alerting},
        tasks={"intervals": {"alert_evaluation": 0}},
    )


HOT = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
       "group_by": ["room"], "threshold": 30, "for": "0s"}  # fmt: skip


def temp(client: TestClient, clock: ManualClock, rooms: dict[str, float]) -> None:
    rows = [{"time": clock.now_ns(), "room": r, "value": v} for r, v in rooms.items()]
    engine_of(client).write_rows("temp", rows, tags=["room"])


async def quick(call: Awaitable[Any]) -> tuple[Any, float]:
    """Await ``call``; fail if it takes more than QUICK_S (it would wait for the hanging channel)."""
    t0 = time.monotonic()
    result = await asyncio.wait_for(call, QUICK_S)
    return result, time.monotonic() - t0


async def test_a_hanging_channel_does_not_delay_ack_silences_or_rules(
    make_client: Make, silent: SilentServer, clock: ManualClock
) -> None:
    stuck = {"type": "webhook", "url": silent.url, "timeout": "8s", "retries": 0}
    client = await make_client(
        config(channels={"stuck": stuck}, default_route={"channels": ["stuck"], "repeat_interval": "1h"})
    )
    assert (await client.post("/api/v1/rules", json=HOT)).status == 201
    temp(client, clock, {"kitchen": 35})
    first = asyncio.create_task(client.post("/api/v1/rules/evaluate"))

    async def connected() -> int:
        return silent.connections

    await poll(connected, timeout_s=5, what="the webhook delivery to reach the silent socket")
    second = asyncio.create_task(client.post("/api/v1/rules/evaluate"))  # waits for the first round

    [alert] = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    resp, took = await quick(client.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "alice"}))
    assert resp.status == 200 and took < QUICK_S
    silence = {"matchers": ['room="garage"'], "duration": "1h"}
    resp, took = await quick(client.post("/api/v1/silences", json=silence))
    assert resp.status == 201, await resp.text()
    resp, _ = await quick(client.put("/api/v1/rules/hot", json={"threshold": 31}))
    assert resp.status == 200 and (await resp.json())["threshold"] == 31.0
    assert not first.done() and not second.done()

    silent.release.set()
    body = await (await first).json()
    assert body["notifications_sent"] == 1 and body["transitions"] == 2  # pending, firing
    body = await (await second).json()
    assert body["notifications_sent"] == 0 and body["notifications_failed"] == 0
    assert silent.connections == 1  # the second round saw the first's send recorded
    clock.advance(600)
    temp(client, clock, {"kitchen": 35})
    body = await (await client.post("/api/v1/rules/evaluate")).json()
    assert body["notifications_sent"] == 0  # acknowledged: no repeat
    [alert] = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    assert alert["acknowledged_by"] == "alice" and alert["state"] == "firing"


async def test_max_alerts_bounds_every_instance(make_client: Make, clock: ManualClock) -> None:
    client = await make_client(config(max_alerts=50))
    many = {"name": "many", "kind": "sql", "for": "5m",
            "sql": "SELECT 'k' || range::VARCHAR AS k, 1.0 AS value FROM range(3000)"}  # fmt: skip
    assert (await client.post("/api/v1/rules", json=many)).status == 201
    for _ in range(2):
        body = await (await client.post("/api/v1/rules/evaluate")).json()
        assert body["pending"] == 50 and body["refused"] == 2950, body
        clock.advance(60)
    service = client.app[ALERTING_KEY]
    assert len(service.state.instances) == 50
    assert service.state.path.stat().st_size < 50_000
    rule = await (await client.get("/api/v1/rules/many")).json()
    assert "cannot track 2950 new alerts of rule 'many'" in rule["last_error"]
    assert "max_alerts" in rule["last_error"]
    metrics = await (await client.get("/metrics")).text()
    assert "tsengine_alert_instances_refused_total 5900" in metrics
    # the rule now returns one of the tracked groups: it fires, the other 49 go inactive
    await client.put("/api/v1/rules/many", json={"for": "0s", "sql": "SELECT 'k1' AS k, 1.0 AS value"})
    body = await (await client.post("/api/v1/rules/evaluate")).json()
    assert body["firing"] == 1 and body["refused"] == 0


async def test_rule_limit_fails_the_evaluation_and_keeps_instances(
    make_client: Make, clock: ManualClock
) -> None:
    client = await make_client(config())
    rule = {**HOT, "for": "2m", "limit": 3}
    assert (await client.post("/api/v1/rules", json=rule)).status == 201
    temp(client, clock, {"a": 35, "b": 35})
    assert (await (await client.post("/api/v1/rules/evaluate")).json())["pending"] == 2
    before = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    clock.advance(180)  # past `for`: without the limit both would fire and two more would pend
    temp(client, clock, {"a": 35, "b": 35, "c": 35, "d": 35})
    body = await (await client.post("/api/v1/rules/evaluate")).json()
    assert body["errors"] == 1 and body["firing"] == 0 and body["pending"] == 2
    assert (await (await client.get("/api/v1/alerts")).json())["alerts"] == before
    got = await (await client.get("/api/v1/rules/hot")).json()
    assert got["limit"] == 3
    assert "4 alerts exceed the rule's limit of 3" in got["last_error"]
    clock.advance(601)  # c and d leave the window: back under the limit, evaluation resumes
    temp(client, clock, {"a": 35, "b": 35})
    body = await (await client.post("/api/v1/rules/evaluate")).json()
    assert body["errors"] == 0 and body["firing"] == 2
