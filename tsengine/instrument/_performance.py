"""Performance monitor: request, database-query and external-call timings; slow-endpoint report.

In: ``record_request(method, route, status, duration_s)`` from the middleware, and
``time_db_query`` / ``time_external_call`` (context managers) or their ``record_*`` forms from
the application, the DB-API wrapper and the HTTP-client hooks. Out: Prometheus metrics
(``http_requests_total{method,route,status}``, ``http_request_duration_seconds{method,route}``,
``db_queries_total``, ``db_query_duration_seconds``, ``external_calls_total``,
``external_call_duration_seconds``), and :meth:`PerformanceMonitor.report` with per-endpoint
percentiles, error rates and throughput over a bounded window, the slowest endpoints, and the
recent slow requests each with the CPU/memory reading of the system sampler at that moment.

Bounds: each endpoint keeps its last ``window`` timings; at most ``max_endpoints`` endpoints
are tracked (later ones share the key ``<other>``); at most ``max_slow`` slow requests are kept.
Recording never calls psutil and never blocks beyond short locks; percentiles are computed only
when a report is asked for.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._event import EventCategory, EventSeverity
from tsengine.instrument._events import EventTracker
from tsengine.instrument._metrics import Counter, Histogram, get_or_create
from tsengine.instrument._registry import REGISTRY, CollectorRegistry

__all__ = ["PerformanceMonitor", "SlowOperation", "percentile"]

OTHER = "<other>"


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of an ascending, non-empty list."""
    if not sorted_values:
        raise ValueError("cannot compute a percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class SlowOperation:
    """A request, query or call that took longer than its threshold."""

    kind: str  # "request", "db_query" or "external_call"
    name: str  # "GET /items/{id}", "select users", "payments-api charge"
    duration_s: float
    threshold_s: float
    time_ns: int
    status: str = ""
    system: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "duration_s": self.duration_s,
            "threshold_s": self.threshold_s,
            "time_ns": self.time_ns,
            "status": self.status,
            "system": dict(self.system),
        }


class _Window:
    """Last N (monotonic time, duration, error?) of one endpoint; deque appends are atomic."""

    __slots__ = ("samples",)

    def __init__(self, size: int) -> None:
        self.samples: deque[tuple[float, float, bool]] = deque(maxlen=size)

    def stats(self, now: float) -> dict[str, float]:
        samples = list(self.samples)
        durations = sorted(d for _, d, _ in samples)
        n = len(samples)
        errors = sum(1 for _, _, e in samples if e)
        span = now - samples[0][0] if n else 0.0
        return {
            "count": n,
            "errors": errors,
            "error_rate": errors / n if n else 0.0,
            "throughput_rps": n / span if span > 0 else 0.0,
            "mean_s": sum(durations) / n if n else 0.0,
            "p50_s": percentile(durations, 50) if n else 0.0,
            "p95_s": percentile(durations, 95) if n else 0.0,
            "p99_s": percentile(durations, 99) if n else 0.0,
            "max_s": durations[-1] if n else 0.0,
        }


