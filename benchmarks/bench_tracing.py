"""Cost of tsengine's tracer next to the OpenTelemetry SDK, in the same process and run.

Run: ``.venv/bin/python -m benchmarks.bench_tracing [--quick]``; ``run(quick)`` returns the
figures and prints a table (also picked up by ``python -m benchmarks.run --only tracing``).

What is measured, ns per operation, best of several interleaved repeats with the empty-loop
cost subtracted (so a burst of noise from other processes hits both sides alike):

* ``span_root`` — ``with tracer.start_as_current_span("op"): pass`` with no parent;
* ``span_child`` — the same inside an open span (a child's start + end only);
* ``server_span_with_extract`` — what the middleware does per request: extract the incoming
  ``traceparent``, start a current SERVER span, set the four HTTP attributes, end it. Ours goes
  through the real request hook; OTel's is the equivalent API calls;
* ``inject`` / ``extract`` — ``traceparent`` written into / read from a dict carrier, against
  OTel's ``TraceContextTextMapPropagator``;
* ``otlp_encode_per_span_in_512`` — encoding a batch of 512 finished spans to OTLP protobuf,
  per span, ours (hand-written) against OTel's encoder (``encode_spans(...).SerializeToString()``);
* ``fastapi_tracing_*_us`` — one in-process FastAPI request (ASGI call, no sockets) through
  tsengine's middleware with tracing off and on (a ``traceparent`` in the request): what tracing
  adds per request. No OTel column: its ASGI instrumentation is not installed here.

Both tracers sample everything and hand each finished span to a background exporter: OTel a
``TracerProvider`` with a ``BatchSpanProcessor`` over an exporter that drops the batch; ours
the real :class:`OtlpSpanExporter` queue (its worker not started, so full batches are dropped
oldest-first as under a dead receiver) plus the in-memory store of the last 1000 traces.

Goals (issue 5): span start + end ≤ 1/5 of OTel's; inject and extract ≤ 1/2 of OTel's.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks._asgi import receive, request_scope, send
from benchmarks._timing import Column, compare, format_table, ratio

__all__ = ["run"]

SPAN_GOAL = 0.2
PROPAGATION_GOAL = 0.5


def _ops(loops: int, repeats: int) -> dict[str, dict[str, float]]:
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from tsengine.instrument import OtlpSpanExporter, RequestInfo, Tracer, extract, inject
    from tsengine.instrument._tracing.hooks import TracingRequestHook

    class DropExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    theirs = provider.get_tracer("bench")
    propagator = TraceContextTextMapPropagator()

    ours = Tracer(max_traces=1000)
    ours.add_processor(OtlpSpanExporter("http://127.0.0.1:9", max_queue=2048, batch_size=512))
    hook = TracingRequestHook(ours)

    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    info = RequestInfo("asgi", "GET", "/users/42", headers, "cid")
    info.route, info.status = "/users/{id}", 200
    server_kind = otel_trace.SpanKind.SERVER

    def ours_span() -> None:
        with ours.start_as_current_span("op"):
            pass

    def theirs_span() -> None:
        with theirs.start_as_current_span("op"):
            pass

    def ours_server() -> None:
        hook.on_request_end(info, hook.on_request_start(info))

    def theirs_server() -> None:
        ctx = propagator.extract(headers)
        with theirs.start_as_current_span("GET", context=ctx, kind=server_kind) as span:
            span.update_name("GET /users/{id}")
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("url.path", "/users/42")
            span.set_attribute("http.route", "/users/{id}")
            span.set_attribute("http.response.status_code", 200)

    out: dict[str, dict[str, float]] = {}

    def both(name: str, ours_fn: Callable[[], Any], theirs_fn: Callable[[], Any]) -> None:
        # settle: OTel's BatchSpanProcessor thread drains what a loop queued, untimed, so that
        # work is not charged to the next function (it still competes for the GIL during OTel's
        # own loops — part of OTel's cost).
        row = compare(
            {"tsengine_ns": ours_fn, "otel_sdk_ns": theirs_fn},
            loops,
            repeats,
            settle=provider.force_flush,
            warmup_min=50,
        )
        row["ratio_vs_otel_sdk"] = ratio(row["tsengine_ns"], row["otel_sdk_ns"])
        out[name] = row

    try:
        both("span_root", ours_span, theirs_span)
        both("server_span_with_extract", ours_server, theirs_server)
        both("extract", lambda: extract(headers), lambda: propagator.extract(headers))
        # A parent open on both sides: the child's own start + end, and inject of a live span.
        with ours.start_as_current_span("parent"), otel_trace.use_span(theirs.start_span("parent"), True):
            both("span_child", ours_span, theirs_span)
            both("inject", lambda: inject({}), lambda: propagator.inject({}))
    finally:
        provider.shutdown()
    return out


def _encode(loops: int, repeats: int) -> dict[str, float]:
    """ns per span to encode a batch of 512 finished spans with 4 attributes each."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tsengine.instrument import Tracer
    from tsengine.instrument._tracing.otlp import encode_export_request

    attrs: dict[str, str | int] = {
        "http.request.method": "GET",
        "url.path": "/users/42",
        "http.route": "/users/{id}",
        "n": 200,
    }
    ours = Tracer(max_traces=1)
    our_spans = []
    for _ in range(512):
        span = ours.start_span("GET /users/{id}", attributes=attrs)
        span.end()
        our_spans.append(span)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    theirs = provider.get_tracer("bench")
    for _ in range(512):
        theirs.start_span("GET /users/{id}", attributes=attrs).end()
    their_spans = memory.get_finished_spans()
    resource = {"service.name": "bench"}
    row = compare(
        {
            "tsengine_ns": lambda: encode_export_request(our_spans, resource),
            "otel_sdk_ns": lambda: encode_spans(their_spans).SerializeToString(),
        },
        loops,
        repeats,
        warmup_min=50,
    )
    provider.shutdown()
    result = {key: ns / 512 for key, ns in row.items()}
    result["ratio_vs_otel_sdk"] = ratio(result["tsengine_ns"], result["otel_sdk_ns"])
    return result


