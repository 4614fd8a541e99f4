"""Each rule kind over crafted rows in a real engine, with time driven by a ManualClock."""

from __future__ import annotations

from typing import Any

import pytest

from server.alerting import parse_rule
from server.alerting.evaluator import Sample, evaluate_rule
from server.alerting.rules import Rule
from server.alerting.state import step_rule
from tsengine.clock import ManualClock
from tsengine.errors import InvalidInput, QueryError, SandboxViolation

S = 1_000_000_000


def ev(engine: Any, clock: ManualClock, doc: dict[str, Any]) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in evaluate_rule(engine, parse_rule(doc), clock.now_ns())
    }


def write(
    engine: Any, table: str, ago_s: float, clock: ManualClock, tags: dict[str, str], *, value: float
) -> None:
    engine.write_rows(
        table, [{"time": clock.now_ns() - int(ago_s * S), **tags, "value": value}], tags=list(tags)
    )


def test_threshold_aggregates_per_group_over_the_window(engine: Any, clock: ManualClock) -> None:
    for ago, v in ((400, 100.0), (200, 1.0), (100, 3.0)):
        write(engine, "lat", ago, clock, {"service": "api"}, value=v)
    write(engine, "lat", 100, clock, {"service": "db"}, value=0.5)
    rule = {"name": "t", "kind": "threshold", "table": "lat", "group_by": ["service"], "window": "5m"}
    # 100.0 is outside the 5 m window: avg(api) = 2.0
    assert ev(engine, clock, {**rule, "agg": "avg", "threshold": 1}) == {(("service", "api"),): 2.0}
    assert ev(engine, clock, {**rule, "agg": "max", "op": "<", "threshold": 1}) == {(("service", "db"),): 0.5}
    assert ev(engine, clock, {**rule, "agg": "count", "op": ">=", "threshold": 2}) == {
        (("service", "api"),): 2
    }
    assert ev(engine, clock, {**rule, "agg": "last", "threshold": 2.5}) == {(("service", "api"),): 3.0}
    where = {**rule, "agg": "sum", "threshold": 0, "where": {"service": "!=api"}}
    assert ev(engine, clock, where) == {(("service", "db"),): 0.5}
    assert ev(engine, clock, {**rule, "agg": "p50", "threshold": 0, "where": {"service": "=~a.."}}) == {
        (("service", "api"),): 2.0
    }


def test_rate_and_increase_of_a_counter_handle_a_reset(engine: Any, clock: ManualClock) -> None:
    for ago, v in ((250, 10.0), (150, 40.0), (100, 5.0), (50, 25.0)):  # reset between 150 and 100
        write(engine, "req_total", ago, clock, {"service": "api", "status": "200"}, value=v)
    rule = {"name": "r", "kind": "threshold", "table": "req_total", "group_by": ["service"], "threshold": 0}
    # per series: first 10, last 25 → 15 (last >= first); the reset is not extrapolated
    assert ev(engine, clock, {**rule, "agg": "increase"}) == {(("service", "api"),): 15.0}
    assert ev(engine, clock, {**rule, "agg": "rate", "window": "5m"}) == {(("service", "api"),): 15.0 / 300}


def test_no_data_is_not_an_error(engine: Any, clock: ManualClock) -> None:
    write(engine, "lat", 10, clock, {"service": "api"}, value=1.0)
    base = {"name": "t", "kind": "threshold", "agg": "count", "op": ">=", "threshold": 0}
    assert ev(engine, clock, {**base, "table": "does_not_exist"}) == {}
    assert ev(engine, clock, {**base, "table": "lat", "field": "missing"}) == {}
    assert ev(engine, clock, {**base, "table": "lat", "where": {"region": "eu"}}) == {}
    assert ev(engine, clock, {**base, "table": "lat", "expr": "missing_col * 2"}) == {}
    ratio = {"name": "r", "kind": "ratio", "threshold": 0, "op": ">=",
             "numerator": {"table": "nope"}, "denominator": {"table": "nope2"}}  # fmt: skip
    assert ev(engine, clock, ratio) == {}


