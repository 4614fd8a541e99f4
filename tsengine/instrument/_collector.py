"""MetricsCollector: the manual metrics API and the business helpers, over a registry.

In: ``record_metric(name, value, MetricType.GAUGE, labels)`` as the seed application calls it,
and helpers for user actions, feature usage, revenue, billing, licensing and payments. Each
call updates a metric of the registry (created on first use, with the label names of that
first call) and appends a :class:`DataPoint` to a bounded store of recent points
(``METRICS_MAX_DATA_POINTS``, oldest evicted and counted; points older than
``METRICS_RETENTION_HOURS`` pruned). Out: the registry's exposition and ``get_data_points()``.

User ids and other unbounded values are never used as labels here: the helpers take them for
the data point's attributes only.

Thread-safe; nothing blocks beyond short locks. When disabled, every call returns at once and
the factory methods hand out :data:`NOOP_METRIC`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._exposition import to_json
from tsengine.instrument._family import MetricType
from tsengine.instrument._metrics import DEFAULT_BUCKETS, Counter, Gauge, Histogram, Metric, Summary
from tsengine.instrument._names import MetricDefinitionError
from tsengine.instrument._noop import NOOP_METRIC
from tsengine.instrument._registry import REGISTRY, CollectorRegistry

__all__ = ["DataPoint", "MetricsCollector"]

_NS_PER_HOUR = 3_600 * 10**9
#: Payments remembered per method for ``payment_success_rate``: recent enough to move, large
#: enough not to flap on a single failure.
PAYMENT_WINDOW = 1000

_CLASS_OF: dict[MetricType, type[Metric]] = {
    MetricType.COUNTER: Counter,
    MetricType.GAUGE: Gauge,
    MetricType.HISTOGRAM: Histogram,
    MetricType.SUMMARY: Summary,
    MetricType.TIMER: Histogram,
}


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One recorded value, as the manual API received it."""

    name: str
    value: float
    type: MetricType
    time_ns: int
    labels: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "type": self.type.value,
            "time_ns": self.time_ns,
            "labels": dict(self.labels),
            "attributes": dict(self.attributes),
        }


