"""System metrics: psutil readings into gauges, a clean background thread, failures contained."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from tsengine.instrument import CollectorRegistry, SystemMetrics, Telemetry, TelemetryConfig

from .conftest import FakeClock


def test_collect_once_with_real_psutil(registry: CollectorRegistry) -> None:
    sm = SystemMetrics(registry=registry)
    snap = sm.collect_once()
    assert snap["process_rss_bytes"] > 0
    assert 0.0 <= snap["memory_percent"] <= 100.0
    assert snap["process_threads"] >= 1
    assert registry.get_sample_value("process_resident_memory_bytes") == snap["process_rss_bytes"]
    assert registry.get_sample_value("system_memory_bytes", {"state": "total"}) > 0
    assert registry.get_sample_value("system_disk_usage_bytes", {"path": "/", "state": "total"}) > 0
    assert registry.get_sample_value("process_cpu_seconds_total") > 0
    assert registry.get_sample_value("process_open_fds") >= 1
    assert registry.get_sample_value("process_open_files") is not None
    assert registry.get_sample_value("system_network_io_bytes_total", {"direction": "sent"}) is not None
    assert sm.snapshot() is snap
    assert sm.last_error is None
    assert sm.last_duration_s is not None and sm.last_duration_s >= 0


class FakePsutil:
    """The slice of psutil's interface the sampler uses, with one reading that fails."""

    def __init__(self, samples_wanted: int = 1) -> None:
        self.calls = 0
        self.samples_wanted = samples_wanted
        #: Set once ``samples_wanted`` samples have started: tests wait on it with a deadline.
        self.sampled = threading.Event()

    def cpu_percent(self, interval: float | None = None) -> float:
        self.calls += 1
        if self.calls >= self.samples_wanted:
            self.sampled.set()
        return 12.5

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=1000, available=400, used=600, percent=60.0)

    def disk_usage(self, path: str) -> Any:
        raise PermissionError(f"cannot stat {path}")

    def disk_io_counters(self) -> Any:
        return None

    def net_io_counters(self) -> Any:
        return SimpleNamespace(bytes_sent=10, bytes_recv=20)

    def Process(self) -> Any:
        return psutil.Process()


def test_failed_reading_is_counted_and_the_rest_goes_on(
    registry: CollectorRegistry, clock: FakeClock
) -> None:
    sm = SystemMetrics(registry=registry, psutil_module=FakePsutil(), clock=clock)
    snap = sm.collect_once()
    assert snap["cpu_percent"] == 12.5
    assert registry.get_sample_value("system_memory_percent") == 60.0
    assert registry.get_sample_value("system_network_io_bytes_total", {"direction": "received"}) == 20
    assert registry.get_sample_value("tsengine_instrument_errors_total", {"component": "system_metrics"}) == 1
    assert sm.last_error is not None and "disk usage" in sm.last_error


def test_thread_starts_samples_and_stops(registry: CollectorRegistry) -> None:
    fake = FakePsutil(samples_wanted=3)
    sm = SystemMetrics(registry=registry, psutil_module=fake, interval_s=0.01)
    assert not sm.running
    sm.start()
    sm.start()  # idempotent
    try:
        assert sm.running
        assert fake.sampled.wait(timeout=10), "the sampler did not sample three times within 10 s"
    finally:
        sm.stop()
    sm.stop()  # idempotent
    assert not sm.running
    assert not [t for t in threading.enumerate() if t.name == "tsengine-system-metrics"]


def test_runtime_start_honours_the_switch(clock: FakeClock) -> None:
    off = Telemetry(TelemetryConfig(system_metrics_enabled=False), psutil_module=FakePsutil())
    off.start()
    assert not off.system.running
    fake = FakePsutil()
    on = Telemetry(TelemetryConfig(system_metrics_interval_s=0.01), psutil_module=fake)
    on.start()
    try:
        assert fake.sampled.wait(timeout=10), "the sampler did not start within 10 s"
        on.apply(on.config.replace(enabled=False))  # switching telemetry off stops the thread
        assert not on.system.running
    finally:
        on.stop()


@pytest.mark.parametrize("bad", [0, -1])
def test_config_refuses_bad_interval(bad: float) -> None:
    with pytest.raises(ValueError, match="SYSTEM_METRICS_INTERVAL_S"):
        TelemetryConfig(system_metrics_interval_s=bad)
