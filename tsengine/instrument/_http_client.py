"""httpx event hooks timing outgoing requests as external calls (httpx is not imported here).

``httpx.Client(event_hooks=httpx_event_hooks())`` or, for ``httpx.AsyncClient``,
``httpx_event_hooks(asynchronous=True)``. The request hook stamps the start time in
``request.extensions``; the response hook records ``external_call_duration_seconds{service=host,
operation=method}`` when the response headers arrive. A request that fails before any response
(connection refused, timeout) never reaches the response hook — time those with
``performance_monitor.time_external_call`` if they matter.
"""

from __future__ import annotations

from typing import Any

from tsengine.instrument._performance import PerformanceMonitor
from tsengine.instrument._runtime import get_telemetry

__all__ = ["httpx_event_hooks"]

_START_KEY = "tsengine_start_s"


def httpx_event_hooks(
    monitor: PerformanceMonitor | None = None, *, asynchronous: bool = False
) -> dict[str, list[Any]]:
    """``event_hooks`` for an httpx client (sync by default, async with ``asynchronous=True``)."""

    def mon() -> PerformanceMonitor:
        return monitor or get_telemetry().performance

    def on_request(request: Any) -> None:
        request.extensions[_START_KEY] = mon().clock.monotonic()

    def on_response(response: Any) -> None:
        request = response.request
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
