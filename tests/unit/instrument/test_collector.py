"""metrics_collector: the seed's manual API, business helpers, the bounded data point store."""

from __future__ import annotations

import pytest

from tsengine.instrument import (
    NOOP_METRIC,
    Counter,
    Gauge,
    Histogram,
    MetricDefinitionError,
    MetricsCollector,
    MetricType,
    Summary,
    Telemetry,
    TelemetryConfig,
)

from .conftest import FakeClock


@pytest.fixture
def mc(rt: Telemetry) -> MetricsCollector:
    return rt.metrics


def test_seed_manual_api(mc: MetricsCollector, rt: Telemetry, clock: FakeClock) -> None:
    mc.record_metric("daily_revenue", 2500.50, MetricType.GAUGE)
    mc.record_metric("daily_revenue", 2600.00, MetricType.GAUGE)
    mc.record_metric("signups", 3, MetricType.COUNTER, {"plan": "pro"})
    mc.record_metric("signups", 2, MetricType.COUNTER, {"plan": "pro"})
    mc.record_metric("checkout_seconds", 0.3, MetricType.TIMER)
    mc.record_metric("basket_items", 4, "histogram")
    reg = rt.registry
    assert reg.get_sample_value("daily_revenue") == 2600.0
    assert reg.get_sample_value("signups_total", {"plan": "pro"}) == 5.0
    assert reg.get_sample_value("checkout_seconds_count") == 1.0
    assert reg.get_sample_value("basket_items_sum") == 4.0
    points = mc.get_data_points("daily_revenue")
    assert [p.value for p in points] == [2500.5, 2600.0]
    assert points[0].time_ns == clock.time_ns()
    assert mc.summary("daily_revenue") == {
        "count": 2.0, "min": 2500.5, "max": 2600.0, "mean": 2550.25, "last": 2600.0,
    }  # fmt: skip
    assert mc.summary("unknown") is None


def test_conflicting_type_or_labels_raise(mc: MetricsCollector) -> None:
    mc.record_metric("thing", 1, MetricType.GAUGE)
    with pytest.raises(MetricDefinitionError, match="exists"):
        mc.record_metric("thing", 1, MetricType.COUNTER)
    with pytest.raises(MetricDefinitionError):
        mc.record_metric("thing", 1, MetricType.GAUGE, {"extra": "label"})


def test_data_points_bounded_and_evictions_counted(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(metrics_max_data_points=5))
    for i in range(12):
        rt.metrics.record_metric("x", i)
    assert [p.value for p in rt.metrics.get_data_points()] == [7, 8, 9, 10, 11]
    assert rt.registry.get_sample_value("tsengine_instrument_data_points_evicted_total") == 7.0
    assert [p.value for p in rt.metrics.get_data_points(limit=2)] == [10, 11]


def test_data_points_expire_after_retention(rt: Telemetry, clock: FakeClock) -> None:
    rt.apply(rt.config.replace(metrics_retention_hours=1.0))
    rt.metrics.record_metric("x", 1)
    clock.advance(1800)
    rt.metrics.record_metric("x", 2)
    since = clock.time_ns()
    clock.advance(1801)
    rt.metrics.record_metric("x", 3)
    assert [p.value for p in rt.metrics.get_data_points("x")] == [2, 3]
    assert [p.value for p in rt.metrics.get_data_points(since_ns=since)] == [2, 3]


def test_business_helpers(mc: MetricsCollector, rt: Telemetry) -> None:
    reg = rt.registry
    mc.record_user_action("login", user_id="u-123")
    mc.record_user_action("login", user_type="admin")
    mc.record_feature_usage("export_pdf", tier="pro")
    mc.record_revenue_event(99.5, currency="EUR", source="stripe", customer_id="c1")
    mc.record_billing_event("invoice_created", amount=120.0)
    mc.record_billing_event("charge", success=False)
    mc.record_licensing_operation("activate", license_type="enterprise")
    mc.record_licensing_operation("validate", success=False)
    assert reg.get_sample_value("user_actions_total", {"action": "login", "user_type": "user"}) == 1.0
    assert reg.get_sample_value("user_actions_total", {"action": "login", "user_type": "admin"}) == 1.0
    assert reg.get_sample_value("feature_usage_total", {"feature": "export_pdf", "tier": "pro"}) == 1.0
    assert reg.get_sample_value("revenue_total", {"currency": "EUR", "source": "stripe"}) == 99.5
    assert reg.get_sample_value("revenue_event_amount_count", {"currency": "EUR"}) == 1.0
    assert reg.get_sample_value("billing_events_total", {"event_type": "charge", "status": "failure"}) == 1.0
    assert (
        reg.get_sample_value("billing_amount_total", {"event_type": "invoice_created", "currency": "USD"})
        == 120.0
    )
    assert (
        reg.get_sample_value(
            "license_operations_total",
            {"operation": "validate", "license_type": "standard", "status": "failure"},
        )
        == 1.0
    )
    # The user id is an attribute of the data point, never a label.
    login = mc.get_data_points("user_actions_total")[0]
    assert login.attributes == {"user_id": "u-123"}
    assert "user_id" not in login.labels


def test_payment_success_rate(mc: MetricsCollector, rt: Telemetry) -> None:
    assert mc.payment_success_rate() is None
    for ok in (True, True, True, False):
        mc.record_payment(success=ok, method="card", amount=10.0)
    mc.record_payment(success=False, method="paypal")
    assert mc.payment_success_rate("card") == 0.75
    assert mc.payment_success_rate("paypal") == 0.0
    assert mc.payment_success_rate() == 0.6
    assert rt.registry.get_sample_value("payment_success_rate", {"method": "card"}) == 0.75
    assert rt.registry.get_sample_value("payments_total", {"method": "card", "status": "success"}) == 3.0


def test_json_includes_families_and_points(mc: MetricsCollector) -> None:
    mc.record_metric("daily_revenue", 1.0)
    doc = mc.to_json()
    assert any(m["name"] == "daily_revenue" for m in doc["metrics"])  # type: ignore[union-attr]
    assert doc["data_points"][0]["name"] == "daily_revenue"  # type: ignore[index]


def test_disabled_collector_records_nothing(clock: FakeClock) -> None:
    rt = Telemetry(TelemetryConfig(metrics_enabled=False), clock=clock)
    rt.metrics.record_metric("x", 1)
    rt.metrics.record_payment(success=True)
    rt.metrics.record_user_action("login")
    assert rt.metrics.counter("c_total") is NOOP_METRIC
    NOOP_METRIC.labels("a").inc()
    with NOOP_METRIC.time():
        pass
    assert rt.metrics.get_data_points() == []
    assert rt.registry.collect() == []


#: What a metric describes about itself; the no-op metric has nothing to describe.
_DESCRIPTIVE = {"buckets", "documentation", "enabled", "family_names", "labelnames", "name", "series_count"}


@pytest.mark.parametrize("cls", [Counter, Gauge, Histogram, Summary])
def test_noop_metric_takes_every_call_of_the_metric_it_stands_for(cls: type) -> None:
    # Code written against a real metric must not break when metrics are switched off.
    public = {n for n in dir(cls) if not n.startswith("_")}
    assert public - set(dir(NOOP_METRIC)) <= _DESCRIPTIVE
    with pytest.raises(KeyError), NOOP_METRIC.count_exceptions(KeyError), NOOP_METRIC.track_inprogress():
        raise KeyError("propagates")

    @NOOP_METRIC.count_exceptions()
    @NOOP_METRIC.track_inprogress()
    def work() -> int:
        return 7

    assert work() == 7
