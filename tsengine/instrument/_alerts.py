"""App-side alerts: slow endpoints, error-rate bursts per route and security bursts, in process.

Who calls it: the runtime (``ALERTS_ENABLED=true``; ``Telemetry.alerts``). What comes in: every
request the performance monitor records (route, error, duration, threshold — through
``PerformanceMonitor.request_observer``) and the security detector's ``security`` events
(``auth_failure_burst``, ``path_probing``, through an event subscription). What goes out: alert
records — name, severity, labels, value, since, state ``firing``/``resolved`` — kept in a
bounded list (``ALERTS_MAX_ALERTS``), shown on ``/health/telemetry`` under
``components.alerts`` and tracked as events of category ``alert`` (so an installed exporter
ships them to the server's ``events`` table; the attribute ``state`` says firing or resolved).

The rules, one alert per (name, labels) at a time:

* ``slow_endpoint`` {route} (warning): a request slower than its threshold
  (``PERFORMANCE_SLOW_REQUEST_S`` or ``set_threshold``); value = that duration. Resolved when
  ``window_s`` passes without another breach on that route.
* ``high_error_rate`` {route} (error): over the last ``window_s``, at least ``min_requests``
  requests of which a fraction ``>= error_rate_threshold`` answered 5xx; value = the fraction.
  Resolved when the fraction falls below the threshold, or the route's traffic below
  ``min_requests``.
* ``auth_failure_burst`` / ``path_probing`` {client} (warning): the security detector's burst;
  value = its count. Resolved when ``window_s`` passes without another burst from that client.

Resolution is evaluated when the next request or burst arrives and whenever the alerts are
read (``alerts()``, the health document): no thread of its own. Memory is bounded: at most
``max_alerts`` records (the oldest resolved ones leave first; a new alert beyond ``max_alerts``
active ones is refused and counted in ``refused``) and ``max_routes`` routes with at most
``max_window_requests`` timestamps each. Thread-safe; never raises into the request path (a
failure is logged and counted by the runtime). The server-side alert manager is separate: this
is what a service owner sees in the app itself.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._event import EventCategory, EventSeverity

if TYPE_CHECKING:
    from tsengine.instrument._event import Event
    from tsengine.instrument._events import EventTracker
    from tsengine.instrument._subscription import Subscription

__all__ = ["Alert", "AppAlerts"]

log = logging.getLogger(__name__)

#: Category of alert events.
ALERT_CATEGORY: EventCategory = EventCategory.ALERT
_SECURITY_BURSTS = ("auth_failure_burst", "path_probing")


@dataclass(slots=True)
class Alert:
    """One alert: firing from ``since_ns``, resolved at ``resolved_ns`` (None while firing)."""

    name: str
    severity: EventSeverity
    labels: dict[str, str]
    value: float
    since_ns: int
    summary: str
    resolved_ns: int | None = None
    _last_seen: float = field(default=0.0, repr=False)  # monotonic time of the latest trigger

    @property
    def state(self) -> str:
        return "firing" if self.resolved_ns is None else "resolved"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": str(self.severity),
            "labels": dict(self.labels),
            "value": self.value,
            "since_ns": self.since_ns,
            "state": self.state,
            "resolved_ns": self.resolved_ns,
            "summary": self.summary,
        }


class AppAlerts:
    """The in-process alert rules. See the module docstring.

    Args:
        tracker: where alert events go, and where security bursts come from.
        clock: time source (``monotonic`` for windows, ``time_ns`` for ``since``).
        max_alerts: records kept (firing and resolved).
        window_s: the sliding window of every rule.
        error_rate_threshold: fraction of 5xx answers that fires ``high_error_rate``.
        min_requests: requests in the window below which no error rate is judged.
        max_routes: routes followed by the error-rate rule.
        max_window_requests: timestamps kept per route.
        on_error: called when a rule fails (the runtime counts it), instead of raising.
    """

    def __init__(
        self,
        tracker: EventTracker | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_alerts: int = 1000,
        window_s: float = 60.0,
        error_rate_threshold: float = 0.5,
        min_requests: int = 10,
        max_routes: int = 1000,
        max_window_requests: int = 10_000,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.clock = clock
        self.max_alerts = max_alerts
        self.window_s = window_s
        self.error_rate_threshold = error_rate_threshold
        self.min_requests = min_requests
        self.max_routes = max_routes
        self.max_window_requests = max_window_requests
        self.on_error = on_error
        self.enabled = False
        #: New alerts refused because ``max_alerts`` were firing.
        self.refused = 0
        self._lock = threading.Lock()
        self._records: deque[Alert] = deque()
        self._active: dict[tuple[str, tuple[tuple[str, str], ...]], Alert] = {}
        self._requests: OrderedDict[str, deque[tuple[float, bool]]] = OrderedDict()
        self._subscription: Subscription | None = None

    # -- wiring ------------------------------------------------------------------------------------

    def configure(self, *, enabled: bool, max_alerts: int) -> None:
        """Turn the rules on or off (subscribing to security events) and resize the record list."""
        with self._lock:
            self.max_alerts = max_alerts
            self._trim()
        self.enabled = enabled
        if enabled and self._subscription is None and self.tracker is not None:
            self._subscription = self.tracker.subscribe(
                self._on_security_event, categories=EventCategory.SECURITY, names=_SECURITY_BURSTS
            )
        elif not enabled and self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    # -- inputs (never raise) ----------------------------------------------------------------------

    def observe_request(self, route: str, error: bool, duration_s: float, threshold_s: float) -> None:
        """One request recorded by the performance monitor (``route`` = ``"METHOD /template"``)."""
        if not self.enabled:
            return
        try:
            now = self.clock.monotonic()
            labels = {"route": route}
            with self._lock:
                self._expire(now)
                if duration_s > threshold_s:
                    summary = f"{route} took {duration_s:.3f} s (threshold {threshold_s:.3f} s)"
                    self._fire(
                        "slow_endpoint",
                        EventSeverity.WARNING,
                        labels,
                        value=duration_s,
                        summary=summary,
                        now=now,
                    )
                rate = self._error_rate(route, error, now)
                key = ("high_error_rate", (("route", route),))
                if rate is not None and rate >= self.error_rate_threshold:
                    summary = f"{rate:.0%} of the requests to {route} failed within {self.window_s:g} s"
                    self._fire(
                        "high_error_rate", EventSeverity.ERROR, labels, value=rate, summary=summary, now=now
                    )
                elif key in self._active:
                    self._resolve(self._active[key])
        except Exception:
            self._failed()

    def _on_security_event(self, ev: Event) -> None:
        if not self.enabled:
            return
        try:
            client = str(ev.attributes.get("client", "unknown"))
            count = float(ev.attributes.get("count", 0))
            now = self.clock.monotonic()
            with self._lock:
                self._expire(now)
                labels = {"client": client}
                self._fire(ev.name, EventSeverity.WARNING, labels, value=count, summary=ev.message, now=now)
        except Exception:
            self._failed()

    # -- outputs -----------------------------------------------------------------------------------

    def alerts(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """The records, oldest first (``state``: ``firing`` or ``resolved`` to filter)."""
        with self._lock:
            if self.enabled:
                self._expire(self.clock.monotonic())
            records = [a.to_dict() for a in self._records]
        return [r for r in records if state is None or r["state"] == state]

    def health(self) -> dict[str, Any]:
        """For ``/health/telemetry``: the switch, firing alerts and the most recent records."""
        records = self.alerts()
        return {
            "enabled": self.enabled,
            "firing": [r for r in records if r["state"] == "firing"],
            "recent": records[-20:],
            "refused": self.refused,
        }

    # -- state (called with self._lock held) -------------------------------------------------------

    def _error_rate(self, route: str, error: bool, now: float) -> float | None:
        window = self._requests.get(route)
        if window is None:
            if len(self._requests) >= self.max_routes:
                return None
            window = self._requests[route] = deque(maxlen=self.max_window_requests)
        window.append((now, error))
        horizon = now - self.window_s
        while window and window[0][0] < horizon:
            window.popleft()
        if len(window) < self.min_requests:
            return None
        return sum(1 for _, failed in window if failed) / len(window)

    def _fire(
        self,
        name: str,
        severity: EventSeverity,
        labels: dict[str, str],
        *,
        value: float,
        summary: str,
        now: float,
    ) -> None:
        key = (name, tuple(sorted(labels.items())))
        alert = self._active.get(key)
        if alert is not None:  # already firing: keep it alive with the latest value
            alert.value = value
            alert._last_seen = now
            return
        if len(self._active) >= self.max_alerts:
            self.refused += 1
            return
        alert = Alert(name, severity, dict(labels), value, self.clock.time_ns(), summary, _last_seen=now)
        self._active[key] = alert
        self._records.append(alert)
        self._trim()
        self._emit(alert)

    def _resolve(self, alert: Alert) -> None:
        alert.resolved_ns = self.clock.time_ns()
        self._active.pop((alert.name, tuple(sorted(alert.labels.items()))), None)
        self._emit(alert)

    def _expire(self, now: float) -> None:
        """Resolve what the windows no longer support."""
        horizon = now - self.window_s
        for (name, labels), alert in list(self._active.items()):
            if name == "high_error_rate":
                window = self._requests.get(dict(labels)["route"])
                while window and window[0][0] < horizon:
                    window.popleft()
                if window is None or len(window) < self.min_requests:
                    self._resolve(alert)
            elif alert._last_seen < horizon:
                self._resolve(alert)

    def _trim(self) -> None:
        while len(self._records) > self.max_alerts:
            # The oldest resolved record leaves first; firing ones stay (bounded by max_alerts).
            for i, alert in enumerate(self._records):
                if alert.resolved_ns is not None:
                    del self._records[i]
                    break
            else:
                return

    def _emit(self, alert: Alert) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        firing = alert.resolved_ns is None
        # Tracked under our lock: subscribers run on this thread and must not call back in here
        # (the only subscription here takes security events, which alerts never are).
        tracker.track(
            alert.name,
            category=ALERT_CATEGORY,
            severity=alert.severity if firing else EventSeverity.INFO,
            message=("firing: " if firing else "resolved: ") + alert.summary,
            attributes={"alert": alert.name, **alert.to_dict()},
        )

    def _failed(self) -> None:
        log.exception("app-side alert rule failed; the request continues")
        if self.on_error is not None:
            self.on_error()
