"""The alert manager's own metrics, registered in the server's registry (``/metrics``).

Who calls it: :class:`server.alerting.service.AlertService` creates one :class:`AlertingMetrics`
with ``app[METRICS_KEY].registry`` and updates it after each evaluation round and delivery.
"""

from __future__ import annotations

from tsengine.instrument import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AlertingMetrics"]

_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0)


class AlertingMetrics:
    """Evaluation time and errors, notifications by channel and result, instances by state."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.round_duration = Histogram(
            "tsengine_alert_evaluation_duration_seconds", "Time one evaluation round of every rule took.",
            registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        self.rule_duration = Histogram(
            "tsengine_alert_rule_evaluation_duration_seconds", "Time one rule's query took.",
            ("rule",), registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        self.rule_evaluations = Counter(
            "tsengine_alert_rule_evaluations", "Rule evaluations by rule and result (ok/error).",
            ("rule", "result"), registry=r,
        )  # fmt: skip
        self.notifications = Counter(
            "tsengine_alert_notifications", "Notifications by channel and result (sent/failed).",
            ("channel", "result"), registry=r,
        )  # fmt: skip
        self.instances = Gauge(
            "tsengine_alerts", "Alert instances in memory by state (pending/firing/resolved).",
            ("state",), registry=r,
        )  # fmt: skip
        self.evicted = Counter(
            "tsengine_alert_instances_evicted", "Resolved instances dropped from memory (max_alerts).",
            registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "tsengine_alert_instances_refused",
            "New alert instances not tracked because max_alerts instances were in memory.",
            registry=r,
        )
        for state in ("pending", "firing", "resolved"):
            self.instances.labels(state).set(0)
