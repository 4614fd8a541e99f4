"""Each rule kind through the state machine: crafted rows in a real engine, time from a
ManualClock; every kind pends, fires once ``for`` has passed, and resolves (Prometheus
semantics: a pending alert whose condition goes false is forgotten, a firing one resolves)."""

from __future__ import annotations

from typing import Any

from server.alerting import parse_rule
from server.alerting.evaluator import evaluate_rule
from server.alerting.state import Instance, step_rule
from tsengine.clock import ManualClock

S = 1_000_000_000
Groups = dict[tuple[tuple[str, str], ...], str]


class Lifecycle:
    """One rule's instances across evaluations, as the service keeps them."""

    def __init__(self, engine: Any, clock: ManualClock, doc: dict[str, Any]) -> None:
        self.engine, self.clock, self.rule = engine, clock, parse_rule(doc)
        self.instances: dict[str, Instance] = {}

    def step(self) -> Groups:
        now = self.clock.now_ns()
        samples = evaluate_rule(self.engine, self.rule, now)
        keep, _, dropped = step_rule(self.rule, samples, self.instances, now)
        for iid in dropped:
            del self.instances[iid]
        self.instances.update({i.id: i for i in keep})
        hidden = {"alertname", "severity"}
        return {
            tuple(sorted((k, v) for k, v in i.labels.items() if k not in hidden)): i.state
            for i in self.instances.values()
        }


def requests(engine: Any, clock: ManualClock, service: str, ok: int, errors: int) -> None:
    now = clock.now_ns()
    rows = [{"time": now - n, "service": service, "status": "500" if n < errors else "200", "value": 0.1}
            for n in range(ok + errors)]  # fmt: skip
    engine.write_rows("http", rows, tags=["service", "status"])


def test_ratio_pends_fires_resolves(engine: Any, clock: ManualClock) -> None:
    rule = Lifecycle(
        engine,
        clock,
        {
            "name": "errors",
            "kind": "ratio",
            "window": "1m",
            "group_by": ["service"],
            "threshold": 0.1,
            "for": "2m",
            "numerator": {"table": "http", "agg": "count", "where": {"status": "=~5.."}},
            "denominator": {"table": "http", "agg": "count"},
        },
    )
    api = (("service", "api"),)
    for expected in ("pending", "pending", "firing"):
        requests(engine, clock, "api", ok=5, errors=5)
        requests(engine, clock, "web", ok=10, errors=0)
        assert rule.step() == {api: expected}
        clock.advance(60)
    requests(engine, clock, "api", ok=10, errors=0)
    assert rule.step() == {api: "resolved"}
    [inst] = rule.instances.values()
    assert inst.value == 0.5 and inst.fired_at_ns is not None


def test_ratio_pending_goes_inactive_before_for(engine: Any, clock: ManualClock) -> None:
    rule = Lifecycle(
        engine,
        clock,
        {
            "name": "errors",
            "kind": "ratio",
            "window": "1m",
            "threshold": 0.1,
            "for": "2m",
            "numerator": {"table": "http", "agg": "count", "where": {"status": "500"}},
            "denominator": {"table": "http", "agg": "count"},
        },
    )
    requests(engine, clock, "api", ok=1, errors=1)
    assert rule.step() == {(): "pending"}
    clock.advance(60)
    requests(engine, clock, "api", ok=10, errors=0)
    assert rule.step() == {}  # never fired: forgotten, nothing to resolve


def test_sql_pends_fires_resolves(engine: Any, clock: ManualClock) -> None:
    rule = Lifecycle(
        engine,
        clock,
        {
            "name": "disk",
            "kind": "sql",
            "op": ">",
            "threshold": 90,
            "for": "2m",
            "sql": "SELECT host, max(value) AS value FROM disk "
            "WHERE time > $now - INTERVAL 1 MINUTE GROUP BY ALL",
        },
    )
    a = (("host", "a"),)
    for expected in ("pending", "pending", "firing"):
        now = clock.now_ns()
        rows = [{"time": now, "host": "a", "value": 95.0}, {"time": now, "host": "b", "value": 50.0}]
        engine.write_rows("disk", rows, tags=["host"])
        assert rule.step() == {a: expected}
        clock.advance(60)
    engine.write_rows("disk", [{"time": clock.now_ns(), "host": "a", "value": 60.0}], tags=["host"])
    assert rule.step() == {a: "resolved"}


def test_anomaly_pends_fires_resolves(engine: Any, clock: ManualClock) -> None:
    # one row per minute around 10 for 13 minutes (at the middle of each 1 m window), then a spike
    t = clock.now_ns()
    base = [{"time": t - k * 60 * S + 30 * S, "service": "shop", "value": 10.0 + (k % 3) - 1}
            for k in range(2, 15)]  # fmt: skip
    engine.write_rows("orders", base, tags=["service"])
    engine.write_rows("orders", [{"time": t - 10 * S, "service": "shop", "value": 40.0}], tags=["service"])
    rule = Lifecycle(
        engine,
        clock,
        {
            "name": "orders",
            "kind": "anomaly",
            "table": "orders",
            "group_by": ["service"],
            "window": "1m",
            "baseline": "12m",
            "min_baseline": 10,
            "threshold": 3,
            "for": "20s",
        },
    )
    shop = (("service", "shop"),)
    assert rule.step() == {shop: "pending"}
    clock.advance(20)  # the windows move by 20 s: each row stays in the same window
    assert rule.step() == {shop: "firing"}
    clock.advance(60)  # the spike is now in the baseline; the current window is ordinary again
    engine.write_rows("orders", [{"time": clock.now_ns() - 5 * S, "service": "shop", "value": 10.0}],
                      tags=["service"])  # fmt: skip
    assert rule.step() == {shop: "resolved"}


def test_absence_pends_fires_resolves(engine: Any, clock: ManualClock) -> None:
    rule = Lifecycle(
        engine,
        clock,
        {
            "name": "gone",
            "kind": "absence",
            "table": "heartbeat",
            "group_by": ["service"],
            "window": "2m",
            "lookback": "1h",
            "for": "1m",
        },
    )

    def beat(*services: str) -> None:
        rows = [{"time": clock.now_ns(), "service": s, "value": 1.0} for s in services]
        engine.write_rows("heartbeat", rows, tags=["service"])

    beat("api", "worker")
    assert rule.step() == {}
    clock.advance(60)
    beat("worker")
    assert rule.step() == {}  # api's last beat is 1 m old: within the window
    clock.advance(60)
    beat("worker")
    api = (("service", "api"), ("table", "heartbeat"))
    assert rule.step() == {api: "pending"}
    clock.advance(60)
    beat("worker")
    assert rule.step() == {api: "firing"}
    assert rule.instances[next(iter(rule.instances))].value == 180.0  # seconds since the last beat
    clock.advance(30)
    beat("api", "worker")
    assert rule.step() == {api: "resolved"}