class _Metrics:
    """The monitor's metrics, created on first use so an unused monitor registers nothing."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = get_or_create(
            Counter,
            "http_requests_total",
            "HTTP requests by method, route and status.",
            ("method", "route", "status"),
            registry,
        )
        self.request_s = get_or_create(
            Histogram, "http_request_duration_seconds", "HTTP request latency.", ("method", "route"), registry
        )
        self.queries = get_or_create(
            Counter,
            "db_queries_total",
            "Database queries by operation and outcome.",
            ("operation", "status"),
            registry,
        )
        self.query_s = get_or_create(
            Histogram, "db_query_duration_seconds", "Database query latency.", ("operation",), registry
        )
        self.calls = get_or_create(
            Counter,
            "external_calls_total",
            "Calls to other services by service and outcome.",
            ("service", "status"),
            registry,
        )
        self.call_s = get_or_create(
            Histogram,
            "external_call_duration_seconds",
            "Latency of calls to other services.",
            ("service", "operation"),
            registry,
        )


class PerformanceMonitor:
    """Timings and thresholds. See the module docstring.

    Args:
        registry: where the metrics go.
        window: timings kept per endpoint for percentiles.
        max_endpoints: endpoints (and query/call names) tracked before folding into ``<other>``.
        default_threshold_s: slow threshold where none is set for the endpoint.
        max_slow: slow operations kept for the report.
        system_snapshot: returns the latest system reading (``SystemMetrics.snapshot``).
        tracker: if given, each slow operation is also tracked as a ``performance`` event.
        clock: time source.
        enabled: when False, recording does nothing.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        window: int = 1000,
        max_endpoints: int = 500,
        default_threshold_s: float = 1.0,
        max_slow: int = 100,
        system_snapshot: Callable[[], Mapping[str, Any]] | None = None,
        tracker: EventTracker | None = None,
        clock: Clock = SYSTEM_CLOCK,
        enabled: bool = True,
    ) -> None:
        self.registry = registry
        self.window = window
        self.max_endpoints = max_endpoints
        self.default_threshold_s = default_threshold_s
        self.system_snapshot = system_snapshot
        self.tracker = tracker
        self.enabled = enabled
        #: When False, timings feed the windows and the report but create no metrics.
        self.metrics_enabled = True
        self._clock = clock
        self._lock = threading.Lock()
        self._thresholds: dict[str, float] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._slow: deque[SlowOperation] = deque(maxlen=max_slow)
        #: Called with ``(name, error, duration_s, threshold_s)`` for every request (app-side alerts).
        self.request_observer: Callable[[str, bool, float, float], None] | None = None

        self._metrics: _Metrics | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    def _create_metrics(self) -> _Metrics:
        with self._lock:
            if self._metrics is None:
                self._metrics = _Metrics(self.registry)
            return self._metrics

    def set_threshold(self, name: str, seconds: float) -> None:
        """Slow threshold for a route (``"/items/{id}"``), ``"METHOD route"``, db operation or service."""
        if not seconds > 0:
            raise ValueError(f"cannot set threshold of {name!r} to {seconds!r}: must be > 0")
        self._thresholds[name] = seconds

    def threshold(self, name: str, *alternatives: str) -> float:
        for key in (name, *alternatives):
            t = self._thresholds.get(key)
            if t is not None:
                return t
        return self.default_threshold_s

    # -- recording -------------------------------------------------------------------------------

    def _window(self, kind: str, name: str) -> _Window:
        key = (kind, name)
        w = self._windows.get(key)
        if w is None:
            with self._lock:
                w = self._windows.get(key)
                if w is None:
                    if len(self._windows) >= self.max_endpoints:
                        key = (kind, OTHER)
                        w = self._windows.get(key)
                    if w is None:
                        w = self._windows[key] = _Window(self.window)
        return w

    def record_request(self, method: str, route: str, status: int | str, duration_s: float) -> None:
        """One served request. ``route`` must be the template (``/items/{id}``), never the raw path."""
        if not self.enabled:
            return
        status_s = str(status)
        error = status_s[:1] == "5"
        if self.metrics_enabled:
            m = self._metrics or self._create_metrics()
            m.requests.labels(method, route, status_s).inc()
            m.request_s.labels(method, route).observe(duration_s)
        name = f"{method} {route}"
        now = self._clock.monotonic()
        self._window("request", name).samples.append((now, duration_s, error))
        threshold = self.threshold(name, route)
        observer = self.request_observer
        if observer is not None:
            observer(name, error, duration_s, threshold)
        if duration_s > threshold:
            self._slow_op("request", name, duration_s, threshold, status_s)

    def record_db_query(self, operation: str, duration_s: float, *, success: bool = True) -> None:
        """One database query (``operation`` like ``select users``: no literal values, ever)."""
        if not self.enabled:
            return
        if self.metrics_enabled:
            m = self._metrics or self._create_metrics()
            m.queries.labels(operation, "success" if success else "error").inc()
            m.query_s.labels(operation).observe(duration_s)
        self._window("db_query", operation).samples.append((self._clock.monotonic(), duration_s, not success))
        threshold = self.threshold(operation)
        if duration_s > threshold:
            self._slow_op("db_query", operation, duration_s, threshold, "success" if success else "error")

    def record_external_call(
        self,
        service: str,
        operation: str,
        duration_s: float,
        *,
        status: int | str = "ok",
        success: bool = True,
    ) -> None:
        """One call to another service (``service`` = host or logical name)."""
        if not self.enabled:
            return
        if self.metrics_enabled:
            m = self._metrics or self._create_metrics()
            m.calls.labels(service, "success" if success else "error").inc()
            m.call_s.labels(service, operation).observe(duration_s)
        name = f"{service} {operation}"
        self._window("external_call", name).samples.append((self._clock.monotonic(), duration_s, not success))
        threshold = self.threshold(name, service)
        if duration_s > threshold:
            self._slow_op("external_call", name, duration_s, threshold, str(status))

    def _slow_op(self, kind: str, name: str, duration_s: float, threshold_s: float, status: str) -> None:
        system = dict(self.system_snapshot()) if self.system_snapshot is not None else {}
        op = SlowOperation(kind, name, duration_s, threshold_s, self._clock.time_ns(), status, system)
        self._slow.append(op)
        if self.tracker is not None:
            self.tracker.track(
                f"slow_{kind}",
                category=EventCategory.PERFORMANCE,
                severity=EventSeverity.WARNING,
                message=f"{name} took {duration_s:.3f} s (threshold {threshold_s:.3f} s)",
                attributes=op.to_dict(),
            )

    @contextmanager
    def time_db_query(self, operation: str) -> Iterator[None]:
        """Time the block as one query; an exception marks it failed and propagates unchanged."""
        start = self._clock.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record_db_query(operation, self._clock.monotonic() - start, success=ok)

    @contextmanager
    def time_external_call(self, service: str, operation: str) -> Iterator[None]:
        """Time the block as one external call; an exception marks it failed."""
        start = self._clock.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record_external_call(
                service,
                operation,
                self._clock.monotonic() - start,
                status="ok" if ok else "error",
                success=ok,
            )

    # -- reporting -------------------------------------------------------------------------------

    def stats(self, kind: str, name: str) -> dict[str, float] | None:
        """Window statistics of one endpoint/query/call, or None if never seen."""
        w = self._windows.get((kind, name))
        return None if w is None else w.stats(self._clock.monotonic())

    def _all_stats(self, kind: str) -> dict[str, dict[str, float]]:
        now = self._clock.monotonic()
        with self._lock:
            items = [(n, w) for (k, n), w in self._windows.items() if k == kind]
        return {name: w.stats(now) for name, w in items}

    def slow_endpoints(self, top_n: int = 10, *, kind: str = "request") -> list[dict[str, Any]]:
        """The ``top_n`` slowest by p95 over the window, each with its threshold and whether it is over."""
        out: list[dict[str, Any]] = []
        for name, st in self._all_stats(kind).items():
            route = name.split(" ", 1)[-1]
            threshold = self.threshold(name, route)
            out.append(
                {"name": name, **st, "threshold_s": threshold, "over_threshold": st["p95_s"] > threshold}
            )
        out.sort(key=lambda d: d["p95_s"], reverse=True)
        return out[:top_n]

    def slow_operations(self) -> list[SlowOperation]:
        """Recent operations over their threshold, oldest first."""
        return list(self._slow)

    def report(self, top_n: int = 10) -> dict[str, Any]:
        """Everything above as one JSON-ready dict (served by ``/health/telemetry``)."""
        return {
            "endpoints": self._all_stats("request"),
            "db_queries": self._all_stats("db_query"),
            "external_calls": self._all_stats("external_call"),
            "slow_endpoints": self.slow_endpoints(top_n),
            "slow_operations": [op.to_dict() for op in self.slow_operations()],
        }
