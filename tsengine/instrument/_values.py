"""The value holders behind every metric: small slotted objects, each with its own lock.

A metric (``_metrics``) maps label sets to these children; ``.labels(...)`` returns one, and an
unlabelled metric binds its methods directly to its only child, so ``inc``/``observe`` cost one
method call either way. Every update takes the child's lock, so totals are exact under threads;
nothing here awaits, so coroutines are safe too. Reads for collection take the same lock.

Switched off (``METRICS_ENABLED=false``, see ``CollectorRegistry.set_enabled``): a child's class
is swapped for its ``Off…`` subclass (same slots, so ``__class__`` assignment is allowed), whose
updates return at once. The enabled path pays nothing for the switch — no flag is tested — and a
child handed out before the switch (``c = counter.labels("GET")`` at import time) stops
recording too. Values are kept while off and updates resume when switched back on.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._names import is_label_name
from tsengine.instrument._timer import Timer

__all__ = [
    "MAX_INFO_KEYS",
    "CounterValue",
    "EnumValue",
    "ExceptionTypes",
    "GaugeValue",
    "HistogramValue",
    "InfoValue",
    "SummaryValue",
    "switch_value",
]

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


@contextmanager
def _count_exceptions(inc: Callable[[], None], exception: ExceptionTypes) -> Iterator[None]:
    try:
        yield
    except exception:
        inc()
        raise


class CounterValue:
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0). Thread-safe; never blocks beyond a short lock."""
        if amount < 0:
            raise ValueError(f"cannot increment a counter by {amount!r}: counters only go up")
        with self._lock:
            self._value += amount

    def _set_total(self, value: float) -> None:
        # Mirrors a cumulative total kept elsewhere (psutil's I/O counters); not public.
        with self._lock:
            self._value = float(value)

    def get(self) -> float:
        """The current total."""
        return self._value

    def count_exceptions(self, exception: ExceptionTypes = Exception) -> Any:
        """Context manager/decorator (sync functions) counting exceptions of ``exception``; re-raises."""
        return _count_exceptions(self.inc, exception)


class GaugeValue:
    __slots__ = ("_clock", "_lock", "_value")

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._lock = threading.Lock()
        self._value = 0.0
        self._clock = clock

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        with self._lock:
            self._value -= amount

    def set_to_current_time(self) -> None:
        """Set the gauge to the current Unix time in seconds."""
        self._value = self._clock.time_ns() / 1e9

    def get(self) -> float:
        """The current value."""
        return self._value

    @contextmanager
    def _inprogress(self) -> Iterator[None]:
        self.inc()
        try:
            yield
        finally:
            self.dec()

    def track_inprogress(self) -> Any:
        """Context manager/decorator: +1 on entry, -1 on exit."""
        return self._inprogress()

    def time(self) -> Timer:
        """Context manager/decorator setting the gauge to the duration in seconds."""
        return Timer(_GaugeSetter(self), clock=self._clock)


class HistogramValue:
    __slots__ = ("_clock", "_counts", "_lock", "_sum", "_upper")

    def __init__(self, upper: tuple[float, ...], clock: Clock = SYSTEM_CLOCK) -> None:
        self._lock = threading.Lock()
        self._upper = upper
        self._counts = [0] * len(upper)
        self._sum = 0.0
        self._clock = clock

    def observe(self, amount: float) -> None:
        """Record one observation. Thread-safe."""
        # bisect_left finds the first bucket whose upper bound is >= amount ("le" semantics).
        i = bisect_left(self._upper, amount)
        with self._lock:
            self._counts[i] += 1
            self._sum += amount

    def time(self) -> Timer:
        """Context manager/decorator observing the duration in seconds."""
        # The child itself, not its bound method: the Timer looks observe() up on each report,
        # so a decorator applied while on stops recording once the metric is switched off.
        return Timer(self, clock=self._clock)

    def snapshot(self) -> tuple[list[int], float]:
        """Per-bucket (not cumulative) counts and the sum, read consistently."""
        with self._lock:
            return list(self._counts), self._sum


class SummaryValue:
    __slots__ = ("_clock", "_count", "_lock", "_sum")

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._sum = 0.0
        self._clock = clock

    def observe(self, amount: float) -> None:
        """Record one observation. Thread-safe."""
        with self._lock:
            self._count += 1
            self._sum += amount

    def time(self) -> Timer:
        """Context manager/decorator observing the duration in seconds."""
        # The child itself, not its bound method: the Timer looks observe() up on each report,
        # so a decorator applied while on stops recording once the metric is switched off.
        return Timer(self, clock=self._clock)


#: Most key-value pairs one ``Info.info()`` may carry: each is a label on every scrape.
MAX_INFO_KEYS = 64