def test_ratio_treats_missing_numerator_as_zero(engine: Any, clock: ManualClock) -> None:
    for svc, total, errors in (("api", 100.0, 10.0), ("web", 50.0, None)):
        write(engine, "requests", 200, clock, {"service": svc}, value=0.0)
        write(engine, "requests", 10, clock, {"service": svc}, value=total)
        if errors is not None:
            write(engine, "errors", 200, clock, {"service": svc}, value=0.0)
            write(engine, "errors", 10, clock, {"service": svc}, value=errors)
    rule = {
        "name": "err", "kind": "ratio", "group_by": ["service"], "op": ">=", "threshold": 0,
        "numerator": {"table": "errors", "agg": "increase"},
        "denominator": {"table": "requests", "agg": "increase"},
    }  # fmt: skip
    assert ev(engine, clock, rule) == {(("service", "api"),): 0.1, (("service", "web"),): 0.0}


def test_sql_rule_rows_become_instances(engine: Any, clock: ManualClock) -> None:
    write(engine, "disk", 10, clock, {"host": "a", "mount": "/"}, value=95.0)
    write(engine, "disk", 10, clock, {"host": "b", "mount": "/"}, value=50.0)
    sql = (
        "SELECT host, mount, max(value) AS value FROM disk WHERE time > $now - INTERVAL 5 MINUTE GROUP BY ALL"
    )
    got = ev(engine, clock, {"name": "disk", "kind": "sql", "sql": sql, "op": ">", "threshold": 90})
    assert got == {(("host", "a"), ("mount", "/")): 95.0}
    assert len(ev(engine, clock, {"name": "disk", "kind": "sql", "sql": sql})) == 2  # no op: every row
    clock.advance(600)
    assert ev(engine, clock, {"name": "disk", "kind": "sql", "sql": sql}) == {}  # $now follows the clock


def test_sql_rule_errors(engine: Any, clock: ManualClock) -> None:
    write(engine, "disk", 10, clock, {"host": "a"}, value=95.0)
    with pytest.raises(InvalidInput, match="no 'value' column"):
        evaluate_rule(engine, parse_rule({"name": "s", "kind": "sql", "sql": "SELECT host FROM disk"}), 0)
    with pytest.raises(InvalidInput, match="not numeric"):
        evaluate_rule(engine, parse_rule({"name": "s", "kind": "sql", "sql": "SELECT 'x' AS value"}), 0)
    with pytest.raises(QueryError, match="cannot evaluate rule 's'"):
        evaluate_rule(
            engine, parse_rule({"name": "s", "kind": "sql", "sql": "SELECT nope AS value FROM disk"}), 0
        )
    # refused when loaded (tests/unit/alerting/test_rules.py); the sandbox still guards evaluation
    rule = Rule(name="s", kind="sql", sql="DROP TABLE disk", op=None)
    with pytest.raises(SandboxViolation):
        evaluate_rule(engine, rule, 0)


def test_anomaly_zscore_and_ewma(engine: Any, clock: ManualClock) -> None:
    # 12 baseline windows of 1 minute around 10, then a spike of 40 in the current one
    rows = []
    for minute in range(13, 0, -1):
        base = 10.0 + (minute % 3) - 1
        value = 40.0 if minute == 1 else base
        rows.append({"time": clock.now_ns() - minute * 60 * S + 30 * S, "service": "api", "value": value})
        rows.append({"time": clock.now_ns() - minute * 60 * S + 30 * S, "service": "db", "value": base})
    engine.write_rows("orders", rows, tags=["service"])
    rule = {"name": "a", "kind": "anomaly", "table": "orders", "group_by": ["service"], "window": "1m",
            "baseline": "12m", "min_baseline": 10, "threshold": 3}  # fmt: skip
    got = ev(engine, clock, rule)
    assert list(got) == [(("service", "api"),)] and got[(("service", "api"),)] > 3
    assert list(ev(engine, clock, {**rule, "method": "ewma"})) == [(("service", "api"),)]
    assert ev(engine, clock, {**rule, "direction": "below"}) == {}
    assert ev(engine, clock, {**rule, "min_baseline": 20, "baseline": "30m"}) == {}  # too little history


