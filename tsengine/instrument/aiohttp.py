"""aiohttp adapter: server middleware, ``/metrics`` and ``/health/telemetry``, client TraceConfig.

``setup_aiohttp(app)`` (or ``setup_telemetry_for_app(app)``) appends the middleware, adds the
two routes, stores the runtime under :data:`TELEMETRY_KEY` and registers a ``cleanup_ctx`` that
starts the SDK's background work on startup and stops it on cleanup.

Per request the middleware does what the ASGI one does: correlation id in and out
(``X-Correlation-ID``), route template from ``request.match_info.route.resource.canonical``
(``<unmatched>`` when no route matched — never the raw path), status (also from raised
``HTTPException``), duration, security signals and request hooks. Telemetry failures are logged
and counted in ``tsengine_instrument_errors_total{component="aiohttp"}``; the handler's result or
exception always reaches aiohttp unchanged.

:func:`trace_config` times outgoing ``aiohttp.ClientSession`` requests as external calls.

This module imports aiohttp; the rest of ``tsengine.instrument`` does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any

from aiohttp import TraceConfig, TraceRequestEndParams, TraceRequestExceptionParams, web

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
from tsengine.instrument._performance import PerformanceMonitor
from tsengine.instrument._runtime import Telemetry, get_telemetry
from tsengine.instrument._security import SecurityMonitor
from tsengine.instrument._tracing.hooks import end_client_span, start_client_span

__all__ = ["TELEMETRY_KEY", "setup_aiohttp", "telemetry_middleware", "trace_config"]

log = logging.getLogger("tsengine.instrument")

TELEMETRY_KEY = web.AppKey("tsengine_telemetry", Telemetry)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_template(request: web.Request) -> str | None:
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    resource = match_info.route.resource
    return resource.canonical if resource is not None else None


def telemetry_middleware(*, telemetry: Telemetry | None = None, excluded_paths: Iterable[str] = ()) -> Any:
    """The middleware alone (``setup_aiohttp`` adds it for you)."""
    rt = telemetry or get_telemetry()
    excluded = frozenset(excluded_paths)
    security: list[SecurityMonitor] = []

    def failed(where: str) -> None:
        rt.record_error("aiohttp")
        log.exception("telemetry middleware failed at %s; the request continues", where)

    def finish(request: web.Request, info: RequestInfo, status: int, duration: float) -> None:
        template = _route_template(request)
        info.route = template or UNMATCHED_ROUTE
        info.status = status
        info.duration_s = duration
        rt.performance.record_request(info.method, info.route, status, duration)
        if status in (401, 403, 404) and rt.events_on:
            if not security or security[0].tracker is not rt.events:
                security[:] = [SecurityMonitor(rt.events, clock=rt.clock)]
            security[0].observe(
                request.remote or "unknown", status, request.path, route_matched=template is not None
            )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not rt.enabled or request.path in excluded:
            return await handler(request)
        start = rt.clock.monotonic()
        cid_token = None
        tokens: list[object] = []
        try:
            headers = request.headers
            cid = pick_correlation_id(
                headers.get(CORRELATION_HEADER), headers.get(REQUEST_ID_HEADER), new_correlation_id()
            )
            cid_token = correlation_id_var.set(cid)
            info = RequestInfo("aiohttp", request.method, request.path, headers, cid)
            if rt.hooks.request:
                tokens = rt.hooks.request_start(info)
        except Exception:  # request boundary
            failed("start")
            if cid_token is not None:
                correlation_id_var.reset(cid_token)
            return await handler(request)

        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers.setdefault(CORRELATION_HEADER, cid)
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers.setdefault(CORRELATION_HEADER, cid)
            raise
        except BaseException as exc:
            info.error = exc
            raise
        finally:
            correlation_id_var.reset(cid_token)
            try:
                finish(request, info, status, rt.clock.monotonic() - start)
            except Exception:  # request boundary
                failed("finish")
            if tokens:
                # Outside the block above: a span started must end even if recording failed.
                rt.hooks.request_end(info, tokens)

    return middleware


def setup_aiohttp(
    app: web.Application,
    *,
    telemetry: Telemetry | None = None,
    excluded_paths: Iterable[str] = (),
    metrics_path: str | None = "/metrics",
    health_path: str | None = "/health/telemetry",
    manage_background: bool = True,
) -> web.Application:
    """Instrument ``app`` (before it starts). Returns the app."""
    rt = telemetry or get_telemetry()
    app[TELEMETRY_KEY] = rt
    skip = set(excluded_paths) | {p for p in (metrics_path, health_path) if p}
    app.middlewares.append(telemetry_middleware(telemetry=rt, excluded_paths=skip))

    if metrics_path:

        async def metrics(request: web.Request) -> web.Response:
            status, content_type, body = metrics_body(rt, request.headers.get("Accept"))
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})

        app.router.add_get(metrics_path, metrics)

    if health_path:

        async def health(request: web.Request) -> web.Response:
            status, content_type, body = health_body(rt)
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})

        app.router.add_get(health_path, health)

    if manage_background:

        async def background(app: web.Application) -> AsyncIterator[None]:
            if rt.enabled:
                rt.start()
            yield
            await asyncio.to_thread(rt.stop)

        app.cleanup_ctx.append(background)
    return app


def trace_config(monitor: PerformanceMonitor | None = None) -> TraceConfig:
    """A ``TraceConfig`` recording each client request as an external call (service = host).

    With tracing on, each request is also a CLIENT span whose ``traceparent`` is injected.

    Use: ``aiohttp.ClientSession(trace_configs=[trace_config()])``.
    """
    tc = TraceConfig()

    def mon() -> PerformanceMonitor:
        return monitor or get_telemetry().performance

    async def on_start(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        ctx.tsengine_start = mon().clock.monotonic()
        url = params.url  # tracing: a CLIENT span, its traceparent injected (URL without query)
        ctx.tsengine_span = start_client_span(
            params.method, str(url.origin()) + url.raw_path, url.host, params.headers
        )

    async def on_end(session: Any, ctx: SimpleNamespace, params: TraceRequestEndParams) -> None:
        m = mon()
        status = params.response.status
        end_client_span(getattr(ctx, "tsengine_span", None), status)
        m.record_external_call(
            params.url.host or "unknown",
            params.method,
            m.clock.monotonic() - ctx.tsengine_start,
            status=status,
            success=status < 500,
        )

    async def on_exception(session: Any, ctx: SimpleNamespace, params: TraceRequestExceptionParams) -> None:
        m = mon()
        end_client_span(getattr(ctx, "tsengine_span", None), error=params.exception)
        m.record_external_call(
            params.url.host or "unknown",
            params.method,
            m.clock.monotonic() - ctx.tsengine_start,
            status=type(params.exception).__name__,
            success=False,
        )

    tc.on_request_start.append(on_start)
    tc.on_request_end.append(on_end)
    tc.on_request_exception.append(on_exception)
    return tc