def _check_info(
    metric: str, labelnames: tuple[str, ...], max_chars: int, val: Mapping[str, object]
) -> dict[str, str]:
    """Validate ``Info.info()``'s mapping; return it with values as (truncated) strings.

    Keys must be label names (not ``__``-prefixed) distinct from the metric's label names;
    values must not be None (prometheus_client's rules, plus the label-name syntax it leaves to
    the scraper). Raises ValueError naming the metric and the offending key.
    """
    if not isinstance(val, Mapping):
        raise ValueError(f"cannot set info of {metric}: expected a mapping, got {type(val).__name__}")
    if len(val) > MAX_INFO_KEYS:
        raise ValueError(f"cannot set info of {metric}: {len(val)} keys, at most {MAX_INFO_KEYS}")
    out: dict[str, str] = {}
    for key, value in val.items():
        if not is_label_name(key):
            raise ValueError(f"cannot set info of {metric}: key {key!r} is not a valid label name")
        if key in labelnames:
            raise ValueError(f"cannot set info of {metric}: key {key!r} overlaps its label names")
        if value is None:
            raise ValueError(f"cannot set info of {metric}: value of {key!r} is None")
        out[key] = str(value)[:max_chars]
    return out


class InfoValue:
    """One label set's key-value pairs (``Info``), exposed as labels of a sample fixed at 1."""

    __slots__ = ("_labelnames", "_max_chars", "_metric", "_value")

    def __init__(self, metric: str, labelnames: tuple[str, ...], max_chars: int) -> None:
        self._metric = metric
        self._labelnames = labelnames
        self._max_chars = max_chars
        self._value: dict[str, str] = {}

    def info(self, val: Mapping[str, object]) -> None:
        """Replace the key-value pairs. Thread-safe: a new dict is built, then swapped in at once."""
        self._value = _check_info(self._metric, self._labelnames, self._max_chars, val)

    def get(self) -> dict[str, str]:
        """A copy of the current key-value pairs."""
        return dict(self._value)


class EnumValue:
    """Which of a fixed list of states is current (``Enum``), the first one until ``state()``."""

    __slots__ = ("_index", "_metric", "_positions", "_states")

    def __init__(self, metric: str, states: tuple[str, ...], positions: dict[str, int]) -> None:
        self._metric = metric
        self._states = states
        self._positions = positions  # state -> index, shared by every child of the metric
        self._index = 0

    def state(self, state: str) -> None:
        """Make ``state`` the current one; ValueError if it is not one of the declared states.

        Thread-safe: one dict probe and one attribute store (atomic under the GIL).
        """
        try:
            index = self._positions.get(state)
        except TypeError:  # unhashable: certainly not a declared state
            index = None
        if index is None:
            raise ValueError(f"cannot set state of {self._metric}: {state!r} is not one of {self._states!r}")
        self._index = index

    def get(self) -> str:
        """The current state."""
        return self._states[self._index]


class _GaugeSetter:
    """``observe(seconds)`` setting a gauge child, looked up on each call (see ``switch_value``)."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: GaugeValue) -> None:
        self._gauge = gauge

    def observe(self, amount: float) -> None:
        self._gauge.set(amount)


# -- switched off: same slots, updates that return at once -------------------------------------------


def _nothing() -> None:
    return None


class OffCounterValue(CounterValue):
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        return None

    def _set_total(self, value: float) -> None:
        return None

    def count_exceptions(self, exception: ExceptionTypes = Exception) -> Any:
        return _count_exceptions(_nothing, exception)


class OffGaugeValue(GaugeValue):
    __slots__ = ()

    def set(self, value: float) -> None:
        return None

    def inc(self, amount: float = 1.0) -> None:
        return None

    def dec(self, amount: float = 1.0) -> None:
        return None

    def set_to_current_time(self) -> None:
        return None


class OffHistogramValue(HistogramValue):
    __slots__ = ()

    def observe(self, amount: float) -> None:
        return None


class OffSummaryValue(SummaryValue):
    __slots__ = ()

    def observe(self, amount: float) -> None:
        return None


class OffInfoValue(InfoValue):
    __slots__ = ()

    def info(self, val: Mapping[str, object]) -> None:
        return None


class OffEnumValue(EnumValue):
    __slots__ = ()

    def state(self, state: str) -> None:
        return None


_OFF: dict[type, type] = {
    CounterValue: OffCounterValue,
    GaugeValue: OffGaugeValue,
    HistogramValue: OffHistogramValue,
    SummaryValue: OffSummaryValue,
    InfoValue: OffInfoValue,
    EnumValue: OffEnumValue,
}
_ON: dict[type, type] = {off: on for on, off in _OFF.items()}


def switch_value(child: Any, enabled: bool) -> None:
    """Turn a value holder's updates on or off in place (its value is kept). Idempotent."""
    cls = type(child)
    new = _ON.get(cls, cls) if enabled else _OFF.get(cls, cls)
    if new is not cls:
        child.__class__ = new
