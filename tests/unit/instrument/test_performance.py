"""Performance monitor: percentiles, thresholds, slow endpoints, DB-API and HTTP client timing."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from tsengine.instrument import (
    EventCategory,
    PerformanceMonitor,
    Telemetry,
    httpx_event_hooks,
    instrument_connection,
    sql_operation,
)
from tsengine.instrument._performance import percentile
from tsengine.instrument.aiohttp import trace_config

from .conftest import FakeClock


@pytest.fixture
def pm(rt: Telemetry) -> PerformanceMonitor:
    return rt.performance


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_request_metrics_and_stats(pm: PerformanceMonitor, rt: Telemetry, clock: FakeClock) -> None:
    for i in range(100):
        clock.advance(0.1)
        pm.record_request("GET", "/items/{id}", 500 if i % 10 == 0 else 200, (i + 1) / 1000)
    reg = rt.registry
    assert (
        reg.get_sample_value(
            "http_requests_total", {"method": "GET", "route": "/items/{id}", "status": "200"}
        )
        == 90
    )
    assert (
        reg.get_sample_value("http_request_duration_seconds_count", {"method": "GET", "route": "/items/{id}"})
        == 100
    )
    st = pm.stats("request", "GET /items/{id}")
    assert st is not None
    assert st["count"] == 100 and st["errors"] == 10 and st["error_rate"] == 0.1
    assert st["p50_s"] == pytest.approx(0.0505)
    assert st["p99_s"] == pytest.approx(0.09901)
    assert st["max_s"] == 0.1
    assert st["throughput_rps"] == pytest.approx(100 / 9.9)


def test_window_is_bounded(rt: Telemetry) -> None:
    pm = PerformanceMonitor(registry=rt.registry, window=10, clock=rt.clock)
    for i in range(50):
        pm.record_request("GET", "/", 200, float(i))
    st = pm.stats("request", "GET /")
    assert st is not None and st["count"] == 10 and st["p50_s"] == 44.5


def test_endpoint_count_is_bounded(rt: Telemetry) -> None:
    pm = PerformanceMonitor(registry=rt.registry, max_endpoints=3, clock=rt.clock)
    for i in range(10):
        pm.record_request("GET", f"/r{i}", 200, 0.01)
    endpoints = pm.report()["endpoints"]
    assert sorted(endpoints) == ["<other>", "GET /r0", "GET /r1", "GET /r2"]
    assert endpoints["<other>"]["count"] == 7


def test_thresholds_slow_report_and_system_snapshot(rt: Telemetry, clock: FakeClock) -> None:
    pm = PerformanceMonitor(
        registry=rt.registry,
        default_threshold_s=1.0,
        system_snapshot=lambda: {"cpu_percent": 93.0, "memory_percent": 71.5},
        tracker=rt.events,
        clock=clock,
    )
    pm.set_threshold("/search", 0.2)
    pm.set_threshold("POST /upload", 5.0)
    pm.record_request("GET", "/search", 200, 0.3)  # over its own threshold
    pm.record_request("GET", "/items", 200, 0.5)  # under the default
    pm.record_request("POST", "/upload", 200, 3.0)  # under its own threshold
    pm.record_request("GET", "/report", 200, 2.0)  # over the default
    slow = pm.slow_operations()
    assert [(s.name, s.threshold_s) for s in slow] == [("GET /search", 0.2), ("GET /report", 1.0)]
    assert slow[0].system == {"cpu_percent": 93.0, "memory_percent": 71.5}
    top = pm.slow_endpoints(2)
    assert [t["name"] for t in top] == ["POST /upload", "GET /report"]
    assert [t["over_threshold"] for t in top] == [False, True]
    events = rt.events.get_events(category=EventCategory.PERFORMANCE)
    assert [e.name for e in events] == ["slow_request", "slow_request"]
    assert events[0].attributes["system"]["cpu_percent"] == 93.0
    report = pm.report()
    assert set(report) == {"endpoints", "db_queries", "external_calls", "slow_endpoints", "slow_operations"}
    with pytest.raises(ValueError):
        pm.set_threshold("/x", 0)


def test_time_db_query_and_external_call(pm: PerformanceMonitor, rt: Telemetry, clock: FakeClock) -> None:
    with pm.time_db_query("select users"):
        clock.advance(0.02)
    with pytest.raises(ConnectionError), pm.time_external_call("payments-api", "charge"):
        clock.advance(0.5)
        raise ConnectionError("down")
    reg = rt.registry
    assert reg.get_sample_value("db_queries_total", {"operation": "select users", "status": "success"}) == 1
    assert reg.get_sample_value(
        "db_query_duration_seconds_sum", {"operation": "select users"}
    ) == pytest.approx(0.02)
    assert reg.get_sample_value("external_calls_total", {"service": "payments-api", "status": "error"}) == 1
    st = pm.stats("external_call", "payments-api charge")
    assert st is not None and st["errors"] == 1


@pytest.mark.parametrize(
    ("sql", "op"),
    [
        ("SELECT * FROM users WHERE id = ?", "select users"),
        ("  insert into Orders (a) values (1)", "insert orders"),
        ("UPDATE accounts SET x = 'secret'", "update accounts"),
        ("-- comment\nDELETE FROM t", "delete t"),
        ("CREATE TABLE t (x)", "create t"),
        ("PRAGMA foo", "pragma"),
        ("", "other"),
    ],
)
def test_sql_operation(sql: str, op: str) -> None:
    assert sql_operation(sql) == op


def test_dbapi_wrapper_with_sqlite(pm: PerformanceMonitor, rt: Telemetry) -> None:
    conn = instrument_connection(sqlite3.connect(":memory:"), pm)
    with conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        cur = conn.cursor()
        cur.executemany("INSERT INTO users VALUES (?, ?)", [(1, "a"), (2, "b")])
        rows = cur.execute("SELECT name FROM users WHERE id = ?", (2,)).fetchall()
        assert rows == [("b",)]
        assert list(conn.execute("SELECT count(*) FROM users")) == [(2,)]
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("SELECT * FROM missing")
    conn.close()
    reg = rt.registry
    assert reg.get_sample_value("db_queries_total", {"operation": "select users", "status": "success"}) == 2
    assert reg.get_sample_value("db_queries_total", {"operation": "insert users", "status": "success"}) == 1
    assert reg.get_sample_value("db_queries_total", {"operation": "select missing", "status": "error"}) == 1


async def test_aiohttp_trace_config_times_client_calls(pm: PerformanceMonitor, rt: Telemetry) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        ClientSession(trace_configs=[trace_config(pm)]) as s,
    ):
        for path in ("/ok", "/ok", "/fail"):
            async with s.get(server.make_url(path)) as resp:
                await resp.read()
    reg = rt.registry
    assert reg.get_sample_value("external_calls_total", {"service": "127.0.0.1", "status": "success"}) == 2
    assert reg.get_sample_value("external_calls_total", {"service": "127.0.0.1", "status": "error"}) == 1
    assert (
        reg.get_sample_value(
            "external_call_duration_seconds_count", {"service": "127.0.0.1", "operation": "GET"}
        )
        == 3
    )


def test_httpx_sync_hooks(pm: PerformanceMonitor, rt: Telemetry) -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(200 if req.url.path == "/ok" else 500))
    with httpx.Client(transport=transport, event_hooks=httpx_event_hooks(pm)) as client:
        client.get("http://api.example/ok")
        client.post("http://api.example/bad")
    reg = rt.registry
    assert reg.get_sample_value("external_calls_total", {"service": "api.example", "status": "success"}) == 1
    assert reg.get_sample_value("external_calls_total", {"service": "api.example", "status": "error"}) == 1


async def test_httpx_async_hooks(pm: PerformanceMonitor, rt: Telemetry) -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(204))
    hooks = httpx_event_hooks(pm, asynchronous=True)
    async with httpx.AsyncClient(transport=transport, event_hooks=hooks) as client:
        await client.get("http://svc.internal/x")
    assert (
        rt.registry.get_sample_value(
            "external_call_duration_seconds_count", {"service": "svc.internal", "operation": "GET"}
        )
        == 1
    )


def test_disabled_monitor_records_nothing(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(performance_monitoring_enabled=False))
    rt.performance.record_request("GET", "/", 200, 5.0)
    assert rt.performance.report()["endpoints"] == {}
    assert rt.registry.collect() == []
