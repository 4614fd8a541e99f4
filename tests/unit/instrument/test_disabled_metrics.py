"""METRICS_ENABLED=false / TELEMETRY_ENABLED=false reach metrics built directly with the constructors.

A module-level ``Counter(...)`` (prometheus_client style) exists before ``configure()`` runs, so
the switch has to reach metrics, children and Timers that were already handed out: nothing is
recorded or collected while off, and recording resumes when switched back on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import tsengine.instrument as ti
from tsengine.instrument import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    Telemetry,
    TelemetryConfig,
    Timer,
)
from tsengine.instrument._runtime import get_telemetry

from .conftest import FakeClock

SWITCHES = [
    pytest.param({"enabled": False}, id="TELEMETRY_ENABLED=false"),
    pytest.param({"metrics_enabled": False}, id="METRICS_ENABLED=false"),
]


@dataclass
class Built:
    """Metrics as an application builds them at import time, plus what it keeps of them."""

    counter: Counter
    labelled: Counter
    bound: Any  # labelled.labels("GET"), kept in a module global
    gauge: Gauge
    histogram: Histogram
    summary: Summary
    timer: Timer  # Timer(histogram), kept
    timed: Any  # a function decorated with @histogram.time() at import time


def build(registry: CollectorRegistry, clock: FakeClock) -> Built:
    histogram = Histogram("rv_seconds", "h", registry=registry, clock=clock)

    @histogram.time()
    def timed() -> None:
        clock.advance(0.5)

    labelled = Counter("rv_calls_total", "c", ["method"], registry=registry)
    return Built(
        counter=Counter("rv_disabled_total", "d", registry=registry),
        labelled=labelled,
        bound=labelled.labels("GET"),
        gauge=Gauge("rv_depth", "g", registry=registry, clock=clock),
        histogram=histogram,
        summary=Summary("rv_size_bytes", "s", registry=registry, clock=clock),
        timer=Timer(histogram, clock=clock),
        timed=timed,
    )


def update(m: Built, clock: FakeClock) -> None:
    """One of every update an application makes."""
    m.counter.inc(5)
    m.labelled.labels("GET").inc()
    m.labelled.labels(method="POST").inc(2)  # a new label set
    m.bound.inc()
    m.gauge.set(7)
    m.gauge.inc(3)
    with m.gauge.track_inprogress():
        pass
    with m.gauge.time():
        clock.advance(0.25)
    m.histogram.observe(0.3)
    with m.histogram.time():
        clock.advance(0.1)
    with m.timer:
        clock.advance(0.2)
    m.timed()
    m.summary.observe(10)
    with pytest.raises(ValueError, match="boom"), m.counter.count_exceptions():
        raise ValueError("boom")


def values(m: Built) -> dict[str, Any]:
    """What was recorded, read from the metrics themselves (not through the registry)."""
    return {fam.name: [(s.name, s.labels, s.value) for s in fam.samples] for fam in _families(m)}


def _families(m: Built) -> list[Any]:
    return [
        f for metric in (m.counter, m.labelled, m.gauge, m.histogram, m.summary) for f in metric.collect()
    ]


@pytest.fixture
def rt(clock: FakeClock) -> Iterator[Telemetry]:
    telemetry = Telemetry(TelemetryConfig(system_metrics_enabled=False), clock=clock)
    yield telemetry
    telemetry.stop()


@pytest.mark.parametrize("switch", SWITCHES)
def test_metrics_built_before_the_switch_record_nothing_while_off(
    switch: dict[str, bool], rt: Telemetry, clock: FakeClock
) -> None:
    m = build(rt.registry, clock)  # "import time": before configure() turns metrics off
    before = values(m)
    rt.apply(rt.config.replace(**switch))

    update(m, clock)

    after = values(m)
    assert after.pop("rv_calls") == [
        ("rv_calls_total", {"method": "GET"}, 0.0),
        ("rv_calls_total", {"method": "POST"}, 0.0),  # a label set first seen while off: zero
    ]
    before.pop("rv_calls")
    assert after == before  # nothing recorded
    assert m.counter.get() == 0.0 and m.bound.get() == 0.0 and m.gauge.get() == 0.0
    assert rt.registry.collect() == []  # nothing for /metrics or an exporter
    assert not m.counter.enabled


@pytest.mark.parametrize("switch", SWITCHES)
def test_switching_back_on_resumes_recording_everywhere(
    switch: dict[str, bool], rt: Telemetry, clock: FakeClock
) -> None:
    m = build(rt.registry, clock)
    on = rt.config
    rt.apply(on.replace(**switch))
    update(m, clock)
    rt.apply(on)

    update(m, clock)

    assert m.counter.get() == 5 + 1  # inc(5) and the counted exception
    assert m.bound.get() == 2.0  # labels("GET").inc() and the pre-bound child
    assert m.labelled.labels("POST").get() == 2.0
    assert m.gauge.get() == 0.25  # the last update: gauge.time()
    count = rt.registry.get_sample_value("rv_seconds_count")
    assert count == 4  # observe, histogram.time(), the kept Timer, the decorated call
    assert rt.registry.get_sample_value("rv_size_bytes_sum") == 10
    assert rt.registry.get_sample_value("rv_disabled_total") == 6


@pytest.mark.parametrize("switch", SWITCHES)
def test_metrics_built_while_off_are_off_and_turn_on_later(
    switch: dict[str, bool], rt: Telemetry, clock: FakeClock
) -> None:
    on = rt.config
    rt.apply(on.replace(**switch))
    m = build(rt.registry, clock)
    update(m, clock)
    assert all(s.value == 0 for fam in _families(m) for s in fam.samples)
    assert rt.registry.collect() == []

    rt.apply(on)
    m.bound.inc()  # the child bound while off records now
    m.labelled.labels("PUT").inc()
    m.timed()
    assert rt.registry.get_sample_value("rv_calls_total", {"method": "GET"}) == 1
    assert rt.registry.get_sample_value("rv_calls_total", {"method": "PUT"}) == 1
    assert rt.registry.get_sample_value("rv_seconds_count") == 1


def test_default_registry_follows_configure() -> None:
    # A module-level metric in the default registry, then configure() from the environment.
    previous = get_telemetry().config
    counter = Counter("rv_module_level_total", "d", ["kind"])
    bound = counter.labels("a")
    try:
        ti.configure(environ={"METRICS_ENABLED": "false", "SYSTEM_METRICS_ENABLED": "false"})
        counter.labels("a").inc(5)
        bound.inc()
        counter.labels("b").inc()
        assert bound.get() == 0 and counter.labels("b").get() == 0
        assert REGISTRY.collect() == []

        ti.configure(environ={"SYSTEM_METRICS_ENABLED": "false"})
        bound.inc()
        assert REGISTRY.get_sample_value("rv_module_level_total", {"kind": "a"}) == 1
    finally:
        ti.configure(previous)
        REGISTRY.unregister(counter)


def test_self_metrics_keep_counting_for_health_while_metrics_are_off(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(metrics_enabled=False))
    rt.record_error("probe")
    assert rt.health()["errors"] == {"probe": 1.0}
    assert rt.registry.collect() == []


def test_unregistered_metric_has_no_switch(rt: Telemetry) -> None:
    free = Counter("rv_free_total", "c", registry=None)
    rt.apply(rt.config.replace(metrics_enabled=False))
    free.inc()
    assert free.get() == 1.0


def test_switch_under_concurrent_increments_keeps_exact_totals(rt: Telemetry) -> None:
    # While threads increment, the switch flips on and off; once it is left on, every
    # increment after that is counted exactly, and the total never exceeds what was done.
    c = Counter("rv_race_total", "c", ["t"], registry=rt.registry)
    children = [c.labels(str(i)) for i in range(4)]
    on, off = rt.config, rt.config.replace(metrics_enabled=False)
    stop = threading.Event()
    done = [0] * 4

    def work(i: int) -> None:
        while not stop.is_set():
            children[i].inc()
            done[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):
        rt.apply(off)
        rt.apply(on)
    stop.set()
    for t in threads:
        t.join()
    assert all(0 < children[i].get() <= done[i] for i in range(4))

    before = [ch.get() for ch in children]
    for ch in children:
        for _ in range(100):
            ch.inc()
    assert [ch.get() for ch in children] == [b + 100 for b in before]
