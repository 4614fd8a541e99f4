"""Fixtures: a fake clock, a fresh registry and a fresh Telemetry per test; no thread leaks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tsengine.instrument import CollectorRegistry, Telemetry, TelemetryConfig, configure


class FakeClock:
    """Implements the Clock protocol; time moves only when a test calls ``advance``."""

    def __init__(self, start_ns: int = 1_700_000_000 * 10**9) -> None:
        self._ns = start_ns
        self._mono = 1000.0

    def time_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._ns += int(seconds * 1e9)
        self._mono += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def config() -> TelemetryConfig:
    return TelemetryConfig(system_metrics_enabled=False)


@pytest.fixture
def rt(config: TelemetryConfig, clock: FakeClock) -> Iterator[Telemetry]:
    telemetry = Telemetry(config, clock=clock)
    yield telemetry
    telemetry.stop()


@pytest.fixture(autouse=True)
def _no_thread_leak() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("tsengine")]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(autouse=True)
def _reset_default_config() -> Iterator[None]:
    yield
    configure(TelemetryConfig())
