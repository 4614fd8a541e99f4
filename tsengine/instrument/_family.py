"""What collection produces: metric families of samples, the input of every exporter.

A :class:`MetricFamily` is one metric name with its type, help text and samples, shaped as
Prometheus exposes it: a counter ``x`` has the sample ``x_total``; a histogram ``h`` has
``h_bucket`` (label ``le``, cumulative), ``h_count`` and ``h_sum``. Families are immutable
snapshots, safe to hand to another thread.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Collector", "MetricFamily", "MetricType", "Sample"]


class MetricType(enum.Enum):
    """Kind of a metric. ``TIMER`` records seconds into a histogram and is exposed as one."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    TIMER = "timer"

    @property
    def exposed_as(self) -> str:
        """The Prometheus ``# TYPE`` of this kind."""
        return "histogram" if self is MetricType.TIMER else self.value


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