class MetricsCollector:
    """Manual metrics and business helpers. See the module docstring.

    Args:
        registry: where the metrics are created.
        max_data_points: bound of the recent data point store.
        retention_hours: age bound of the store.
        clock: time source for data points.
        enabled: when False, nothing is recorded.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        max_data_points: int = 10_000,
        retention_hours: float = 24.0,
        clock: Clock = SYSTEM_CLOCK,
        enabled: bool = True,
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._points: deque[DataPoint] = deque()
        self._payments: dict[str, deque[bool]] = {}
        self.enabled = enabled
        self.max_data_points = max_data_points
        self.retention_ns = int(retention_hours * _NS_PER_HOUR)

    def configure(self, *, enabled: bool, max_data_points: int, retention_hours: float) -> None:
        """Apply new settings in place."""
        with self._lock:
            self.enabled = enabled
            self.max_data_points = max_data_points
            self.retention_ns = int(retention_hours * _NS_PER_HOUR)
            self._trim_locked(self._clock.time_ns())

    # -- get-or-create metrics -----------------------------------------------------------------

    def metric(
        self,
        metric_type: MetricType,
        name: str,
        documentation: str = "",
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Any:
        """The registry's metric ``name``, created if missing; raises if it has another type/labels."""
        if not self.enabled:
            return NOOP_METRIC
        cls = _CLASS_OF.get(metric_type)
        if cls is None:  # info and stateset carry labels or a state, not one number
            raise MetricDefinitionError(
                f"cannot record metric {name!r} as {metric_type.value}: it has no single value; "
                "use Info or Enum"
            )
        family = cls._normalize_name(name)
        existing = self.registry.get(family)
        if existing is None:
            with self._lock:
                existing = self.registry.get(family)
                if existing is None:
                    doc = documentation or f"{name} (recorded through metrics_collector)"
                    if cls is Histogram:
                        return Histogram(name, doc, labelnames, registry=self.registry, buckets=buckets)
                    return cls(name, doc, labelnames, registry=self.registry)
        if type(existing) is not cls or set(existing.labelnames) != set(labelnames):
            raise MetricDefinitionError(
                f"cannot record metric {name!r} as {metric_type.value} with labels {tuple(labelnames)!r}: "
                f"it exists as {existing!r}"
            )
        return existing

    def counter(self, name: str, documentation: str = "", labelnames: Sequence[str] = ()) -> Any:
        return self.metric(MetricType.COUNTER, name, documentation, labelnames)

    def gauge(self, name: str, documentation: str = "", labelnames: Sequence[str] = ()) -> Any:
        return self.metric(MetricType.GAUGE, name, documentation, labelnames)

    def histogram(
        self,
        name: str,
        documentation: str = "",
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Any:
        return self.metric(MetricType.HISTOGRAM, name, documentation, labelnames, buckets=buckets)

    # -- the manual API ------------------------------------------------------------------------

    def record_metric(
        self,
        name: str,
        value: float,
        metric_type: MetricType | str = MetricType.GAUGE,
        labels: Mapping[str, object] | None = None,
        *,
        documentation: str = "",
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Record ``value``: a gauge is set, a counter increased by it, a histogram/summary/timer observes it.

        Example: ``metrics_collector.record_metric("daily_revenue", 2500.50, MetricType.GAUGE)``.
        Raises MetricDefinitionError if ``name`` exists with another type or label names, and
        ValueError for a negative counter increment.
        """
        if not self.enabled:
            return
        mtype = metric_type if isinstance(metric_type, MetricType) else MetricType(metric_type)
        label_map = {k: str(v) for k, v in (labels or {}).items()}
        names = tuple(sorted(label_map))
        metric = self.metric(mtype, name, documentation, names)
        target = metric.labels(**label_map) if names else metric
        if mtype is MetricType.COUNTER:
            target.inc(value)
        elif mtype is MetricType.GAUGE:
            target.set(value)
        else:
            target.observe(value)
        self._append(DataPoint(name, float(value), mtype, self._clock.time_ns(), label_map, attributes or {}))

    def _append(self, point: DataPoint) -> None:
        with self._lock:
            self._points.append(point)
            self._trim_locked(point.time_ns)

    def _trim_locked(self, now_ns: int) -> None:
        points, cutoff = self._points, now_ns - self.retention_ns
        evicted = 0
        while points and (len(points) > self.max_data_points or points[0].time_ns < cutoff):
            points.popleft()
            evicted += 1
        if evicted:
            self.registry.self_metrics.data_points_evicted.inc(evicted)

    def get_data_points(
        self, name: str | None = None, *, since_ns: int | None = None, limit: int | None = None
    ) -> list[DataPoint]:
        """Recent data points, oldest first, by name and/or since a time; ``limit`` keeps the newest."""
        with self._lock:
            points = list(self._points)
        out = [
            p
            for p in points
            if (name is None or p.name == name) and (since_ns is None or p.time_ns >= since_ns)
        ]
        return out[-limit:] if limit else out

    def summary(self, name: str) -> dict[str, float] | None:
        """count/min/max/mean/last of the recent data points of ``name``, or None."""
        values = [p.value for p in self.get_data_points(name)]
        if not values:
            return None
        return {
            "count": float(len(values)),
            "min": min(values),
            "max": max(values),
            "mean": sum(values) / len(values),
            "last": values[-1],
        }

    def to_json(self) -> dict[str, object]:
        """The registry's families plus the recent data points, JSON-ready."""
        out = to_json(self.registry.collect(), time_ns=self._clock.time_ns())
        out["data_points"] = [p.to_dict() for p in self.get_data_points()]
        return out

    # -- business helpers ----------------------------------------------------------------------

    def record_user_action(self, action: str, *, user_type: str = "user", user_id: str | None = None) -> None:
        """Count a user action by action and user type (the user id goes to the data point only)."""
        self._count(
            "user_actions_total",
            "User actions by action and user type.",
            {"action": action, "user_type": user_type},
            {"user_id": user_id},
        )

    def record_feature_usage(
        self, feature: str, *, tier: str = "default", user_id: str | None = None
    ) -> None:
        """Count the use of a feature by feature and plan tier."""
        self._count(
            "feature_usage_total",
            "Feature uses by feature and plan tier.",
            {"feature": feature, "tier": tier},
            {"user_id": user_id},
        )

    def record_revenue_event(
        self, amount: float, *, currency: str = "USD", source: str = "unknown", customer_id: str | None = None
    ) -> None:
        """Add revenue (``revenue_total{currency,source}``) and observe the amount's distribution."""
        if not self.enabled:
            return
        self._count(
            "revenue_total",
            "Revenue by currency and source.",
            {"currency": currency, "source": source},
            {"customer_id": customer_id},
            amount,
        )
        self.histogram(
            "revenue_event_amount",
            "Amount per revenue event.",
            ("currency",),
            buckets=(1, 5, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000),
        ).labels(currency).observe(amount)

    def record_billing_event(
        self, event_type: str, *, amount: float | None = None, currency: str = "USD", success: bool = True
    ) -> None:
        """Count a billing event by type and outcome; add its amount to ``billing_amount_total``."""
        status = "success" if success else "failure"
        self._count(
            "billing_events_total",
            "Billing events by type and outcome.",
            {"event_type": event_type, "status": status},
            {"amount": amount},
        )
        if amount is not None and success and self.enabled:
            self.counter(
                "billing_amount_total",
                "Billed amount by event type and currency.",
                ("event_type", "currency"),
            ).labels(event_type, currency).inc(amount)

    def record_licensing_operation(
        self, operation: str, *, license_type: str = "standard", success: bool = True
    ) -> None:
        """Count a licensing operation (activate, validate, revoke…) by type and outcome."""
        self._count(
            "license_operations_total",
            "Licensing operations by operation, license type and outcome.",
            {
                "operation": operation,
                "license_type": license_type,
                "status": "success" if success else "failure",
            },
            {},
        )

    def record_payment(
        self, *, success: bool, method: str = "card", amount: float | None = None, currency: str = "USD"
    ) -> None:
        """Count a payment attempt and update ``payment_success_rate{method}``.

        The rate is over the last :data:`PAYMENT_WINDOW` attempts of that method, so it moves
        with recent behaviour instead of averaging over the process's life.
        """
        if not self.enabled:
            return
        status = "success" if success else "failure"
        self._count(
            "payments_total",
            "Payment attempts by method and outcome.",
            {"method": method, "status": status},
            {"amount": amount, "currency": currency},
        )
        with self._lock:
            window = self._payments.get(method)
            if window is None:
                window = self._payments[method] = deque(maxlen=PAYMENT_WINDOW)
            window.append(success)
            rate = sum(window) / len(window)
        self.gauge(
            "payment_success_rate",
            f"Share of successful payments over the last {PAYMENT_WINDOW} attempts, by method.",
            ("method",),
        ).labels(method).set(rate)

    def payment_success_rate(self, method: str | None = None) -> float | None:
        """Success share over the recent window, for one method or all; None before any payment."""
        with self._lock:
            windows = [self._payments[method]] if method in self._payments else []
            if method is None:
                windows = list(self._payments.values())
            outcomes = [ok for w in windows for ok in w]
        return sum(outcomes) / len(outcomes) if outcomes else None

    def _count(
        self,
        name: str,
        documentation: str,
        labels: dict[str, str],
        attributes: dict[str, Any],
        amount: float = 1.0,
    ) -> None:
        if not self.enabled:
            return
        self.counter(name, documentation, tuple(labels)).labels(**labels).inc(amount)
        attrs = {k: v for k, v in attributes.items() if v is not None}
        self._append(DataPoint(name, float(amount), MetricType.COUNTER, self._clock.time_ns(), labels, attrs))
