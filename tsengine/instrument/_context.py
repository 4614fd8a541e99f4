"""Request context carried in contextvars: user, session and correlation ids, and the trace seam.

The middleware sets the correlation id per request; the application binds the user and
session once it knows them; the event tracker reads all three when it stamps an event. Being
contextvars, the values follow ``await`` and are copied into tasks created from the request,
and never leak between concurrent requests.

Tracing seam: the tracing issue installs a provider with :func:`set_trace_context_provider`
returning the current ``(trace_id, span_id)`` (hex strings) or None; events then carry them.
Until then no trace ids are stamped and nothing is paid for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "TelemetryContext",
    "TraceContextProvider",
    "bind_context",
    "current_context",
    "current_trace_ids",
    "new_correlation_id",
    "set_trace_context_provider",
]

_user_id: ContextVar[str | None] = ContextVar("tsengine_user_id", default=None)
_session_id: ContextVar[str | None] = ContextVar("tsengine_session_id", default=None)
_correlation_id: ContextVar[str | None] = ContextVar("tsengine_correlation_id", default=None)

TraceContextProvider = Callable[[], "tuple[str, str] | None"]
_trace_provider: TraceContextProvider | None = None

_UNSET: object = object()


@dataclass(frozen=True, slots=True)
class TelemetryContext:
    """The ids in force in the current context."""

    user_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None


def current_context() -> TelemetryContext:
    """The ids bound in the calling context (all None outside any binding)."""
    return TelemetryContext(_user_id.get(), _session_id.get(), _correlation_id.get())


@contextmanager
def bind_context(
    *, user_id: object = _UNSET, session_id: object = _UNSET, correlation_id: object = _UNSET
) -> Iterator[TelemetryContext]:
    """Bind ids for the duration of a ``with`` block; arguments not given stay as they are.

    Example::

        with bind_context(user_id=user.id, session_id=session.id):
            await handle(request)
    """
    tokens = []
    for var, value in ((_user_id, user_id), (_session_id, session_id), (_correlation_id, correlation_id)):
        if value is not _UNSET:
            tokens.append((var, var.set(None if value is None else str(value))))
    try:
        yield current_context()
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def new_correlation_id() -> str:
    """A fresh random correlation id (32 hex characters, 128 random bits)."""
    # os.urandom + hex is several times cheaper than uuid4().hex and just as unique.
    return os.urandom(16).hex()


def set_trace_context_provider(provider: TraceContextProvider | None) -> None:
    """Install (or with None remove) the function giving the current ``(trace_id, span_id)``."""
    global _trace_provider
    _trace_provider = provider


def current_trace_ids() -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` from the installed provider, or ``(None, None)``."""
    provider = _trace_provider
    if provider is None:
        return None, None
    ids = provider()
    return ids if ids is not None else (None, None)


# The middleware needs to set and reset the correlation id without a with-block around the app.
correlation_id_var = _correlation_id
