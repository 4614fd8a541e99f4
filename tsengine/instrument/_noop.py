"""The no-op metric handed out when metrics are switched off: every call returns at once."""

from __future__ import annotations

from typing import Any

from tsengine.instrument._timer import Timer

__all__ = ["NOOP_METRIC", "NoopMetric"]


def _discard(_seconds: float) -> None:
    return None


class NoopMetric:
    """Accepts the whole Counter/Gauge/Histogram API and records nothing."""

    __slots__ = ()

    def labels(self, *values: object, **labelkwargs: object) -> NoopMetric:
        return self

    def inc(self, amount: float = 1.0) -> None:
        return None

    def dec(self, amount: float = 1.0) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def set_to_current_time(self) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None

    def time(self) -> Timer:
        return Timer(_discard)

    def get(self) -> float:
        return 0.0

    def collect(self) -> list[Any]:
        return []


NOOP_METRIC = NoopMetric()
