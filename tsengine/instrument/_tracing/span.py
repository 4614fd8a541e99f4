"""Spans: what one timed operation of a trace records, in ``__slots__`` objects built lazily.

Who builds them: :class:`~tsengine.instrument.Tracer` (``start_span`` / ``start_as_current_span``),
the middleware and client hooks. Who reads them: the in-memory store (``Tracer.finished_spans``),
the OTLP encoder. What a span holds: ids (ints: 128-bit trace id, 64-bit span id), name, kind,
start/end in Unix ns, attributes, events, links and a status. Only what every span needs is set
at creation; attributes, events and links are created on first use, which is most of why a
span costs a fraction of an OpenTelemetry SDK span.

Semantics follow OpenTelemetry: an exception leaving a span's ``with`` block sets its status to
ERROR; the exception *event* (type, message, stack trace) is recorded once, on the innermost span
it left — the span where it was raised — and the ancestors it passes through only get the ERROR
status. A span that is not sampled (``is_recording`` False) still carries its ids, so context
propagates, but records nothing. Setting anything after ``end()`` is ignored.

Thread safety: a span is meant to be used by one task or thread at a time (as in OTel);
``end()`` is idempotent.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import traceback
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tsengine.instrument._tracing.tracer import Tracer

__all__ = [
    "AttributeValue",
    "Link",
    "Span",
    "SpanContext",
    "SpanKind",
    "StatusCode",
]

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]

log = logging.getLogger("tsengine.instrument")

#: OpenTelemetry's default span limits.
MAX_ATTRIBUTES = 128
MAX_EVENTS = 128
MAX_LINKS = 128

#: The current span of the calling context (one for the process, whatever the tracer): it follows
#: ``await`` and is copied into tasks and ``contextvars.copy_context()`` runs.
current_span_var: ContextVar[Span | None] = ContextVar("tsengine_current_span", default=None)

#: The attribute an exception carries once a span recorded it, so its ancestors do not repeat it.
_RECORDED = "_tsengine_span_recorded"


class SpanKind(enum.IntEnum):
    """The role of a span; values are OTLP's ``Span.SpanKind`` numbers."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(enum.IntEnum):
    """A span's status; values are OTLP's ``Status.StatusCode`` numbers."""

    UNSET = 0
    OK = 1
    ERROR = 2


class SpanContext:
    """The propagated part of a span: ids, flags and the vendor ``tracestate``.

    Built by :func:`~tsengine.instrument.extract` for a remote parent, or by
    :meth:`Span.get_span_context`. ``trace_state`` is the raw, validated header value.
    """

    __slots__ = ("is_remote", "span_id", "trace_flags", "trace_id", "trace_state")

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        trace_flags: int = 1,
        trace_state: str = "",
        is_remote: bool = False,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_flags = trace_flags
        self.trace_state = trace_state
        self.is_remote = is_remote

    @property
    def sampled(self) -> bool:
        return bool(self.trace_flags & 1)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpanContext):
            return NotImplemented
        return (self.trace_id, self.span_id, self.trace_flags, self.trace_state, self.is_remote) == (
            other.trace_id,
            other.span_id,
            other.trace_flags,
            other.trace_state,
            other.is_remote,
        )

    def __hash__(self) -> int:
        return hash((self.trace_id, self.span_id))

    def __repr__(self) -> str:
        return (
            f"SpanContext(trace_id={self.trace_id:032x}, span_id={self.span_id:016x}, "
            f"flags={self.trace_flags:02x}, remote={self.is_remote})"
        )


