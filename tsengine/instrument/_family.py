"""What collection produces: metric families of samples, the input of every exporter.

A :class:`MetricFamily` is one metric name with its type, help text and samples, shaped as
Prometheus exposes it: a counter ``x`` has the sample ``x_total``; a histogram ``h`` has
``h_bucket`` (label ``le``, cumulative), ``h_count`` and ``h_sum``; an info ``i`` has one
sample ``i_info`` (value 1, its key-value pairs as labels) per label set; a stateset (an
``Enum``) ``e`` has one sample ``e`` per state, labelled ``e="<state>"``, 1 for the current state
and 0 for the others. Families are immutable
snapshots, safe to hand to another thread.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Collector", "MetricFamily", "MetricType", "Sample"]


class MetricType(enum.Enum):
    """Kind of a metric. ``TIMER`` records seconds into a histogram and is exposed as one.

    ``INFO`` and ``STATESET`` are OpenMetrics types; the Prometheus text format 0.0.4 has no
    such types and exposes both as ``gauge`` (as prometheus_client does).
    """

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    TIMER = "timer"
    INFO = "info"
    STATESET = "stateset"

    @property
    def exposed_as(self) -> str:
        """The OpenMetrics ``# TYPE`` of this kind (also the ``type`` of the JSON export)."""
        return "histogram" if self is MetricType.TIMER else self.value

    @property
    def exposed_as_prometheus(self) -> str:
        """The ``# TYPE`` in the Prometheus text format 0.0.4, which has no info or stateset."""
        if self in (MetricType.INFO, MetricType.STATESET):
            return "gauge"
        return self.exposed_as


@dataclass(frozen=True, slots=True)
class Sample:
    """One value: the exposed sample name, its labels and the value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """All samples of one metric name at one instant."""

    name: str
    documentation: str
    type: MetricType
    samples: list[Sample] = field(default_factory=list)
    unit: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (see :func:`tsengine.instrument.to_json`)."""
        return {
            "name": self.name,
            "type": self.type.exposed_as,
            "help": self.documentation,
            "unit": self.unit,
            "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in self.samples],
        }


@runtime_checkable
class Collector(Protocol):
    """Anything a registry can collect from: the metric classes, the system collector, yours.

    ``collect()`` must be thread-safe and must not block for long: it runs on every scrape.
    """

    def collect(self) -> Iterable[MetricFamily]: ...

    def family_names(self) -> Iterable[str]:
        """The family names ``collect()`` yields, checked for clashes at registration."""
        ...
