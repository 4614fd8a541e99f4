"""All of the SDK's metrics about itself, in one place.

Created in a registry on first use (``registry.self_metrics``), exposed with the application's
metrics under the ``tsengine_instrument_`` prefix, so a scrape shows what the SDK dropped or
failed at. Their own cardinality is bounded by the number of metrics, categories and components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsengine.instrument._metrics import Counter

if TYPE_CHECKING:
    from tsengine.instrument._registry import CollectorRegistry

__all__ = ["SelfMetrics"]

PREFIX = "tsengine_instrument"


class SelfMetrics:
    """The self-metrics of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry, max_series=100_000)

        self.series_dropped = counter(
            "series_dropped_total", "New label sets refused by a metric's cardinality limit.", ("metric",)
        )
        self.errors = counter(
            "errors_total",
            "Failures inside the SDK, swallowed so the application keeps running.",
            ("component",),
        )
        self.events_evicted = counter(
            "events_evicted_total",
            "Events pushed out of the bounded in-memory buffer by newer ones.",
            ("category",),
        )
        self.subscriber_dropped = counter(
            "events_subscriber_dropped_total", "Events a slow subscriber's full queue did not take."
        )
        self.audit_spilled = counter(
            "audit_events_spilled_total", "Audit events moved from memory to the spill file."
        )
        self.audit_lost = counter(
            "audit_events_lost_total",
            "Audit events that could be neither kept in memory nor spilled to disk. Alert on this.",
        )
        self.data_points_evicted = counter(
            "data_points_evicted_total", "Recorded data points pushed out of the bounded store."
        )