def _fastapi(loops: int, repeats: int) -> dict[str, float]:
    """µs per in-process FastAPI request through the middleware, tracing off and on."""
    import asyncio

    from fastapi import FastAPI

    from tsengine.instrument import Telemetry, TelemetryConfig
    from tsengine.instrument.asgi import TelemetryMiddleware

    def build(tracing: bool) -> Any:
        app = FastAPI()

        @app.get("/users/{user_id}")
        async def user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        config = TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=tracing)
        app.add_middleware(TelemetryMiddleware, telemetry=Telemetry(config))
        return app

    scope = request_scope(
        "/users/7", (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    )

    async def measure() -> dict[str, float]:
        apps = {"off": build(False), "on": build(True)}
        best = dict.fromkeys(apps, float("inf"))
        for app in apps.values():
            for _ in range(50):  # warm-up: builds the middleware stack
                await app(dict(scope), receive, send)
        for _ in range(repeats):  # short interleaved chunks, best of many: noise hits both alike
            for kind, app in apps.items():
                start = time.perf_counter_ns()
                for _ in range(loops):
                    await app(dict(scope), receive, send)
                best[kind] = min(best[kind], (time.perf_counter_ns() - start) / loops / 1000)
        return {
            "fastapi_tracing_off_us": best["off"],
            "fastapi_tracing_on_us": best["on"],
            "fastapi_tracing_overhead_us": best["on"] - best["off"],
        }

    return asyncio.run(measure())


def run(quick: bool = False) -> dict[str, Any]:
    """Measure, print a table, return ``{"ops", "goals", "request", "python", "quick"}``."""
    loops, repeats = (5_000, 3) if quick else (50_000, 5)
    # OTel's BatchSpanProcessor logs each span it drops from its full queue; that is the point here.
    otel_log = logging.getLogger("opentelemetry.sdk")
    level = otel_log.level
    otel_log.setLevel(logging.CRITICAL)
    try:
        return _run(quick, loops, repeats)
    finally:
        otel_log.setLevel(level)


def _run(quick: bool, loops: int, repeats: int) -> dict[str, Any]:
    ops = _ops(loops, repeats)
    ops["otlp_encode_per_span_in_512"] = _encode(5 if quick else 40, repeats)
    goals = {
        name: ops[name]["ratio_vs_otel_sdk"] <= goal
        for name, goal in (
            ("span_root", SPAN_GOAL),
            ("span_child", SPAN_GOAL),
            ("server_span_with_extract", SPAN_GOAL),
            ("inject", PROPAGATION_GOAL),
            ("extract", PROPAGATION_GOAL),
        )
    }
    result = {
        "ops": ops,
        "goals": goals,
        "request": _fastapi(200, 5 if quick else 40),
        "python": sys.version.split()[0],
        "quick": quick,
    }
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"tsengine tracing vs OpenTelemetry SDK (ns/op, best of repeats; python {result['python']})")
    rows = {
        name: {**row, "goal": {None: "", True: "met", False: "MISSED"}[result["goals"].get(name)]}
        for name, row in result["ops"].items()
    }
    columns = (
        Column("tsengine_ns", "tsengine", "9.0f"),
        Column("otel_sdk_ns", "otel sdk", "9.0f"),
        Column("ratio_vs_otel_sdk", "ratio", "6.2f"),
        Column("goal", "goal", "<"),
    )
    for line in format_table(rows, columns, first="operation", first_width=30):
        print(line.rstrip())
    print("FastAPI request through the middleware, in-process (µs):")
    for key, value in result["request"].items():
        print(f"  {key:36} {value:7.1f}")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
