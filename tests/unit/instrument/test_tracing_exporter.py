"""OtlpSpanExporter's queue without a network: bounds under concurrency, lifecycle, wiring."""

from __future__ import annotations

import threading

from tsengine.instrument import CollectorRegistry, OtlpSpanExporter, Tracer


def test_concurrent_spans_keep_the_bound_and_account_for_every_span() -> None:
    exporter = OtlpSpanExporter("http://127.0.0.1:9", batch_size=7, max_queue=100)
    tracer = Tracer()
    tracer.add_processor(exporter)
    per_thread, threads = 2000, 4

    def work() -> None:
        for _ in range(per_thread):
            tracer.start_span("x").end()
            assert exporter.queued_spans <= 100

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    total = per_thread * threads
    queued = sum(len(b.rows) for b in exporter._queue)
    assert queued == exporter.queued_spans <= 100
    assert exporter.stats.values["dropped"] + queued == total
    assert all(len(b.rows) <= 7 for b in exporter._queue)


def test_lifecycle_is_idempotent_and_leaves_no_thread() -> None:
    exporter = OtlpSpanExporter("http://127.0.0.1:9", interval_s=3600)
    assert exporter.flush(1.0)  # nothing queued: nothing to do
    exporter.start()
    exporter.start()
    assert exporter.running
    exporter.shutdown(1.0)
    exporter.shutdown(1.0)
    assert not exporter.running and exporter.is_shut_down
    exporter.start()  # a shut-down exporter is not restarted
    assert not exporter.running


def test_counters_are_mirrored_into_the_registry() -> None:
    registry = CollectorRegistry()
    exporter = OtlpSpanExporter("http://127.0.0.1:9", batch_size=1, max_queue=1, registry=registry)
    tracer = Tracer()
    tracer.add_processor(exporter)
    for _ in range(3):
        tracer.start_span("x").end()
    names = {s.name: s.value for fam in registry.collect() for s in fam.samples}
    assert names["tsengine_instrument_trace_export_dropped_total"] == 2.0


def test_a_failing_processor_never_reaches_the_traced_code() -> None:
    class Broken:
        def on_end(self, span: object) -> None:
            raise RuntimeError("processor bug")

        def shutdown(self, timeout_s: float = 5.0) -> None:
            return None

    tracer = Tracer()
    tracer.add_processor(Broken())
    with tracer.start_as_current_span("x"):
        pass
    assert tracer.processor_errors == 1 and len(tracer.finished_spans()) == 1
    assert tracer.health()["processor_errors_total"] == 1
