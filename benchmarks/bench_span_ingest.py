"""Span ingestion: OTLP/HTTP protobuf traces into a real tsengine server process (issue 5).

What comes in: nothing (``run(quick)``). What goes out: spans/s (wall), server CPU µs per span
(psutil user+system of the server process over the send window), peak server RSS, the HTTP
statuses seen, whether the server holds every span afterwards, and whether the goal (100,000
spans/s) is met. Who calls it: ``python -m benchmarks.run --only span``, or
``python -m benchmarks.bench_span_ingest [--quick] [--spans N] [--profile]``.

The bodies are what an OpenTelemetry SDK's ``BatchSpanProcessor`` + ``OTLPSpanExporter`` sends:
``ExportTraceServiceRequest`` protobuf, 512 spans a request (the processor's default
``max_export_batch_size``), one resource per service (``service.name``, ``service.version``,
``host.name``, the ``telemetry.sdk.*`` attributes), one instrumentation scope, spans of a
four-service call tree (random 16-byte trace ids, 8-byte span ids, parent links), 6 attributes
a span (HTTP/DB semantic conventions: strings and ints), an exception event on the 2 % of
spans that fail. Rendered before any clock starts, then POSTed over 4, 8 and 16 keep-alive
connections (one thread each; the headline figure is ``CONNECTIONS`` = 8) to a fresh
``python -m tsengine.cli serve`` on 127.0.0.1 per run, with a data directory under
``benchmarks/.work/`` (removed afterwards; each server is stopped with SIGTERM — only the
processes this module started). One warm-up request per server is not measured (it starts the
span decoding process). CPU is the server process's and, apart, its decoding child's.

``--profile`` decodes and writes the bodies in this process instead, under cProfile (thread CPU
time), for orientation on what limits the rate.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2

from benchmarks import _timing
from benchmarks._process import ProcessMeter, post_all, poster
from benchmarks.bench_http_ingest import WORK_DIR, TsengineServer

__all__ = ["bench_server", "render_bodies", "run"]

SPANS_PER_REQUEST = 512
#: Connections of the headline figure: the server sees one per exporting process (an SDK's
#: BatchSpanProcessor exports one batch at a time); the scan shows how the rate scales.
CONNECTIONS = 8
CONNECTION_SCAN = (4, 8, 16)
FULL_REPEATS = 3
FULL_SPANS = 307_200
QUICK_SPANS = 20_480
GOAL_SPANS_PER_S = 100_000
PATH = "/v1/traces"
HEADERS = {"Content-Type": "application/x-protobuf"}
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

# A call tree: (service, operation, kind, children); kind 2 = server, 3 = client, 1 = internal.
_TREE = (
    "frontend", "GET /checkout", 2, (
        ("frontend", "POST cart", 3, (
            ("cart", "POST /cart", 2, (
                ("cart", "redis GET", 3, ()),
                ("cart", "redis SET", 3, ()),
            )),
        )),
        ("frontend", "POST pay", 3, (
            ("payment", "POST /pay", 2, (
                ("payment", "validate card", 1, ()),
                ("payment", "SELECT accounts", 3, (
                    ("postgres", "SELECT accounts", 2, ()),
                )),
            )),
        )),
    ),
)  # fmt: skip


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    out = common_pb2.KeyValue(key=key)
    if isinstance(value, int):
        out.value.int_value = value
    else:
        out.value.string_value = value
    return out


def _flatten(node: tuple, parent: int | None, out: list[tuple[str, str, int, int | None]]) -> None:
    service, name, kind, children = node
    index = len(out)
    out.append((service, name, kind, parent))
    for child in children:
        _flatten(child, index, out)


def render_bodies(spans: int, *, seed: int = 1) -> list[bytes]:
    """``spans`` spans (rounded up to whole requests) as OTLP protobuf bodies of 512 spans each."""
    rng = random.Random(seed)
    shape: list[tuple[str, str, int, int | None]] = []
    _flatten(_TREE, None, shape)
    bodies = []
    made = 0
    clock_ns = T0
    while made < spans:
        request = ExportTraceServiceRequest()
        scopes: dict[str, Any] = {}
        for service in dict.fromkeys(s for s, *_ in shape):
            rs = request.resource_spans.add()
            rs.resource.attributes.extend(
                [
                    _kv("service.name", service),
                    _kv("service.version", "1.4.2"),
                    _kv("host.name", f"{service}-7d9f8"),
                    _kv("telemetry.sdk.language", "python"),
                    _kv("telemetry.sdk.name", "opentelemetry"),
                    _kv("telemetry.sdk.version", "1.45.2"),
                ]
            )
            scope = rs.scope_spans.add()
            scope.scope.name = f"{service}.instrumentation"
            scope.scope.version = "0.66b2"
            scopes[service] = scope
        in_request = 0
        while in_request < SPANS_PER_REQUEST:  # the last trace of a request may be cut short
            trace_id = rng.randbytes(16)
            ids = [rng.randbytes(8) for _ in shape]
            clock_ns += rng.randrange(100_000, 2_000_000)
            failed = rng.random() < 0.02
            for i, (service, name, kind, parent) in enumerate(shape[: SPANS_PER_REQUEST - in_request]):
                start = clock_ns + i * 1_000_000
                span = scopes[service].spans.add(
                    trace_id=trace_id,
                    span_id=ids[i],
                    parent_span_id=ids[parent] if parent is not None else b"",
                    name=name,
                    kind=kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + rng.randrange(200_000, 50_000_000),
                )
                span.attributes.extend(
                    [
                        _kv("http.request.method", "POST"),
                        _kv("url.path", name.split(" ", 1)[-1]),
                        _kv("http.response.status_code", 500 if failed else 200),
                        _kv("server.address", f"{service}.svc"),
                        _kv("network.peer.address", f"10.0.{i}.{rng.randrange(256)}"),
                        _kv("user_agent.original", "python-requests/2.32"),
                    ]
                )
                if failed:
                    span.status.code = 2
                    span.status.message = "upstream failed"
                    event = span.events.add(name="exception", time_unix_nano=start + 100_000)
                    event.attributes.extend(
                        [_kv("exception.type", "TimeoutError"), _kv("exception.message", "t/o")]
                    )
            in_request += min(len(shape), SPANS_PER_REQUEST - in_request)
        bodies.append(request.SerializeToString())
        made += in_request
    return bodies


def run(quick: bool = False, *, spans: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Send the bodies to a fresh server per connection count and repeat; see the module docstring.

    Per connection count, the run with the median spans/s (every run's rate kept alongside);
    the headline figure (``spans_per_s``, ``goal_met``) is the one with ``CONNECTIONS``.
    """
    want = spans or (QUICK_SPANS if quick else FULL_SPANS)
    t0 = time.perf_counter()
    bodies = render_bodies(want)
    total = sum(_count(b) for b in bodies)
    print(f"  rendered {len(bodies)} bodies, {total:,} spans in {time.perf_counter() - t0:.1f} s", flush=True)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "spans": total,
        "spans_per_request": SPANS_PER_REQUEST,
        "connections": CONNECTIONS,
        "cpu_count": os.cpu_count(),
        "load_avg_before": os.getloadavg(),
    }
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in CONNECTION_SCAN}
    for repeat in range(repeats or (1 if quick else FULL_REPEATS)):
        # Interleaved, so that load from elsewhere on the machine falls on every count alike.
        for connections in CONNECTION_SCAN:
            r = bench_server(bodies, total, connections)
            runs[connections].append(r)
            print(
                f"  repeat {repeat + 1}, {connections:>2} connections: {r['spans_per_s']:,.0f} spans/s, "
                f"CPU/span server {r['server_cpu_us_per_span']:.1f} µs + decoding "
                f"{r['decoder_cpu_us_per_span']:.1f} µs, statuses {r['statuses']}, "
                f"stored {r['stored']:,}/{total:,}, load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    chosen = {c: median_run(rs) for c, rs in runs.items()}
    out["runs"] = {str(k): v for k, v in chosen.items()}
    out.update(chosen[CONNECTIONS])
    out["load_avg_after"] = os.getloadavg()
    out["goal_spans_per_s"] = GOAL_SPANS_PER_S
    out["goal_met"] = out["spans_per_s"] >= GOAL_SPANS_PER_S
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median spans/s (the lower middle one of an even count), with every run's rate."""
    chosen = _timing.median_run(runs, "spans_per_s")
    chosen["runs_spans_per_s"] = [r["spans_per_s"] for r in runs]
    return chosen


def bench_server(bodies: list[bytes], total: int, connections: int) -> dict[str, Any]:
    """POST every body over ``connections`` threads to a fresh server; its figures."""
    server = TsengineServer(WORK_DIR / "span-ingest")
    try:
        server.start()
        # Warm-up, not measured: the first trace request starts the span decoding process.
        warm = render_bodies(SPANS_PER_REQUEST, seed=2)[0]
        status, text = server.request("POST", PATH + "?db=warmup", warm, HEADERS)
        if status != 200:
            raise RuntimeError(f"cannot warm up the server: HTTP {status}: {text[:300]!r}")
        send = poster(server.request, PATH, HEADERS, ok=200)
        with ProcessMeter(server.pid, children=True) as meter:
            t0 = time.perf_counter()
            statuses = post_all(send, bodies, connections)
            wall_s = time.perf_counter() - t0
        stored = int(server.sql("SELECT count(*) FROM spans")[0][0])
    finally:
        shutdown_s = server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    server_s, children_s = meter.cpu_s, meter.children_cpu_s
    return {
        "connections": connections,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "all_200": set(statuses) == {200},
        "wall_s": wall_s,
        "spans_per_s": total / wall_s,
        "server_cpu_s": server_s,
        "server_cpu_us_per_span": server_s / total * 1e6,
        "server_cpu_cores": server_s / wall_s,
        # The span decoding process(es) the server spawned (server.tracing.decoder).
        "decoder_cpu_us_per_span": children_s / total * 1e6,
        "total_cpu_us_per_span": (server_s + children_s) / total * 1e6,
        "rss_peak_mib": meter.rss_peak / 2**20,
        "body_mib": sum(map(len, bodies)) / 2**20,
        "stored": stored,
        "complete": stored == total,
        "shutdown_s": shutdown_s,
    }


def _count(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def profile(spans: int, *, top: int = 25) -> str:
    """Decode and write the bodies in this process under cProfile (thread CPU), as a worker does."""
    import cProfile
    import io
    import pstats
    import tempfile

    from tsengine.engine import Engine
    from tsengine.protocols import otlp_traces

    bodies = render_bodies(spans)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        engine = Engine.open(tmp, fsync="none")
        engine.declare_table("spans", append_only=True)
        prof = cProfile.Profile(time.thread_time)
        t0 = time.perf_counter()
        prof.enable()
        for body in bodies:
            result = otlp_traces.parse(body, content_type=HEADERS["Content-Type"])
            assert result.batch is not None
            engine.write_batches([result.batch])
        prof.disable()
        wall = time.perf_counter() - t0
        engine.close()
    text = io.StringIO()
    text.write(
        f"decode + write of {spans:,} spans in one thread: {spans / wall:,.0f} spans/s (profiler on)\n"
    )
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SPANS:,} spans")
    parser.add_argument("--spans", type=int, help=f"spans to send (default {FULL_SPANS:,})")
    parser.add_argument("--profile", action="store_true", help="profile decode + write in-process")
    parser.add_argument("--repeats", type=int, help=f"runs per connection count (default {FULL_REPEATS})")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.profile:
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        print(profile(args.spans or QUICK_SPANS * 2))
        return 0
    out = run(args.quick, spans=args.spans, repeats=args.repeats)
    print(
        f"\nSpan ingestion, OTLP/HTTP protobuf, {out['spans']:,} spans in requests of "
        f"{out['spans_per_request']}, {out['connections']} connections: "
        f"{out['spans_per_s']:,.0f} spans/s (goal {GOAL_SPANS_PER_S:,}: "
        f"{'met' if out['goal_met'] else 'NOT met'}), CPU/span: server process "
        f"{out['server_cpu_us_per_span']:.1f} µs ({out['server_cpu_cores']:.2f} cores) + decoding "
        f"process {out['decoder_cpu_us_per_span']:.1f} µs, peak RSS {out['rss_peak_mib']:.0f} MiB, "
        f"statuses {out['statuses']}, stored {out['stored']:,}/{out['spans']:,}; load average "
        f"{out['load_avg_before'][0]:.2f} → {out['load_avg_after'][0]:.2f} ({out['cpu_count']} CPUs)"
    )
    for connections, r in out["runs"].items():
        each = ", ".join(f"{v:,.0f}" for v in r["runs_spans_per_s"])
        print(f"  {connections:>2} connections: median {r['spans_per_s']:,.0f} spans/s (runs {each})")
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
