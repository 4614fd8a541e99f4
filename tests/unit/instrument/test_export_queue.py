"""The one queue/worker/retry machinery (``_push.BatchExporter``) every SDK exporter uses.

A scripted target (a ``BatchExporter`` whose ``_attempt`` answers from a list) drives the real
queue, worker, backoff and counters; ``HttpTarget`` is exercised against a real HTTP server on
127.0.0.1. Both the metrics exporters and the span exporters are checked to sit on it.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tsengine.instrument import (
    CollectorRegistry,
    EmbeddedExporter,
    HttpExporter,
    OtlpMetricsExporter,
    OtlpSpanExporter,
    Tracer,
)
from tsengine.instrument._embedded import EngineExporter
from tsengine.instrument._otlp_logs_export import OtlpLogsExporter
from tsengine.instrument._push import BatchExporter, HttpTarget, QueuedExporter, _Batch
from tsengine.instrument._tracing.exporter import EmbeddedSpanExporter, SpanExporter

DEADLINE_S = 10.0


class Scripted(BatchExporter):
    """Delivers by answering from ``answers`` (then ok); records what it was given."""

    def __init__(self, answers: list[tuple[str, float | None, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers = list(answers or [])
        self.delivered: list[list[Any]] = []
        self.gate: threading.Event | None = None  # set: deliveries wait on it
        self.entered = threading.Event()

    def _attempt(self, batch: _Batch, timeout_s: float) -> tuple[str, float | None, str]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(DEADLINE_S)
        answer = self.answers.pop(0) if self.answers else ("ok", None, "")
        if answer[0] == "raise":
            raise RuntimeError("delivery bug")
        if answer[0] == "ok":
            self.delivered.append(list(batch.rows))
        return answer


def wait_for(cond: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.005)  # poll interval, not a wait for the condition itself


def test_every_exporter_sits_on_the_one_machinery() -> None:
    for cls in (HttpExporter, OtlpMetricsExporter, EmbeddedExporter, OtlpSpanExporter, EmbeddedSpanExporter):
        assert issubclass(cls, BatchExporter)
    assert issubclass(EmbeddedExporter, QueuedExporter) and issubclass(OtlpSpanExporter, SpanExporter)
    # One implementation of each piece: no exporter brings its own queue, worker or delivery loop.
    for cls in (
        QueuedExporter,
        HttpExporter,
        OtlpMetricsExporter,
        EngineExporter,
        EmbeddedExporter,
        SpanExporter,
        OtlpSpanExporter,
        EmbeddedSpanExporter,
    ):
        # OtlpMetricsExporter's flush/shutdown only add its companion log exporter (events to
        # /v1/logs, itself a QueuedExporter) to what the shared implementation does.
        allowed = {"flush", "shutdown"} if cls is OtlpMetricsExporter else set()
        for name in ("_append", "_enqueue", "_send", "_run", "_drain", "flush", "shutdown", "_take", "_done"):
            assert name in allowed or name not in vars(cls), f"{cls.__name__} redefines {name}"
    assert issubclass(OtlpLogsExporter, QueuedExporter) and not set(vars(OtlpLogsExporter)) & {
        "_append",
        "_enqueue",
        "_send",
        "_run",
        "_drain",
        "flush",
        "shutdown",
        "_take",
        "_done",
    }


@pytest.mark.parametrize("one_by_one", [True, False])
def test_drop_oldest_keeps_the_bound_and_counts_every_item(one_by_one: bool) -> None:
    registry = CollectorRegistry()
    exp = Scripted(batch_size=4, max_queue=10, registry=registry)
    for i in range(25):
        if one_by_one:
            exp._append(i)
        else:
            exp._enqueue([i])
        assert exp.queued_rows <= 10
    queued = [row for b in exp._queue for row in b.rows]
    assert exp.queued_rows == len(queued) and exp.stats.values["dropped"] == 25 - len(queued)
    assert queued == list(range(25 - len(queued), 25))  # the newest survive, in order
    assert registry.get_sample_value("tsengine_instrument_export_dropped_total") == 25 - len(queued)
    assert exp.flush(1.0) and exp.delivered == [queued[i : i + 4] for i in range(0, len(queued), 4)]


def test_retry_keeps_the_batch_at_the_head_then_delivers_in_order() -> None:
    exp = Scripted([("retry", 0.0, "503"), ("retry", None, "conn refused")], batch_size=2, max_backoff_s=0.01)
    exp._enqueue([1, 2, 3])
    assert exp.flush(DEADLINE_S)
    assert exp.delivered == [[1, 2], [3]]
    assert exp.stats.values == {"sent": 3, "dropped": 0, "rejected": 0, "retries": 2}


def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    exp = Scripted(max_backoff_s=4.0)
    exp._append("x")
    delays = []
    for answer in [("retry", None, "")] * 6 + [("retry", 100.0, ""), ("retry", 3.0, "")]:
        exp.answers = [answer]
        batch = exp._take()
        assert batch is not None
        before = time.monotonic()
        assert exp._send(batch, 1.0) == "retry"
        delays.append(exp._retry_at - before)
    # 0.5 s doubling with full jitter in [d/2, d], capped at max_backoff_s.
    for n, delay in enumerate(delays[:6]):
        cap = min(4.0, 0.5 * 2**n)
        assert cap / 2 - 0.01 <= delay <= cap + 0.01, (n, delay)
    assert 3.99 <= delays[6] <= 4.01  # Retry-After 100 s, capped
    assert delays[7] >= 2.99  # Retry-After 3 s honoured
    assert exp.queued_rows == 1 and exp.stats.values["retries"] == 8


def test_a_final_refusal_is_counted_not_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    exp = Scripted([("rejected", None, "401: bad token")] * 2, batch_size=2)
    exp.endpoint = "http://target"
    exp._enqueue([1, 2, 3, 4, 5])
    with caplog.at_level("DEBUG", logger="tsengine.instrument._push"):
        assert exp.flush(DEADLINE_S) is False
    assert exp.queued_rows == 0 and exp.delivered == [[5]]
    assert exp.stats.values == {"sent": 1, "dropped": 0, "rejected": 4, "retries": 0}
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "401: bad token" in warnings[0].message and "2 rows" in warnings[0].message


def test_a_delivery_that_raises_counts_as_rejected_and_as_an_internal_error() -> None:
    registry = CollectorRegistry()
    exp = Scripted([("raise", None, "")], registry=registry)
    exp._append(1)
    assert exp.flush(1.0) is False
    assert exp.stats.values["rejected"] == 1 and exp.queued_rows == 0
    assert registry.get_sample_value("tsengine_instrument_errors_total", {"component": "exporter"}) == 1


def test_appending_never_waits_for_a_delivery_in_progress() -> None:
    exp = Scripted(batch_size=2, max_queue=6, interval_s=3600)
    exp.gate = threading.Event()
    exp.start()
    try:
        exp._append(0)
        exp._append(1)  # a full batch: the worker delivers it without waiting for the interval
        assert exp.entered.wait(DEADLINE_S)
        for i in range(2, 40):  # the delivery is stuck: appends still return, the bound holds
            exp._append(i)
        assert exp.queued_rows <= 6 and exp.stats.values["dropped"] > 0
        exp.gate.set()
        wait_for(lambda: exp.queued_rows == 0, "the worker to deliver the rest")
        # The batch in flight was kept (not dropped under it): every item counted exactly once.
        assert exp.delivered[0] == [0, 1]
        assert exp.stats.values["sent"] + exp.stats.values["dropped"] == 40
        assert [r for b in exp.delivered for r in b][-4:] == [36, 37, 38, 39]
    finally:
        exp.gate.set()
        exp.shutdown(DEADLINE_S)
    assert not exp.running


def test_shutdown_flushes_stops_and_is_idempotent() -> None:
    exp = Scripted(interval_s=3600, batch_size=100)
    exp.start()
    exp._enqueue(list(range(5)))
    exp.shutdown(DEADLINE_S)
    exp.shutdown(DEADLINE_S)
    assert exp.delivered == [[0, 1, 2, 3, 4]] and exp.is_shut_down and not exp.running
    exp.start()
    assert not exp.running


def test_counter_names_per_family() -> None:
    registry = CollectorRegistry()
    spans = OtlpSpanExporter("http://127.0.0.1:9", batch_size=1, max_queue=1, registry=registry)
    rows = HttpExporter("http://127.0.0.1:9", batch_size=1, max_queue=1, registry=registry)
    tracer = Tracer()
    tracer.add_processor(spans)
    for _ in range(3):
        tracer.start_span("x").end()
    rows.export_events([])
    rows._enqueue([{"a": 1}, {"a": 2}])
    values = {s.name: s.value for fam in registry.collect() for s in fam.samples}
    assert values["tsengine_instrument_trace_export_dropped_total"] == 2.0
    assert values["tsengine_instrument_export_dropped_total"] == 1.0
    assert spans.queued_spans == spans.queued_rows == 1


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[tuple[int, dict[str, str]]], list[dict[str, Any]]]]:
    """A real HTTP server on 127.0.0.1 answering each POST with the next scripted status."""
    script: list[tuple[int, dict[str, str]]] = []
    seen: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status, headers = script.pop(0) if script else (200, {})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE_S)


def test_http_target_maps_statuses_to_outcomes(
    http_server: tuple[str, list[tuple[int, dict[str, str]]], list[dict[str, Any]]],
) -> None:
    url, script, seen = http_server
    target = HttpTarget(f"{url}/v1/traces?db=x", content_type="application/x-protobuf", token="t")
    script.extend([(200, {}), (503, {"Retry-After": "7"}), (429, {}), (401, {}), (404, {})])
    assert target.post(b"a", 5.0) == ("ok", None, "")
    assert target.post(b"b", 5.0) == ("retry", 7.0, "503: no")
    assert target.post(b"c", 5.0)[:2] == ("retry", None)
    assert target.post(b"d", 5.0) == ("rejected", None, "401: no")
    assert target.post(b"e", 5.0)[0] == "rejected"
    assert seen[0]["path"] == "/v1/traces?db=x" and seen[0]["body"] == b"a"
    assert seen[0]["headers"]["Authorization"] == "Bearer t"
    assert seen[0]["headers"]["Content-Type"] == "application/x-protobuf"
    refused = HttpTarget("http://127.0.0.1:9/", content_type="x")  # nothing listens on port 9
    assert refused.post(b"", 1.0)[0] == "retry"
    with pytest.raises(ValueError, match="cannot use exporter endpoint 'ftp://x'"):
        HttpTarget("ftp://x", content_type="x")


def test_http_exporter_token_can_change_after_construction(
    http_server: tuple[str, list[tuple[int, dict[str, str]]], list[dict[str, Any]]],
) -> None:
    url, _, seen = http_server
    exp = HttpExporter(url, token="one", db="ops")
    exp._enqueue([{"table": "t", "time": 1, "tags": {}, "fields": {"value": 1.0}}])
    assert exp.flush(DEADLINE_S)
    exp.token = None
    exp._enqueue([{"table": "t", "time": 2, "tags": {}, "fields": {"value": 1.0}}])
    assert exp.flush(DEADLINE_S)
    assert seen[0]["headers"]["Authorization"] == "Bearer one" and "Authorization" not in seen[1]["headers"]
    assert seen[0]["path"] == "/api/v1/import?db=ops"
