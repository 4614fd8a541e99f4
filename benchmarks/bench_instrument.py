"""Hot-path cost of tsengine.instrument, side by side with prometheus_client and the OpenTelemetry SDK.

Run: ``.venv/bin/python -m benchmarks.bench_instrument [--quick]``. ``run(quick=False)`` returns
the figures as a dict and prints a table; ratios are tsengine / peer (≤ 1.0 means at least as
fast). Every figure is the best of several repeats, in nanoseconds per operation, measured in
the same process in the same run, so ratios hold on a noisy machine even when absolutes move.

Middleware overhead is measured in-process (no sockets): the same FastAPI app called through
its ASGI interface with and without the middleware, with an empty pure ASGI middleware (the
floor) and with a ``BaseHTTPMiddleware`` doing nothing (what ``@app.middleware`` costs); for
aiohttp, the middleware wrapped around a trivial handler with a mocked request. The
wrk-driven per-request figures over real HTTP are in ``bench_middleware``. In-process figures on a
shared machine are noisy: compare the variants of one run, not runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from benchmarks._asgi import receive, request_scope, send
from benchmarks._timing import Column, best_ns_async, compare, format_table, ratio

__all__ = ["run"]


def _ops(loops: int, repeats: int) -> dict[str, dict[str, float]]:
    import prometheus_client as prom

    from tsengine.instrument import (
        CollectorRegistry,
        Counter,
        EventTracker,
        Histogram,
        Telemetry,
        TelemetryConfig,
        telemetry,
    )

    reg = CollectorRegistry()
    preg = prom.CollectorRegistry()
    ours_c = Counter("c_total", "c", registry=reg)
    prom_c = prom.Counter("c_total", "c", registry=preg)
    ours_l = Counter("l_total", "l", ["method", "code"], registry=reg)
    prom_l = prom.Counter("l_total", "l", ["method", "code"], registry=preg)
    ours_b, prom_b = ours_l.labels("GET", "200"), prom_l.labels("GET", "200")
    ours_h = Histogram("h_seconds", "h", registry=reg)
    prom_h = prom.Histogram("h_seconds", "h", registry=preg)
    ours_hl = Histogram("hl_seconds", "h", ["route"], registry=reg).labels("/items/{id}")
    prom_hl = prom.Histogram("hl_seconds", "h", ["route"], registry=preg).labels("/items/{id}")

    rt = Telemetry(TelemetryConfig(system_metrics_enabled=False))
    tracker: EventTracker = rt.events

    @telemetry("op", runtime=rt)
    def ours_decorated() -> None:
        return None

    @telemetry("op_quiet", runtime=rt, track_event=False)
    def ours_decorated_quiet() -> None:
        return None

    prom_calls = prom.Counter("calls_total", "c", ["operation", "status"], registry=preg)
    prom_seconds = prom.Histogram("call_seconds", "c", ["operation"], registry=preg)

    def prom_decorated() -> None:
        # The prometheus_client equivalent of what @telemetry records: a timed, counted call.
        with prom_seconds.labels("op").time():
            pass
        prom_calls.labels("op", "success").inc()

    def ours_timer() -> None:
        with ours_h.time():
            pass

    def prom_timer() -> None:
        with prom_h.time():
            pass

    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "counter_inc_unlabelled": (ours_c.inc, prom_c.inc),
        "counter_inc_label_lookup": (
            lambda: ours_l.labels("GET", "200").inc(),
            lambda: prom_l.labels("GET", "200").inc(),
        ),
        "counter_inc_prebound": (ours_b.inc, prom_b.inc),
        "histogram_observe": (lambda: ours_h.observe(0.3), lambda: prom_h.observe(0.3)),
        "histogram_observe_prebound_labelled": (lambda: ours_hl.observe(0.3), lambda: prom_hl.observe(0.3)),
        "timer_with_block": (ours_timer, prom_timer),
        "decorated_call_with_event": (ours_decorated, prom_decorated),
        "decorated_call_no_event": (ours_decorated_quiet, prom_decorated),
        "event_tracked": (lambda: tracker.track("user_login", category="user_action"), None),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (ours, peer) in cases.items():
        fns = {"tsengine_ns": ours} if peer is None else {"tsengine_ns": ours, "prometheus_client_ns": peer}
        row = compare(fns, loops, repeats)
        if peer is not None:
            row["ratio_vs_prometheus_client"] = ratio(row["tsengine_ns"], row["prometheus_client_ns"])
        out[name] = row
    _add_otel(out, loops, repeats)
    return out


def _add_otel(out: dict[str, dict[str, float]], loops: int, repeats: int) -> None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:  # the OpenTelemetry SDK is a test extra; without it, skip its column
        return
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = provider.get_meter("bench")
    counter = meter.create_counter("c")
    histogram = meter.create_histogram("h")
    attrs = {"method": "GET", "code": "200"}
    peers = {
        "counter_inc_unlabelled": lambda: counter.add(1),
        "counter_inc_label_lookup": lambda: counter.add(1, attrs),
        "histogram_observe": lambda: histogram.record(0.3),
        "histogram_observe_prebound_labelled": lambda: histogram.record(0.3, {"route": "/items/{id}"}),
    }
    for name, fn in peers.items():
        row = out[name]
        row["otel_sdk_ns"] = compare({"otel": fn}, max(loops // 10, 100), repeats)["otel"]
        row["ratio_vs_otel_sdk"] = ratio(row["tsengine_ns"], row["otel_sdk_ns"])
    provider.shutdown()


class _Passthrough:
    """The cheapest possible pure ASGI middleware: the floor any middleware pays."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _middleware(loops: int, repeats: int) -> dict[str, float]:
    from fastapi import FastAPI
    from starlette.middleware.base import BaseHTTPMiddleware

    from tsengine.instrument import Telemetry, TelemetryConfig
    from tsengine.instrument.asgi import TelemetryMiddleware

    def build(kind: str) -> Any:
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        if kind == "tsengine":
            app.add_middleware(
                TelemetryMiddleware, telemetry=Telemetry(TelemetryConfig(system_metrics_enabled=False))
            )
        elif kind == "passthrough_asgi":
            app.add_middleware(_Passthrough)
        elif kind == "base_http_middleware":

            async def passthrough(request: Any, call_next: Any) -> Any:
                return await call_next(request)

            app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
        return app

    scope = request_scope("/items/7")

    async def measure() -> dict[str, float]:
        kinds = ("plain", "passthrough_asgi", "tsengine", "base_http_middleware")
        apps = {kind: build(kind) for kind in kinds}
        calls = {kind: (lambda app=app: app(dict(scope), receive, send)) for kind, app in apps.items()}
        for call in calls.values():
            await best_ns_async(call, 50, 1)  # warm-up: builds the middleware stack
        best = dict.fromkeys(kinds, float("inf"))
        for _ in range(repeats):  # interleaved, so noise hits every variant alike
            for kind, call in calls.items():
                best[kind] = min(best[kind], await best_ns_async(call, loops, 1))
        res = {f"fastapi_{kind}_us": ns / 1000 for kind, ns in best.items()}
        res["fastapi_tsengine_overhead_us"] = res["fastapi_tsengine_us"] - res["fastapi_plain_us"]
        res["fastapi_passthrough_asgi_overhead_us"] = (
            res["fastapi_passthrough_asgi_us"] - res["fastapi_plain_us"]
        )
        res["fastapi_base_http_middleware_overhead_us"] = (
            res["fastapi_base_http_middleware_us"] - res["fastapi_plain_us"]
        )
        res.update(await _aiohttp(loops, repeats))
        return res

    return asyncio.run(measure())


