"""httpx event hooks timing outgoing requests as external calls (httpx is not imported here).

``httpx.Client(event_hooks=httpx_event_hooks())`` or, for ``httpx.AsyncClient``,
``httpx_event_hooks(asynchronous=True)``. The request hook stamps the start time in
``request.extensions``; the response hook records ``external_call_duration_seconds{service=host,
operation=method}`` when the response headers arrive. A request that fails before any response
(connection refused, timeout) never reaches the response hook — time those with
``performance_monitor.time_external_call`` if they matter.

With tracing on, the request hook also starts a CLIENT span (child of the current span) and
injects its ``traceparent``; the response hook ends it with the status (a request that fails
before any response leaves its span unended: it is neither kept nor exported).
"""

from __future__ import annotations

from typing import Any

from tsengine.instrument._performance import PerformanceMonitor
from tsengine.instrument._runtime import get_telemetry
from tsengine.instrument._tracing.hooks import end_client_span, start_client_span

__all__ = ["httpx_event_hooks"]

_START_KEY = "tsengine_start_s"
_SPAN_KEY = "tsengine_span"


def httpx_event_hooks(
    monitor: PerformanceMonitor | None = None, *, asynchronous: bool = False
) -> dict[str, list[Any]]:
    """``event_hooks`` for an httpx client (sync by default, async with ``asynchronous=True``)."""

    def mon() -> PerformanceMonitor:
        return monitor or get_telemetry().performance

    def on_request(request: Any) -> None:
        request.extensions[_START_KEY] = mon().clock.monotonic()
        url = request.url  # tracing: a CLIENT span, its traceparent injected (URL without query)
        port = f":{url.port}" if url.port else ""
        span = start_client_span(
            request.method, f"{url.scheme}://{url.host}{port}{url.path}", url.host, request.headers
        )
        if span is not None:
            request.extensions[_SPAN_KEY] = span

    def on_response(response: Any) -> None:
        request = response.request
        end_client_span(request.extensions.pop(_SPAN_KEY, None), response.status_code)
        start = request.extensions.get(_START_KEY)
        if start is None:
            return
        m = mon()
        m.record_external_call(
            request.url.host or "unknown",
            request.method,
            m.clock.monotonic() - start,
            status=response.status_code,
            success=response.status_code < 500,
        )

    if not asynchronous:
        return {"request": [on_request], "response": [on_response]}

    async def on_request_async(request: Any) -> None:
        on_request(request)

    async def on_response_async(response: Any) -> None:
        on_response(response)

    return {"request": [on_request_async], "response": [on_response_async]}
