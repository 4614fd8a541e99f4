"""The events API on a real server: write (all or nothing), search with filters, scopes, the live stream.

Events arrive on the stream from every path that writes them — ``POST /api/v1/events``,
``/api/v1/import`` rows of table ``events`` and ``POST /v1/logs`` — only after they are
stored. A client that stops reading is cut off (a raw socket with a small receive buffer;
polled with a deadline, no sleeping).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from server import ServerConfig
from server.keys import EVENT_HUB_KEY, METRICS_KEY
from tests.integration.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    read_sse,
    stuck_stream_client,
)

DEADLINE_S = 30.0
NOW = 1_700_000_000_000_000_000  # the ManualClock's start (the engine's clock in these tests)
MIN = 60 * 10**9


def event(name: str = "order.placed", **extra: Any) -> dict[str, Any]:
    return {"service": "shop", "category": "business", "severity": "info", "name": name, **extra}


async def post_events(client: Any, body: Any, *, db: str | None = None, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    return await client.post("/api/v1/events" + (f"?db={db}" if db else ""), data=data, headers=headers)


async def search(client: Any, query: str = "", **headers: str) -> Any:
    resp = await client.get("/api/v1/events" + (f"?{query}" if query else ""), headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["events"]


async def test_write_then_search_with_every_filter(make_client: Any) -> None:
    client = await make_client()
    batch = [
        event(time=NOW - 30 * MIN, message="Order 1 placed", attributes={"amount": 12}),
        event("login.failed", category="security", severity="warning", time=NOW - 20 * MIN, user_id="u7"),
        event("db.down", service="billing", category="system", severity="critical", time=NOW - 10 * MIN),
        event("cache.miss", category="performance", severity="debug", time=NOW - 5 * MIN),
    ]
    resp = await post_events(client, batch)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"written": 4}
    # NDJSON too; no time: the engine's clock; no id: a generated one.
    nd = orjson.dumps(event("order.shipped", message="order 2 shipped")) + b"\n"
    resp = await post_events(client, nd, **{"Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()

    everything = await search(client)
    assert [e["name"] for e in everything] == [
        "order.shipped", "cache.miss", "db.down", "login.failed", "order.placed",
    ]  # fmt: skip
    newest = everything[0]
    assert newest["time_ns"] == NOW and isinstance(newest["id"], int) and newest["id"] > 0
    assert everything[-1]["attributes"] == {"amount": 12}
    assert everything[1]["user_id"] is None and everything[3]["user_id"] == "u7"

    names = lambda evs: [e["name"] for e in evs]  # noqa: E731
    assert names(await search(client, "severity=warning")) == ["db.down", "login.failed"]
    assert names(await search(client, "service=billing")) == ["db.down"]
    assert names(await search(client, "category=security")) == ["login.failed"]
    assert names(await search(client, "name=cache.miss")) == ["cache.miss"]
    assert names(await search(client, "q=ORDER")) == ["order.shipped", "order.placed"]
    assert names(await search(client, "limit=2")) == ["order.shipped", "cache.miss"]
    window = f"start={NOW - 25 * MIN}&end=2023-11-14T22:05:00Z"  # NOW - 8 min 20 s, as RFC 3339
    assert names(await search(client, window)) == ["db.down", "login.failed"]
    assert await search(client, "service=nobody") == []
    assert await search(client, "db=other") == []  # no events table there


async def test_bad_input_is_refused_whole_naming_item_and_field(make_client: Any) -> None:
    client = await make_client()
    resp = await post_events(client, [event(), event(), event(severity="loud")])
    assert resp.status == 400
    body = await resp.json()
    assert body["item"] == 2 and "'severity'" in body["message"], body
    resp = await post_events(
        client, orjson.dumps(event()) + b"\nnot json\n", **{"Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 400 and (await resp.json())["line"] == 2
    assert await search(client) == []  # nothing half-written
    assert (await post_events(client, b"{}", **{"Content-Type": "text/plain"})).status == 415
    for query in ("severity=loud", "category=nope", "limit=0", "start=yesterday"):
        resp = await client.get(f"/api/v1/events?{query}")
        assert resp.status == 400, query
        assert repr(query.split("=")[0]) in (await resp.json())["message"]
    assert (await client.get("/api/v1/events/stream?severity=loud")).status == 400


async def test_scopes(make_client: Any) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    auth = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    assert (await post_events(client, event())).status == 401
    assert (await post_events(client, event(), **auth(READ_TOKEN))).status == 403
    assert (await post_events(client, event(), **auth(WRITE_TOKEN))).status == 200
    assert (await client.get("/api/v1/events")).status == 401
    assert (await client.get("/api/v1/events", headers=auth(WRITE_TOKEN))).status == 403
    assert len(await search(client, **auth(READ_TOKEN))) == 1
    assert len(await search(client, **auth(ADMIN_TOKEN))) == 1
    assert (await client.get("/api/v1/events/stream")).status == 401
    assert (await client.get(f"/api/v1/events/stream?p={WRITE_TOKEN}")).status == 403
    # A browser's EventSource cannot send headers: the stream takes the token as ?p=.
    resp = await client.get(f"/api/v1/events/stream?p={READ_TOKEN}")
    assert resp.status == 200
    assert await resp.content.readline() == b": subscribed\n"
    resp.close()
    # ?p= is for the stream only.
    assert (await client.get(f"/api/v1/events?p={READ_TOKEN}")).status == 401


def logs_request(severity_number: int, body: str) -> bytes:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    attr = rl.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", "shop"
    rec = rl.scope_logs.add().log_records.add()
    rec.severity_number, rec.body.string_value = severity_number, body
    return req.SerializeToString()


async def test_stream_gets_stored_events_from_every_write_path(make_client: Any) -> None:
    client = await make_client()
    warnings = await client.get("/api/v1/events/stream?severity=warning")
    shop = await client.get("/api/v1/events/stream?service=shop&category=business")
    for resp in (warnings, shop):
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert await resp.content.readline() == b": subscribed\n"
    assert client.app[EVENT_HUB_KEY].subscribers == 2

    # A refused request publishes nothing.
    assert (await post_events(client, [event(severity="error"), event(category="bad")])).status == 400
    assert (await post_events(client, [event("a", severity="error"), event("b")])).status == 200
    row = {
        "table": "events",
        "time": NOW,
        "tags": {"service": "shop", "category": "business", "severity": "critical", "name": "c"},
        "fields": {"id": 7, "message": "imported", "attributes": '{"k": 1}'},
    }
    other = {"table": "cpu", "time": NOW, "tags": {"host": "h"}, "fields": {"value": 1.0}}
    resp = await client.post(
        "/api/v1/import",
        data=orjson.dumps(row) + b"\n" + orjson.dumps(other),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 204, await resp.text()
    resp = await client.post(
        "/v1/logs",
        data=logs_request(13, "disk almost full"),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert resp.status == 200, await resp.text()

    got = await read_sse(warnings, "event", 3)
    assert [(e["name"], e["severity"]) for e in got] == [
        ("a", "error"),
        ("c", "critical"),
        ("log", "warning"),
    ]
    assert got[1]["attributes"] == {"k": 1} and got[1]["id"] == 7
    assert got[2]["message"] == "disk almost full" and got[2]["category"] == "log"
    assert [e["name"] for e in await read_sse(shop, "event", 3)] == ["a", "b", "c"]
    warnings.close()
    shop.close()


async def test_a_stream_client_that_does_not_read_is_disconnected(make_client: Any) -> None:
    client = await make_client()
    hub = client.app[EVENT_HUB_KEY]
    hub.buffer_size = 64
    body = orjson.dumps([event(message="x" * 200) for _ in range(50)])
    async with stuck_stream_client(client.port, "/api/v1/events/stream") as read_to_end:
        deadline = time.monotonic() + DEADLINE_S
        posts = 0
        while hub.subscribers:
            assert time.monotonic() < deadline, f"the stuck client still subscribed after {posts} posts"
            assert (await post_events(client, body)).status == 200
            posts += 1
        assert hub.dropped_total == 1
        assert client.app[METRICS_KEY].event_stream_dropped.get() == 1
        await read_to_end()  # the server closed the connection
    rows = await (await client.post("/api/v1/sql", json={"sql": "SELECT count(*) FROM events"})).json()
    assert rows["rows"] == [[posts * 50]]  # ingestion never waited for the stuck client


async def test_shutdown_ends_event_streams(make_client: Any) -> None:
    client = await make_client()
    resp = await client.get("/api/v1/events/stream")
    assert await resp.content.readline() == b": subscribed\n"
    await client.app.shutdown()
    assert await asyncio.wait_for(resp.content.read(), DEADLINE_S) in (b"", b"\n")
    assert client.app[EVENT_HUB_KEY].subscribers == 0
