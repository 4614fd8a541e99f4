"""The engine's notion of "now", injectable so tests can drive time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time, nanoseconds since the Unix epoch (timestamps of data)."""
        ...

    def monotonic_s(self) -> float:
        """Monotonic seconds (ages, intervals, timeouts)."""
        ...


class SystemClock:
    """The real clock."""

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic_s(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests, simulations). Thread-safe enough: the
    fields are plain ints/floats assigned atomically under the GIL."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now_ns = start_ns
        self._mono_s = 0.0

    def now_ns(self) -> int:
        return self._now_ns

    def monotonic_s(self) -> float:
        return self._mono_s

    def advance(self, seconds: float) -> None:
        self._now_ns += int(seconds * 1e9)
        self._mono_s += seconds
