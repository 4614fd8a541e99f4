"""Events: what the tracker records — categories, severities, the Event record and filters."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventCategory", "EventFilter", "EventSeverity", "to_category", "to_severity"]


class EventCategory(enum.StrEnum):
    """What an event is about. The value is what is stored and exported."""

    USER_ACTION = "user_action"
    SYSTEM = "system"
    BUSINESS = "business"
    SECURITY = "security"
    PERFORMANCE = "performance"
    AUDIT = "audit"
    ERROR = "error"
    BILLING = "billing"
    PAYMENT = "payment"
    DOCUMENT = "document"
    LICENSE = "license"
    ALERT = "alert"
    #: Records received as OTLP logs (``POST /v1/logs``) without an ``event.category`` attribute.
    LOG = "log"


class EventSeverity(enum.IntEnum):
    """Ordered severities (filters take a minimum); ``str(sev)`` gives the lower-case name."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    def __str__(self) -> str:
        return self.name.lower()


# Enum(value) lookups cost about a microsecond; these dicts answer for members and raw values
# alike (a StrEnum member hashes as its string, an IntEnum member as its int).
_CATEGORIES: dict[object, EventCategory] = {c.value: c for c in EventCategory}
_SEVERITIES: dict[object, EventSeverity] = {
    **{s.value: s for s in EventSeverity},
    **{s.name: s for s in EventSeverity},
    **{s.name.lower(): s for s in EventSeverity},
}


def to_category(value: EventCategory | str) -> EventCategory:
    cat = _CATEGORIES.get(value)
    if cat is None:
        raise ValueError(
            f"cannot track event: unknown category {value!r} "
            f"(one of {', '.join(c.value for c in EventCategory)})"
        )
    return cat


def to_severity(value: EventSeverity | str | int) -> EventSeverity:
    sev = _SEVERITIES.get(value)
    if sev is None:
        raise ValueError(
            f"cannot track event: unknown severity {value!r} (debug, info, warning, error, critical)"
        )
    return sev


@dataclass(slots=True)
class Event:
    """One tracked event. ``attributes`` must be JSON-serialisable for export.

    Treat it as immutable: the same object is kept in memory, handed to every subscriber and
    exported. (Not a frozen dataclass only because freezing triples the cost of ``track``.)
    """

    id: int
    time_ns: int
    category: EventCategory
    severity: EventSeverity
    name: str
    message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Row of the server's ``events`` table (attributes as a nested object)."""
        return {
            "id": self.id,
            "time_ns": self.time_ns,
            "category": self.category.value,
            "severity": str(self.severity),
            "name": self.name,
            "message": self.message,
            "attributes": dict(self.attributes),
            "user_id": self.user_id,
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    categories: frozenset[EventCategory] | None = None
    min_severity: EventSeverity = EventSeverity.DEBUG
    names: frozenset[str] | None = None

    def matches(self, ev: Event) -> bool:
        return (
            ev.severity >= self.min_severity
            and (self.categories is None or ev.category in self.categories)
            and (self.names is None or ev.name in self.names)
        )

    @classmethod
    def build(
        cls,
        categories: Iterable[EventCategory | str] | EventCategory | str | None,
        min_severity: EventSeverity | str | int | None,
        names: Iterable[str] | str | None,
    ) -> EventFilter:
        if isinstance(categories, str):
            categories = [categories]
        if isinstance(names, str):
            names = [names]
        return cls(
            None if categories is None else frozenset(to_category(c) for c in categories),
            EventSeverity.DEBUG if min_severity is None else to_severity(min_severity),
            None if names is None else frozenset(names),
        )
