"""Counter, Gauge, Histogram, Summary, Info and Enum with prometheus_client's constructors and methods.

``Counter(name, documentation, labelnames=(), namespace="", subsystem="", unit="",
registry=REGISTRY)`` and friends behave like prometheus_client's, so switching is a change of
import: ``.labels(*values)`` / ``.labels(**kw)`` return a bound child, ``.inc()``, ``.set()``,
``.observe()``, ``.time()``, ``.info({...})`` and ``.state(...)`` do what they do there.
``registry=None`` leaves the metric unregistered, as in prometheus_client.

Hot path and safety: a value lives in a small slotted child (``_values``) with its own lock, so ``inc``
on a pre-bound child is one comparison, a lock and an add; totals are exact under any number of
threads, and nothing here awaits, so it is equally safe from coroutines. A label lookup with string
values is one dict probe keyed by the argument tuple; only a new label set takes the metric's lock.

Cardinality: a metric holds at most ``max_series`` label sets (default: the registry's
``max_series_per_metric``). A new label set beyond that gets a detached child whose values are
never exposed, the refusal is counted in ``tsengine_instrument_series_dropped_total{metric=…}``
and logged once per metric. The application is never interrupted.

Switch: a metric follows its registry's ``METRICS_ENABLED`` switch (``registry.set_enabled``,
called by ``configure()``), including a metric built at import time before ``configure()`` ran.
Off, every child's class is swapped for one whose updates return at once (see ``_values``),
an unlabelled metric's methods are rebound to them, and a label set first seen while off gets
a child created switched off (it is a series, at zero, once switched back on). The enabled hot
path tests no flag. A metric built with ``registry=None`` has no switch and always records.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._exposition import format_float
from tsengine.instrument._family import MetricFamily, MetricType, Sample
from tsengine.instrument._names import (
    MAX_LABEL_VALUE_CHARS,
    MetricDefinitionError,
    is_label_name,
    validate_label_names,
    validate_metric_name,
)
from tsengine.instrument._registry import REGISTRY, CollectorRegistry
from tsengine.instrument._timer import Timer
from tsengine.instrument._values import (
    CounterValue,
    EnumValue,
    ExceptionTypes,
    GaugeValue,
    HistogramValue,
    InfoValue,
    SummaryValue,
    switch_value,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "Metric",
    "Summary",
    "get_or_create",
]

log = logging.getLogger("tsengine.instrument")

#: Latency buckets in seconds, prometheus_client's defaults: 5 ms to 10 s.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    math.inf,
)

_INF = math.inf


_M = TypeVar("_M", bound="Metric")

# -- parents: name, labels, children ---------------------------------------------------------


class Metric:
    """Common part of every metric type: names, labels, children, cardinality, the switch."""

    _type: ClassVar[MetricType]
    #: Set to "info"/"enum" by the kinds that take no unit: OpenMetrics gives info and
    #: stateset none, and prometheus_client refuses one too.
    _unitless_kind: ClassVar[str | None] = None
    #: Recording on (the registry's switch); ``_switchable`` False keeps it on (SDK self-metrics).
    _enabled: bool = True
    _switchable: bool = True

    def __init__(  # noqa: PLR0917 -- prometheus_client's positional order, for drop-in use
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_series: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        kind = self._unitless_kind
        if unit and kind is not None:
            raise MetricDefinitionError(f"cannot define {kind} {name!r}: an {kind} metric cannot have a unit")
        full = "_".join(part for part in (namespace, subsystem, name) if part)
        if unit and not full.endswith("_" + unit):
            full = f"{full}_{unit}"
        full = self._normalize_name(full)
        self._name = validate_metric_name(full)
        self._documentation = documentation
        self._unit = unit
        self._labelnames = validate_label_names(full, tuple(labelnames))
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], Any] = {}
        self._children: dict[tuple[object, ...], Any] = {}  # keyed by str tuples only
        self._overflow: Any = None
        #: Label sets refused because of the cardinality limit.
        self.series_dropped = 0
        self._registry: CollectorRegistry | None = None
        if max_series is None:
            max_series = registry.max_series_per_metric if registry is not None else 10_000
        if max_series < 1:
            raise MetricDefinitionError(f"cannot define metric {full!r}: max_series must be >= 1")
        self._max_series = max_series
        if not self._labelnames:
            # Not in _children: labels() on an unlabelled metric must miss the fast path and fail.
            self._root = self._series[()] = self._new_child()
            self._bind_root(self._root)
        if registry is not None:
            registry.register(self)
            self._registry = registry

    # Names -----------------------------------------------------------------------------------

    @staticmethod
    def _normalize_name(name: str) -> str:
        return name

    @property
    def name(self) -> str:
        """The family name (for a counter, without ``_total``)."""
        return self._name

    @property
    def labelnames(self) -> tuple[str, ...]:
        return self._labelnames

    @property
    def documentation(self) -> str:
        return self._documentation

    def family_names(self) -> tuple[str, ...]:
        return (self._name,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, labelnames={self._labelnames!r})"

    # Children --------------------------------------------------------------------------------

    def _new_child(self) -> Any:
        raise NotImplementedError

    def _bind_root(self, child: Any) -> None:
        raise NotImplementedError

    def labels(self, *values: object, **labelkwargs: object) -> Any:
        """Return the child for these label values (positional, or all by keyword).

        Values are converted with ``str()``. Raises ValueError on the wrong number or names of
        labels — a programming error. Beyond the cardinality limit, returns a detached child.

        The hot path is one dict probe with the positional tuple itself: the children are keyed
        by their label values as strings, so string arguments (the usual case) hit without
        validation, conversion or allocation. Anything else — keywords, other types, a wrong
        count — misses and takes :meth:`_labels_slow`. (One consequence: a ``(str, Enum)`` member
        equal to an existing label value finds that value's child; ``str()`` of it would differ.)
        """
        if not labelkwargs:
            try:
                child = self._children.get(values)
            except TypeError:  # an unhashable value: the slow path converts it with str()
                child = None
            if child is not None:
                return child
        return self._labels_slow(values, labelkwargs)

    def _labels_slow(self, values: tuple[object, ...], labelkwargs: dict[str, object]) -> Any:
        if labelkwargs:
            if values:
                raise ValueError(f"cannot label {self._name}: pass label values by position or by name")
            if len(labelkwargs) != len(self._labelnames) or set(labelkwargs) != set(self._labelnames):
                raise ValueError(
                    f"cannot label {self._name}: expected labels {self._labelnames!r}, "
                    f"got {tuple(labelkwargs)!r}"
                )
            values = tuple(labelkwargs[n] for n in self._labelnames)
        elif len(values) != len(self._labelnames):
            raise ValueError(
                f"cannot label {self._name}: expected {len(self._labelnames)} values for "
                f"{self._labelnames!r}, got {len(values)}"
            )
        if not self._labelnames:
            raise ValueError(f"cannot label {self._name}: it has no label names")
        key = tuple(map(str, values))
        child = self._children.get(key)
        if child is None:
            child = self._add_child(key)
        return child

    def _add_child(self, key: tuple[str, ...]) -> Any:
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            series_key = tuple(v[:MAX_LABEL_VALUE_CHARS] for v in key)
            child = self._series.get(series_key)
            if child is None:
                if len(self._series) >= self._max_series:
                    return self._refuse_series()
                child = self._series[series_key] = self._new_child()
                if not self._enabled:
                    switch_value(child, False)
            if series_key == key:
                # Only exact keys are cached, so the cache stays bounded by the series limit.
                self._children[key] = child
            return child

    def _refuse_series(self) -> Any:
        # Called with self._lock held.
        self.series_dropped += 1
        if self._overflow is None:
            self._overflow = self._new_child()
            if not self._enabled:
                switch_value(self._overflow, False)
            log.warning(
                "cannot add series to metric %s: %d label sets reached; further new label sets "
                "are dropped (counted in tsengine_instrument_series_dropped_total)",
                self._name,
                self._max_series,
            )
        if self._registry is not None:
            self._registry.self_metrics.series_dropped.labels(self._name).inc()
        return self._overflow

    # Switch ----------------------------------------------------------------------------------

    def _set_enabled(self, enabled: bool) -> None:
        """Turn recording on or off in place (the registry's switch); values are kept. Idempotent.

        Off: updates through this metric, its children and Timers made from them return at
        once. ``labels()`` still returns the real child (created switched off if new), so a
        child bound while off records once switched back on.
        """
        with self._lock:
            if not self._switchable:
                enabled = True
            if enabled == self._enabled:
                return
            self._enabled = enabled
            children = list(self._series.values())
            if self._overflow is not None:
                children.append(self._overflow)
            for child in children:
                switch_value(child, enabled)
            if not self._labelnames:
                self._bind_root(self._root)  # the instance's inc/observe/… were bound to the old class

    @property
    def enabled(self) -> bool:
        """Whether updates are recorded (False while the registry's metrics are switched off)."""
        return self._enabled

    def remove(self, *values: object) -> None:
        """Forget the series with these label values (no error if absent)."""
        key = tuple(map(str, values))
        with self._lock:
            series_key = tuple(v[:MAX_LABEL_VALUE_CHARS] for v in key)
            self._series.pop(series_key, None)
            self._children = {k: c for k, c in self._children.items() if k not in (key, series_key)}

    def clear(self) -> None:
        """Forget every labelled series."""
        if not self._labelnames:
            return
        with self._lock:
            self._series = {}
            self._children = {}

    @property
    def series_count(self) -> int:
        """How many label sets this metric holds."""
        return len(self._series)

    def _require_root(self, what: str) -> None:
        raise ValueError(
            f"cannot {what} {self._name}: it has labels {self._labelnames!r}; use .labels() first"
        )

    # Collection ------------------------------------------------------------------------------

    def _items(self) -> list[tuple[dict[str, str], Any]]:
        with self._lock:
            items = list(self._series.items())
        names = self._labelnames
        return [(dict(zip(names, key, strict=True)), child) for key, child in items]

    def collect(self) -> list[MetricFamily]:
        """A snapshot of every series of this metric."""
        return [MetricFamily(self._name, self._documentation, self._type, self._samples(), unit=self._unit)]

    def _samples(self) -> list[Sample]:
        raise NotImplementedError


class Counter(Metric):
    """A value that only goes up (requests served, bytes sent, errors).

    A trailing ``_total`` in the name is dropped from the family name and added back to the
    sample, as prometheus_client does: ``Counter("requests_total", ...)`` exposes
    ``requests_total`` in family ``requests``.
    """

    _type = MetricType.COUNTER

    @staticmethod
    def _normalize_name(name: str) -> str:
        return name.removesuffix("_total")

    def _new_child(self) -> CounterValue:
        return CounterValue()

    def _bind_root(self, child: CounterValue) -> None:
        # Instance attributes shadow the class methods: an unlabelled inc() costs what a child's does.
        self.inc = child.inc  # type: ignore[method-assign]
        self._set_total = child._set_total  # type: ignore[method-assign]
        self.get = child.get  # type: ignore[method-assign]
        self.count_exceptions = child.count_exceptions  # type: ignore[method-assign]

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to an unlabelled counter."""
        self._require_root("increment")

    def _set_total(self, value: float) -> None:
        self._require_root("set")

    def get(self) -> float:
        """Current total of an unlabelled counter."""
        self._require_root("read")
        return 0.0

    def count_exceptions(self, exception: ExceptionTypes = Exception) -> Any:
        """Context manager/decorator (sync functions) counting exceptions of ``exception``; re-raises."""
        self._require_root("count exceptions on")

    def _samples(self) -> list[Sample]:
        name = self._name + "_total"
        return [Sample(name, labels, child._value) for labels, child in self._items()]


class Gauge(Metric):
    """A value that goes up and down (queue depth, temperature, in-flight requests)."""

    _type = MetricType.GAUGE
    _function: Callable[[], float] | None = None

    def _new_child(self) -> GaugeValue:
        return GaugeValue(self._clock)

    def _bind_root(self, child: GaugeValue) -> None:
        self.set = child.set  # type: ignore[method-assign]
        self.inc = child.inc  # type: ignore[method-assign]
        self.dec = child.dec  # type: ignore[method-assign]
        self.set_to_current_time = child.set_to_current_time  # type: ignore[method-assign]
        self.track_inprogress = child.track_inprogress  # type: ignore[method-assign]
        self.time = child.time  # type: ignore[method-assign]
        self.get = child.get  # type: ignore[method-assign]

    def set(self, value: float) -> None:
        """Set an unlabelled gauge."""
        self._require_root("set")

    def inc(self, amount: float = 1.0) -> None:
        """Add to an unlabelled gauge."""
        self._require_root("increment")

    def dec(self, amount: float = 1.0) -> None:
        """Subtract from an unlabelled gauge."""
        self._require_root("decrement")

    def set_to_current_time(self) -> None:
        """Set an unlabelled gauge to the current Unix time in seconds."""
        self._require_root("set")

    def track_inprogress(self) -> Any:
        """Context manager/decorator: +1 on entry, -1 on exit."""
        self._require_root("track")

    def time(self) -> Timer:
        """Context manager/decorator setting the gauge to the duration in seconds."""
        self._require_root("time")
        raise AssertionError("BUG: unreachable")

    def get(self) -> float:
        """Current value of an unlabelled gauge."""
        self._require_root("read")
        return 0.0

    def set_function(self, func: Callable[[], float]) -> None:
        """Read the value from ``func`` at collection time (unlabelled gauges only)."""
        if self._labelnames:
            self._require_root("set_function on")
        self._function = func

    def _samples(self) -> list[Sample]:
        func = self._function
        if func is not None:
            return [Sample(self._name, {}, float(func()))]
        return [Sample(self._name, labels, child._value) for labels, child in self._items()]


class _Observing(Metric):
    """What Histogram and Summary share: ``observe`` and ``time`` bound to the unlabelled child."""

    def _bind_root(self, child: HistogramValue | SummaryValue) -> None:
        self.observe = child.observe  # type: ignore[method-assign]
        self.time = child.time  # type: ignore[method-assign]

    def observe(self, amount: float) -> None:
        """Record one observation (unlabelled metrics; labelled ones go through ``labels()``)."""
        self._require_root("observe")

    def time(self) -> Timer:
        """Context manager/decorator observing the duration in seconds."""
        self._require_root("time")
        raise AssertionError("BUG: unreachable")


class Histogram(_Observing):
    """Counts observations into buckets; exposes ``_bucket{le=…}``, ``_count`` and ``_sum``.

    Args:
        buckets: increasing upper bounds; ``+Inf`` is appended if missing. Defaults to
            :data:`DEFAULT_BUCKETS` (5 ms … 10 s), fit for request latencies in seconds.
    """

    _type = MetricType.HISTOGRAM

    def __init__(  # noqa: PLR0917 -- prometheus_client's positional order, for drop-in use
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._upper = self._check_buckets(name, buckets)
        super().__init__(
            name,
            documentation,
            labelnames,
            namespace,
            subsystem,
            unit,
            registry,
            max_series=max_series,
            clock=clock,
        )

    @staticmethod
    def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
        upper = [float(b) for b in buckets]
        if not upper:
            raise MetricDefinitionError(f"cannot define histogram {name!r}: no buckets")
        if any(math.isnan(b) for b in upper):
            raise MetricDefinitionError(f"cannot define histogram {name!r}: NaN bucket bound")
        if upper != sorted(upper) or len(set(upper)) != len(upper):
            raise MetricDefinitionError(f"cannot define histogram {name!r}: buckets must increase: {upper!r}")
        if upper[-1] != _INF:
            upper.append(_INF)
        return tuple(upper)

    @property
    def buckets(self) -> tuple[float, ...]:
        return self._upper

    def _new_child(self) -> HistogramValue:
        return HistogramValue(self._upper, self._clock)

    def _samples(self) -> list[Sample]:
        out: list[Sample] = []
        le = [format_float(b) for b in self._upper]
        name = self._name
        for labels, child in self._items():
            counts, total = child.snapshot()
            cumulative = 0
            for bound, count in zip(le, counts, strict=True):
                cumulative += count
                out.append(Sample(name + "_bucket", {**labels, "le": bound}, float(cumulative)))
            out.append(Sample(name + "_count", labels, float(cumulative)))
            out.append(Sample(name + "_sum", labels, total))
        return out


class Summary(_Observing):
    """Count and sum of observations (``_count``, ``_sum``), as prometheus_client's Summary.

    Like prometheus_client's, it computes no quantiles; use a Histogram for those.
    """

    _type = MetricType.SUMMARY

    def _new_child(self) -> SummaryValue:
        return SummaryValue(self._clock)

    def _samples(self) -> list[Sample]:
        out: list[Sample] = []
        for labels, child in self._items():
            with child._lock:
                count, total = child._count, child._sum
            out.append(Sample(self._name + "_count", labels, float(count)))
            out.append(Sample(self._name + "_sum", labels, total))
        return out


class Info(Metric):
    """Key-value pairs about the process (build, version, config), as prometheus_client's Info.

    ``Info("build", "Build information").info({"version": "1.2.3", "commit": "abc"})`` exposes
    ``build_info{commit="abc",version="1.2.3"} 1.0`` (type ``gauge`` in text 0.0.4, ``info`` in
    OpenMetrics). ``info()`` replaces the pairs; before it, the sample has only the metric's
    labels. Keys must be label names not among ``labelnames``; values are converted with
    ``str()`` (``None`` is refused) and cut at 256 characters, at most 64 keys.
    """

    _type = MetricType.INFO
    _unitless_kind = "info"

    def family_names(self) -> tuple[str, ...]:
        # The sample name is taken too: a Gauge "build_info" would expose the same series.
        return (self._name, self._name + "_info")

    def _new_child(self) -> InfoValue:
        return InfoValue(self._name, self._labelnames, MAX_LABEL_VALUE_CHARS)

    def _bind_root(self, child: InfoValue) -> None:
        self.info = child.info  # type: ignore[method-assign]
        self.get = child.get  # type: ignore[method-assign]

    def info(self, val: Mapping[str, object]) -> None:
        """Set the key-value pairs of an unlabelled info (labelled ones go through ``labels()``)."""
        self._require_root("set info of")

    def get(self) -> dict[str, str]:
        """The current key-value pairs of an unlabelled info."""
        self._require_root("read")
        return {}

    def _samples(self) -> list[Sample]:
        name = self._name + "_info"
        # Labels sorted, as prometheus_client writes them (both text formats).
        return [
            Sample(name, dict(sorted({**labels, **child._value}.items())), 1.0)
            for labels, child in self._items()
        ]


class Enum(Metric):
    """Which one of a fixed set of states is current, as prometheus_client's Enum (a stateset).

    ``Enum("task_state", "State", states=["starting", "running", "stopped"]).state("running")``
    exposes one sample per state, ``task_state{task_state="running"} 1.0`` and 0.0 for the
    others (type ``gauge`` in text 0.0.4, ``stateset`` in OpenMetrics). The first state is
    current until ``state()`` is called. The metric's name is also the state label's name, so it
    must be a valid label name and not one of ``labelnames``; states are distinct strings.
    """

    _type = MetricType.STATESET
    _unitless_kind = "enum"

    def __init__(  # noqa: PLR0917 -- prometheus_client's positional order, for drop-in use
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        *,
        states: Sequence[str] | None = None,
        max_series: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        labelnames = tuple(labelnames)
        full = "_".join(part for part in (namespace, subsystem, name) if part)
        if full in labelnames:
            raise MetricDefinitionError(
                f"cannot define enum {full!r}: its name is also one of its label names"
            )
        if not is_label_name(full):
            raise MetricDefinitionError(
                f"cannot define enum {full!r}: its name labels the state, so it must be a valid label name"
            )
        if not states:
            raise MetricDefinitionError(f"cannot define enum {full!r}: no states provided")
        if isinstance(states, str) or not all(isinstance(s, str) for s in states):
            raise MetricDefinitionError(f"cannot define enum {full!r}: states must be a sequence of strings")
        self._states = tuple(states)
        if len(set(self._states)) != len(self._states):
            raise MetricDefinitionError(f"cannot define enum {full!r}: duplicate states in {self._states!r}")
        self._positions = {s: i for i, s in enumerate(self._states)}
        super().__init__(
            name,
            documentation,
            labelnames,
            namespace,
            subsystem,
            unit,
            registry,
            max_series=max_series,
            clock=clock,
        )

    @property
    def states(self) -> tuple[str, ...]:
        return self._states

    def _new_child(self) -> EnumValue:
        return EnumValue(self._name, self._states, self._positions)

    def _bind_root(self, child: EnumValue) -> None:
        self.state = child.state  # type: ignore[method-assign]
        self.get = child.get  # type: ignore[method-assign]

    def state(self, state: str) -> None:
        """Set the current state of an unlabelled enum (labelled ones go through ``labels()``)."""
        self._require_root("set state of")

    def get(self) -> str:
        """The current state of an unlabelled enum."""
        self._require_root("read")
        return ""

    def _samples(self) -> list[Sample]:
        name, states = self._name, self._states
        out: list[Sample] = []
        for labels, child in self._items():
            current = child._index
            for i, s in enumerate(states):
                # Labels sorted, as prometheus_client writes them (both text formats).
                sample_labels = dict(sorted({**labels, name: s}.items()))
                out.append(Sample(name, sample_labels, 1.0 if i == current else 0.0))
        return out


def get_or_create(
    cls: type[_M], name: str, documentation: str, labelnames: tuple[str, ...], registry: CollectorRegistry
) -> _M:
    """``registry``'s metric of ``name``'s family, else a new ``cls`` registered there.

    For the SDK's own metrics, which every component built on a registry asks for. An existing
    metric is returned as it is (its type and labels are not compared: these names are the SDK's).
    """
    existing = registry.get(cls._normalize_name(name))
    return existing if existing is not None else cls(name, documentation, labelnames, registry=registry)
