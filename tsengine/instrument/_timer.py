"""Timer: measure a duration and hand it to a histogram (or any ``observe``-like callable).

One object is both a context manager and a decorator, as in prometheus_client::

    with Timer(latency):            # or: with latency.time():
        work()

    @Timer(latency)                 # or: @latency.time()
    async def handler(): ...        # async functions are timed until they return

Used as a decorator, every call gets its own start time, so one decorated function may run in
many threads or tasks at once. Used as a context manager, one instance times one block at a
time; ``Histogram.time()`` returns a fresh instance for each ``with``. Durations are monotonic
seconds from the injected clock. The timing is recorded even when the block raises; the
exception propagates unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import MethodType
from typing import Any, Protocol, TypeVar

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock

__all__ = ["Observer", "Timer"]

F = TypeVar("F", bound=Callable[..., Any])


class Observer(Protocol):
    """Anything with ``observe(value)``: a histogram or one of its labelled children."""

    def observe(self, amount: float) -> None: ...


class Timer:
    """Times a block or each call of a function and reports the seconds to ``target``.

    Args:
        target: an object with ``observe(seconds)`` (a Histogram or a bound child) or a plain
            callable taking the seconds.
        clock: source of monotonic time (tests pass a fake one).

    Thread/async safety: as a decorator, safe from any number of threads and tasks. As a
    context manager, one ``with`` at a time per instance.
    """

    __slots__ = ("_clock", "_sink", "_start", "duration_s")

    def __init__(self, target: Observer | Callable[[float], None], *, clock: Clock = SYSTEM_CLOCK) -> None:
        # The object whose observe() is called, looked up again on every report (not a bound
        # method kept from now): a metric switched off by METRICS_ENABLED=false swaps its
        # methods, and a Timer made before the switch, e.g. an import-time @h.time(), follows.
        sink: Any
        if isinstance(target, MethodType):
            sink = target.__self__ if target.__name__ == "observe" else _Call(target)
        elif hasattr(type(target), "observe") or hasattr(target, "observe"):  # type first: no bound method
            sink = target
        elif callable(target):
            sink = _Call(target)
        else:
            raise TypeError(f"cannot time into {target!r}: it has no observe() and is not callable")
        self._sink: Observer = sink
        self._clock = clock
        self._start = 0.0
        #: Seconds measured by the last completed ``with`` block, else None.
        self.duration_s: float | None = None

    def __enter__(self) -> Timer:
        self._start = self._clock.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        # max() rather than an if: a fake clock may move backwards; never observe a negative time.
        duration = max(self._clock.monotonic() - self._start, 0.0)
        self.duration_s = duration
        self._sink.observe(duration)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, func: F) -> F:
        """Decorate ``func`` (sync or async) so each call is timed."""
        sink, clock = self._sink, self._clock
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = clock.monotonic()
                try:
                    return await func(*args, **kwargs)
                finally:
                    sink.observe(max(clock.monotonic() - start, 0.0))

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                sink.observe(max(clock.monotonic() - start, 0.0))

        return wrapper  # type: ignore[return-value]


class _Call:
    """A plain callable taking the seconds, given the ``observe`` shape of a histogram."""

    __slots__ = ("observe",)

    def __init__(self, fn: Callable[[float], None]) -> None:
        self.observe = fn
