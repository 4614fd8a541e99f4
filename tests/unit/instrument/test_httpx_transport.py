"""InstrumentedTransport / AsyncInstrumentedTransport with real httpx clients on 127.0.0.1.

Failures that never reach httpx's response hook — a refused connection (a closed port) and a
timeout (a listening socket that never answers) — are counted as failed external calls, and
their CLIENT spans end with ERROR and the exception event; the exception reaches the caller
unchanged. Successful calls, the event hooks alongside the transport, and importing the SDK
without httpx are covered too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tsengine.instrument import (
    AsyncInstrumentedTransport,
    InstrumentedTransport,
    Span,
    SpanKind,
    StatusCode,
    Telemetry,
    TelemetryConfig,
    httpx_event_hooks,
)

TIMEOUT = httpx.Timeout(0.3)


@pytest.fixture
def trt() -> Iterator[Telemetry]:
    rt = Telemetry(TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=True))
    yield rt
    rt.stop()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A real server on 127.0.0.1 that takes connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, seen
    await server.close()


def calls(rt: Telemetry, status: str) -> float | None:
    return rt.registry.get_sample_value("external_calls_total", {"service": "127.0.0.1", "status": status})


def durations(rt: Telemetry) -> float | None:
    return rt.registry.get_sample_value(
        "external_call_duration_seconds_count", {"service": "127.0.0.1", "operation": "GET"}
    )


def client_spans(rt: Telemetry, trace_id: int) -> list[Span]:
    return [s for s in rt.tracer.finished_spans(trace_id) if s.kind is SpanKind.CLIENT]


def assert_failed_span(span: Span, parent: Span, exc: BaseException) -> None:
    assert span.parent_span_id == parent.span_id
    assert span.end_time_ns  # ended, hence in the store
    assert span.status_code is StatusCode.ERROR
    assert [e[0] for e in span.events] == ["exception"]
    assert type(exc).__qualname__ in (span.status_message or "")


def test_refused_connection_is_a_failed_call_with_an_ended_error_span(
    trt: Telemetry, closed_port: int
) -> None:
    transport = InstrumentedTransport(monitor=trt.performance)
    with (
        httpx.Client(transport=transport, timeout=TIMEOUT) as client,
        trt.tracer.start_as_current_span("job") as job,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get(f"http://127.0.0.1:{closed_port}/x?token=secret")

    assert type(info.value) is httpx.ConnectError  # unchanged, not wrapped
    assert calls(trt, "error") == 1 and calls(trt, "success") is None
    assert durations(trt) == 1
    (span,) = client_spans(trt, job.trace_id)
    assert_failed_span(span, job, info.value)
    assert span.attributes["url.full"] == f"http://127.0.0.1:{closed_port}/x"  # no query string


async def test_timeout_is_a_failed_call_with_an_ended_error_span(trt: Telemetry, silent_server: int) -> None:
    trt.performance.set_threshold("127.0.0.1", 0.01)  # the 0.3 s timeout is a slow call
    transport = AsyncInstrumentedTransport(monitor=trt.performance)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        with trt.tracer.start_as_current_span("job") as job, pytest.raises(httpx.ReadTimeout) as info:
            await client.get(f"http://127.0.0.1:{silent_server}/slow")

    assert calls(trt, "error") == 1
    (span,) = client_spans(trt, job.trace_id)
    assert_failed_span(span, job, info.value)
    # The slow-call report names the exception type as the status.
    slow = [op for op in trt.performance.slow_operations() if op.kind == "external_call"]
    assert [op.status for op in slow] == ["ReadTimeout"]


def test_sync_timeout_is_recorded_too(trt: Telemetry, silent_server: int) -> None:
    with (
        httpx.Client(transport=InstrumentedTransport(monitor=trt.performance), timeout=TIMEOUT) as client,
        trt.tracer.start_as_current_span("job") as job,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get(f"http://127.0.0.1:{silent_server}/slow")
    assert calls(trt, "error") == 1
    (span,) = client_spans(trt, job.trace_id)
    assert span.status_code is StatusCode.ERROR and span.end_time_ns


async def test_responses_are_recorded_and_traceparent_injected(
    trt: Telemetry, http_server: tuple[TestServer, list[dict[str, str]]]
) -> None:
    srv, seen = http_server
    transport = AsyncInstrumentedTransport(monitor=trt.performance)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        with trt.tracer.start_as_current_span("job") as job:
            assert (await client.get(str(srv.make_url("/ok")))).status_code == 200
            assert (await client.get(str(srv.make_url("/fail")))).status_code == 503
    assert calls(trt, "success") == 1 and calls(trt, "error") == 1
    ok, failed = client_spans(trt, job.trace_id)
    assert seen[0]["traceparent"] == f"00-{job.trace_id:032x}-{ok.span_id:016x}-01"
    assert ok.attributes["http.response.status_code"] == 200 and ok.status_code is StatusCode.UNSET
    assert failed.status_code is StatusCode.ERROR and failed.events == []


def test_with_the_event_hooks_a_failure_is_counted_once(trt: Telemetry, closed_port: int) -> None:
    with (
        httpx.Client(
            transport=InstrumentedTransport(monitor=trt.performance),
            event_hooks=httpx_event_hooks(trt.performance),
            timeout=TIMEOUT,
        ) as client,
        trt.tracer.start_as_current_span("job") as job,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(f"http://127.0.0.1:{closed_port}/")
    assert calls(trt, "error") == 1 and durations(trt) == 1
    (span,) = client_spans(trt, job.trace_id)  # one span: the hook's, ended by the transport
    assert span.status_code is StatusCode.ERROR and span.end_time_ns


async def test_with_the_event_hooks_a_response_is_counted_once(
    trt: Telemetry, http_server: tuple[TestServer, list[dict[str, str]]]
) -> None:
    srv, seen = http_server
    async with httpx.AsyncClient(
        transport=AsyncInstrumentedTransport(monitor=trt.performance),
        event_hooks=httpx_event_hooks(trt.performance, asynchronous=True),
        timeout=TIMEOUT,
    ) as client:
        with trt.tracer.start_as_current_span("job") as job:
            assert (await client.get(str(srv.make_url("/ok")))).status_code == 200
    assert calls(trt, "success") == 1 and durations(trt) == 1
    (span,) = client_spans(trt, job.trace_id)
    assert seen[0]["traceparent"] == f"00-{job.trace_id:032x}-{span.span_id:016x}-01"


def test_a_wrapped_transport_is_used_and_closed(trt: Telemetry) -> None:
    closed: list[bool] = []

    class Recording(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    inner = Recording(lambda request: httpx.Response(204))
    with httpx.Client(transport=InstrumentedTransport(inner, monitor=trt.performance)) as client:
        assert client.get("http://127.0.0.1/x").status_code == 204
    assert closed == [True]
    assert calls(trt, "success") == 1


def test_tracing_off_still_counts_failures_and_starts_no_span(closed_port: int) -> None:
    rt = Telemetry(TelemetryConfig(system_metrics_enabled=False))
    try:
        with (
            httpx.Client(transport=InstrumentedTransport(monitor=rt.performance), timeout=TIMEOUT) as client,
            pytest.raises(httpx.ConnectError),
        ):
            client.get(f"http://127.0.0.1:{closed_port}/")
        assert calls(rt, "error") == 1
        assert rt.tracer.finished_spans() == []
    finally:
        rt.stop()


def test_the_sdk_imports_without_httpx() -> None:
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None  # import httpx now raises ImportError\n"
        "import tsengine.instrument as ti\n"
        "assert ti.InstrumentedTransport and ti.httpx_event_hooks\n"
        "try:\n"
        "    ti.InstrumentedTransport()\n"
        "except ImportError:\n"
        "    print('needs httpx')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "needs httpx"
