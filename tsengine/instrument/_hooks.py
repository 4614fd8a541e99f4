"""Hook interfaces the middleware and decorators call around each request and call.

This is the seam the tracing issue plugs into: a tracer implements :class:`RequestHook`
(start a server span from the incoming ``traceparent`` in ``on_request_start``, end it with the
status in ``on_request_end``) and :class:`CallHook` (a span per decorated business call), and
registers them with ``Hooks.add_request_hook`` / ``add_call_hook``. Whatever ``on_*_start``
returns is handed back to ``on_*_end`` (a span, a token).

Hooks run on the request path, synchronously: they must be fast and must not block. A hook
that raises is logged and counted in ``tsengine_instrument_errors_total{component="hook"}``;
the request or call goes on as if the hook were absent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["CallHook", "CallInfo", "Hooks", "RequestHook", "RequestInfo"]

log = logging.getLogger("tsengine.instrument")


@dataclass(slots=True)
class RequestInfo:
    """What the middleware knows about one request; filled in as it progresses."""

    framework: str  # "asgi" or "aiohttp"
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    correlation_id: str
    route: str | None = None  # the template, once routing has happened
    status: int | None = None
    duration_s: float | None = None
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallInfo:
    """One call of a decorated business function."""

    domain: str
    operation: str
    duration_s: float | None = None
    error: BaseException | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RequestHook(Protocol):
    def on_request_start(self, info: RequestInfo) -> object: ...

    def on_request_end(self, info: RequestInfo, token: object) -> None: ...


@runtime_checkable
class CallHook(Protocol):
    def on_call_start(self, info: CallInfo) -> object: ...

    def on_call_end(self, info: CallInfo, token: object) -> None: ...


class Hooks:
    """The registered hooks; reading them is lock-free (an immutable tuple swapped on change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.request: tuple[RequestHook, ...] = ()
        self.call: tuple[CallHook, ...] = ()
        self.on_error: Any = None  # set by the runtime: counts hook failures

    def add_request_hook(self, hook: RequestHook) -> None:
        with self._lock:
            self.request = (*self.request, hook)

    def remove_request_hook(self, hook: RequestHook) -> None:
        with self._lock:
            self.request = tuple(h for h in self.request if h is not hook)

    def add_call_hook(self, hook: CallHook) -> None:
        with self._lock:
            self.call = (*self.call, hook)

    def remove_call_hook(self, hook: CallHook) -> None:
        with self._lock:
            self.call = tuple(h for h in self.call if h is not hook)

    def _failed(self, hook: object, where: str) -> None:
        log.exception("telemetry hook %r failed in %s", hook, where)
        if self.on_error is not None:
            self.on_error()

    def request_start(self, info: RequestInfo) -> list[object]:
        tokens = []
        for hook in self.request:
            try:
                tokens.append(hook.on_request_start(info))
            except Exception:  # hook boundary: a broken hook must not break the request
                self._failed(hook, "on_request_start")
                tokens.append(None)
        return tokens

    def request_end(self, info: RequestInfo, tokens: list[object]) -> None:
        for hook, token in zip(self.request, tokens, strict=False):
            try:
                hook.on_request_end(info, token)
            except Exception:  # hook boundary
                self._failed(hook, "on_request_end")

    def call_start(self, info: CallInfo) -> list[object]:
        tokens = []
        for hook in self.call:
            try:
                tokens.append(hook.on_call_start(info))
            except Exception:  # hook boundary
                self._failed(hook, "on_call_start")
                tokens.append(None)
        return tokens

    def call_end(self, info: CallInfo, tokens: list[object]) -> None:
        for hook, token in zip(self.call, tokens, strict=False):
            try:
                hook.on_call_end(info, token)
            except Exception:  # hook boundary
                self._failed(hook, "on_call_end")
