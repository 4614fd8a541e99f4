"""httpx instrumentation: a transport wrapper (preferred) and event hooks timing outgoing requests.

Both record each request as an external call — ``external_calls_total{service=host,
status=success|error}`` and ``external_call_duration_seconds{service, operation=method}`` through
the performance monitor — and, with tracing on, a CLIENT span (child of the current span) whose
``traceparent`` is injected into the request. httpx is not imported at module load: the SDK
imports without it.

* :class:`InstrumentedTransport` / :class:`AsyncInstrumentedTransport` wrap the transport of an
  ``httpx.Client`` / ``httpx.AsyncClient`` (``transport=InstrumentedTransport()``, or around your
  own: ``InstrumentedTransport(httpx.HTTPTransport(retries=2))``). They see every outcome: when
  the response headers arrive (status >= 500 counts as an error) and when the call fails before
  any response — connection refused, a timeout, cancellation — which is then recorded as a
  failed call with ``status`` = the exception's type, its span ended with ERROR and the
  exception event; the exception propagates unchanged. Prefer them.
* :func:`httpx_event_hooks` (``httpx.Client(event_hooks=httpx_event_hooks())``) keeps working,
  but httpx has no exception hook: a request that fails before any response never reaches the
  response hook, so alone it records neither the failure nor the span. Used together with the
  transport, the hooks keep the successful responses and the transport ends the failed ones —
  nothing is counted twice.

Each redirect hop is a request of its own. Telemetry failures are logged and counted
(``tsengine_instrument_errors_total{component="http_client"}``), never raised into the call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tsengine.instrument._performance import PerformanceMonitor
from tsengine.instrument._runtime import get_telemetry
from tsengine.instrument._tracing.hooks import end_client_span, start_client_span
from tsengine.instrument._tracing.tracer import Tracer

__all__ = ["AsyncInstrumentedTransport", "InstrumentedTransport", "httpx_event_hooks"]

log = logging.getLogger("tsengine.instrument")

if TYPE_CHECKING:  # httpx's base classes for type checkers only: no import of httpx at runtime
    from httpx import AsyncBaseTransport as _AsyncBase
    from httpx import BaseTransport as _SyncBase
else:
    _AsyncBase = _SyncBase = object

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


# -- transports ---------------------------------------------------------------------------------------


class _Instrumented:
    """What both transports share: start, finish and fail one call (never raising)."""

    def __init__(self, monitor: PerformanceMonitor | None, tracer: Tracer | None) -> None:
        self._monitor = monitor
        self._tracer = tracer

    def _mon(self) -> PerformanceMonitor:
        return self._monitor or get_telemetry().performance

    def _start(self, request: Any) -> tuple[float, Any] | None:
        """``(start_s, span)``, or None when the event hooks already time this request."""
        if _START_KEY in request.extensions:
            return None
        try:
            start = self._mon().clock.monotonic()
            url = request.url
            port = f":{url.port}" if url.port else ""
            span = start_client_span(
                request.method,
                f"{url.scheme}://{url.host}{port}{url.path}",  # no query string: it may hold secrets
                url.host,
                request.headers,
                self._tracer,
            )
            return start, span
        except Exception:  # telemetry boundary: the request goes on untimed
            _failed("start")
            return None

    def _done(self, request: Any, call: tuple[float, Any] | None, status: int) -> None:
        if call is None:  # the response hook records it
            return
        start, span = call
        try:
            end_client_span(span, status)
            m = self._mon()
            m.record_external_call(
                request.url.host or "unknown",
                request.method,
                m.clock.monotonic() - start,
                status=status,
                success=status < 500,
            )
        except Exception:  # telemetry boundary
            _failed("response")

    def _fail(self, request: Any, call: tuple[float, Any] | None, exc: BaseException) -> None:
        try:
            if call is None:  # timed by the event hooks, which will never see this request again
                span = request.extensions.pop(_SPAN_KEY, None)
                start = request.extensions.get(_START_KEY)
            else:
                start, span = call
            end_client_span(span, error=exc)
            if start is None:
                return
            m = self._mon()
            m.record_external_call(
                request.url.host or "unknown",
                request.method,
                m.clock.monotonic() - start,
                status=type(exc).__name__,
                success=False,
            )
        except Exception:  # telemetry boundary: the caller gets its own exception, not ours
            _failed("failure")


class InstrumentedTransport(_Instrumented, _SyncBase):
    """An ``httpx`` transport recording every call it forwards to ``wrapped``, failures included.

    Args:
        wrapped: the transport doing the I/O (default: ``httpx.HTTPTransport()``).
        monitor: where calls are recorded (default: the default runtime's performance monitor).
        tracer: for the CLIENT spans (default: the current span's tracer, else the default
            runtime's when tracing is on).

    ``httpx.Client(transport=InstrumentedTransport())``. As with any ``transport=``, httpx then
    does not build proxy transports from the environment: mount those instrumented if needed.
    Thread-safe as the wrapped transport is; blocks only in it.
    """

    def __init__(
        self, wrapped: Any = None, *, monitor: PerformanceMonitor | None = None, tracer: Tracer | None = None
    ) -> None:
        super().__init__(monitor, tracer)
        if wrapped is None:
            import httpx

            wrapped = httpx.HTTPTransport()
        self.wrapped = wrapped

    def handle_request(self, request: Any) -> Any:
        call = self._start(request)
        try:
            response = self.wrapped.handle_request(request)
        except BaseException as exc:
            self._fail(request, call, exc)
            raise
        self._done(request, call, response.status_code)
        return response

    def close(self) -> None:
        self.wrapped.close()

    def __enter__(self) -> InstrumentedTransport:
        self.wrapped.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.wrapped.__exit__(*exc_info)


class AsyncInstrumentedTransport(_Instrumented, _AsyncBase):
    """:class:`InstrumentedTransport` for ``httpx.AsyncClient`` (default ``httpx.AsyncHTTPTransport()``).

    Cancellation is recorded as a failed call (``status="CancelledError"``) and re-raised.
    """

    def __init__(
        self, wrapped: Any = None, *, monitor: PerformanceMonitor | None = None, tracer: Tracer | None = None
    ) -> None:
        super().__init__(monitor, tracer)
        if wrapped is None:
            import httpx

            wrapped = httpx.AsyncHTTPTransport()
        self.wrapped = wrapped

    async def handle_async_request(self, request: Any) -> Any:
        call = self._start(request)
        try:
            response = await self.wrapped.handle_async_request(request)
        except BaseException as exc:
            self._fail(request, call, exc)
            raise
        self._done(request, call, response.status_code)
        return response

    async def aclose(self) -> None:
        await self.wrapped.aclose()

    async def __aenter__(self) -> AsyncInstrumentedTransport:
        await self.wrapped.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.wrapped.__aexit__(*exc_info)


def _failed(where: str) -> None:
    log.exception("httpx instrumentation failed at %s; the request continues", where)
    get_telemetry().record_error("http_client")
