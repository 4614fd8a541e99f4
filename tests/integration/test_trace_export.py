"""OtlpSpanExporter against a real OTLP/HTTP receiver on loopback (an aiohttp app decoding the body
with the official opentelemetry.proto messages): spans arrive whole; a receiver that goes away
and comes back gets everything still queued; the queue bound is honoured and the overflow
counted; a 4xx is final; ``on_end`` never waits for the network.

``flush()`` sends on the calling thread, so the tests run it with ``asyncio.to_thread``: the
receiver shares the test's event loop.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integration.conftest import free_port, poll
from tsengine.instrument import (
    CollectorRegistry,
    OtlpSpanExporter,
    SpanKind,
    Telemetry,
    TelemetryConfig,
    Tracer,
    generate_latest,
)

pytestmark = pytest.mark.peer  # decodes with the OpenTelemetry protobuf definitions

#: Ending a span must not wait for the hung request (timeout_s=30 below): a bound far under it, so
#: a loaded CI machine cannot fail the test while a blocking export still would.
NON_BLOCKING_S = 2.0


@dataclass
class Receiver:
    """What the fake collector saw; ``fail_with`` answers the next requests with that status."""

    spans: list[tuple[str, str, str]] = field(default_factory=list)  # (service, name, span id hex)
    requests: list[dict[str, str]] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)

    def app(self) -> web.Application:
        async def traces(request: web.Request) -> web.Response:
            self.requests.append(dict(request.headers))
            if self.fail_with:
                status = self.fail_with.pop(0)
                return web.Response(status=status, text="no", headers={"Retry-After": "0"})
            req = ExportTraceServiceRequest()
            req.ParseFromString(await request.read())
            for rs in req.resource_spans:
                service = next(
                    kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"
                )
                for ss in rs.scope_spans:
                    self.spans.extend((service, s.name, s.span_id.hex()) for s in ss.spans)
            return web.Response(
                body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
            )

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        return app


def until(predicate: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """A check for ``poll``: the predicate's value."""

    async def check() -> object:
        return predicate()

    return check


async def start(receiver: Receiver, port: int) -> TestServer:
    server = TestServer(receiver.app(), host="127.0.0.1", port=port)
    await server.start_server()
    return server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    rec = Receiver()
    server = await start(rec, free_port())
    yield rec, server
    await server.close()


def ended_spans(tracer: Tracer, n: int, prefix: str = "op") -> list[str]:
    ids = []
    for i in range(n):
        span = tracer.start_span(f"{prefix}{i}", SpanKind.INTERNAL)
        span.end()
        ids.append(f"{span.span_id:016x}")
    return ids


