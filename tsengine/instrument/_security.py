"""Security signals seen by the middleware: bursts of 401/403 and probing of unknown paths.

The middleware reports every response's client, status and whether a route matched; this
module counts per client over a sliding window and tracks one ``security`` event when a client
crosses a threshold (``auth_failure_burst``, ``path_probing``), then stays quiet for that client
until the window has passed. Memory is bounded: at most ``max_clients`` clients are tracked (the
least recently seen is forgotten) and each keeps at most ``threshold`` timestamps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._event import EventSeverity
from tsengine.instrument._events import EventTracker

__all__ = ["SecurityMonitor"]


class _Burst:
    """Per-kind sliding-window counter keyed by client."""

    def __init__(self, threshold: int, window_s: float, max_clients: int) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.max_clients = max_clients
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()
        self.quiet_until: dict[str, float] = {}

    def hit(self, client: str, now: float) -> int | None:
        """Record a hit; return the count if this hit crosses the threshold, else None."""
        q = self.hits.get(client)
        if q is None:
            if len(self.hits) >= self.max_clients:
                old, _ = self.hits.popitem(last=False)
                self.quiet_until.pop(old, None)
            q = self.hits[client] = deque(maxlen=self.threshold)
        else:
            self.hits.move_to_end(client)
        q.append(now)
        if len(q) < self.threshold or now - q[0] > self.window_s:
            return None
        if self.quiet_until.get(client, 0.0) > now:
            return None
        self.quiet_until[client] = now + self.window_s
        return len(q)


class SecurityMonitor:
    """Turns response statuses into security events. Thread-safe.

    Args:
        tracker: receives the events.
        window_s: sliding window length.
        auth_failure_threshold: 401/403 responses per client per window that make a burst.
        not_found_threshold: unmatched-route responses per client per window that make probing.
        max_clients: clients tracked at once.
        clock: time source.
    """

    def __init__(
        self,
        tracker: EventTracker,
        *,
        window_s: float = 60.0,
        auth_failure_threshold: int = 20,
        not_found_threshold: int = 30,
        max_clients: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.tracker = tracker
        self._clock = clock
        self._lock = threading.Lock()
        self._auth = _Burst(auth_failure_threshold, window_s, max_clients)
        self._probe = _Burst(not_found_threshold, window_s, max_clients)
        self._recent_paths: deque[str] = deque(maxlen=10)

    def observe(self, client: str, status: int, path: str, *, route_matched: bool) -> None:
        """Account for one response."""
        if status in (401, 403):
            with self._lock:
                count = self._auth.hit(client, self._clock.monotonic())
            if count is not None:
                self.tracker.track_security_event(
                    "auth_failure_burst",
                    severity=EventSeverity.WARNING,
                    message=f"{count} authentication failures from {client} within {self._auth.window_s:g} s",
                    client=client,
                    count=count,
                )
        elif status == 404 and not route_matched:
            with self._lock:
                self._recent_paths.append(path[:200])
                count = self._probe.hit(client, self._clock.monotonic())
                paths = list(self._recent_paths)
            if count is not None:
                self.tracker.track_security_event(
                    "path_probing",
                    severity=EventSeverity.WARNING,
                    message=f"{count} unknown paths requested by {client} within {self._probe.window_s:g} s",
                    client=client,
                    count=count,
                    recent_paths=paths,
                )