async def _aiohttp(loops: int, repeats: int) -> dict[str, float]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from tsengine.instrument import Telemetry, TelemetryConfig
    from tsengine.instrument.aiohttp import telemetry_middleware

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/items/{item_id}", handler)
    request = make_mocked_request("GET", "/items/7", app=app)
    match = await app.router.resolve(request)
    request._match_info = match  # type: ignore[attr-defined]
    mw = telemetry_middleware(telemetry=Telemetry(TelemetryConfig(system_metrics_enabled=False)))
    plain = await best_ns_async(lambda: handler(request), loops, repeats)
    wrapped = await best_ns_async(lambda: mw(request, handler), loops, repeats)
    return {"aiohttp_middleware_overhead_us": (wrapped - plain) / 1000}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure, print a table, return ``{"ops": {...}, "middleware": {...}, "python": ...}``."""
    loops, repeats = (20_000, 3) if quick else (200_000, 5)
    mw_loops = 300 if quick else 3000
    result = {
        "ops": _ops(loops, repeats),
        "middleware": _middleware(mw_loops, repeats),
        "python": sys.version.split()[0],
        "quick": quick,
    }
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"tsengine.instrument hot path (ns/op, best of repeats; python {result['python']})")
    columns = (
        Column("tsengine_ns", "tsengine", "9.0f"),
        Column("prometheus_client_ns", "prom", "9.0f"),
        Column("ratio_vs_prometheus_client", "ratio", "6.2f"),
        Column("otel_sdk_ns", "otel", "9.0f"),
        Column("ratio_vs_otel_sdk", "ratio", "6.2f"),
    )
    for line in format_table(result["ops"], columns, first="operation", first_width=38):
        print(line)
    print("middleware, in-process (µs per request):")
    for key, value in result["middleware"].items():
        print(f"  {key:44} {value:8.1f}")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
