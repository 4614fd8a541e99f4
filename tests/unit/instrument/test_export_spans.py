"""Where spans go under each ``TELEMETRY_EXPORT`` value, and the embedded span export.

``embedded`` writes spans into the ``spans`` table of the same engine the metrics and events
exporter writes into (one engine per data directory), through the server's own decoder: the
tests read them back with SQL from a real engine (real Parquet, real DuckDB) after a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tsengine.instrument import (
    CollectorRegistry,
    Counter,
    EmbeddedExporter,
    OtlpSpanExporter,
    SpanKind,
    StatusCode,
    Telemetry,
    TelemetryConfig,
    Tracer,
)
from tsengine.instrument._embedded import SHARED_ENGINES
from tsengine.instrument._tracing.exporter import EmbeddedSpanExporter

from .conftest import FakeClock

TRACING = {"DISTRIBUTED_TRACING_ENABLED": "true", "SYSTEM_METRICS_ENABLED": "false"}


def runtime(env: dict[str, str], clock: FakeClock | None = None) -> Telemetry:
    config = TelemetryConfig.from_env({**TRACING, **env})
    if clock is None:
        return Telemetry(config, registry=CollectorRegistry())
    return Telemetry(config, registry=CollectorRegistry(), clock=clock)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TELEMETRY_EXPORT": "none", "TELEMETRY_EXPORTER_ENDPOINT": "http://ts:8181"}, None),
        (
            {"TELEMETRY_EXPORT": "none", "TRACING_EXPORTER_ENDPOINT": "http://collector:4318"},
            "http://collector:4318/v1/traces",
        ),
        (
            {"TELEMETRY_EXPORT": "http", "TELEMETRY_EXPORTER_ENDPOINT": "http://ts:8181"},
            "http://ts:8181/v1/traces",
        ),
        (
            {"TELEMETRY_EXPORT": "otlp", "TELEMETRY_EXPORTER_ENDPOINT": "http://ts:8181"},
            "http://ts:8181/v1/traces",
        ),
        ({"TELEMETRY_EXPORTER_ENDPOINT": "http://ts:8181"}, "http://ts:8181/v1/traces"),  # unset: http
        ({}, None),
        ({"TELEMETRY_EXPORT": "embedded"}, "engine:{path}"),
        (
            {"TELEMETRY_EXPORT": "embedded", "TRACING_EXPORTER_ENDPOINT": "http://collector:4318/v1/traces"},
            "http://collector:4318/v1/traces",
        ),
    ],
)
def test_span_export_follows_telemetry_export(
    env: dict[str, str], expected: str | None, tmp_path: Path
) -> None:
    path = str(tmp_path / "tsdb")
    if env.get("TELEMETRY_EXPORT") == "embedded":
        env = {**env, "TELEMETRY_EXPORT_PATH": path}
    rt = runtime(env)
    try:
        processors = rt.tracer.processors
        if expected is None:
            assert processors == ()
            return
        (exporter,) = processors
        assert exporter.endpoint == expected.format(path=path)
        cls = EmbeddedSpanExporter if expected.startswith("engine:") else OtlpSpanExporter
        assert type(exporter) is cls
    finally:
        rt.stop(1.0)


def test_tracing_off_exports_no_spans(tmp_path: Path) -> None:
    env = {"TELEMETRY_EXPORT": "embedded", "TELEMETRY_EXPORT_PATH": str(tmp_path / "tsdb")}
    rt = Telemetry(TelemetryConfig.from_env(env), registry=CollectorRegistry())
    try:
        assert rt.tracer.processors == () and isinstance(rt.exporter, EmbeddedExporter)
    finally:
        rt.stop(1.0)


def test_reconfiguring_replaces_the_span_exporter(tmp_path: Path) -> None:
    embedded = {"TELEMETRY_EXPORT": "embedded", "TELEMETRY_EXPORT_PATH": str(tmp_path / "tsdb")}
    rt = runtime(embedded)
    try:
        (first,) = rt.tracer.processors
        rt.apply(TelemetryConfig.from_env({**TRACING, **embedded}))  # same settings: kept
        assert rt.tracer.processors == (first,)
        rt.apply(TelemetryConfig.from_env({**TRACING, "TELEMETRY_EXPORT": "none"}))
        assert rt.tracer.processors == () and first.is_shut_down
    finally:
        rt.stop(1.0)


def test_embedded_spans_share_the_engine_and_are_queryable_with_the_tree_intact(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "tsdb"
    env = {
        "TELEMETRY_EXPORT": "embedded",
        "TELEMETRY_EXPORT_PATH": str(path),
        "TELEMETRY_SERVICE_NAME": "shop",
    }
    rt = runtime(env, clock)
    rt.start()
    try:
        (span_exporter,) = rt.tracer.processors
        metrics_exporter = rt.exporter
        assert isinstance(span_exporter, EmbeddedSpanExporter) and isinstance(
            metrics_exporter, EmbeddedExporter
        )
        tracer = rt.tracer
        Counter("orders_total", "Orders.", registry=rt.registry).inc(3)
        with tracer.start_as_current_span(
            "GET /orders", SpanKind.SERVER, attributes={"http.route": "/orders"}
        ) as root:
            # Two siblings with the same name, kind, status and start time: both must stay (append-only).
            with (
                tracer.start_as_current_span("load") as first,
                tracer.start_as_current_span("GET", SpanKind.CLIENT) as client,
            ):
                client.add_event("retry", {"attempt": 2})
                client.set_status(StatusCode.ERROR, "db down")
            with tracer.start_as_current_span("load") as second:
                second.set_attribute("n", 2)
            clock.advance(0.25)
        # Both exporters deliver: one engine, opened once, held by both.
        metrics_exporter.export_now()
        assert span_exporter.flush(30.0) and metrics_exporter.flush(30.0)
        assert span_exporter.engine is not None and span_exporter.engine is metrics_exporter.engine
        assert SHARED_ENGINES.holders(path) == 2
        assert span_exporter.stats.values["sent"] == 4
    finally:
        rt.stop(30.0)
    assert SHARED_ENGINES.holders(path) == 0 and span_exporter.engine is None

    from tsengine import Engine

    with Engine.open(path) as engine:  # after a restart: persisted, nothing de-duplicated
        rows = engine.sql(
            "SELECT service, name, kind, status, status_message, trace_id, span_id, parent_span_id,"
            " duration_ns, attributes, events FROM spans ORDER BY span_id"
        ).to_pylist()
        orders = engine.sql("SELECT service, value FROM orders_total").to_pylist()
    assert orders and orders[-1] == {"service": "shop", "value": 3.0}
    by_id: dict[str, dict[str, Any]] = {r["span_id"]: r for r in rows}
    hexid = {s: f"{s.span_id:016x}" for s in (root, first, client, second)}
    assert set(by_id) == set(hexid.values())
    assert {r["trace_id"] for r in rows} == {f"{root.trace_id:032x}"}
    assert {r["service"] for r in rows} == {"shop"}
    parents = {r["span_id"]: r["parent_span_id"] for r in rows}
    assert parents == {
        hexid[root]: None,
        hexid[first]: hexid[root],
        hexid[second]: hexid[root],
        hexid[client]: hexid[first],
    }
    r, c, s = by_id[hexid[root]], by_id[hexid[client]], by_id[hexid[second]]
    assert (r["name"], r["kind"], r["duration_ns"]) == ("GET /orders", "server", 250_000_000)
    assert json.loads(r["attributes"])["http.route"] == "/orders"
    assert (c["kind"], json.loads(c["events"])[0]["name"]) == ("client", "retry")
    assert (c["status"], c["status_message"]) == ("error", "db down")
    assert (s["status"], json.loads(s["attributes"])) == ("unset", {"n": 2})
    # Same series and start time: only an append-only table keeps both.
    assert first.start_time_ns == second.start_time_ns
    assert sum(1 for row in rows if row["name"] == "load") == 2


def test_embedded_span_exporter_into_a_callers_engine(tmp_path: Path) -> None:
    from tsengine import Engine

    with Engine.open(tmp_path / "tsdb") as engine:
        exporter = EmbeddedSpanExporter(engine, service="worker", batch_size=2, db="ops")
        tracer = Tracer()
        tracer.add_processor(exporter)
        for i in range(3):
            tracer.start_span(f"job{i}").end()
        assert exporter.flush(30.0)
        exporter.shutdown(1.0)
        assert not engine._closed  # a caller's engine is not closed by the exporter
        names = engine.sql("SELECT name FROM ops.spans ORDER BY name").to_pylist()
        assert names == [{"name": "job0"}, {"name": "job1"}, {"name": "job2"}]
        assert exporter.stats.values == {"sent": 3, "dropped": 0, "rejected": 0, "retries": 0}
    with pytest.raises(ValueError, match="exactly one of engine= and path="):
        EmbeddedSpanExporter()
