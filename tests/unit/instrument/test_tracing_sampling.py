"""Samplers: ratio within statistical bounds, deterministic on the trace id, never half a trace."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased as OtelRatio

from tsengine.instrument import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    SpanContext,
    SpanKind,
    TraceIdRatioBased,
    Tracer,
    extract,
    inject,
)

from .conftest import FakeClock

TRACES = 20_000


def test_ratio_keeps_the_expected_fraction_within_four_sigma(clock: FakeClock) -> None:
    rate = 0.25
    tracer = Tracer(sampler=ParentBased(TraceIdRatioBased(rate)), clock=clock, max_traces=TRACES)
    kept = 0
    for _ in range(TRACES):
        with tracer.start_as_current_span("root") as root:
            kept += root.is_recording()
    sigma = math.sqrt(TRACES * rate * (1 - rate))
    assert abs(kept - TRACES * rate) < 4 * sigma, kept
    assert len(tracer.store) == kept  # only sampled traces are held


def test_children_follow_the_root_decision(clock: FakeClock) -> None:
    tracer = Tracer(sampler=ParentBased(TraceIdRatioBased(0.5)), clock=clock, max_traces=10_000)
    for _ in range(500):
        with tracer.start_as_current_span("root") as root, tracer.start_as_current_span("child") as child:
            grandchild = tracer.start_span("grandchild")
            grandchild.end()
        assert root.is_recording() is False  # ended
        assert child.trace_flags == root.trace_flags == grandchild.trace_flags
    for trace_id in tracer.store.trace_ids():
        assert len(tracer.finished_spans(trace_id)) == 3  # kept whole or not at all


def test_two_services_deciding_independently_agree(clock: FakeClock) -> None:
    """Service B samples remote parents with its own ratio sampler: same rate, same decision."""
    service_a = Tracer(sampler=TraceIdRatioBased(0.3), clock=clock)
    service_b = Tracer(sampler=TraceIdRatioBased(0.3), clock=clock)
    kept = 0
    for _ in range(2000):
        headers: dict[str, str] = {}
        with service_a.start_as_current_span("a") as a:
            inject(headers)
        b = service_b.start_span("b", SpanKind.SERVER, parent=extract(headers))
        assert b.trace_flags == a.trace_flags
        kept += a.trace_flags
    assert 0 < kept < 2000  # both decisions were exercised


@given(trace_id=st.integers(min_value=1, max_value=(1 << 128) - 1), rate=st.floats(0.0, 1.0))
def test_ratio_decision_equals_opentelemetrys(trace_id: int, rate: float) -> None:
    ours = TraceIdRatioBased(rate).should_sample(None, trace_id, "x", SpanKind.INTERNAL)
    theirs = OtelRatio(rate).should_sample(None, trace_id, "x").decision is Decision.RECORD_AND_SAMPLE
    assert ours == theirs


def test_ratio_edges_and_validation() -> None:
    ids = [random.getrandbits(128) or 1 for _ in range(1000)]
    assert all(TraceIdRatioBased(1.0).should_sample(None, t, "x", SpanKind.INTERNAL) for t in ids)
    assert not any(TraceIdRatioBased(0.0).should_sample(None, t, "x", SpanKind.INTERNAL) for t in ids)
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="sampling rate"):
            TraceIdRatioBased(bad)


def test_parent_based_branches() -> None:
    sampler = ParentBased(ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON)
    kind = SpanKind.SERVER
    assert not sampler.should_sample(None, 5, "root", kind)  # root: ALWAYS_OFF
    assert sampler.should_sample(SpanContext(5, 6, 1, "", True), 5, "x", kind)
    assert sampler.should_sample(SpanContext(5, 6, 0, "", True), 5, "x", kind)  # overridden
    assert sampler.should_sample(SpanContext(5, 6, 1, "", False), 5, "x", kind)
    assert not sampler.should_sample(SpanContext(5, 6, 0, "", False), 5, "x", kind)
    assert ALWAYS_ON.describe() == "AlwaysOnSampler"
    assert sampler.describe() == "ParentBased{root:AlwaysOffSampler}"


@given(
    rate=st.sampled_from([0.0, 0.1, 0.5, 0.999, 1.0]),
    parent_flags=st.sampled_from([None, 0, 1]),
    remote=st.booleans(),
)
def test_the_tracers_inline_decision_equals_the_samplers(
    rate: float, parent_flags: int | None, remote: bool
) -> None:
    sampler = ParentBased(ALWAYS_ON if rate == 1.0 else TraceIdRatioBased(rate))
    tracer = Tracer(sampler=sampler)
    assert tracer._root_bound is not None  # the inline path is the one under test
    parent = (
        None
        if parent_flags is None
        else SpanContext(random.getrandbits(128) or 1, 7, parent_flags, "", remote)
    )
    for _ in range(50):
        span = tracer.start_span("x", parent=parent)
        expected = sampler.should_sample(parent, span.trace_id, "x", SpanKind.INTERNAL)
        assert span.trace_flags == int(expected)


def test_a_custom_sampler_is_called() -> None:
    calls: list[str] = []

    class EveryOther:
        def should_sample(self, parent: object, trace_id: int, name: str, kind: SpanKind) -> bool:
            calls.append(name)
            return len(calls) % 2 == 0

        def describe(self) -> str:
            return "EveryOther"

    tracer = Tracer(sampler=EveryOther())
    assert tracer._root_bound is None
    flags = [tracer.start_span(f"s{i}").trace_flags for i in range(4)]
    assert flags == [0, 1, 0, 1] and calls == ["s0", "s1", "s2", "s3"]
