"""The one clock of the SDK, injectable so tests drive time instead of sleeping.

Two readings: ``time_ns()`` is wall-clock time (UTC nanoseconds, stamped on events and data
points) and ``monotonic()`` is seconds from an arbitrary origin (durations, rate windows).
Everything that reads time takes a ``clock=`` argument defaulting to :data:`SYSTEM_CLOCK`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Source of wall-clock and monotonic time. Implementations must be thread-safe."""

    def time_ns(self) -> int:
        """Wall-clock time, nanoseconds since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds from an arbitrary origin; only differences mean anything."""
        ...


class SystemClock:
    """The real clock: :func:`time.time_ns` and :func:`time.perf_counter`."""

    __slots__ = ()

    # Bound builtins: the hot path calls these without an extra Python frame.
    time_ns = staticmethod(time.time_ns)
    monotonic = staticmethod(time.perf_counter)


SYSTEM_CLOCK: Clock = SystemClock()
