"""Counter, Gauge, Histogram, Timer: prometheus_client's behaviour, thread safety, cardinality."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from tsengine.instrument import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    MetricDefinitionError,
    Summary,
    Timer,
)

from .conftest import FakeClock


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class TestCounter:
    def test_inc_default_and_amount(self, registry: CollectorRegistry) -> None:
        c = Counter("jobs_total", "Jobs.", registry=registry)
        c.inc()
        c.inc(2.5)
        assert value(registry, "jobs_total") == 3.5
        assert c.get() == 3.5
        assert c.name == "jobs"

    def test_name_without_total_gets_it_on_the_sample(self, registry: CollectorRegistry) -> None:
        Counter("jobs", "Jobs.", registry=registry).inc()
        assert value(registry, "jobs_total") == 1.0

    def test_negative_increment_raises(self, registry: CollectorRegistry) -> None:
        c = Counter("jobs_total", "Jobs.", registry=registry)
        with pytest.raises(ValueError, match="only go up"):
            c.inc(-1)

    def test_labels_positional_and_keyword_are_the_same_child(self, registry: CollectorRegistry) -> None:
        c = Counter("req_total", "Requests.", ["method", "code"], registry=registry)
        c.labels("GET", 200).inc()
        c.labels(method="GET", code="200").inc()
        assert c.labels("GET", "200") is c.labels(code="200", method="GET")
        assert value(registry, "req_total", method="GET", code="200") == 2.0

    @pytest.mark.parametrize(
        "call",
        [
            lambda c: c.labels("GET"),
            lambda c: c.labels("GET", "200", "x"),
            lambda c: c.labels(method="GET"),
            lambda c: c.labels(method="GET", status="200"),
            lambda c: c.labels("GET", code="200"),
            lambda c: c.inc(),
        ],
    )
    def test_label_misuse_raises_value_error(self, registry: CollectorRegistry, call) -> None:
        c = Counter("req_total", "Requests.", ["method", "code"], registry=registry)
        with pytest.raises(ValueError):
            call(c)

    def test_labels_on_unlabelled_metric_raises(self, registry: CollectorRegistry) -> None:
        with pytest.raises(ValueError, match="no label names"):
            Counter("x_total", "X.", registry=registry).labels()

    def test_count_exceptions(self, registry: CollectorRegistry) -> None:
        c = Counter("failures_total", "Failures.", registry=registry)
        with pytest.raises(KeyError), c.count_exceptions(KeyError):
            raise KeyError("x")
        with pytest.raises(ValueError), c.count_exceptions(KeyError):
            raise ValueError("not counted")
        assert c.get() == 1.0

    def test_count_exceptions_on_a_labelled_child(self, registry: CollectorRegistry) -> None:
        c = Counter("failures_total", "Failures.", ["op"], registry=registry)

        @c.labels("parse").count_exceptions(ValueError)
        def parse(text: str) -> int:
            return int(text)

        assert parse("1") == 1
        with pytest.raises(ValueError):
            parse("x")
        assert value(registry, "failures_total", op="parse") == 1.0
        with pytest.raises(ValueError, match=r"use \.labels"):
            c.count_exceptions()

    async def test_exact_total_under_concurrent_tasks(self, registry: CollectorRegistry) -> None:
        c = Counter("tasks_total", "T.", ["k"], registry=registry)

        async def work() -> None:
            for _ in range(1000):
                c.labels("a").inc()
                await asyncio.sleep(0)

        await asyncio.gather(*(work() for _ in range(20)))
        assert value(registry, "tasks_total", k="a") == 20_000.0

    def test_remove_and_clear(self, registry: CollectorRegistry) -> None:
        c = Counter("req_total", "Requests.", ["m"], registry=registry)
        c.labels("a").inc()
        c.labels("b").inc()
        c.remove("a")
        assert value(registry, "req_total", m="a") is None
        assert value(registry, "req_total", m="b") == 1.0
        c.clear()
        assert c.series_count == 0

    def test_exact_total_under_threads(self, registry: CollectorRegistry) -> None:
        c = Counter("hits_total", "Hits.", ["path"], registry=registry)
        n_threads, per_thread = 8, 20_000
        barrier = threading.Barrier(n_threads)

        def work() -> None:
            barrier.wait()
            child = c.labels("/a")
            for i in range(per_thread):
                child.inc()
                c.labels("/a").inc(0.5 if i % 2 else 1.5)

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert value(registry, "hits_total", path="/a") == n_threads * per_thread * 2.0

    def test_unregistered_with_registry_none(self, registry: CollectorRegistry) -> None:
        c = Counter("free_total", "Free.", registry=None)
        c.inc()
        assert c.get() == 1.0
        assert registry.get("free") is None

    def test_namespace_subsystem_unit(self, registry: CollectorRegistry) -> None:
        h = Histogram("latency", "L.", namespace="app", subsystem="http", unit="seconds", registry=registry)
        assert h.name == "app_http_latency_seconds"

    def test_duplicate_name_raises(self, registry: CollectorRegistry) -> None:
        Counter("dup_total", "D.", registry=registry)
        with pytest.raises(MetricDefinitionError, match="already registered"):
            Gauge("dup", "D.", registry=registry)

    def test_unregister_frees_the_name(self, registry: CollectorRegistry) -> None:
        c = Counter("dup_total", "D.", registry=registry)
        registry.unregister(c)
        Counter("dup_total", "D.", registry=registry)


class TestCardinality:
    def test_limit_drops_new_series_and_counts_them(self, registry: CollectorRegistry) -> None:
        c = Counter("user_total", "U.", ["user"], registry=registry, max_series=3)
        for i in range(10):
            c.labels(f"u{i}").inc()
        assert c.series_count == 3
        assert c.series_dropped == 7
        assert value(registry, "tsengine_instrument_series_dropped_total", metric="user") == 7.0
        assert value(registry, "user_total", user="u0") == 1.0
        assert value(registry, "user_total", user="u9") is None
        # Existing series keep working after the limit is reached.
        c.labels("u1").inc()
        assert value(registry, "user_total", user="u1") == 2.0

    def test_registry_default_limit(self) -> None:
        reg = CollectorRegistry(max_series_per_metric=2)
        g = Gauge("g", "G.", ["k"], registry=reg)
        for k in "abc":
            g.labels(k).set(1)
        assert g.series_count == 2

    def test_long_label_values_are_truncated_to_one_series(self, registry: CollectorRegistry) -> None:
        c = Counter("long_total", "L.", ["v"], registry=registry, max_series=2)
        c.labels("x" * 300).inc()
        c.labels("x" * 400).inc()
        assert c.series_count == 1
        assert value(registry, "long_total", v="x" * 256) == 2.0


class TestGauge:
    def test_set_inc_dec(self, registry: CollectorRegistry) -> None:
        g = Gauge("queue", "Q.", registry=registry)
        g.set(10)
        g.inc(5)
        g.dec(3)
        g.dec()
        assert value(registry, "queue") == 11.0

    def test_set_to_current_time_uses_the_clock(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        g = Gauge("last_run", "L.", registry=registry, clock=clock)
        g.set_to_current_time()
        assert g.get() == clock.time_ns() / 1e9

    def test_track_inprogress_and_time(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        g = Gauge("inflight", "I.", ["q"], registry=registry, clock=clock)
        child = g.labels("a")
        with child.track_inprogress():
            assert child.get() == 1.0
        assert child.get() == 0.0
        with child.time():
            clock.advance(2.5)
        assert child.get() == 2.5

    def test_set_function(self, registry: CollectorRegistry) -> None:
        g = Gauge("computed", "C.", registry=registry)
        g.set_function(lambda: 42)
        assert value(registry, "computed") == 42.0


class TestHistogram:
    def test_buckets_are_cumulative_and_le_inclusive(self, registry: CollectorRegistry) -> None:
        h = Histogram("size_bytes", "S.", registry=registry, buckets=[1, 10, 100])
        for v in (0.5, 1, 5, 10, 50, 1000):
            h.observe(v)
        assert value(registry, "size_bytes_bucket", le="1.0") == 2.0
        assert value(registry, "size_bytes_bucket", le="10.0") == 4.0
        assert value(registry, "size_bytes_bucket", le="100.0") == 5.0
        assert value(registry, "size_bytes_bucket", le="+Inf") == 6.0
        assert value(registry, "size_bytes_count") == 6.0
        assert value(registry, "size_bytes_sum") == 1066.5

    def test_default_buckets_end_with_inf(self, registry: CollectorRegistry) -> None:
        h = Histogram("lat_seconds", "L.", registry=registry)
        assert h.buckets[0] == 0.005
        assert h.buckets[-1] == math.inf

    @pytest.mark.parametrize("buckets", [[], [2, 1], [1, 1], [float("nan")]])
    def test_bad_buckets_raise(self, registry: CollectorRegistry, buckets: list[float]) -> None:
        with pytest.raises(MetricDefinitionError):
            Histogram("h", "H.", registry=registry, buckets=buckets)

    def test_exact_count_under_threads(self, registry: CollectorRegistry) -> None:
        h = Histogram("h", "H.", ["k"], registry=registry, buckets=[1])
        child = h.labels("x")

        def work() -> None:
            for _ in range(10_000):
                child.observe(0.5)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert value(registry, "h_count", k="x") == 60_000.0
        assert value(registry, "h_sum", k="x") == 30_000.0

    def test_time_context_manager(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        h = Histogram("op_seconds", "O.", registry=registry, clock=clock, buckets=[1, 5])
        with h.time():
            clock.advance(2)
        assert value(registry, "op_seconds_sum") == 2.0
        assert value(registry, "op_seconds_bucket", le="1.0") == 0.0

    def test_time_decorator_sync_records_even_on_error(
        self, registry: CollectorRegistry, clock: FakeClock
    ) -> None:
        h = Histogram("op_seconds", "O.", registry=registry, clock=clock)

        @h.time()
        def work(fail: bool) -> str:
            clock.advance(0.25)
            if fail:
                raise RuntimeError("boom")
            return "ok"

        assert work(False) == "ok"
        with pytest.raises(RuntimeError, match="boom"):
            work(True)
        assert value(registry, "op_seconds_count") == 2.0
        assert value(registry, "op_seconds_sum") == 0.5

    async def test_time_decorator_async_times_the_await(
        self, registry: CollectorRegistry, clock: FakeClock
    ) -> None:
        h = Histogram("op_seconds", "O.", ["k"], registry=registry, clock=clock)

        @h.labels("a").time()
        async def work() -> int:
            await asyncio.sleep(0)
            clock.advance(1.5)
            return 7

        assert await work() == 7
        assert value(registry, "op_seconds_sum", k="a") == 1.5


class TestSummary:
    def test_count_and_sum(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        s = Summary("payload_bytes", "P.", ["route"], registry=registry, clock=clock)
        s.labels("/a").observe(10)
        s.labels("/a").observe(5)
        with s.labels("/b").time():
            clock.advance(2)
        assert value(registry, "payload_bytes_count", route="/a") == 2.0
        assert value(registry, "payload_bytes_sum", route="/a") == 15.0
        assert value(registry, "payload_bytes_sum", route="/b") == 2.0

    def test_unlabelled(self, registry: CollectorRegistry) -> None:
        s = Summary("x", "X.", registry=registry)
        s.observe(1.5)
        assert value(registry, "x_sum") == 1.5


class TestTimer:
    def test_timer_into_histogram_and_callable(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        h = Histogram("t_seconds", "T.", registry=registry)
        seen: list[float] = []
        with Timer(h, clock=clock) as t:
            clock.advance(3)
        assert t.duration_s == 3.0
        with Timer(seen.append, clock=clock):
            clock.advance(1)
        assert value(registry, "t_seconds_sum") == 3.0
        assert seen == [1.0]

    async def test_timer_async_with(self, clock: FakeClock) -> None:
        seen: list[float] = []
        async with Timer(seen.append, clock=clock):
            clock.advance(0.5)
        assert seen == [0.5]

    def test_timer_rejects_non_observer(self) -> None:
        with pytest.raises(TypeError):
            Timer(42)  # type: ignore[arg-type]

    def test_timer_targets_of_every_shape(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        # Bound observe methods (unlabelled and labelled), a child, a function, a callable
        # object and an object with an instance-level observe all receive the seconds.
        h = Histogram("shapes_seconds", "S.", ["k"], registry=registry)
        root = Histogram("root_seconds", "R.", registry=registry)
        seen: list[float] = []

        class Sink:
            def __call__(self, seconds: float) -> None:
                seen.append(seconds)

        class InstanceObserve:
            def __init__(self) -> None:
                self.observe = seen.append

        def fn(seconds: float) -> None:
            seen.append(seconds)

        targets = [root.observe, h.labels("a").observe, h.labels("b"), fn, Sink(), InstanceObserve()]
        for target in targets:
            with Timer(target, clock=clock):  # type: ignore[arg-type]
                clock.advance(2)
        assert value(registry, "root_seconds_sum") == 2.0
        assert value(registry, "shapes_seconds_sum", k="a") == 2.0
        assert value(registry, "shapes_seconds_sum", k="b") == 2.0
        assert seen == [2.0, 2.0, 2.0]

    def test_gauge_time_sets_the_duration(self, registry: CollectorRegistry, clock: FakeClock) -> None:
        g = Gauge("last_run_seconds", "G.", registry=registry, clock=clock)

        @g.time()
        def run() -> None:
            clock.advance(4)

        run()
        assert g.get() == 4.0
