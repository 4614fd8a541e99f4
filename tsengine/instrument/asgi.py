"""Pure ASGI middleware for FastAPI, Starlette and any ASGI 3 app.

Per HTTP request: the correlation id (from ``X-Correlation-ID`` / ``X-Request-ID`` or new) is
bound in the context and echoed in the response; after the app returns, the performance
monitor records method, *route template* (``scope["route"].path`` as Starlette/FastAPI set it,
``<unmatched>`` when no route matched — never the raw path), status and duration; 401/403 and
unmatched 404s feed the security monitor; request hooks (the tracing seam) run around the app.
``/metrics`` and ``/health/telemetry`` are answered by the middleware itself, so they work for
any ASGI app. On ``lifespan`` startup/shutdown it starts/stops the SDK's background work.

Why pure ASGI: a ``BaseHTTPMiddleware`` doing nothing costs about +100 µs per request in
process; this middleware about +10 µs (``benchmarks/RESULTS.md``). Nothing here imports Starlette.

Never breaks the app: every telemetry step is inside a boundary that logs, counts
``tsengine_instrument_errors_total{component="asgi"}`` and lets the request go on; the app's
own exceptions propagate unchanged (recorded as status 500).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from tsengine.instrument._context import correlation_id_var, new_correlation_id
from tsengine.instrument._endpoints import (
    CORRELATION_HEADER,
    REQUEST_ID_HEADER,
    UNMATCHED_ROUTE,
    health_body,
    metrics_body,
    pick_correlation_id,
)
from tsengine.instrument._hooks import RequestInfo
from tsengine.instrument._runtime import Telemetry, get_telemetry
from tsengine.instrument._security import SecurityMonitor

__all__ = ["TelemetryMiddleware", "setup_asgi"]

log = logging.getLogger("tsengine.instrument")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CORRELATION_HEADER_B = CORRELATION_HEADER.encode("latin-1")
_REQUEST_ID_HEADER_B = REQUEST_ID_HEADER.encode("latin-1")


def route_template(scope: Scope) -> str | None:
    """The matched route's path template, or None when no route matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class TelemetryMiddleware:
    """Pure ASGI telemetry middleware. See the module docstring.

    Args:
        app: the wrapped ASGI app.
        telemetry: the runtime (default: the process default, looked up per request).
        excluded_paths: exact paths not measured (health checks, the telemetry endpoints).
        metrics_path / health_path: where the endpoints are served; None to not serve one.
        manage_lifespan: start/stop background work on lifespan startup/shutdown.
        security: the security monitor (default: one over the runtime's event tracker).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        telemetry: Telemetry | None = None,
        excluded_paths: Iterable[str] = (),
        metrics_path: str | None = "/metrics",
        health_path: str | None = "/health/telemetry",
        manage_lifespan: bool = True,
        security: SecurityMonitor | None = None,
    ) -> None:
        self.app = app
        self._telemetry = telemetry
        self.metrics_path = metrics_path
        self.health_path = health_path
        self.excluded = frozenset(excluded_paths) | {p for p in (metrics_path, health_path) if p}
        self.manage_lifespan = manage_lifespan
        self._security = security

    @property
    def telemetry(self) -> Telemetry:
        return self._telemetry or get_telemetry()

    def _security_monitor(self, rt: Telemetry) -> SecurityMonitor:
        sec = self._security
        if sec is None or sec.tracker is not rt.events:
            sec = self._security = SecurityMonitor(rt.events, clock=rt.clock)
        return sec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan" and self.manage_lifespan:
                await self.app(scope, self._lifespan_receive(receive), send)
            else:
                await self.app(scope, receive, send)
            return
        rt = self.telemetry
        path = scope.get("path", "")
        if path in self.excluded:
            if path == self.metrics_path and rt.enabled:
                await self._respond(send, *metrics_body(rt, _header(scope, b"accept")))
                return
            if path == self.health_path and rt.enabled:
                await self._respond(send, *health_body(rt))
                return
            await self.app(scope, receive, send)
            return
        if not rt.enabled:
            await self.app(scope, receive, send)
            return
        await self._measured(rt, scope, receive, send)

    async def _measured(self, rt: Telemetry, scope: Scope, receive: Receive, send: Send) -> None:
        clock = rt.clock
        start = clock.monotonic()
        info: RequestInfo | None = None
        tokens: list[object] = []
        cid_token = None
        try:
            cid = pick_correlation_id(
                _header(scope, _CORRELATION_HEADER_B),
                _header(scope, _REQUEST_ID_HEADER_B),
                new_correlation_id(),
            )
            cid_token = correlation_id_var.set(cid)
            info = RequestInfo(
                "asgi", scope.get("method", "GET"), scope.get("path", ""), _HeaderView(scope), cid
            )
            if rt.hooks.request:
                tokens = rt.hooks.request_start(info)
            cid_header = (_CORRELATION_HEADER_B, cid.encode("latin-1"))
        except Exception:  # request boundary: telemetry failing must not fail the request
            self._failed(rt, "start")
            if cid_token is not None:
                correlation_id_var.reset(cid_token)
            await self.app(scope, receive, send)
            return

        status_box: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box.append(message["status"])
                headers = message.get("headers") or []
                # The app's own correlation header, if it set one, wins.
                if not any(k.lower() == _CORRELATION_HEADER_B for k, _ in headers):
                    message = {**message, "headers": [*headers, cid_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            info.error = exc
            raise
        finally:
            correlation_id_var.reset(cid_token)
            try:
                self._finish(
                    rt, scope=scope, info=info, status_box=status_box, duration_s=clock.monotonic() - start
                )
            except Exception:  # request boundary
                self._failed(rt, "finish")
            if tokens:
                # Outside the block above: a span started must end even if recording failed.
                rt.hooks.request_end(info, tokens)

    def _finish(
        self,
        rt: Telemetry,
        *,
        scope: Scope,
        info: RequestInfo,
        status_box: list[int],
        duration_s: float,
    ) -> None:
        template = route_template(scope)
        status = status_box[0] if status_box else 500  # no response started: the server sends a 500
        info.route = template or UNMATCHED_ROUTE
        info.status = status
        info.duration_s = duration_s
        rt.performance.record_request(info.method, info.route, status, duration_s)
        if status in (401, 403, 404) and rt.events_on:
            client = scope.get("client")
            host = client[0] if client else "unknown"
            self._security_monitor(rt).observe(host, status, info.path, route_matched=template is not None)

    def _failed(self, rt: Telemetry, where: str) -> None:
        rt.record_error("asgi")
        log.exception("telemetry middleware failed at %s; the request continues", where)

    @staticmethod
    async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(body)).encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            rt = self.telemetry
            try:
                if message["type"] == "lifespan.startup" and rt.enabled:
                    rt.start()
                elif message["type"] == "lifespan.shutdown":
                    await asyncio.to_thread(rt.stop)
            except Exception:  # lifespan boundary: the app must still start and stop
                self._failed(rt, message["type"])
            return message

        return wrapped


class _HeaderView(Mapping[str, str]):
    """Lazy, read-only mapping over ASGI headers (decoded only when a hook reads them)."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def __getitem__(self, name: str) -> str:
        value = _header(self._scope, name.lower().encode("latin-1"))
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        # Without the KeyError round trip of Mapping.get: the tracer looks up traceparent on
        # every request, and most requests do not carry one.
        value = _header(self._scope, name.lower().encode("latin-1"))
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k, _ in self._scope.get("headers") or ())

    def __len__(self) -> int:
        return len(self._scope.get("headers") or ())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def setup_asgi(app: Any, *, telemetry: Telemetry | None = None, **options: Any) -> Any:
    """Add :class:`TelemetryMiddleware` to a Starlette/FastAPI app (``app.add_middleware``).

    Call before the app starts serving. Returns the app.
    """
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry, **options)
    return app
