"""Telemetry runtime: health document, exporter seam, hooks, a disabled SDK doing nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tsengine.instrument import (
    CollectorRegistry,
    Exporter,
    Telemetry,
    TelemetryConfig,
    get_telemetry,
)

from .conftest import FakeClock


class RecordingExporter:
    """Implements the Exporter protocol; remembers calls."""

    def __init__(self) -> None:
        self.shutdowns = 0

    def export_metrics(self, families: Sequence[Any], *, time_ns: int) -> None: ...

    def export_data_points(self, points: Sequence[Any]) -> None: ...

    def export_events(self, events: Sequence[Any]) -> None: ...

    def flush(self, timeout_s: float) -> bool:
        return True

    def shutdown(self, timeout_s: float) -> None:
        self.shutdowns += 1


def test_health_document_is_json(rt: Telemetry) -> None:
    rt.metrics.record_metric("x", 1)
    rt.events.track("e")
    doc = rt.health()
    json.dumps(doc)
    assert doc["status"] == "ok"
    assert doc["components"]["metrics"]["data_points"] == 1
    assert doc["components"]["metrics"]["series"] >= 1
    assert doc["components"]["events"]["in_memory"] == 1
    assert doc["components"]["system_metrics"]["running"] is False


def test_exporter_seam(rt: Telemetry) -> None:
    first, second = RecordingExporter(), RecordingExporter()
    assert isinstance(first, Exporter)
    rt.set_exporter(first)
    rt.set_exporter(second)
    assert first.shutdowns == 1
    rt.stop()
    assert second.shutdowns == 1
    assert rt.health()["components"]["exporter"]["installed"] is True


def test_disabled_sdk_does_nothing_observable(clock: FakeClock) -> None:
    rt = Telemetry(TelemetryConfig.from_env({"TELEMETRY_ENABLED": "false"}), clock=clock)
    rt.start()
    rt.metrics.record_metric("x", 1)
    assert rt.events.track("e") is None
    rt.performance.record_request("GET", "/", 200, 1.0)
    assert not rt.system.running
    assert rt.registry.collect() == []
    assert rt.health()["status"] == "disabled"


def test_default_instance_is_shared() -> None:
    import tsengine.instrument as ti

    assert ti.metrics_collector is get_telemetry().metrics
    assert ti.event_tracker is get_telemetry().events
    assert ti.performance_monitor is get_telemetry().performance


def test_metrics_switch_off_keeps_events_and_timings_but_creates_no_metric(clock: FakeClock) -> None:
    rt = Telemetry(TelemetryConfig.from_env({"METRICS_ENABLED": "false"}), clock=clock)
    rt.performance.record_request("GET", "/a", 200, 2.0)
    with rt.performance.time_db_query("select t"):
        pass
    assert rt.events.track("e") is not None
    assert rt.performance.stats("request", "GET /a") is not None
    assert rt.registry.collect() == []


@pytest.mark.parametrize(
    ("env", "cls_name"),
    [
        ({"TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:1"}, "HttpExporter"),
        (
            {"TELEMETRY_EXPORT": "otlp", "TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:1"},
            "OtlpMetricsExporter",
        ),
        ({"TELEMETRY_EXPORT": "embedded", "TELEMETRY_EXPORT_PATH": "data"}, "EmbeddedExporter"),
    ],
)
def test_configured_exporter_is_built_not_started(env: dict[str, str], cls_name: str, tmp_path: Path) -> None:
    import tsengine.instrument as ti

    if "TELEMETRY_EXPORT_PATH" in env:
        env = {**env, "TELEMETRY_EXPORT_PATH": str(tmp_path / "data")}
    env = {**env, "SYSTEM_METRICS_ENABLED": "false", "TELEMETRY_EXPORTER_BATCH_SIZE": "7"}
    rt = Telemetry(TelemetryConfig.from_env(env), registry=CollectorRegistry())
    exporter = rt.exporter
    assert type(exporter) is getattr(ti, cls_name)
    assert exporter.batch_size == 7  # type: ignore[union-attr]
    assert not exporter.running  # type: ignore[union-attr]
    assert not (tmp_path / "data").exists()  # the embedded engine opens on first delivery
    exporter.shutdown(0.0)  # type: ignore[union-attr]
    # Applying the same settings to an app whose exporter was shut down (stop()) builds a new
    # one, as the span exporter does; with it running, the same settings keep it.
    rt.apply(rt.config)
    again = rt.exporter
    assert type(again) is getattr(ti, cls_name) and again is not exporter
    assert not again.is_shut_down  # type: ignore[union-attr]
    rt.apply(rt.config)
    assert rt.exporter is again
    again.shutdown(0.0)  # type: ignore[union-attr]
    rt.apply(rt.config.replace(export="none"))
    assert rt.exporter is None


def _metrics_recorded(rt: Telemetry) -> bool:
    rt.metrics.record_metric("switch_probe", 1)
    return rt.registry.get("switch_probe") is not None


def _event_tracked(rt: Telemetry) -> bool:
    return rt.events.track("probe") is not None


def _request_timed(rt: Telemetry) -> bool:
    rt.performance.record_request("GET", "/probe", 200, 0.01)
    return rt.performance.stats("request", "GET /probe") is not None


def _sampler_started(rt: Telemetry) -> bool:
    rt.start()
    running = rt.system.running
    rt.stop()
    return running


def _alerting(rt: Telemetry) -> bool:
    return rt.alerts.enabled and rt.performance.request_observer is not None


@pytest.mark.parametrize(
    ("variable", "probe", "default_on"),
    [
        ("METRICS_ENABLED", _metrics_recorded, True),
        ("EVENTS_ENABLED", _event_tracked, True),
        ("PERFORMANCE_MONITORING_ENABLED", _request_timed, True),
        ("SYSTEM_METRICS_ENABLED", _sampler_started, True),
        ("ALERTS_ENABLED", _alerting, False),
    ],
)
def test_each_switch_is_honoured(variable: str, probe: Any, default_on: bool, clock: FakeClock) -> None:
    def build(value: str | None) -> Telemetry:
        env = {"SYSTEM_METRICS_INTERVAL_S": "3600"}
        if value is not None:
            env[variable] = value
        return Telemetry(TelemetryConfig.from_env(env), registry=CollectorRegistry(), clock=clock)

    assert probe(build(None)) is default_on
    assert probe(build("on")) is True
    assert probe(build("off")) is False
    # The master switch turns every one of them off.
    master_off = TelemetryConfig.from_env({variable: "on", "TELEMETRY_ENABLED": "false"})
    assert probe(Telemetry(master_off, registry=CollectorRegistry(), clock=clock)) is False