async def test_spans_from_the_configured_runtime_arrive(receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    rt = Telemetry(
        TelemetryConfig.from_env(
            {
                "DISTRIBUTED_TRACING_ENABLED": "true",
                "SYSTEM_METRICS_ENABLED": "false",
                "TELEMETRY_SERVICE_NAME": "checkout",
                "TRACING_EXPORTER_ENDPOINT": f"http://127.0.0.1:{server.port}",
                "TRACING_EXPORTER_TOKEN": "w-token",
                "TRACING_EXPORTER_BATCH_SIZE": "5",
                "TRACING_EXPORTER_FLUSH_INTERVAL_S": "3600",
            }
        ),
        registry=CollectorRegistry(),
    )
    rt.start()
    try:
        (exporter,) = rt.tracer.processors
        assert isinstance(exporter, OtlpSpanExporter) and exporter.running
        with rt.tracer.start_as_current_span("request", SpanKind.SERVER) as root:
            ids = ended_spans(rt.tracer, 9)
        ids.append(f"{root.span_id:016x}")
        # 10 spans, batches of 5: the worker sends each batch as it fills, without waiting
        # for the (hour-long) interval.
        await poll(until(lambda: len(rec.spans) == 10), timeout_s=10, what="10 spans")
        assert sorted(s[2] for s in rec.spans) == sorted(ids)
        assert {s[0] for s in rec.spans} == {"checkout"}
        assert rec.requests[0]["Content-Type"] == "application/x-protobuf"
        assert rec.requests[0]["Authorization"] == "Bearer w-token"
        assert exporter.stats.values["sent"] == 10
        text = generate_latest(rt.registry).decode()
        assert "tsengine_instrument_trace_export_sent_total 10.0" in text
    finally:
        await asyncio.to_thread(rt.stop, 2.0)


async def test_receiver_away_and_back_gets_everything_queued() -> None:
    rec = Receiver()
    port = free_port()
    server = await start(rec, port)
    exporter = OtlpSpanExporter(f"http://127.0.0.1:{port}", batch_size=10, interval_s=0.2, timeout_s=2.0)
    tracer = Tracer()
    tracer.add_processor(exporter)
    exporter.start()
    try:
        first = ended_spans(tracer, 10, "before")
        await poll(until(lambda: len(rec.spans) == 10), timeout_s=10, what="first batch")
        await server.close()

        gone = ended_spans(tracer, 25, "during")  # the worker retries with backoff meanwhile
        await poll(until(lambda: exporter.stats.values["retries"] > 0), timeout_s=10, what="a failed push")
        server = await start(rec, port)
        exporter.wake()  # skip the remaining backoff
        await poll(until(lambda: len(rec.spans) == 35), timeout_s=15, what="the queued spans")
        assert sorted(s[2] for s in rec.spans) == sorted(first + gone)
        assert exporter.stats.values["dropped"] == 0 and exporter.queued_spans == 0
    finally:
        await asyncio.to_thread(exporter.shutdown, 1.0)
        await server.close()


async def test_queue_bound_is_honoured_and_the_overflow_counted() -> None:
    port = free_port()  # nothing listens yet
    registry = CollectorRegistry()
    exporter = OtlpSpanExporter(
        f"http://127.0.0.1:{port}", batch_size=4, max_queue=10, timeout_s=1.0, registry=registry
    )
    tracer = Tracer()
    tracer.add_processor(exporter)
    ids = ended_spans(tracer, 25)
    assert exporter.queued_spans <= 10
    dropped = exporter.stats.values["dropped"]
    assert dropped == 25 - exporter.queued_spans and dropped > 0
    assert (
        f"tsengine_instrument_trace_export_dropped_total {float(dropped)}"
        in generate_latest(registry).decode()
    )

    rec = Receiver()
    server = await start(rec, port)
    try:
        assert await asyncio.to_thread(exporter.flush, 10.0)
        # Whole batches of the oldest were dropped: what arrives is the newest, in order.
        assert [s[2] for s in rec.spans] == ids[dropped:]
        assert exporter.stats.values["sent"] + dropped == 25
    finally:
        await server.close()
        exporter.shutdown(0.5)


async def test_4xx_is_final_and_5xx_is_retried(receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    exporter = OtlpSpanExporter(f"http://127.0.0.1:{server.port}", batch_size=3, timeout_s=2.0)
    tracer = Tracer()
    tracer.add_processor(exporter)
    rec.fail_with = [400]
    ended_spans(tracer, 3)
    assert not await asyncio.to_thread(exporter.flush, 5.0)
    assert exporter.stats.values["rejected"] == 3 and exporter.queued_spans == 0
    assert len(rec.requests) == 1  # not retried

    rec.fail_with = [503, 429]
    kept = ended_spans(tracer, 3, "retried")
    assert await asyncio.to_thread(exporter.flush, 10.0)
    assert [s[2] for s in rec.spans] == kept
    assert exporter.stats.values["retries"] == 2 and len(rec.requests) == 4
    exporter.shutdown(0.5)


async def test_ending_spans_never_waits_for_a_hung_receiver() -> None:
    # A receiver that accepts connections (the kernel's backlog) but never answers: the worker
    # is stuck in its read until timeout_s, and the application must not notice.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)
    port = blackhole.getsockname()[1]
    exporter = OtlpSpanExporter(f"http://127.0.0.1:{port}", batch_size=2, max_queue=100, timeout_s=30.0)
    tracer = Tracer()
    tracer.add_processor(exporter)
    exporter.start()
    try:
        ended_spans(tracer, 2)  # a full batch: the worker starts its (hanging) request
        await poll(
            until(lambda: len(exporter._queue) and exporter._queue[0].sealed), timeout_s=10, what="a send"
        )
        worst = 0.0
        for _ in range(200):
            t0 = time.perf_counter()
            span = tracer.start_span("x")
            span.end()
            worst = max(worst, time.perf_counter() - t0)
        assert worst < NON_BLOCKING_S, worst
        assert (
            exporter.queued_spans <= 100 and exporter.stats.values["dropped"] == 202 - exporter.queued_spans
        )
    finally:
        blackhole.close()  # resets the pending connection: the worker's read fails at once
        await asyncio.to_thread(exporter.shutdown, 0.5)


def test_endpoint_forms() -> None:
    assert OtlpSpanExporter("http://collector:4318").endpoint == "http://collector:4318/v1/traces"
    assert OtlpSpanExporter("https://c/otlp/v1/traces").endpoint == "https://c/otlp/v1/traces"
    with pytest.raises(ValueError, match="expected http"):
        OtlpSpanExporter("collector:4318")
    with pytest.raises(ValueError, match="batch_size"):
        OtlpSpanExporter("http://c", batch_size=0)
