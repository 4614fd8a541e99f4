"""App-side alerts: slow endpoints, error-rate bursts, security bursts; bounded; events; health."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tsengine.instrument import CollectorRegistry, SecurityMonitor, Telemetry, TelemetryConfig
from tsengine.instrument._alerts import ALERT_CATEGORY

from .conftest import FakeClock


@pytest.fixture
def rt(clock: FakeClock) -> Iterator[Telemetry]:
    config = TelemetryConfig(system_metrics_enabled=False, alerts_enabled=True, slow_request_threshold_s=0.5)
    telemetry = Telemetry(config, registry=CollectorRegistry(), clock=clock)
    yield telemetry
    telemetry.stop()


def alert_events(rt: Telemetry) -> list[tuple[str, str, str]]:
    return [
        (ev.name, ev.attributes["state"], str(ev.severity))
        for ev in rt.events.get_events(category=ALERT_CATEGORY)
    ]


def test_slow_endpoint_fires_once_and_resolves_after_the_window(rt: Telemetry, clock: FakeClock) -> None:
    rt.performance.record_request("GET", "/search", 200, 0.1)
    assert rt.alerts.alerts() == []
    rt.performance.record_request("GET", "/search", 200, 2.0)
    rt.performance.record_request("GET", "/search", 200, 3.0)  # still the same alert, latest value
    (alert,) = rt.alerts.alerts(state="firing")
    assert alert["name"] == "slow_endpoint"
    assert alert["labels"] == {"route": "GET /search"}
    assert (alert["value"], alert["severity"], alert["since_ns"]) == (3.0, "warning", clock.time_ns())
    assert rt.health()["components"]["alerts"]["firing"] == [alert]
    clock.advance(30)
    assert rt.alerts.alerts(state="firing")  # within the window
    clock.advance(31)
    (resolved,) = rt.alerts.alerts()
    assert resolved["state"] == "resolved" and resolved["resolved_ns"] == clock.time_ns()
    assert alert_events(rt) == [("slow_endpoint", "firing", "warning"), ("slow_endpoint", "resolved", "info")]


def test_error_rate_burst_per_route(rt: Telemetry, clock: FakeClock) -> None:
    for i in range(9):
        rt.performance.record_request("POST", "/pay", 500, 0.01)
        rt.performance.record_request("GET", "/ok", 200 if i else 503, 0.01)
    assert rt.alerts.alerts() == []  # 9 requests: below min_requests
    rt.performance.record_request("POST", "/pay", 500, 0.01)
    (alert,) = rt.alerts.alerts(state="firing")
    assert (alert["name"], alert["labels"], alert["value"]) == (
        "high_error_rate",
        {"route": "POST /pay"},
        1.0,
    )
    assert alert["severity"] == "error"
    for _ in range(10):
        rt.performance.record_request("POST", "/pay", 200, 0.01)
    assert rt.alerts.alerts(state="firing")[0]["value"] == 0.5  # 10 of 20 failed: still at the threshold
    rt.performance.record_request("POST", "/pay", 200, 0.01)
    assert rt.alerts.alerts(state="firing") == []  # 10 of 21: below
    # A quiet route's alert resolves when its traffic leaves the window.
    for _ in range(10):
        rt.performance.record_request("GET", "/down", 500, 0.01)
    assert [a["labels"]["route"] for a in rt.alerts.alerts(state="firing")] == ["GET /down"]
    clock.advance(61)
    assert rt.alerts.alerts(state="firing") == []
    assert [name for name, state, _ in alert_events(rt) if state == "firing"] == ["high_error_rate"] * 2


def test_security_bursts_become_alerts(rt: Telemetry, clock: FakeClock) -> None:
    security = SecurityMonitor(rt.events, clock=clock, auth_failure_threshold=5)
    for _ in range(5):
        security.observe("10.0.0.9", 401, "/admin", route_matched=True)
    (alert,) = rt.alerts.alerts()
    assert (alert["name"], alert["labels"], alert["value"]) == (
        "auth_failure_burst",
        {"client": "10.0.0.9"},
        5.0,
    )
    clock.advance(61)
    assert rt.alerts.alerts()[0]["state"] == "resolved"


def test_records_are_bounded_and_refusals_counted(clock: FakeClock) -> None:
    config = TelemetryConfig(system_metrics_enabled=False, alerts_enabled=True, alerts_max_alerts=3)
    rt = Telemetry(config, registry=CollectorRegistry(), clock=clock)
    for i in range(5):
        rt.performance.record_request("GET", f"/r{i}", 200, 5.0)
    assert len(rt.alerts.alerts()) == 3
    assert rt.alerts.refused == 2
    clock.advance(61)
    assert [a["state"] for a in rt.alerts.alerts()] == ["resolved"] * 3
    for i in range(5, 7):  # resolved records make room, oldest first
        rt.performance.record_request("GET", f"/r{i}", 200, 5.0)
    assert [a["labels"]["route"] for a in rt.alerts.alerts()] == ["GET /r2", "GET /r5", "GET /r6"]


def test_off_by_default_and_switchable(clock: FakeClock) -> None:
    rt = Telemetry(TelemetryConfig(system_metrics_enabled=False), registry=CollectorRegistry(), clock=clock)
    assert rt.performance.request_observer is None
    rt.performance.record_request("GET", "/slow", 200, 5.0)
    assert rt.alerts.alerts() == [] and rt.health()["components"]["alerts"]["enabled"] is False
    rt.apply(rt.config.replace(alerts_enabled=True))
    rt.performance.record_request("GET", "/slow", 200, 5.0)
    assert len(rt.alerts.alerts()) == 1
    rt.apply(rt.config.replace(enabled=False, alerts_enabled=True))  # the master switch wins
    assert rt.performance.request_observer is None and not rt.alerts.enabled


def test_a_failing_rule_never_reaches_the_request(rt: Telemetry) -> None:
    rt.alerts.clock = None  # type: ignore[assignment]  # every rule now fails
    rt.performance.record_request("GET", "/x", 200, 5.0)
    assert rt.registry.get_sample_value("tsengine_instrument_errors_total", {"component": "alerts"}) == 1.0
