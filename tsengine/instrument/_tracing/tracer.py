"""The tracer: starts spans, keeps finished ones in a bounded store, hands them to exporters.

Who calls it: the application (``tracer.start_as_current_span(...)``, ``@tracer.traced``), the
middleware and client hooks (:mod:`tsengine.instrument._tracing.hooks`). What comes in: span
names, kinds, attributes and a parent (the current span by default, or a remote
:class:`SpanContext` from :func:`~tsengine.instrument.extract`). What goes out: finished,
sampled spans — to the in-memory :class:`SpanStore` (the newest ``max_traces`` traces, for local
inspection and ``/health/telemetry``) and to every registered :class:`SpanProcessor` (the OTLP
exporter's queue).

The current span lives in one contextvar for the process, so it follows ``await``, is inherited
by ``asyncio.create_task`` and never leaks between concurrent requests. Ids come from
``random.getrandbits`` (like OTel's ``RandomIdGenerator``; the ``random`` module reseeds in a
forked child). Times are the injected clock's ``time_ns``.

Cost: a span is an object with ``__slots__`` whose attributes, events and links are built only
when used; start + end is one sampler call, two clock reads, two ``getrandbits`` and, when
sampled, an append under a short lock to the store and each processor. Nothing here blocks or
does I/O. Thread-safe.
"""

from __future__ import annotations

import functools
import inspect
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._tracing.sampling import _LOW_64, ALWAYS_ON, ParentBased, Sampler, fast_root_bound
from tsengine.instrument._tracing.span import (
    AttributeValue,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    current_span_var,
)

__all__ = ["SpanProcessor", "SpanStore", "Tracer", "current_span"]

F = TypeVar("F", bound=Callable[..., Any])

_getrandbits = random.getrandbits
_new_span = object.__new__
_UNSET = StatusCode.UNSET
_CURRENT: Any = object()  # "the current span" as the default parent
_INTERNAL = SpanKind.INTERNAL


def current_span() -> Span | None:
    """The span current in the calling context (None outside any span)."""
    return current_span_var.get()


@runtime_checkable
class SpanProcessor(Protocol):
    """Receives every finished sampled span; ``on_end`` must not block (the OTLP exporter queues)."""

    def on_end(self, span: Span) -> None: ...

    def shutdown(self, timeout_s: float = 5.0) -> None: ...


class SpanStore:
    """The finished spans of the newest ``max_traces`` traces; older traces are evicted whole.

    A trace holds at most ``max_spans_per_trace`` spans (more are counted in ``spans_dropped``),
    so memory is bounded by the product. Thread-safe.
    """

    def __init__(self, max_traces: int = 1000, max_spans_per_trace: int = 1000) -> None:
        if max_traces < 1 or max_spans_per_trace < 1:
            raise ValueError("cannot size span store: max_traces and max_spans_per_trace must be >= 1")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        # A plain dict plus a deque of its keys in arrival order: cheaper than an OrderedDict
        # for the insert-and-evict that every new trace does.
        self._traces: dict[int, list[Span]] = {}
        self._order: deque[int] = deque()
        self._lock = threading.Lock()
        self.spans_stored = 0
        self.spans_dropped = 0
        self.traces_evicted = 0

    def add(self, span: Span) -> None:
        trace_id = span.trace_id
        with self._lock:
            spans = self._traces.get(trace_id)
            if spans is None:
                self._traces[trace_id] = [span]
                order = self._order
                order.append(trace_id)
                if len(order) > self.max_traces:
                    del self._traces[order.popleft()]
                    self.traces_evicted += 1
            elif len(spans) >= self.max_spans_per_trace:
                self.spans_dropped += 1
                return
            else:
                spans.append(span)
            self.spans_stored += 1

    def resize(self, max_traces: int) -> None:
        with self._lock:
            self.max_traces = max_traces
            while len(self._order) > max_traces:
                del self._traces[self._order.popleft()]
                self.traces_evicted += 1

    def trace_ids(self) -> list[int]:
        """Trace ids held, oldest first."""
        with self._lock:
            return list(self._order)

    def spans(self, trace_id: int | None = None) -> list[Span]:
        """The finished spans of one trace (in end order), or of all traces held."""
        with self._lock:
            if trace_id is not None:
                return list(self._traces.get(trace_id, ()))
            return [s for spans in self._traces.values() for s in spans]

    def clear(self) -> None:
        with self._lock:
            self._traces.clear()
            self._order.clear()

    def __len__(self) -> int:
        return len(self._traces)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "traces_in_memory": len(self._traces),
                "spans_in_memory": sum(len(s) for s in self._traces.values()),
                "spans_stored_total": self.spans_stored,
                "spans_dropped_total": self.spans_dropped,
                "traces_evicted_total": self.traces_evicted,
            }


