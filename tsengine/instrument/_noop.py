"""The no-op metric handed out when metrics are switched off: every call returns at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tsengine.instrument._timer import Timer

__all__ = ["NOOP_METRIC", "NoopMetric"]


def _discard(_seconds: float) -> None:
    return None


@contextmanager
def _nothing() -> Iterator[None]:
    # A context manager that is also a decorator, as the real count_exceptions/track_inprogress.
    yield


class NoopMetric:
    """Accepts the whole Counter/Gauge/Histogram/Summary API and records nothing."""

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

    def count_exceptions(self, exception: object = Exception) -> Any:
        return _nothing()

    def track_inprogress(self) -> Any:
        return _nothing()

    def set_function(self, func: object) -> None:
        return None

    def remove(self, *values: object) -> None:
        return None

    def clear(self) -> None:
        return None

    def get(self) -> float:
        return 0.0

    def collect(self) -> list[Any]:
        return []


NOOP_METRIC = NoopMetric()