class Link:
    """A causal link to another span (a batch job linking the requests it serves)."""

    __slots__ = ("attributes", "context")

    def __init__(self, context: SpanContext, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self.context = context
        self.attributes = dict(attributes) if attributes else {}


class Span:
    """One operation of a trace. Build with a :class:`Tracer`, not directly.

    Also a context manager: ``with tracer.start_as_current_span("x") as span`` makes it the
    current span for the block (contextvars: it follows ``await`` and is inherited by tasks
    created inside), records an escaping exception and ends it.
    """

    __slots__ = (
        "_attributes",
        "_current",
        "_dropped",
        "_events",
        "_links",
        "_message",
        "_token",
        "_tracer",
        "end_time_ns",
        "kind",
        "name",
        "parent_remote",
        "parent_span_id",
        "recording",
        "span_id",
        "start_time_ns",
        "status_code",
        "trace_flags",
        "trace_id",
        "trace_state",
    )

    # Slots set only when used (see __init__).
    _events: list[tuple[str, int, dict[str, Any]]]
    _links: list[Link]
    _message: str
    _dropped: int
    _token: Any

    def __init__(  # noqa: PLR0917 -- internal; the tracer inlines it (start_as_current_span)
        self,
        tracer: Tracer,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        parent_span_id: int,
        parent_remote: bool,
        trace_flags: int,
        trace_state: str,
        start_time_ns: int,
        attributes: dict[str, Any] | None,
        current: bool,
    ) -> None:
        self._tracer = tracer
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id  # 0: a root span
        self.parent_remote = parent_remote
        self.trace_flags = trace_flags
        self.recording = trace_flags & 1 == 1
        self.trace_state = trace_state
        self.start_time_ns = start_time_ns
        self.end_time_ns = 0  # 0 while running
        self._attributes = attributes
        self.status_code = StatusCode.UNSET
        self._current = current
        # Set only when used (each store in __init__ costs on every span): _events, _links,
        # _message (the ERROR description), _dropped (refused by the limits), _token (the
        # contextvar token while current). Read them with getattr defaults.

    # -- reading --------------------------------------------------------------------------------

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes or {}

    @property
    def events(self) -> list[tuple[str, int, dict[str, Any]]]:
        """``(name, time_ns, attributes)`` in the order they were added."""
        return getattr(self, "_events", None) or []

    @property
    def links(self) -> list[Link]:
        return getattr(self, "_links", None) or []

    @property
    def status_message(self) -> str:
        """The description of an ERROR status (empty otherwise)."""
        return getattr(self, "_message", "")

    @property
    def dropped(self) -> int:
        """Attributes, events and links refused by the limits (128 each, as in OTel)."""
        return getattr(self, "_dropped", 0)

    def _drop(self) -> None:
        self._dropped = getattr(self, "_dropped", 0) + 1

    @property
    def is_ended(self) -> bool:
        return self.end_time_ns != 0

    def is_recording(self) -> bool:
        return self.recording and self.end_time_ns == 0

    def get_span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, self.trace_flags, self.trace_state, False)

    @property
    def duration_ns(self) -> int:
        return self.end_time_ns - self.start_time_ns if self.end_time_ns else 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (hex ids), for ``/health/telemetry`` and tests."""
        return {
            "trace_id": f"{self.trace_id:032x}",
            "span_id": f"{self.span_id:016x}",
            "parent_span_id": f"{self.parent_span_id:016x}" if self.parent_span_id else None,
            "name": self.name,
            "kind": self.kind.name,
            "start_time_ns": self.start_time_ns,
            "end_time_ns": self.end_time_ns or None,
            "attributes": dict(self.attributes),
            "events": [{"name": n, "time_ns": t, "attributes": dict(a)} for n, t, a in self.events],
            "links": [
                {"trace_id": f"{lk.context.trace_id:032x}", "span_id": f"{lk.context.span_id:016x}"}
                for lk in self.links
            ],
            "status": self.status_code.name,
            "status_message": self.status_message,
        }

    def __repr__(self) -> str:
        return (
            f"Span({self.name!r}, kind={self.kind.name}, trace_id={self.trace_id:032x}, "
            f"span_id={self.span_id:016x}, status={self.status_code.name})"
        )

    # -- recording ------------------------------------------------------------------------------

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self.recording or self.end_time_ns:
            return
        attrs = self._attributes
        if attrs is None:
            attrs = self._attributes = {}
        if key not in attrs and len(attrs) >= MAX_ATTRIBUTES:
            self._drop()
            return
        attrs[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        timestamp_ns: int | None = None,
    ) -> None:
        if not self.recording or self.end_time_ns:
            return
        events = getattr(self, "_events", None)
        if events is None:
            events = self._events = []
        if len(events) >= MAX_EVENTS:
            self._drop()
            return
        when = timestamp_ns if timestamp_ns is not None else self._tracer._time_ns()
        events.append((name, when, dict(attributes) if attributes else {}))

    def add_link(self, context: SpanContext, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if not self.recording or self.end_time_ns:
            return
        links = getattr(self, "_links", None)
        if links is None:
            links = self._links = []
        if len(links) >= MAX_LINKS:
            self._drop()
            return
        links.append(Link(context, attributes))

    def set_status(self, code: StatusCode, description: str | None = None) -> None:
        """Set the status. OK is final (OTel: later ERROR/UNSET are ignored); UNSET never overrides."""
        if self.end_time_ns or self.status_code is StatusCode.OK or code is StatusCode.UNSET:
            return
        self.status_code = code
        self._message = (description or "") if code is StatusCode.ERROR else ""

    def update_name(self, name: str) -> None:
        if not self.end_time_ns:
            self.name = name

    def record_exception(
        self, exc: BaseException, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None:
        """Add the ``exception`` event (type, message, stack trace) — OTel's semantic conventions."""
        if not self.recording or self.end_time_ns:
            return
        attrs: dict[str, Any] = {
            "exception.type": type(exc).__qualname__,
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs)

    def fail(self, exc: BaseException) -> None:
        """Mark this span failed by ``exc``: ERROR status, and the exception event if no inner span
        recorded it already (so it appears once, where it was raised)."""
        self.set_status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}")
        if self.recording and not getattr(exc, _RECORDED, False):
            self.record_exception(exc)
            # A read-only exception keeps no mark: its ancestors then record it too.
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, _RECORDED, True)

    def end(self, end_time_ns: int | None = None) -> None:
        """End the span (idempotent): it goes to the store and the exporter if it is sampled."""
        if self.end_time_ns:
            return
        tracer = self._tracer
        self.end_time_ns = end_time_ns if end_time_ns is not None else tracer._time_ns()
        if self.recording:
            tracer._on_end(self)

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> Span:
        if self._current:
            self._token = current_span_var.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self.recording:
            self.fail(exc)
        if self._current:
            self._current = False  # a second exit must not reset again
            try:
                current_span_var.reset(self._token)
            except ValueError:  # exited in another context than entered (a span moved across tasks)
                log.warning(
                    "span %r ended in another context than it started in; context not restored", self.name
                )
        if not self.end_time_ns:  # end(), inlined: this is every span's hot path
            tracer = self._tracer
            self.end_time_ns = tracer._time_ns()
            if self.recording:
                tracer._on_end(self)