def test_anomaly_count_drop_fills_empty_windows_with_zero(engine: Any, clock: ManualClock) -> None:
    rows = [
        {"time": clock.now_ns() - minute * 60 * S + k * S, "name": "login", "value": 1.0}
        for minute in range(11, 1, -1)
        for k in range(5 + minute % 2)
    ]
    engine.write_rows("events_x", rows, tags=["name"])  # nothing in the current minute
    rule = {"name": "drop", "kind": "anomaly", "table": "events_x", "field": "*", "agg": "count",
            "window": "1m", "baseline": "10m", "min_baseline": 5, "direction": "below",
            "threshold": 3}  # fmt: skip
    got = ev(engine, clock, rule)
    assert len(got) == 1 and next(iter(got.values())) < -3


def test_absence(engine: Any, clock: ManualClock) -> None:
    rule = {"name": "gone", "kind": "absence", "table": "heartbeat", "window": "5m"}
    assert ev(engine, clock, rule) == {(("table", "heartbeat"),): 3600.0}  # no table at all
    grouped = {**rule, "group_by": ["service"], "lookback": "1h"}
    assert ev(engine, clock, grouped) == {}  # no table: no group known to be missing
    write(engine, "heartbeat", 600, clock, {"service": "a"}, value=1.0)
    write(engine, "heartbeat", 60, clock, {"service": "b"}, value=1.0)
    assert ev(engine, clock, rule) == {}  # the table has data within 5 minutes
    assert ev(engine, clock, grouped) == {(("service", "a"), ("table", "heartbeat")): 600.0}
    assert ev(engine, clock, {**rule, "where": {"service": "a"}}) == {
        (("service", "a"), ("table", "heartbeat")): 600.0
    }


def test_state_machine_pending_firing_resolved_with_for(engine: Any, clock: ManualClock) -> None:
    rule = parse_rule({"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
                       "group_by": ["room"],
                       "threshold": 10, "for": "2m", "keep_firing_for": "1m",
                       "annotations": {"summary": "{{ $labels.room }} at {{ $value }}"}})  # fmt: skip
    instances: dict[str, Any] = {}

    def tick(value: float | None) -> list[str]:
        if value is not None:
            write(engine, "temp", 0, clock, {"room": "kitchen"}, value=value)
        samples = evaluate_rule(engine, rule, clock.now_ns())
        keep, trans, dropped = step_rule(rule, samples, instances, clock.now_ns())
        for iid in dropped:
            instances.pop(iid)
        instances.update({i.id: i for i in keep})
        return [t.event for t in trans]

    assert tick(20) == ["pending"]
    clock.advance(60)
    assert tick(20) == []  # pending for 1 of 2 minutes
    clock.advance(30)
    assert tick(5) == ["inactive"]  # the condition went away before `for`: never fired
    assert instances == {}
    clock.advance(30)
    assert tick(20) == ["pending"]
    clock.advance(120)
    assert tick(21) == ["firing"]
    [inst] = instances.values()
    assert inst.annotations == {"summary": "kitchen at 21"}
    assert inst.labels == {"room": "kitchen", "alertname": "hot", "severity": "warning"}
    clock.advance(30)
    assert tick(5) == []  # keep_firing_for: still firing 30 s after the condition cleared
    clock.advance(31)
    assert tick(None) == ["resolved"]
    assert inst.state == "resolved" and inst.resolved_at_ns == clock.now_ns()
    clock.advance(60)
    assert tick(30) == ["pending"]  # a new cycle of the same instance id
    assert instances[inst.id] is not inst


def test_for_zero_fires_at_once() -> None:
    rule = parse_rule({"name": "x", "kind": "sql", "sql": "select 1 as value"})
    keep, trans, _ = step_rule(rule, [Sample({}, 1.0)], {}, 5)
    assert [t.event for t in trans] == ["pending", "firing"]
    assert keep[0].state == "firing" and keep[0].fired_at_ns == 5
