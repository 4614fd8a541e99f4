"""A state machine drives labelled metrics and checks the exposition against a dict model."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client.parser import text_string_to_metric_families

from tsengine.instrument import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .strategies import label_values

amounts = st.floats(min_value=0, max_value=1e6, allow_nan=False)
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
BUCKETS = (0.5, 10.0, 1000.0)


class MetricsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = CollectorRegistry()
        self.counter = Counter("ops_total", "Ops.", ["k"], registry=self.registry)
        self.gauge = Gauge("level", "Level.", ["k"], registry=self.registry)
        self.histogram = Histogram("size", "Size.", ["k"], registry=self.registry, buckets=BUCKETS)
        self.counts: dict[str, float] = defaultdict(float)
        self.levels: dict[str, float] = {}
        self.observed: dict[str, list[float]] = defaultdict(list)

    @rule(k=label_values, amount=amounts)
    def inc(self, k: str, amount: float) -> None:
        self.counter.labels(k).inc(amount)
        self.counts[k] += amount

    @rule(k=label_values, value=values)
    def set(self, k: str, value: float) -> None:
        self.gauge.labels(k).set(value)
        self.levels[k] = value

    @rule(k=label_values, value=values)
    def observe(self, k: str, value: float) -> None:
        self.histogram.labels(k).observe(value)
        self.observed[k].append(value)

    @rule(k=label_values)
    def remove(self, k: str) -> None:
        self.counter.remove(k)
        self.counts.pop(k, None)

    @invariant()
    def exposition_matches_model(self) -> None:
        text = generate_latest(self.registry.collect()).decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        counts = {s.labels["k"]: s.value for s in fams["ops"].samples} if "ops" in fams else {}
        assert counts.keys() == self.counts.keys()
        for k, v in self.counts.items():
            assert math.isclose(counts[k], v, rel_tol=1e-9, abs_tol=1e-6)
        levels = {s.labels["k"]: s.value for s in fams["level"].samples} if "level" in fams else {}
        assert levels == self.levels
        hist = fams.get("size")
        samples = hist.samples if hist else []
        for k, obs in self.observed.items():
            mine = {(s.name, s.labels.get("le")): s.value for s in samples if s.labels["k"] == k}
            assert mine[("size_count", None)] == len(obs)
            for bound in BUCKETS:
                assert mine[("size_bucket", repr(bound))] == sum(1 for v in obs if v <= bound)
            assert mine[("size_bucket", "+Inf")] == len(obs)


MetricsModel.TestCase.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
TestMetricsModel = MetricsModel.TestCase