class Tracer:
    """Starts spans. See the module docstring.

    Args:
        sampler: decides per new trace (default ``ParentBased(ALWAYS_ON)``).
        max_traces: traces kept in the in-memory store (``TRACING_MAX_TRACES``).
        clock: time source (``time_ns``) for span times.
        enabled: when False every span is a shared non-recording span without ids (nothing is
            propagated or recorded) — what ``DISTRIBUTED_TRACING_ENABLED=false`` gives.
        name: the instrumentation scope reported in OTLP.
    """

    def __init__(
        self,
        *,
        sampler: Sampler | None = None,
        max_traces: int = 1000,
        clock: Clock = SYSTEM_CLOCK,
        enabled: bool = True,
        name: str = "tsengine.instrument",
    ) -> None:
        self.sampler = sampler if sampler is not None else ParentBased(ALWAYS_ON)
        self.store = SpanStore(max_traces)
        self.clock = clock
        self._time_ns = clock.time_ns
        self.enabled = enabled
        self.name = name
        self.processors: tuple[SpanProcessor, ...] = ()
        self.processor_errors = 0
        # Set by the runtime wiring (hooks.apply_tracing): its hooks and the exporter it built.
        self._hooks: tuple[Any, Any] | None = None
        self._config_exporter: tuple[Any, Any] = (None, None)
        self._lock = threading.Lock()
        self._noop = Span(self, "", _INTERNAL, 0, 0, 0, False, 0, "", 0, None, False)

    # -- configuration ----------------------------------------------------------------------------

    @property
    def sampler(self) -> Sampler:
        return self._sampler

    @sampler.setter
    def sampler(self, sampler: Sampler) -> None:
        # The default sampler family decides inline in _start, without a call (see fast_root_bound).
        self._sampler = sampler
        self._root_bound = fast_root_bound(sampler)

    def configure(
        self, *, enabled: bool | None = None, sampler: Sampler | None = None, max_traces: int | None = None
    ) -> None:
        """Change settings in place (spans already started keep their decision)."""
        if sampler is not None:
            self.sampler = sampler
        if max_traces is not None:
            self.store.resize(max_traces)
        if enabled is not None:
            self.enabled = enabled

    def add_processor(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.processors = (*self.processors, processor)

    def remove_processor(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.processors = tuple(p for p in self.processors if p is not processor)

    # -- spans ------------------------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        kind: SpanKind = _INTERNAL,
        *,
        parent: Span | SpanContext | None = _CURRENT,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[SpanContext] | None = None,
        start_time_ns: int | None = None,
    ) -> Span:
        """Start a span that is *not* made current; end it with ``span.end()``.

        ``parent``: the current span by default; a :class:`SpanContext` (from ``extract``) for a
        remote parent; None for a new trace.
        """
        return self.start_as_current_span(name, kind, parent, attributes, links, start_time_ns, False)

    def start_as_current_span(  # noqa: PLR0917 -- also the internal hot path (_start), positional
        self,
        name: str,
        kind: SpanKind = _INTERNAL,
        parent: Span | SpanContext | None = _CURRENT,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[SpanContext] | None = None,
        start_time_ns: int | None = None,
        _current: bool = True,
    ) -> Span:
        """A span to use in ``with``: current for the block, ended (and errors recorded) on exit.

        ``parent``: the current span by default; a :class:`SpanContext` (from ``extract``) for a
        remote parent; None for a new trace. ``_current`` is internal (``start_span`` passes False).
        """
        if not self.enabled:
            return self._noop
        if parent is _CURRENT:
            parent = current_span_var.get()
        if parent is None or not parent.trace_id:
            trace_id = _getrandbits(128) or 1
            parent_id = 0
            remote = False
            state = ""
            parent = None
        else:
            trace_id = parent.trace_id
            parent_id = parent.span_id
            remote = type(parent) is SpanContext and parent.is_remote
            state = parent.trace_state
        bound = self._root_bound
        if bound is None:
            flags = 1 if self._sampler.should_sample(parent, trace_id, name, kind) else 0
        elif parent is None:
            flags = 1 if trace_id & _LOW_64 < bound else 0
        else:
            flags = parent.trace_flags & 1
        # Span.__init__, inlined: object.__new__ plus slot stores is about half the cost of a
        # 12-argument __init__ call, on the path every span takes. Keep in step with __init__.
        span = _new_span(Span)
        span._tracer = self
        span.name = name
        span.kind = kind
        span.trace_id = trace_id
        span.span_id = _getrandbits(64) or 1
        span.parent_span_id = parent_id
        span.parent_remote = remote
        span.trace_flags = flags
        span.recording = flags == 1
        span.trace_state = state
        span.start_time_ns = start_time_ns if start_time_ns is not None else self._time_ns()
        span.end_time_ns = 0
        span._attributes = dict(attributes) if attributes and flags else None
        span.status_code = _UNSET
        span._current = _current
        if links and flags:
            for ctx in links:
                span.add_link(ctx)
        return span

    # The positional form used by the hooks and the decorator: one call frame less per span.
    _start = start_as_current_span

    def traced(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        kind: SpanKind = _INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Any:
        """Decorator: each call of the function (sync or async) runs in a current span.

        ``@tracer.traced`` (span named by the function's qualified name) or
        ``@tracer.traced("charge card", kind=SpanKind.CLIENT)``. Exceptions propagate unchanged
        and mark the span ERROR.
        """
        if callable(name):
            return self._wrap(name, None, kind, attributes)
        return functools.partial(self._wrap, name=name, kind=kind, attributes=attributes)

    def _wrap(
        self,
        func: F,
        name: str | None,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> F:
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise TypeError(
                f"cannot trace generator function {func.__qualname__}: trace its consumer instead"
            )
        span_name = name or func.__qualname__
        start = self._start

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with start(span_name, kind, _CURRENT, attributes, None, None, True):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with start(span_name, kind, _CURRENT, attributes, None, None, True):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- finished spans ---------------------------------------------------------------------------

    def _on_end(self, span: Span) -> None:
        self.store.add(span)
        for processor in self.processors:
            try:
                processor.on_end(span)
            except Exception:  # a processor must never fail the traced code
                self.processor_errors += 1

    def finished_spans(self, trace_id: int | str | None = None) -> list[Span]:
        """Finished sampled spans held in memory: of one trace (int or hex id), or all."""
        if isinstance(trace_id, str):
            trace_id = int(trace_id, 16)
        return self.store.spans(trace_id)

    def recent_traces(self, limit: int = 5) -> list[dict[str, Any]]:
        """Summaries of the newest traces held: id, root name, span count, duration, errors."""
        out = []
        for trace_id in reversed(self.store.trace_ids()[-limit:]):
            spans = self.store.spans(trace_id)
            if not spans:
                continue
            root = next((s for s in spans if not s.parent_span_id or s.parent_remote), spans[-1])
            start = min(s.start_time_ns for s in spans)
            end = max(s.end_time_ns for s in spans)
            out.append(
                {
                    "trace_id": f"{trace_id:032x}",
                    "root": root.name,
                    "spans": len(spans),
                    "duration_ms": (end - start) / 1e6,
                    "errors": sum(1 for s in spans if s.status_code is StatusCode.ERROR),
                }
            )
        return out

    def health(self) -> dict[str, Any]:
        """State, counters and the newest traces, for ``/health/telemetry``."""
        describe = getattr(self._sampler, "describe", None)  # a custom sampler may lack it
        sampler = describe() if describe is not None else repr(self._sampler)
        out: dict[str, Any] = {"enabled": self.enabled, "sampler": sampler}
        out.update(self.store.stats())
        out["recent_traces"] = self.recent_traces(5)
        out["processor_errors_total"] = self.processor_errors
        for processor in self.processors:
            stats = getattr(processor, "stats", None)
            if stats is not None:
                out["exporter"] = {
                    "endpoint": getattr(processor, "endpoint", None),
                    "queued_spans": getattr(processor, "queued_spans", None),
                    **stats.values,
                }
        return out

    def start(self) -> None:
        """Start the processors' background work (the exporter's worker). Idempotent."""
        for processor in self.processors:
            start = getattr(processor, "start", None)
            if start is not None:
                start()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Shut every processor down (flushing exporters within ``timeout_s``)."""
        for processor in self.processors:
            processor.shutdown(timeout_s)
