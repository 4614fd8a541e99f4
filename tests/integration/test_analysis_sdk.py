"""End to end: what the real tsengine SDK pushes is what the analysis tasks read.

An application-side ``Telemetry`` (its clock tied to the server engine's ManualClock) records
requests, database queries, decorated operations and events through the SDK's own APIs; its
``HttpExporter`` pushes a registry snapshot every simulated minute to the server under test;
the tasks then run through the HTTP endpoint and their output is checked by SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server import ServerConfig
from tests.integration.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS, WRITE_TOKEN
from tsengine.clock import ManualClock
from tsengine.instrument import CollectorRegistry, HttpExporter, Telemetry, TelemetryConfig

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


class SdkClock:
    """The SDK's Clock protocol over the engine's ManualClock: one simulated time for both sides."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock

    def time_ns(self) -> int:
        return self._clock.now_ns()

    def monotonic(self) -> float:
        return self._clock.monotonic_s()


@pytest.fixture
async def app_telemetry(clock: ManualClock) -> AsyncIterator[Telemetry]:
    config = TelemetryConfig(system_metrics_enabled=False, service_name="shop")
    rt = Telemetry(config, registry=CollectorRegistry(), clock=SdkClock(clock))
    yield rt
    await asyncio.to_thread(rt.stop, 0.5)


async def rows_of(client: Any, sql: str) -> list[dict[str, Any]]:
    resp = await client.post("/api/v1/sql", json={"sql": sql}, headers=READ)
    body = await resp.json()
    assert resp.status == 200, body
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, r, strict=True)) for r in body["rows"]]


async def test_sdk_telemetry_becomes_insights(
    make_client: Any, app_telemetry: Telemetry, clock: ManualClock
) -> None:
    api = await make_client(ServerConfig(port=0, tokens=TOKENS))
    rt = app_telemetry
    exporter = HttpExporter(f"http://127.0.0.1:{api.port}", WRITE_TOKEN, interval_s=3600.0, timeout_s=5.0)
    rt.set_exporter(exporter)  # snapshots only on export_now(); events as they are tracked
    perf = rt.performance
    for minute in range(70):  # an hour of baseline, then the 10 min window of performance_analysis
        clock.advance(60)
        slow_s = 0.3 if minute < 60 else 2.0  # /reports degrades for the last ten minutes
        for _ in range(10):
            perf.record_request("GET", "/items/{id}", 200, 0.02)
            perf.record_request("GET", "/reports", 200, slow_s)
        perf.record_request("GET", "/items/{id}", 503, 0.02)
        perf.record_db_query("select items", 0.004, success=minute % 4 != 0)
        exporter.export_now()
    for i in range(6):  # an authentication-failure burst, in the last minute
        # A second apart: events of one name at the very same nanosecond would be one row (the
        # events table de-duplicates rows of the same tags and time).
        clock.advance(1)
        rt.events.track(
            "login_failed", category="security", user_id="mallory", attributes={"ip": f"10.1.0.{i}"}
        )
    assert await asyncio.to_thread(exporter.flush, 30.0) is True

    for task in ("metrics_aggregation", "performance_analysis", "event_aggregation"):
        resp = await api.post(f"/api/v1/tasks/{task}/run", headers=ADMIN)
        assert resp.status == 200, await resp.json()

    derived = {
        (r["metric"], r["route"], r["operation"]): r["value"]
        for r in await rows_of(api, "SELECT metric, route, operation, value FROM analysis_derived_metrics")
    }
    # 5 min window = 5 snapshots: 50 ok + 5 errors on /items/{id}, 50 ok on /reports.
    assert derived[("error_rate", "/items/{id}", None)] == pytest.approx(5 / 55)
    assert derived[("error_rate", "/reports", None)] == 0.0
    assert derived[("requests_per_second", None, None)] == pytest.approx(105 / 300)
    # db queries fail every 4th minute: minutes 65..69 hold one failure (68) in 5.
    assert derived[("db_query_error_rate", None, "select items")] == pytest.approx(1 / 5)

    perf_rows = {
        r["endpoint"]: r
        for r in await rows_of(
            api, "SELECT endpoint, p95_s, p95_baseline_s, degraded, rank FROM analysis_endpoint_performance"
        )
    }
    assert perf_rows["GET /reports"]["degraded"] is True and perf_rows["GET /reports"]["rank"] == 1
    assert 1.0 < perf_rows["GET /reports"]["p95_s"] <= 2.5  # the 2.0 s observations' bucket
    assert 0.25 < perf_rows["GET /reports"]["p95_baseline_s"] <= 0.5
    assert perf_rows["GET /items/{id}"]["degraded"] is False

    findings = await rows_of(api, "SELECT kind, subject, count FROM analysis_security_findings ORDER BY kind")
    assert findings == [{"kind": "auth_failure_burst_user", "subject": "mallory", "count": 6}]

    report = await (await api.get("/api/v1/reports/performance?format=markdown", headers=READ)).text()
    assert "| 1 | GET /reports | shop |" in report
