"""CollectorRegistry: the set of collectors one ``/metrics`` endpoint exposes.

Every metric constructor registers into :data:`REGISTRY` unless given ``registry=`` (another
registry) or ``registry=None`` (not registered). Family names are unique within a registry: a
second metric with a taken name raises :class:`MetricDefinitionError`, as prometheus_client
does. ``collect()`` snapshots every collector; it is thread-safe and never holds the registry's
lock while a collector runs, so a slow collector cannot stall registration.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._family import Collector, MetricFamily
from tsengine.instrument._names import MetricDefinitionError

if TYPE_CHECKING:
    from tsengine.instrument._self_metrics import SelfMetrics

__all__ = ["REGISTRY", "CollectorRegistry", "Registry"]

#: Default label sets per metric before new ones are dropped; sized for route x method x status.
DEFAULT_MAX_SERIES_PER_METRIC = 1000


class CollectorRegistry:
    """A named set of collectors.

    Args:
        max_series_per_metric: default cardinality limit of the metrics registered here.
        clock: stamps JSON exports.
    """

    def __init__(
        self, *, max_series_per_metric: int = DEFAULT_MAX_SERIES_PER_METRIC, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.max_series_per_metric = max_series_per_metric
        self.clock = clock
        self._lock = threading.RLock()
        self._by_name: dict[str, Collector] = {}
        self._collectors: dict[int, tuple[Collector, tuple[str, ...]]] = {}
        self._self_metrics: SelfMetrics | None = None

    def register(self, collector: Collector) -> None:
        """Add ``collector``; raise MetricDefinitionError if one of its names is taken."""
        names = tuple(collector.family_names())
        with self._lock:
            for name in names:
                if name in self._by_name:
                    raise MetricDefinitionError(
                        f"cannot register {name!r}: a collector with this name is already registered"
                    )
            for name in names:
                self._by_name[name] = collector
            self._collectors[id(collector)] = (collector, names)

    def unregister(self, collector: Collector) -> None:
        """Remove ``collector``; raise KeyError if it was not registered."""
        with self._lock:
            _, names = self._collectors.pop(id(collector))
            for name in names:
                self._by_name.pop(name, None)

    def get(self, name: str) -> Any:
        """The collector registered under family ``name``, or None."""
        return self._by_name.get(name)

    def collectors(self) -> list[Collector]:
        with self._lock:
            return [c for c, _ in self._collectors.values()]

    def collect(self) -> list[MetricFamily]:
        """Snapshot every collector, in registration order."""
        out: list[MetricFamily] = []
        for collector in self.collectors():
            out.extend(collector.collect())
        return out

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Value of the sample ``name`` with exactly ``labels``, or None (for tests and health)."""
        want = labels or {}
        for fam in self.collect():
            for s in fam.samples:
                if s.name == name and s.labels == want:
                    return s.value
        return None

    @property
    def self_metrics(self) -> SelfMetrics:
        """The SDK's own metrics (dropped series, errors, …), created in this registry on first use."""
        sm = self._self_metrics
        if sm is None:
            with self._lock:
                if self._self_metrics is None:
                    from tsengine.instrument._self_metrics import SelfMetrics

                    self._self_metrics = SelfMetrics(self)
                sm = self._self_metrics
        return sm


Registry = CollectorRegistry

#: The default registry, used by every constructor that is not given ``registry=``.
REGISTRY = CollectorRegistry()
