"""Notifications end to end: a real server, a real aiohttp webhook receiver on 127.0.0.1, time
driven by the engine's ManualClock and ``POST /api/v1/rules/evaluate`` (no sleeps).

Shown: one notification per transition; retries after 500; grouping and group_interval; repeat
interval and acknowledgement; escalation step by step; silences; rate limits; a hanging channel
does not hold up the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import ServerConfig
from tests.integration.conftest import engine_of, query
from tsengine.clock import ManualClock

S = 1_000_000_000


class Receiver:
    """A webhook receiver: records payloads per path; answers 500 ``fail`` times first."""

    def __init__(self) -> None:
        self.payloads: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, int] = {}
        self.refused: list[str] = []
        self.hang = asyncio.Event()
        self.hanging = 0
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if path == "hang":
            self.hanging += 1
            await self.hang.wait()
        body = await request.json()
        if self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            self.refused.append(path)
            return web.Response(status=500, text="try again")
        self.payloads.setdefault(path, []).append({**body, "_hanging_meanwhile": self.hanging})
        return web.json_response({"ok": True})

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/{path}"))

    def got(self, path: str) -> list[dict[str, Any]]:
        return self.payloads.get(path, [])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{path}", rec.handle)
    rec.server = TestServer(app, host="127.0.0.1")
    await rec.server.start_server()
    yield rec
    rec.hang.set()
    await rec.server.close()


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "retries": 3, "backoff": "10ms", "timeout": "5s", **extra}


Make = Callable[..., Awaitable[TestClient]]


async def alerting_client(
    make_client: Make, alerting: dict[str, Any], rules: list[dict[str, Any]]
) -> TestClient:
    config = ServerConfig(
        port=0,
        alerting={"default_rules": False, **alerting},
        tasks={"intervals": {"alert_evaluation": 0}},  # evaluated on demand only
    )
    client = await make_client(config)
    for rule in rules:
        resp = await client.post("/api/v1/rules", json=rule)
        assert resp.status == 201, await resp.text()
    return client


def temp(client: TestClient, clock: ManualClock, room: str, value: float) -> None:
    engine_of(client).write_rows(
        "temp", [{"time": clock.now_ns(), "room": room, "value": value}], tags=["room"]
    )


HOT = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
       "group_by": ["room"], "threshold": 30, "for": "0s",
       "annotations": {"summary": "{{ $labels.room }} is at {{ $value }} degrees"}}  # fmt: skip


async def evaluate(client: TestClient) -> dict[str, Any]:
    resp = await client.post("/api/v1/rules/evaluate")
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def test_one_notification_per_transition_and_retries(
    make_client: Make, receiver: Receiver, clock: ManualClock
) -> None:
    client = await alerting_client(
        make_client,
        {"channels": {"team": hook(receiver.url("team"))}, "default_route": {"channels": ["team"]}},
        [HOT],
    )
    receiver.fail["team"] = 2  # the first two attempts get a 500
    temp(client, clock, "kitchen", 35)
    assert (await evaluate(client))["notifications_sent"] == 1
    assert receiver.refused == ["team", "team"]
    [firing] = receiver.got("team")
    assert firing["status"] == "firing" and firing["version"] == "4" and firing["kind"] == "notification"
    [alert] = firing["alerts"]
    assert alert["labels"] == {"alertname": "hot", "room": "kitchen", "severity": "warning"}
    assert alert["annotations"] == {"summary": "kitchen is at 35 degrees"}
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z" and alert["endsAt"].startswith("0001")
    for _ in range(3):  # still firing: nothing new to say
        clock.advance(60)
        temp(client, clock, "kitchen", 36)
        await evaluate(client)
    assert len(receiver.got("team")) == 1
    clock.advance(60)
    temp(client, clock, "kitchen", 20)
    await evaluate(client)
    clock.advance(60)
    await evaluate(client)
    assert [p["status"] for p in receiver.got("team")] == ["firing", "resolved"]
    resolved = receiver.got("team")[1]["alerts"][0]
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2023-11-14T22:17:20.000Z"
    rows = await query(
        client,
        "SELECT event, attempts FROM alerts_history WHERE event LIKE 'notification%' OR event IN "
        "('firing', 'resolved') ORDER BY time",
    )
    assert rows == [["firing", None], ["notification_sent", 3], ["resolved", None], ["notification_sent", 1]]


async def test_grouping_group_interval_repeat_and_ack(
    make_client: Make, receiver: Receiver, clock: ManualClock
) -> None:
    route = {"channels": ["team"], "group_by": ["alertname"], "group_interval": "5m", "repeat_interval": "1h"}
    client = await alerting_client(
        make_client, {"channels": {"team": hook(receiver.url("team"))}, "default_route": route}, [HOT]
    )
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 40)
    await evaluate(client)
    [first] = receiver.got("team")
    assert sorted(a["labels"]["room"] for a in first["alerts"]) == ["garage", "kitchen"]
    assert first["groupLabels"] == {"alertname": "hot"} and first["commonLabels"]["alertname"] == "hot"
    clock.advance(60)
    temp(client, clock, "attic", 50)
    await evaluate(client)
    assert len(receiver.got("team")) == 1  # the group changed, but group_interval has not passed
    clock.advance(240)
    await evaluate(client)
    second = receiver.got("team")[1]
    assert sorted(a["labels"]["room"] for a in second["alerts"]) == ["attic", "garage", "kitchen"]
    clock.advance(3600)
    for room, value in (("kitchen", 35), ("garage", 40), ("attic", 50)):
        temp(client, clock, room, value)
    await evaluate(client)  # unchanged for repeat_interval: sent again
    assert [p["kind"] for p in receiver.got("team")] == ["notification", "notification", "repeat"]
    alerts = (await (await client.get("/api/v1/alerts?state=firing")).json())["alerts"]
    for a in alerts:
        resp = await client.post(f"/api/v1/alerts/{a['id']}/ack", json={"by": "alice", "comment": "on it"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["acknowledged_by"] == "alice"
    clock.advance(7200)
    for room, value in (("kitchen", 35), ("garage", 40), ("attic", 50)):
        temp(client, clock, room, value)
    await evaluate(client)
    assert len(receiver.got("team")) == 3  # acknowledged: no more repeats
    clock.advance(300)
    for room, value in (("kitchen", 10), ("garage", 40), ("attic", 50)):
        temp(client, clock, room, value)
    await evaluate(client)  # resolving is still told, acknowledged or not
    last = receiver.got("team")[-1]
    kitchen = next(a for a in last["alerts"] if a["labels"]["room"] == "kitchen")
    assert kitchen["status"] == "resolved" and kitchen["acknowledgedBy"] == "alice"


async def test_escalation_step_by_step_and_ack_stops_it(
    make_client: Make, receiver: Receiver, clock: ManualClock
) -> None:
    channels = {n: hook(receiver.url(n)) for n in ("team", "oncall", "pager")}
    routes = [
        {"matchers": {"severity": "critical"}, "channels": ["pager"], "group_by": ["alertname", "room"]}
    ]
    rule = {
        **HOT,
        "escalation": [{"after": "10m", "channels": ["oncall"]}, {"after": "30m", "severity": "critical"}],
    }
    client = await alerting_client(
        make_client,
        {
            "channels": channels,
            "routes": routes,
            "default_route": {"channels": ["team"], "group_by": ["room"]},
        },
        [rule],
    )
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 35)
    await evaluate(client)
    assert len(receiver.got("team")) == 2 and not receiver.got("oncall")
    garage = next(
        a
        for a in (await (await client.get("/api/v1/alerts")).json())["alerts"]
        if a["labels"]["room"] == "garage"
    )
    await client.post(f"/api/v1/alerts/{garage['id']}/ack", json={"by": "bob", "comment": "mine"})
    clock.advance(600)
    temp(client, clock, "kitchen", 36)
    temp(client, clock, "garage", 36)
    await evaluate(client)
    [esc] = receiver.got("oncall")  # only the unacknowledged kitchen alert escalates
    assert esc["kind"] == "escalation" and esc["alerts"][0]["labels"]["room"] == "kitchen"
    clock.advance(600)
    temp(client, clock, "kitchen", 36)
    temp(client, clock, "garage", 36)
    await evaluate(client)
    assert len(receiver.got("oncall")) == 1  # step 1 is done; step 2 is at 30 m
    clock.advance(600)
    temp(client, clock, "kitchen", 36)
    temp(client, clock, "garage", 36)
    await evaluate(client)
    [paged] = receiver.got("pager")  # severity raised to critical: the critical route takes it
    assert paged["alerts"][0]["labels"] == {"alertname": "hot", "room": "kitchen", "severity": "critical"}
    alert = await (await client.get(f"/api/v1/alerts/{esc['alerts'][0]['fingerprint']}")).json()
    assert alert["escalation_step"] == 2 and alert["severity"] == "critical"
    assert not receiver.got("pager")[1:] and len(receiver.got("oncall")) == 1


async def test_silences(make_client: Make, receiver: Receiver, clock: ManualClock) -> None:
    client = await alerting_client(
        make_client,
        {
            "channels": {"team": hook(receiver.url("team"))},
            "default_route": {"channels": ["team"], "group_by": ["room"]},
        },
        [HOT],
    )
    bad = await client.post("/api/v1/silences", json={"matchers": ['room=~"("'], "duration": "1h"})
    assert bad.status == 400 and "invalid regex" in (await bad.json())["message"]
    bad = await client.post("/api/v1/silences", json={"matchers": ['room="kitchen"']})
    assert bad.status == 400 and "must expire" in (await bad.json())["message"]
    resp = await client.post(
        "/api/v1/silences",
        json={"matchers": ['room="kitchen"', "alertname=~ho."], "duration": "1h", "created_by": "carol",
              "comment": "maintenance"},
    )  # fmt: skip
    assert resp.status == 201
    silence = await resp.json()
    assert silence["state"] == "active"
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 35)
    await evaluate(client)
    assert [p["alerts"][0]["labels"]["room"] for p in receiver.got("team")] == ["garage"]
    [kitchen] = [a for a in (await (await client.get("/api/v1/alerts")).json())["alerts"]
                 if a["labels"]["room"] == "kitchen"]  # fmt: skip
    assert kitchen["state"] == "firing" and kitchen["silenced_by"] == [silence["id"]]
    clock.advance(3601)  # the silence expires
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 35)
    await evaluate(client)
    assert [p["alerts"][0]["labels"]["room"] for p in receiver.got("team")][1:] == ["kitchen"]
    listed = (await (await client.get("/api/v1/silences")).json())["silences"]
    assert [s["state"] for s in listed] == ["expired"]
    assert (await client.delete(f"/api/v1/silences/{silence['id']}")).status == 204
    assert (await client.delete(f"/api/v1/silences/{silence['id']}")).status == 404


async def test_rate_limit_and_a_hanging_channel_do_not_hold_up_others(
    make_client: Make, receiver: Receiver, clock: ManualClock
) -> None:
    channels = {
        "limited": hook(receiver.url("limited"), rate_limit={"count": 1, "per": "1h"}),
        "stuck": hook(receiver.url("hang"), timeout="1s", retries=0),
        "fast": hook(receiver.url("fast")),
    }
    client = await alerting_client(
        make_client,
        {"channels": channels,
         "default_route": {"channels": ["limited", "stuck", "fast"], "group_by": ["room"]}},
        [HOT],
    )  # fmt: skip
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 35)
    result = await evaluate(client)
    assert len(receiver.got("fast")) == 2
    # both were delivered while the stuck channel's requests were still hanging
    assert all(p["_hanging_meanwhile"] >= 1 for p in receiver.got("fast"))
    assert len(receiver.got("limited")) == 1
    assert result["notifications_sent"] == 3 and result["notifications_failed"] == 3
    rows = await query(
        client,
        "SELECT channel, message FROM alerts_history WHERE event = 'notification_failed' ORDER BY channel",
    )
    assert [r[0] for r in rows] == ["limited", "stuck", "stuck"]
    assert rows[0][1] == "rate limited" and "timed out" in rows[1][1]
    metrics = await (await client.get("/metrics")).text()
    assert 'tsengine_alert_notifications_total{channel="stuck",result="failed"} 2' in metrics
    assert 'tsengine_alert_notifications_total{channel="fast",result="sent"} 2' in metrics


async def test_group_wait_and_slack_format(make_client: Make, receiver: Receiver, clock: ManualClock) -> None:
    client = await alerting_client(
        make_client,
        {
            "channels": {"slack": {"type": "slack", "url": receiver.url("slack")}},
            "default_route": {"channels": ["slack"], "group_wait": "2m", "group_by": ["alertname"]},
        },
        [HOT],
    )
    temp(client, clock, "kitchen", 35)
    await evaluate(client)
    assert receiver.got("slack") == []  # the new group waits group_wait
    clock.advance(60)
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 45)
    await evaluate(client)
    assert receiver.got("slack") == []
    clock.advance(60)
    temp(client, clock, "kitchen", 35)
    temp(client, clock, "garage", 45)
    await evaluate(client)
    [msg] = receiver.got("slack")
    text = msg["text"]
    assert text.startswith("[FIRING:2] hot\n")
    assert "- [firing] hot value=45 {alertname=hot, room=garage, severity=warning}" in text
    assert "summary: kitchen is at 35 degrees" in text
