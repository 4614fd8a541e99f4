"""Every rule of the default pack fires on what the real SDK produces.

A real server with the default pack; an application simulated with the real SDK objects — a
``Telemetry`` (PerformanceMonitor for requests, database queries and external calls, the
EventTracker for payments, user actions and audit events, the SecurityMonitor for 401 bursts
and path probing) — exported through a real ``EmbeddedExporter`` into the server's engine, every
30 s of simulated time as the SDK pushes. Time is the engine's ManualClock, shared with the SDK
through a small adapter; evaluation through ``POST /api/v1/rules/evaluate``; no sleeps.

The story: 26 quiet hours (payments, user actions, audit events every hour: the anomaly
baselines), then an incident — slow, failing requests, slow and failing queries, a failing
payment provider, failed payments, no revenue, no users, no audit events, a brute force and a
path scan — and finally the service stops pushing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from server import ServerConfig
from server.alerting import default_rules
from tests.integration.conftest import engine_of, query
from tsengine.clock import ManualClock
from tsengine.instrument import EmbeddedExporter, Telemetry, TelemetryConfig
from tsengine.instrument._security import SecurityMonitor

Make = Callable[..., Awaitable[TestClient]]


class SdkClock:
    """The SDK's clock protocol over the engine's ManualClock: one time for both."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def time_ns(self) -> int:
        return self.clock.now_ns()

    def monotonic(self) -> float:
        return self.clock.monotonic_s()


class App:
    """The instrumented application: the SDK objects and its export into the server's engine."""

    def __init__(self, engine: Any, clock: ManualClock) -> None:
        self.clock = clock
        config = TelemetryConfig(service_name="shop", system_metrics_enabled=False)
        self.sdk = Telemetry(config, clock=SdkClock(clock))
        self.exporter = EmbeddedExporter(engine, interval_s=3600.0, service="shop")
        self.sdk.set_exporter(self.exporter)
        self.security = SecurityMonitor(self.sdk.events, clock=SdkClock(clock))

    async def push(self, *, metrics: bool = True) -> None:
        """What the exporter's worker does every interval: a snapshot, then deliver the queue."""
        if metrics:
            self.exporter.export_metrics(self.sdk.registry.collect(), time_ns=self.clock.now_ns())
        assert await asyncio.to_thread(self.exporter.flush, 10.0)

    async def quiet_hour(self) -> None:
        """An ordinary hour: a login and a payment every 6 minutes, one audit event."""
        ev = self.sdk.events
        ev.track_audit_event("settings_viewed", actor="admin")
        for _ in range(10):
            ev.track_user_action("login", user="u1")
            ev.track_payment_event("payment_succeeded", amount=100.0, currency="EUR")
            self.clock.advance(360)
        await self.push(metrics=False)

    def incident_tick(self) -> None:
        perf = self.sdk.performance
        for i in range(10):
            perf.record_request("POST", "/pay", 500 if i < 2 else 200, 2.0)
            perf.record_db_query("select orders", 1.0, success=i >= 2)
            perf.record_external_call("payments.example", "POST", 0.3, success=i >= 5)
        self.sdk.events.track_payment_event("payment_failed", amount=100.0, success=False)

    def attack(self) -> None:
        for _ in range(25):
            self.security.observe("203.0.113.9", 401, "/login", route_matched=True)
        for n in range(35):
            self.security.observe("203.0.113.9", 404, f"/wp-admin/{n}.php", route_matched=False)


async def test_every_default_rule_fires_on_sdk_data(make_client: Make, clock: ManualClock) -> None:
    client = await make_client(ServerConfig(port=0, tasks={"intervals": {"alert_evaluation": 0}}))
    app = App(engine_of(client), clock)

    async def evaluate() -> dict[str, Any]:
        resp = await client.post("/api/v1/rules/evaluate")
        body = await resp.json()
        assert resp.status == 200 and body["errors"] == 0, body
        return body

    try:
        for _ in range(26):  # the baselines: a day of ordinary hours
            await app.quiet_hour()
        await evaluate()
        for tick in range(24):  # 12 minutes of incident, pushed every 30 s, evaluated every minute
            app.incident_tick()
            if tick == 4:
                app.attack()
            await app.push()
            if tick % 2:
                await evaluate()
            clock.advance(30)
        for _ in range(16):  # the incident goes on past an hour (the anomaly rules' `for`)
            app.incident_tick()
            await app.push()
            await evaluate()
            clock.advance(300)
        clock.advance(360)  # the service stops pushing
        await evaluate()
    finally:
        app.exporter.shutdown(1.0)
    rows = await query(client, "SELECT DISTINCT rule FROM alerts_history WHERE event = 'firing'")
    assert sorted(r[0] for r in rows) == sorted(r.name for r in default_rules())
    alerts = (await (await client.get("/api/v1/alerts")).json())["alerts"]
    labels = {a["rule"]: a["labels"] for a in alerts}
    assert labels["external_api_degradation"]["service"] == "payments.example"  # the called service
    assert labels["slow_database_queries"]["operation"] == "select orders"
    assert labels["high_response_time"]["route"] == "/pay"
    assert all(a["labels"]["service"] in ("shop", "payments.example") for a in alerts)
