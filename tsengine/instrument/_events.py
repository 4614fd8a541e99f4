"""Event tracker: structured application events, kept in memory, filterable and streamable.

In: ``track(name, category=…, severity=…, message=…, attributes=…)`` and the domain helpers
(billing, payment, document, license, security, audit, user actions). Each event is stamped
with the wall-clock time, the context ids (user, session, correlation — see ``_context``) and,
when a tracer is installed, trace and span ids. Out: ``get_events(...)`` filters the in-memory
buffer; ``subscribe(callback)`` and ``stream()`` deliver new events as they happen; the
``telemetry_events_total{category,severity}`` counter counts them; the exporter (a later
issue) drains them to a tsengine server's ``events`` table.

Bounds and the audit contract:

* Ordinary events live in a ring of ``EVENTS_MAX_EVENTS``; the oldest is evicted first and
  counted in ``tsengine_instrument_events_evicted_total{category}``. Events older than
  ``EVENTS_RETENTION_HOURS`` are pruned as new ones arrive.
* Audit events are never sampled and never dropped silently. They have a ring of their own
  (same size, so a flood of debug events cannot push them out). An audit event leaving that
  ring — by overflow or age — is appended as one JSON line to ``EVENTS_AUDIT_SPILL_PATH``
  (``tsengine_instrument_audit_events_spilled_total``). That append happens on the calling
  thread and blocks it for one small buffered write: audit volume is low and losing the record
  is worse. With no spill path, or when the write fails, the event is logged at ERROR level
  with its full content on the ``tsengine.instrument`` logger and counted in
  ``tsengine_instrument_audit_events_lost_total`` — alert on that counter.

Thread/async safety: ``track`` may be called from any thread or coroutine; it never awaits and
holds a lock only to append. Callbacks run synchronously on the tracking thread after the lock
is released; a raising callback is counted and logged, never propagated. Async streams are fed
through their loop (``call_soon_threadsafe`` from other threads) into a bounded queue that
drops its oldest event when full.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._context import _correlation_id, _session_id, _user_id, current_trace_ids
from tsengine.instrument._event import (
    Event,
    EventCategory,
    EventFilter,
    EventSeverity,
    to_category,
    to_severity,
)
from tsengine.instrument._metrics import Counter, get_or_create
from tsengine.instrument._registry import REGISTRY, CollectorRegistry
from tsengine.instrument._subscription import EventStream, Subscription

__all__ = ["EventTracker"]

log = logging.getLogger("tsengine.instrument")

_NS_PER_HOUR = 3_600 * 10**9
_AUDIT = EventCategory.AUDIT


class EventTracker:
    """Records events; see the module docstring for bounds, the audit contract and safety.

    Args:
        registry: where ``telemetry_events_total`` and the self-metrics live.
        max_events: ring size for ordinary events, and separately for audit events.
        retention_hours: events older than this are pruned (audit ones spilled).
        audit_spill_path: JSON-lines file receiving audit events that leave memory.
        clock: time source.
        enabled: when False, ``track`` does nothing and returns None.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        max_events: int = 10_000,
        retention_hours: float = 24.0,
        audit_spill_path: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        enabled: bool = True,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._events: deque[Event] = deque()
        self._audit: deque[Event] = deque()
        self._subscribers: tuple[Subscription, ...] = ()
        self.enabled = enabled
        #: When False, events are kept and delivered but ``telemetry_events_total`` is not counted.
        self.count_metrics = True
        self.max_events = max_events
        self.retention_ns = int(retention_hours * _NS_PER_HOUR)
        self.audit_spill_path = audit_spill_path
        self._counter: Counter | None = None  # created on first event: unused trackers register nothing
        self._count_children: dict[tuple[EventCategory, EventSeverity], Any] = {}
        self._evicted_children: dict[EventCategory, Any] = {}

    def configure(
        self,
        *,
        enabled: bool,
        max_events: int,
        retention_hours: float,
        audit_spill_path: str | None,
    ) -> None:
        """Apply new settings in place (the objects users imported stay valid)."""
        with self._lock:
            self.enabled = enabled
            self.max_events = max_events
            self.retention_ns = int(retention_hours * _NS_PER_HOUR)
            self.audit_spill_path = audit_spill_path
            leaving = self._trim_locked(self._clock.time_ns())
        self._spill(leaving)

    # -- recording -------------------------------------------------------------------------------

    def track(
        self,
        name: str,
        *,
        category: EventCategory | str = EventCategory.SYSTEM,
        severity: EventSeverity | str | int = EventSeverity.INFO,
        message: str = "",
        attributes: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Event | None:
        """Record one event and deliver it to subscribers. Returns it (None when disabled).

        Ids not passed come from the current context. Raises ValueError for an unknown
        category or severity (a programming error).
        """
        if not self.enabled:
            return None
        return self._emit(
            name,
            to_category(category),
            to_severity(severity),
            message,
            dict(attributes) if attributes else {},
            user_id=user_id,
            session_id=session_id,
            correlation_id=correlation_id,
        )

    def _emit(
        self,
        name: str,
        cat: EventCategory,
        sev: EventSeverity,
        message: str,
        attributes: dict[str, Any],
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Event:
        """``track`` minus argument checks, for the package's own callers; takes ``attributes`` as is."""
        trace_id, span_id = current_trace_ids()
        now = self._clock.time_ns()
        ev = Event(
            next(self._ids),
            now,
            cat,
            sev,
            name,
            message,
            attributes,
            user_id if user_id is not None else _user_id.get(),
            session_id if session_id is not None else _session_id.get(),
            correlation_id if correlation_id is not None else _correlation_id.get(),
            trace_id,
            span_id,
        )
        with self._lock:
            ring = self._audit if cat is _AUDIT else self._events
            ring.append(ev)
            # Cheap test first: usually nothing is due, or exactly one event to evict.
            leaving = (
                self._trim_locked(now)
                if len(ring) > self.max_events or ring[0].time_ns < now - self.retention_ns
                else None
            )
        if leaving:
            self._spill(leaving)
        if self.count_metrics:
            child = self._count_children.get((cat, sev))
            if child is None:
                counter = self._counter or self._create_counter()
                child = self._count_children[(cat, sev)] = counter.labels(cat.value, str(sev))
            child.inc()
        for sub in self._subscribers:
            if sub.filter.matches(ev):
                try:
                    sub.callback(ev)
                except Exception:  # a subscriber is someone else's code: never let it break track()
                    self._registry.self_metrics.errors.labels("event_subscriber").inc()
                    log.exception("event subscriber %r failed on event %s", sub.callback, ev.name)
        return ev

    def _create_counter(self) -> Counter:
        with self._lock:
            if self._counter is None:
                self._counter = get_or_create(
                    Counter,
                    "telemetry_events_total",
                    "Events tracked by the application, by category and severity.",
                    ("category", "severity"),
                    self._registry,
                )
            return self._counter

    def _trim_locked(self, now_ns: int) -> list[Event]:
        """Drop what exceeds the bounds; return the audit events that must be spilled."""
        cutoff = now_ns - self.retention_ns
        events, audit = self._events, self._audit
        while events and (len(events) > self.max_events or events[0].time_ns < cutoff):
            # Steady state once the ring is full: one eviction per event, so the child is cached.
            cat = events.popleft().category
            child = self._evicted_children.get(cat)
            if child is None:
                child = self._evicted_children[cat] = self._registry.self_metrics.events_evicted.labels(
                    cat.value
                )
            child.inc()
        leaving: list[Event] = []
        while audit and (len(audit) > self.max_events or audit[0].time_ns < cutoff):
            leaving.append(audit.popleft())
        return leaving

    def _spill(self, events: list[Event]) -> None:
        if not events:
            return
        path = self.audit_spill_path
        if path is not None:
            try:
                with open(path, "a", encoding="utf-8") as fh:
                    for ev in events:
                        fh.write(json.dumps(ev.to_dict(), default=str) + "\n")
                self._registry.self_metrics.audit_spilled.inc(len(events))
                return
            except OSError:
                log.exception("cannot spill %d audit events to %s", len(events), path)
        for ev in events:
            self._registry.self_metrics.audit_lost.inc()
            log.error(
                "audit event lost from memory (no spill file): %s", json.dumps(ev.to_dict(), default=str)
            )

    # -- reading ---------------------------------------------------------------------------------

    def get_events(
        self,
        *,
        category: Iterable[EventCategory | str] | EventCategory | str | None = None,
        min_severity: EventSeverity | str | int | None = None,
        name: Iterable[str] | str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events in memory matching every given filter, oldest first; ``limit`` keeps the newest."""
        flt = EventFilter.build(category, min_severity, name)
        with self._lock:
            if flt.categories == frozenset({EventCategory.AUDIT}):
                pool = list(self._audit)
            elif flt.categories is not None and EventCategory.AUDIT not in flt.categories:
                pool = list(self._events)
            else:
                pool = sorted([*self._events, *self._audit], key=lambda e: e.id)
        out = [
            ev
            for ev in pool
            if flt.matches(ev)
            and (since_ns is None or ev.time_ns >= since_ns)
            and (until_ns is None or ev.time_ns < until_ns)
        ]
        return out[-limit:] if limit else out

    def __len__(self) -> int:
        return len(self._events) + len(self._audit)

    def clear(self) -> None:
        """Forget ordinary events; audit events are spilled, never just forgotten."""
        with self._lock:
            self._events.clear()
            leaving = list(self._audit)
            self._audit.clear()
        self._spill(leaving)

    # -- subscription ----------------------------------------------------------------------------

    def subscribe(
        self,
        callback: Callable[[Event], None],
        *,
        categories: Iterable[EventCategory | str] | EventCategory | str | None = None,
        min_severity: EventSeverity | str | int | None = None,
        names: Iterable[str] | str | None = None,
    ) -> Subscription:
        """Call ``callback(event)`` for each new matching event, on the tracking thread."""
        return self._subscribe(EventFilter.build(categories, min_severity, names), callback)

    def _subscribe(self, flt: EventFilter, callback: Callable[[Event], None]) -> Subscription:
        sub = Subscription(self, flt, callback)
        with self._lock:
            self._subscribers = (*self._subscribers, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)

    def stream(
        self,
        *,
        categories: Iterable[EventCategory | str] | EventCategory | str | None = None,
        min_severity: EventSeverity | str | int | None = None,
        names: Iterable[str] | str | None = None,
        maxsize: int = 1000,
    ) -> EventStream:
        """An async iterator of new matching events (call inside a running loop)."""
        return EventStream(self, EventFilter.build(categories, min_severity, names), maxsize)

    # -- domain helpers --------------------------------------------------------------------------

    def track_user_action(self, action: str, *, message: str = "", **attributes: Any) -> Event | None:
        """A user did something (``login``, ``export_report``)."""
        return self.track(action, category=EventCategory.USER_ACTION, message=message, attributes=attributes)

    def track_business_event(self, name: str, *, message: str = "", **attributes: Any) -> Event | None:
        """A business fact (``order_placed``, ``trial_converted``)."""
        return self.track(name, category=EventCategory.BUSINESS, message=message, attributes=attributes)

    def track_billing_event(
        self,
        event_type: str,
        *,
        amount: float | None = None,
        currency: str | None = None,
        success: bool = True,
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Billing: ``invoice_created``, ``subscription_renewed``, ``charge_failed``…"""
        attrs = {"amount": amount, "currency": currency, "success": success, **attributes}
        sev = EventSeverity.INFO if success else EventSeverity.ERROR
        return self.track(
            event_type, category=EventCategory.BILLING, severity=sev, message=message, attributes=attrs
        )

    def track_payment_event(
        self,
        event_type: str,
        *,
        amount: float | None = None,
        currency: str | None = None,
        payment_method: str | None = None,
        success: bool = True,
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Payments: ``payment_succeeded``, ``payment_failed``, ``refund_issued``…"""
        attrs = {
            "amount": amount,
            "currency": currency,
            "payment_method": payment_method,
            "success": success,
            **attributes,
        }
        sev = EventSeverity.INFO if success else EventSeverity.ERROR
        return self.track(
            event_type, category=EventCategory.PAYMENT, severity=sev, message=message, attributes=attrs
        )

    def track_document_event(
        self,
        action: str,
        *,
        document_id: str | None = None,
        document_type: str | None = None,
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Documents: ``document_uploaded``, ``document_signed``, ``document_deleted``…"""
        attrs = {"document_id": document_id, "document_type": document_type, **attributes}
        return self.track(action, category=EventCategory.DOCUMENT, message=message, attributes=attrs)

    def track_license_event(
        self,
        operation: str,
        *,
        license_type: str | None = None,
        license_id: str | None = None,
        success: bool = True,
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Licensing: ``license_activated``, ``license_validated``, ``seat_limit_reached``…"""
        attrs = {"license_type": license_type, "license_id": license_id, "success": success, **attributes}
        sev = EventSeverity.INFO if success else EventSeverity.WARNING
        return self.track(
            operation, category=EventCategory.LICENSE, severity=sev, message=message, attributes=attrs
        )

    def track_security_event(
        self,
        name: str,
        *,
        severity: EventSeverity | str | int = EventSeverity.WARNING,
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Security: auth failure bursts, path probing, permission denials."""
        return self.track(
            name, category=EventCategory.SECURITY, severity=severity, message=message, attributes=attributes
        )

    def track_audit_event(
        self,
        action: str,
        *,
        actor: str | None = None,
        resource: str | None = None,
        outcome: str = "success",
        message: str = "",
        **attributes: Any,
    ) -> Event | None:
        """Audit trail (never dropped; see the module docstring)."""
        attrs = {"actor": actor, "resource": resource, "outcome": outcome, **attributes}
        return self.track(action, category=EventCategory.AUDIT, message=message, attributes=attrs)

    def track_error(self, exc: BaseException, *, name: str = "exception", **attributes: Any) -> Event | None:
        """An exception, by type and message (no traceback: events are not logs)."""
        attrs = {"error_type": type(exc).__name__, **attributes}
        return self.track(
            name,
            category=EventCategory.ERROR,
            severity=EventSeverity.ERROR,
            message=str(exc),
            attributes=attrs,
        )
