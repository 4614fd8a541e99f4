"""CollectorRegistry: the set of collectors one ``/metrics`` endpoint exposes.

Every metric constructor registers into :data:`REGISTRY` unless given ``registry=`` (another
registry) or ``registry=None`` (not registered). Family names are unique within a registry: a
second metric with a taken name raises :class:`MetricDefinitionError`, as prometheus_client
does. ``collect()`` snapshots every collector; it is thread-safe and never holds the registry's
lock while a collector runs, so a slow collector cannot stall registration.

The ``METRICS_ENABLED`` switch lives here: ``set_enabled(False)`` (what ``configure()`` does
when metrics are off) switches every registered metric, and every one registered later, to
updates that do nothing (see ``_metrics``), and ``collect()`` returns nothing, so neither
``/metrics`` nor an exporter sees a series. The SDK's self-metrics keep counting (for
``/health/telemetry``) but are not collected either. ``set_enabled(True)`` resumes recording.
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
        self._switch_lock = threading.Lock()
        #: Metrics recorded and collected; see :meth:`set_enabled`.
        self.enabled = True

    def register(self, collector: Collector) -> None:
        """Add ``collector``; raise MetricDefinitionError if one of its names is taken.

        While the registry is switched off, a metric registered now is switched off with it.
        """
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
            if not self.enabled:
                _switch(collector, False)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the registered metrics' recording and collection on or off (values are kept).

        Thread-safe; blocks only for each metric's short lock. Idempotent.
        """
        with self._switch_lock:
            with self._lock:
                self.enabled = enabled
                collectors = [c for c, _ in self._collectors.values()]
            # Outside the registry lock: a metric holds its own lock and may need the registry's
            # (its first dropped series creates the self-metrics).
            for collector in collectors:
                _switch(collector, enabled)

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
        """Snapshot every collector, in registration order (nothing while switched off)."""
        if not self.enabled:
            return []
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

                    sm = SelfMetrics(self)
                    for metric in vars(sm).values():  # counted even while metrics are off
                        metric._switchable = False
                        metric._set_enabled(True)
                    self._self_metrics = sm
                sm = self._self_metrics
        return sm


def _switch(collector: Collector, enabled: bool) -> None:
    # Metrics have the switch; other collectors (the system sampler's, yours) are only not
    # collected while off.
    switch = getattr(collector, "_set_enabled", None)
    if switch is not None:
        switch(enabled)


Registry = CollectorRegistry

#: The default registry, used by every constructor that is not given ``registry=``.
REGISTRY = CollectorRegistry()
