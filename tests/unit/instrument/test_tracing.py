"""The tracer: spans, context across await and tasks, errors, the decorator, the store, wiring."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from tsengine.instrument import (
    ALWAYS_OFF,
    ConfigError,
    EventCategory,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    Telemetry,
    TelemetryConfig,
    Tracer,
    billing_telemetry,
    configure,
    current_span,
    get_telemetry,
    get_tracer,
    inject,
    telemetry,
)
from tsengine.instrument._tracing.span import current_span_var

from .conftest import FakeClock


@pytest.fixture
def trt(clock: FakeClock) -> Iterator[Telemetry]:
    """A runtime with tracing on (no exporter, no sampler thread)."""
    rt = Telemetry(
        TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=True), clock=clock
    )
    yield rt
    rt.stop()


@pytest.fixture
def tracer(trt: Telemetry) -> Tracer:
    return trt.tracer


def by_name(spans: list[Span]) -> dict[str, Span]:
    return {s.name: s for s in spans}


def test_nested_spans_form_one_trace_with_parent_links(tracer: Tracer, clock: FakeClock) -> None:
    with tracer.start_as_current_span("root", attributes={"a": 1}) as root:
        assert current_span() is root
        clock.advance(0.5)
        with tracer.start_as_current_span("child", SpanKind.CLIENT) as child:
            child.set_attribute("b", "x")
            child.add_event("retry", {"n": 2})
            clock.advance(0.25)
        assert current_span() is root
    assert current_span() is None
    spans = by_name(tracer.finished_spans(root.trace_id))
    assert set(spans) == {"root", "child"}
    assert spans["child"].trace_id == root.trace_id
    assert spans["child"].parent_span_id == root.span_id
    assert root.parent_span_id == 0
    assert spans["child"].kind is SpanKind.CLIENT
    assert spans["child"].duration_ns == 250_000_000
    assert root.duration_ns == 750_000_000
    assert dict(root.attributes) == {"a": 1}
    assert spans["child"].events[0][0] == "retry"
    assert spans["child"].events[0][2] == {"n": 2}
    # Hex lookup works as well.
    assert len(tracer.finished_spans(f"{root.trace_id:032x}")) == 2


def test_start_span_is_not_current_and_explicit_parents(tracer: Tracer) -> None:
    span = tracer.start_span("background")
    assert current_span() is None
    child = tracer.start_span("child", parent=span)
    assert child.trace_id == span.trace_id and child.parent_span_id == span.span_id
    remote = SpanContext(0xABC, 0xDEF, 1, "k=v", is_remote=True)
    continued = tracer.start_span("continued", SpanKind.SERVER, parent=remote)
    assert (continued.trace_id, continued.parent_span_id, continued.trace_state) == (0xABC, 0xDEF, "k=v")
    assert continued.parent_remote
    with tracer.start_as_current_span("outer"):
        root = tracer.start_span("new trace", parent=None)
        assert root.parent_span_id == 0
    for s in (child, continued, root, span):
        s.end()
    assert {s.name for s in tracer.finished_spans()} == {
        "background",
        "child",
        "continued",
        "new trace",
        "outer",
    }


async def test_context_follows_await_and_tasks_and_does_not_leak(tracer: Tracer) -> None:
    seen: dict[str, int] = {}

    async def work(label: str) -> None:
        await asyncio.sleep(0)  # a real suspension point: the context must survive it
        with tracer.start_as_current_span(label) as span:
            await asyncio.sleep(0)
            assert current_span() is span
            seen[label] = span.parent_span_id

    async def request(label: str) -> int:
        with tracer.start_as_current_span(f"request {label}") as span:
            await asyncio.gather(
                asyncio.create_task(work(f"{label}.a")), asyncio.create_task(work(f"{label}.b"))
            )
            await work(f"{label}.c")
            return span.span_id

    ids = await asyncio.gather(request("1"), request("2"))
    for label, parent_id in zip(("1", "2"), ids, strict=True):
        for part in "abc":
            assert seen[f"{label}.{part}"] == parent_id
    assert current_span() is None
    trace_ids = {s.trace_id for s in tracer.finished_spans()}
    assert len(trace_ids) == 2  # two concurrent requests, two traces, nothing crossed over


def test_threads_get_their_own_context(tracer: Tracer) -> None:
    seen: list[Span | None] = []
    with tracer.start_as_current_span("main"):
        t = threading.Thread(target=lambda: seen.append(current_span()))
        t.start()
        t.join()
        # copy_context carries it explicitly, as with loop.run_in_executor/asyncio.to_thread.
        ctx = contextvars.copy_context()
        seen.append(ctx.run(current_span))
    assert seen[0] is None
    assert seen[1] is not None and seen[1].name == "main"


def test_exception_marks_every_span_it_leaves_and_is_recorded_once(tracer: Tracer) -> None:
    with (
        pytest.raises(KeyError),
        tracer.start_as_current_span("root") as root,
        tracer.start_as_current_span("middle") as middle,
        tracer.start_as_current_span("leaf") as leaf,
    ):
        raise KeyError("missing")
    for span in (root, middle, leaf):
        assert span.status_code is StatusCode.ERROR
        assert "KeyError" in span.status_message
    assert [e[0] for e in leaf.events] == ["exception"]
    attrs = leaf.events[0][2]
    assert attrs["exception.type"] == "KeyError"
    assert "missing" in attrs["exception.message"]
    assert "raise KeyError" in attrs["exception.stacktrace"]
    assert middle.events == [] and root.events == []


def test_caught_exception_leaves_the_parent_unset(tracer: Tracer) -> None:
    with tracer.start_as_current_span("root") as root:
        try:
            with tracer.start_as_current_span("leaf") as leaf:
                raise ValueError("handled")
        except ValueError:
            pass
    assert leaf.status_code is StatusCode.ERROR
    assert root.status_code is StatusCode.UNSET


def test_status_rules_and_nothing_after_end(tracer: Tracer) -> None:
    span = tracer.start_span("s")
    span.set_status(StatusCode.ERROR, "bad")
    span.set_status(StatusCode.UNSET)  # never overrides
    assert span.status_code is StatusCode.ERROR
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "later")  # OK is final
    assert (span.status_code, span.status_message) == (StatusCode.OK, "")
    span.end()
    end = span.end_time_ns
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("renamed")
    span.end()
    assert (span.attributes, span.events, span.name, span.end_time_ns) == ({}, [], "s", end)
    assert len(tracer.finished_spans()) == 1  # ended twice, stored once


def test_attribute_and_event_limits_count_the_dropped(tracer: Tracer) -> None:
    span = tracer.start_span("s")
    for i in range(200):
        span.set_attribute(f"k{i}", i)
        span.add_event(f"e{i}")
    span.set_attribute("k0", "replaced")  # an existing key is always updated
    assert len(span.attributes) == 128 and span.attributes["k0"] == "replaced"
    assert len(span.events) == 128
    assert span.dropped == 72 + 72


async def test_decorator_sync_and_async(tracer: Tracer) -> None:
    @tracer.traced
    def plain(x: int) -> int:
        return x + 1

    @tracer.traced("fetch", kind=SpanKind.CLIENT, attributes={"peer": "db"})
    async def fetch() -> str:
        await asyncio.sleep(0)
        span = current_span()
        assert span is not None
        return span.name

    @tracer.traced
    async def broken() -> None:
        raise RuntimeError("nope")

    with tracer.start_as_current_span("root") as root:
        assert plain(1) == 2
        assert await fetch() == "fetch"
        with pytest.raises(RuntimeError):
            await broken()
    spans = by_name(tracer.finished_spans(root.trace_id))
    assert spans["test_decorator_sync_and_async.<locals>.plain"].parent_span_id == root.span_id
    assert spans["fetch"].kind is SpanKind.CLIENT and spans["fetch"].attributes["peer"] == "db"
    assert spans["test_decorator_sync_and_async.<locals>.broken"].status_code is StatusCode.ERROR
    with pytest.raises(TypeError, match="generator"):

        @tracer.traced
        def gen() -> Iterator[int]:
            yield 1


def test_unsampled_spans_propagate_but_record_nothing(clock: FakeClock) -> None:
    tracer = Tracer(sampler=ALWAYS_OFF, clock=clock)
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording() and root.trace_id and root.trace_flags == 0
        root.set_attribute("x", 1)
        with tracer.start_as_current_span("child") as child:
            assert child.trace_id == root.trace_id
    assert root.attributes == {} and tracer.finished_spans() == []


def test_disabled_tracer_hands_out_idless_noop_spans(clock: FakeClock) -> None:
    tracer = Tracer(enabled=False, clock=clock)
    with tracer.start_as_current_span("x") as span:
        assert span.trace_id == 0 and not span.is_recording()
        assert current_span() is None  # nothing to propagate
    assert tracer.finished_spans() == []


def test_store_keeps_the_newest_traces_only(clock: FakeClock) -> None:
    tracer = Tracer(max_traces=3, clock=clock)
    roots = []
    for i in range(5):
        with tracer.start_as_current_span(f"t{i}") as root, tracer.start_as_current_span("child"):
            pass
        roots.append(root)
    assert tracer.store.trace_ids() == [r.trace_id for r in roots[2:]]
    assert len(tracer.finished_spans()) == 6
    stats = tracer.store.stats()
    assert stats["traces_evicted_total"] == 2 and stats["traces_in_memory"] == 3


def test_store_bounds_spans_per_trace(clock: FakeClock) -> None:
    tracer = Tracer(clock=clock)
    tracer.store.max_spans_per_trace = 10
    with tracer.start_as_current_span("root"):
        for _ in range(20):
            with tracer.start_as_current_span("child"):
                pass
    assert len(tracer.finished_spans()) == 10
    assert tracer.store.spans_dropped == 11  # 10 children and the root did not fit


def test_events_are_stamped_with_trace_and_span_ids(trt: Telemetry, tracer: Tracer) -> None:
    with tracer.start_as_current_span("checkout") as span:
        trt.events.track("order_placed", category=EventCategory.BUSINESS)
    trt.events.track("outside", category=EventCategory.BUSINESS)
    inside, outside = trt.events.get_events(name="order_placed")[0], trt.events.get_events(name="outside")[0]
    assert (inside.trace_id, inside.span_id) == (f"{span.trace_id:032x}", f"{span.span_id:016x}")
    assert (outside.trace_id, outside.span_id) == (None, None)


async def test_business_decorators_create_spans_under_the_current_one(trt: Telemetry, tracer: Tracer) -> None:
    @billing_telemetry("create_invoice", runtime=trt)
    def create_invoice() -> None:
        return None

    @telemetry("charge", domain="payment", runtime=trt, capture_args=["amount"])
    async def charge(amount: float, card: str) -> None:
        await asyncio.sleep(0)
        raise ValueError("declined")

    with tracer.start_as_current_span("request") as root:
        create_invoice()
        with pytest.raises(ValueError):
            await charge(12.5, "4111")
    spans = by_name(tracer.finished_spans(root.trace_id))
    invoice, failed = spans["billing.create_invoice"], spans["payment.charge"]
    assert invoice.parent_span_id == root.span_id and invoice.status_code is StatusCode.UNSET
    assert failed.parent_span_id == root.span_id and failed.status_code is StatusCode.ERROR
    assert failed.attributes["tsengine.arg.amount"] == "12.5" and "tsengine.arg.card" not in failed.attributes
    assert [e[0] for e in failed.events] == ["exception"]
    # The decorator's own event is stamped with the call's span.
    ev = trt.events.get_events(name="create_invoice")[0]
    assert ev.span_id == f"{invoice.span_id:016x}"


def test_configure_wires_and_unwires_the_default_runtime() -> None:
    rt = get_telemetry()
    configure(
        TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=True, tracing_max_traces=7)
    )
    tracer = get_tracer()
    assert tracer is rt.tracer and tracer.enabled and tracer.store.max_traces == 7
    assert len(rt.hooks.request) == 1 and len(rt.hooks.call) == 1
    assert rt.health()["components"]["tracing"]["enabled"] is True
    configure(TelemetryConfig(system_metrics_enabled=False, distributed_tracing_enabled=True))
    assert len(rt.hooks.request) == 1  # applying again does not register twice
    configure(TelemetryConfig(system_metrics_enabled=False))
    assert not tracer.enabled and rt.hooks.request == () and rt.hooks.call == ()


def test_sampling_rate_and_exporter_come_from_the_environment() -> None:
    env = {
        "DISTRIBUTED_TRACING_ENABLED": "true",
        "TRACING_SAMPLING_RATE": "0.25",
        "TRACING_EXPORTER_ENDPOINT": "http://127.0.0.1:4318",
        "TRACING_EXPORTER_TOKEN": "secret",
        "TRACING_EXPORTER_QUEUE_SIZE": "100",
        "SYSTEM_METRICS_ENABLED": "false",
    }
    config = configure(environ=env)
    rt = get_telemetry()
    assert rt.tracer.sampler.describe() == "ParentBased{root:TraceIdRatioBased{0.25}}"
    (exporter,) = rt.tracer.processors
    assert exporter.endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]
    assert exporter.max_queue == 100  # type: ignore[attr-defined]
    assert not exporter.running  # type: ignore[attr-defined]  # configure() starts no thread
    assert config.to_dict()["tracing_exporter_token"] == "***"
    configure(environ={})
    assert rt.tracer.processors == ()


def test_bad_exporter_endpoint_names_the_variable() -> None:
    env = {"DISTRIBUTED_TRACING_ENABLED": "1", "TRACING_EXPORTER_ENDPOINT": "ftp://x"}
    with pytest.raises(ConfigError) as err:
        configure(environ=env)
    assert err.value.key == "TRACING_EXPORTER_ENDPOINT"
    with pytest.raises(ConfigError, match="TRACING_SAMPLING_RATE"):
        configure(environ={"TRACING_SAMPLING_RATE": "1.5"})


def test_health_shows_counters_and_the_newest_traces(
    trt: Telemetry, tracer: Tracer, clock: FakeClock
) -> None:
    with tracer.start_as_current_span("GET /a"):
        clock.advance(0.01)
        with pytest.raises(ValueError), tracer.start_as_current_span("db"):
            raise ValueError("x")
    with tracer.start_as_current_span("GET /b"):
        pass
    health = trt.health()["components"]["tracing"]
    assert health["traces_in_memory"] == 2 and health["spans_in_memory"] == 3
    newest, older = health["recent_traces"]
    assert (newest["root"], newest["spans"], newest["errors"]) == ("GET /b", 1, 0)
    assert (older["root"], older["spans"], older["errors"], older["duration_ms"]) == (
        "GET /a",
        2,
        1,
        10.0,
    )  # caught inside the root


def test_disabled_spans_are_never_injected(clock: FakeClock) -> None:
    headers: dict[str, str] = {}
    inject(headers, Tracer(enabled=False, clock=clock).start_span("x"))
    assert headers == {}


def test_a_stopped_runtime_gets_a_new_exporter_when_configured_again() -> None:
    env = {"DISTRIBUTED_TRACING_ENABLED": "1", "TRACING_EXPORTER_ENDPOINT": "http://127.0.0.1:4318"}
    configure(environ=env)
    rt = get_telemetry()
    (first,) = rt.tracer.processors
    rt.stop(0.1)
    configure(environ=env)
    (second,) = rt.tracer.processors
    assert second is not first and not second.is_shut_down  # type: ignore[attr-defined]


async def test_a_span_exited_in_another_task_still_ends(
    tracer: Tracer, caplog: pytest.LogCaptureFixture
) -> None:
    span = tracer.start_as_current_span("moved")
    span.__enter__()

    async def elsewhere() -> None:
        span.__exit__(None, None, None)

    await asyncio.create_task(elsewhere())
    assert span.is_ended and "another context" in caplog.text
    assert current_span() is span  # this context still has it: the caller's bug, logged, not fatal
    current_span_var.set(None)


def test_the_tracers_inlined_constructor_matches_span_init(tracer: Tracer) -> None:
    built = tracer.start_span("x")
    init = Span(tracer, "x", SpanKind.INTERNAL, 1, 2, 0, False, 1, "", 5, None, False)
    assert {n for n in Span.__slots__ if hasattr(built, n)} == {n for n in Span.__slots__ if hasattr(init, n)}
