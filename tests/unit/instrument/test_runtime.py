"""Telemetry runtime: health document, exporter seam, hooks, a disabled SDK doing nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tsengine.instrument import (
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
