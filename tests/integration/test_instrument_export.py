"""HttpExporter against a real tsengine server on loopback: the SDK's metrics and events arrive,
an absent server neither blocks nor breaks the app (and gets the queue once it is back), a 4xx
is counted and not retried, 429 is retried after its Retry-After.

``flush()`` sends on the calling thread, so the tests run it with ``asyncio.to_thread``: the
server under test shares the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import ServerConfig, create_app
from tests.integration.conftest import READ_TOKEN, TOKENS, WRITE_TOKEN, engine_of, free_port, poll, query
from tsengine.instrument import (
    CollectorRegistry,
    ConfigError,
    Counter,
    EmbeddedExporter,
    Gauge,
    Histogram,
    HttpExporter,
    OtlpMetricsExporter,
    Telemetry,
    TelemetryConfig,
    bind_context,
)

#: An export call on the application's thread must return at once; this is generous for CI.
NON_BLOCKING_S = 0.05


@pytest.fixture
async def telemetry() -> AsyncIterator[Telemetry]:
    rt = Telemetry(
        TelemetryConfig(system_metrics_enabled=False, service_name="shop"), registry=CollectorRegistry()
    )
    yield rt
    await asyncio.to_thread(rt.stop, 0.5)


def app_metrics(rt: Telemetry) -> tuple[Counter, Gauge, Histogram]:
    orders = Counter("orders_total", "Orders placed.", ["plan"], registry=rt.registry)
    depth = Gauge("queue_depth", "Jobs waiting.", registry=rt.registry)
    latency = Histogram("job_seconds", "Job duration.", ["job"], registry=rt.registry, buckets=(0.1, 1.0))
    return orders, depth, latency


def exporter_for(port: int | None, **kw: Any) -> HttpExporter:
    assert port is not None
    kw.setdefault("interval_s", 3600.0)  # snapshots only when the test asks
    kw.setdefault("timeout_s", 2.0)
    return HttpExporter(f"http://127.0.0.1:{port}", **kw)


async def start_server_on(engines: Callable[..., Any], port: int, **config: Any) -> TestServer:
    eng = await asyncio.to_thread(engines)
    server = TestServer(create_app(eng, ServerConfig(port=0, **config)), port=port)
    await server.start_server(auto_decompress=False)
    return server


async def test_metrics_and_events_arrive_and_are_queryable(
    make_client: Callable[..., Awaitable[TestClient]], telemetry: Telemetry
) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    rt = telemetry
    exporter = exporter_for(client.port, token=WRITE_TOKEN)
    rt.set_exporter(exporter)  # events are exported from here on (a subscription)
    rt.start()
    assert exporter.running
    orders, depth, latency = app_metrics(rt)
    orders.labels("pro").inc(3)
    orders.labels("free").inc()
    depth.set(7)
    latency.labels("import").observe(0.05)
    latency.labels("import").observe(0.5)
    with bind_context(user_id="u-1", correlation_id="c-42"):
        rt.events.track("report_exported", category="user_action", attributes={"format": "csv"})
        rt.events.track_billing_event("invoice_created", amount=120.0, currency="EUR")
        rt.events.track_audit_event("role_changed", actor="admin", resource="user:42")

    exporter.export_now()
    assert await asyncio.to_thread(exporter.flush, 10.0) is True
    assert exporter.queued_rows == 0
    assert exporter.stats.values["dropped"] == exporter.stats.values["rejected"] == 0

    async def sql(text: str) -> list[list[Any]]:
        return await query(client, text, token=READ_TOKEN)

    assert await sql("SELECT plan, value, service FROM orders_total ORDER BY plan") == [
        ["free", 1.0, "shop"],
        ["pro", 3.0, "shop"],
    ]
    assert await sql("SELECT value FROM queue_depth") == [[7.0]]
    assert await sql("SELECT le, value FROM job_seconds_bucket WHERE job = 'import' ORDER BY value, le") == [
        ["0.1", 1.0],
        ["+Inf", 2.0],
        ["1.0", 2.0],
    ]
    assert await sql("SELECT value FROM job_seconds_count") == [[2.0]]
    assert await sql("SELECT value FROM job_seconds_sum") == [[pytest.approx(0.55)]]
    rows = await sql(
        "SELECT name, category, severity, user_id, correlation_id, attributes FROM events ORDER BY id"
    )
    assert [r[:5] for r in rows] == [
        ["report_exported", "user_action", "info", "u-1", "c-42"],
        ["invoice_created", "billing", "info", "u-1", "c-42"],
        ["role_changed", "audit", "info", "u-1", "c-42"],
    ]
    assert '"format": "csv"' in rows[0][5]

    # The daemon worker pushes on its own when woken (no explicit flush).
    orders.labels("pro").inc(2)
    rt.events.track("late_event")
    exporter.wake()

    async def arrived() -> bool:
        got = await sql("SELECT max(value) FROM orders_total WHERE plan = 'pro'")
        ev = await sql("SELECT count(*) FROM events WHERE name = 'late_event'")
        return got == [[5.0]] and ev == [[1]]

    await poll(arrived, timeout_s=10, what="the worker's push")
    assert rt.health()["components"]["exporter"]["sent"] >= 10


async def test_server_away_then_back_on_the_same_port(
    make_client: Callable[..., Awaitable[TestClient]], engines: Callable[..., Any], telemetry: Telemetry
) -> None:
    client = await make_client()
    port = client.port
    assert port is not None
    rt = telemetry
    orders, _, _ = app_metrics(rt)
    exporter = exporter_for(port, max_queue=1000, batch_size=10)
    rt.set_exporter(exporter)
    rt.start()
    orders.labels("pro").inc()
    rt.events.track("before_outage")
    exporter.export_now()
    assert await asyncio.to_thread(exporter.flush, 10.0) is True

    await client.close()  # the server goes away

    # The application keeps working: tracking and exporting return at once, nothing raises.
    for i in range(20):
        t0 = time.perf_counter()
        rt.events.track("during_outage", attributes={"i": i})
        orders.labels("pro").inc()
        exporter.export_now()
        assert time.perf_counter() - t0 < NON_BLOCKING_S
    exporter.wake()  # the worker tries, fails, backs off
    await poll(
        lambda: asyncio.sleep(0, exporter.stats.values["retries"] >= 1), timeout_s=10, what="a failed push"
    )
    t0 = time.perf_counter()
    assert await asyncio.to_thread(exporter.flush, 0.5) is False
    assert time.perf_counter() - t0 < 5
    queued = exporter.queued_rows
    assert queued >= 20  # 20 events + snapshots, still queued (within max_queue)
    assert exporter.stats.values["dropped"] == 0

    server = await start_server_on(engines, port)  # a server is back on the same port
    try:
        assert await asyncio.to_thread(exporter.flush, 10.0) is True
        assert exporter.queued_rows == 0
        rows = await _sql(server, "SELECT count(*) FROM events WHERE name = 'during_outage'")
        assert rows == [[20]]
        rows = await _sql(server, "SELECT max(value) FROM orders_total WHERE plan = 'pro'")
        assert rows == [[21.0]]
    finally:
        await server.close()


async def _sql(server: TestServer, sql: str) -> list[list[Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/api/v1/sql"), json={"sql": sql}) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return body["rows"]


async def test_full_queue_drops_oldest_batches_without_blocking(telemetry: Telemetry, tmp_path: Path) -> None:
    exporter = exporter_for(free_port(), max_queue=25, batch_size=10)  # nothing listens there
    telemetry.set_exporter(exporter)
    telemetry.start()
    t0 = time.perf_counter()
    for i in range(100):
        telemetry.events.track("flood", attributes={"i": i})
    assert time.perf_counter() - t0 < 100 * NON_BLOCKING_S
    assert exporter.queued_rows <= 25
    assert exporter.stats.values["dropped"] >= 75
    assert (telemetry.registry.get_sample_value("tsengine_instrument_export_dropped_total") or 0) >= 75
    assert await asyncio.to_thread(exporter.flush, 0.2) is False

    # Audit events pushed out of the export queue go to the spill file, not into the void.
    spill = tmp_path / "audit.jsonl"
    telemetry.events.audit_spill_path = str(spill)
    for i in range(40):
        telemetry.events.track_audit_event("role_changed", actor=f"admin-{i}")
    lines = spill.read_text().splitlines()
    assert len(lines) >= 15
    assert telemetry.registry.self_metrics.audit_spilled.get() == len(lines)
    assert telemetry.registry.self_metrics.audit_lost.get() == 0


async def test_bad_token_is_counted_and_not_retried(
    make_client: Callable[..., Awaitable[TestClient]], telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    rt = telemetry
    orders, _, _ = app_metrics(rt)
    orders.labels("pro").inc()
    exporter = exporter_for(client.port, token="not-a-token", batch_size=5)
    rt.set_exporter(exporter)
    rt.start()
    for i in range(7):
        rt.events.track("refused", attributes={"i": i})
    with caplog.at_level("DEBUG", logger="tsengine.instrument._push"):
        assert await asyncio.to_thread(exporter.flush, 10.0) is False
        assert exporter.queued_rows == 0  # given up, not kept for retrying
        assert exporter.stats.values["rejected"] == 7
        assert exporter.stats.values["retries"] == 0
        # A read-only token is refused too (403); the worker also gives up on it.
        exporter.token = READ_TOKEN
        exporter.export_now()
        exporter.wake()
        await poll(
            lambda: asyncio.sleep(0, exporter.queued_rows == 0 and exporter.stats.values["rejected"] > 7),
            timeout_s=10,
            what="the worker's rejected push",
        )
    assert exporter.stats.values["retries"] == 0
    assert (rt.registry.get_sample_value("tsengine_instrument_export_rejected_total") or 0) > 7
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "refused with" in r.message]
    assert len(warnings) == 1 and "401" in warnings[0].message


async def test_429_is_retried_after_retry_after(telemetry: Telemetry) -> None:
    calls: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(await request.read())
        if len(calls) == 1:
            return web.json_response({"error": "Overloaded"}, status=429, headers={"Retry-After": "1"})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/import", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        exporter = exporter_for(server.port)
        telemetry.set_exporter(exporter)
        telemetry.events.track("once")
        t0 = time.monotonic()
        assert await asyncio.to_thread(exporter.flush, 10.0) is True
        assert time.monotonic() - t0 >= 0.9  # waited for Retry-After
        assert len(calls) == 2 and calls[0] == calls[1]
        assert exporter.stats.values["retries"] == 1
        assert exporter.stats.values["sent"] == 1
    finally:
        await server.close()


def test_configure_builds_an_exporter_from_the_config() -> None:
    rt = Telemetry(
        TelemetryConfig(
            system_metrics_enabled=False,
            exporter_endpoint="http://127.0.0.1:1",
            exporter_token="t",
            exporter_batch_size=7,
            exporter_queue_size=70,
        ),
        registry=CollectorRegistry(),
    )
    exporter = rt.exporter
    assert isinstance(exporter, HttpExporter)
    assert (exporter.batch_size, exporter.max_queue, exporter.token) == (7, 70, "t")
    assert not exporter.running  # built, not started: construction starts no thread
    exporter.shutdown(0.0)  # nothing listens on port 1: do not spend set_exporter's 5 s flushing
    rt.apply(rt.config.replace(exporter_endpoint=None))
    assert rt.exporter is None
    with pytest.raises(ConfigError, match="TELEMETRY_EXPORTER_ENDPOINT"):
        rt.apply(rt.config.replace(exporter_endpoint="tsengine:8181", service_name="other"))
    assert rt.config.service_name == "unknown_service"  # nothing applied


# -- OTLP/HTTP metrics ---------------------------------------------------------------------------


async def test_otlp_metrics_land_like_the_opentelemetry_sdk(
    make_client: Callable[..., Awaitable[TestClient]], telemetry: Telemetry
) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    rt = telemetry
    exporter = OtlpMetricsExporter(f"http://127.0.0.1:{client.port}", token=WRITE_TOKEN, interval_s=3600.0)
    rt.set_exporter(exporter)
    orders, depth, latency = app_metrics(rt)
    orders.labels("pro").inc(3)
    orders.labels("free").inc()
    depth.set(7)
    for v in (0.05, 0.5, 0.7, 3.0):
        latency.labels("import").observe(v)
    with bind_context(user_id="alice", correlation_id="req-7"):
        sent = rt.events.track("sent_as_a_log_record", category="business", severity="warning", message="m")
    exporter.export_now()
    assert await asyncio.to_thread(exporter.flush, 10.0) is True
    assert exporter.stats.values["rejected"] == 0

    async def sql(text: str, db: str = "default") -> list[list[Any]]:
        resp = await client.post(
            "/api/v1/sql", json={"sql": text, "db": db}, headers={"Authorization": f"Bearer {READ_TOKEN}"}
        )
        body = await resp.json()
        assert resp.status == 200, body
        return list(body["rows"])

    assert await sql(
        "SELECT plan, value, otel_temporality, otel_monotonic, service_name, otel_scope_name "
        "FROM orders_total ORDER BY plan"
    ) == [
        ["free", 1.0, "cumulative", "true", "shop", "tsengine.instrument"],
        ["pro", 3.0, "cumulative", "true", "shop", "tsengine.instrument"],
    ]
    assert await sql("SELECT value FROM queue_depth") == [[7.0]]
    ours_buckets = await sql("SELECT le, value FROM job_seconds_bucket WHERE job = 'import' ORDER BY value")
    assert ours_buckets == [["0.1", 1.0], ["1", 3.0], ["+Inf", 4.0]]
    assert await sql("SELECT value FROM job_seconds_count") == [[4.0]]
    assert await sql("SELECT round(value, 6) FROM job_seconds_sum") == [[4.25]]
    # Events went to /v1/logs: the row the native exporter would have written to `events`.
    assert await sql(
        "SELECT id, service, category, severity, name, message, user_id, correlation_id FROM events"
    ) == [[sent.id, "shop", "business", "warning", "sent_as_a_log_record", "m", "alice", "req-7"]]

    # The OpenTelemetry SDK recording the same into db "otel": the same tables, tags and values.
    endpoint = str(client.make_url("/v1/metrics?db=otel"))

    def otel_sdk() -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {WRITE_TOKEN}"}),
            export_interval_millis=3_600_000,
        )
        provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "shop"}))
        meter = provider.get_meter("tsengine.instrument")
        counter = meter.create_counter("orders_total")
        counter.add(3.0, {"plan": "pro"})
        counter.add(1.0, {"plan": "free"})
        meter.create_gauge("queue_depth").set(7.0)
        hist = meter.create_histogram("job_seconds", explicit_bucket_boundaries_advisory=[0.1, 1.0])
        for v in (0.05, 0.5, 0.7, 3.0):
            hist.record(v, {"job": "import"})
        provider.shutdown()

    await asyncio.to_thread(otel_sdk)
    tables = await asyncio.to_thread(engine_of(client).tables)
    ours = sorted(t for db, t in tables if db == "default")
    theirs = sorted(t for db, t in tables if db == "otel")
    assert theirs == [
        "job_seconds_bucket",
        "job_seconds_count",
        "job_seconds_sum",
        "orders_total",
        "queue_depth",
    ]
    assert set(theirs) <= set(ours)  # ours also has the SDK's self-metrics (export and event counters)
    assert "tsengine_instrument_export_sent_total" in ours
    columns = "plan, value, otel_temporality, otel_monotonic, service_name"
    assert await sql(f"SELECT {columns} FROM orders_total ORDER BY plan", "otel") == await sql(
        f"SELECT {columns} FROM orders_total ORDER BY plan"
    )
    assert await sql("SELECT le, value FROM job_seconds_bucket ORDER BY value", "otel") == ours_buckets


# -- embedded engine -----------------------------------------------------------------------------

SNAPSHOT_NS = 1_700_000_000 * 10**9


async def test_embedded_exporter_writes_the_same_rows_as_the_http_exporter(
    make_client: Callable[..., Awaitable[TestClient]], telemetry: Telemetry, tmp_path: Path
) -> None:
    client = await make_client()
    rt = telemetry
    http_exporter = exporter_for(client.port)
    embedded = EmbeddedExporter(
        path=tmp_path / "embedded", interval_s=3600.0, engine_settings={"fsync": "none"}
    )
    rt.set_exporter(embedded)
    embedded.start()
    orders, depth, latency = app_metrics(rt)
    orders.labels("pro").inc(3)
    depth.set(7)
    latency.labels("import").observe(0.5)
    with bind_context(user_id="u-1", correlation_id="c-42"):
        rt.events.track("report_exported", attributes={"format": "csv"})
        rt.events.track_audit_event("role_changed", actor="admin")
    embedded.export_now()
    assert await asyncio.to_thread(embedded.flush, 10.0) is True
    assert embedded.stats.values["sent"] > 0 and embedded.stats.values["rejected"] == 0
    # The HTTP exporter gets the same snapshot and events (no attach: no timing difference).
    families = rt.registry.collect()
    http_exporter.service = "shop"
    http_exporter.export_metrics(families, time_ns=SNAPSHOT_NS)
    embedded.export_metrics(families, time_ns=SNAPSHOT_NS)
    http_exporter.export_events(rt.events.get_events())
    assert await asyncio.to_thread(http_exporter.flush, 10.0) is True
    assert await asyncio.to_thread(embedded.flush, 10.0) is True
    engine = embedded.engine
    assert engine is not None

    def local(sql: str) -> list[list[Any]]:
        table = engine.sql(sql)
        return [list(r.values()) for r in table.to_pylist()]

    for sql in (
        f"SELECT plan, service, value FROM orders_total WHERE epoch_ns(time) = {SNAPSHOT_NS}",
        f"SELECT value FROM queue_depth WHERE epoch_ns(time) = {SNAPSHOT_NS}",
        f"SELECT le, job, value FROM job_seconds_bucket WHERE epoch_ns(time) = {SNAPSHOT_NS} "
        "ORDER BY value, le",
        "SELECT name, category, severity, service, message, attributes, user_id, correlation_id "
        "FROM events ORDER BY id",
    ):
        assert await asyncio.to_thread(local, sql) == await query(client, sql), sql
    assert await asyncio.to_thread(local, "SELECT count(*) FROM events") == [[2]]
    http_exporter.shutdown(0.0)

    await asyncio.to_thread(rt.stop, 5.0)  # last snapshot, flush, and the engine is closed
    assert embedded.engine is None and not embedded.running

    from tsengine import Engine

    def reopen() -> list[Any]:
        with Engine.open(tmp_path / "embedded") as eng:
            return eng.sql("SELECT count(*) AS n FROM orders_total").to_pylist()

    assert (await asyncio.to_thread(reopen))[0]["n"] >= 3  # durable: closed cleanly, reopened


async def test_embedded_exporter_refuses_a_conflicting_row_and_keeps_going(
    telemetry: Telemetry, engines: Callable[..., Any]
) -> None:
    engine = await asyncio.to_thread(engines)
    await asyncio.to_thread(engine.write_rows, "queue_depth", [{"time": 1, "value": "text"}])
    exporter = EmbeddedExporter(engine, interval_s=3600.0, batch_size=1)
    telemetry.set_exporter(exporter)
    Gauge("queue_depth", "Jobs waiting.", registry=telemetry.registry).set(7)
    telemetry.events.track("fine")
    exporter.export_metrics(telemetry.registry.collect(), time_ns=2)
    assert await asyncio.to_thread(exporter.flush, 10.0) is False  # the type conflict is refused
    assert exporter.stats.values["rejected"] >= 1
    assert exporter.queued_rows == 0
    rows = await asyncio.to_thread(lambda: engine.sql("SELECT name FROM events").to_pylist())
    assert rows == [{"name": "fine"}]
    exporter.shutdown(1.0)
    assert not engine._closed  # a caller's engine is not closed by the exporter


async def test_embedded_export_configured_from_the_environment(tmp_path: Path) -> None:
    env = {
        "TELEMETRY_EXPORT": "embedded",
        "TELEMETRY_EXPORT_PATH": str(tmp_path / "tsdb"),
        "TELEMETRY_SERVICE_NAME": "billing",
        "SYSTEM_METRICS_ENABLED": "false",
    }
    rt = Telemetry(TelemetryConfig.from_env(env), registry=CollectorRegistry())
    exporter = rt.exporter
    assert isinstance(exporter, EmbeddedExporter)
    rt.start()  # app startup: the worker runs (the engine opens on its first delivery)
    Counter("invoices_total", "Invoices.", registry=rt.registry).inc(2)
    rt.events.track_billing_event("invoice_created", amount=10.0)
    await asyncio.to_thread(rt.stop, 10.0)  # app shutdown: last snapshot, flush, engine closed
    assert exporter.engine is None and exporter.stats.values["sent"] > 0

    from tsengine import Engine

    def read() -> tuple[list[Any], list[Any]]:
        with Engine.open(tmp_path / "tsdb") as eng:
            return (
                eng.sql("SELECT service, value FROM invoices_total").to_pylist(),
                eng.sql("SELECT name, category, service FROM events").to_pylist(),
            )

    invoices, events = await asyncio.to_thread(read)
    assert invoices == [{"service": "billing", "value": 2.0}]
    assert events == [{"name": "invoice_created", "category": "billing", "service": "billing"}]
