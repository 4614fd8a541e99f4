"""Rule documents: validation names the rule and the field; documents round-trip; templates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.alerting import default_rules, parse_rule
from server.alerting.config import parse_alerting
from server.alerting.matchers import parse_matcher
from server.alerting.rules import InvalidRule, format_duration, load_rules_file, parse_duration, parse_rules
from server.alerting.templates import check_template, render
from tsengine.errors import InvalidInput

BASE: dict[str, Any] = {"name": "hot", "kind": "threshold", "table": "temp", "threshold": 10}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "nope"}, "kind"),
        ({"threshold": None}, "threshold"),
        ({"threshold": "ten"}, "threshold"),
        ({"window": "5q"}, "window"),
        ({"window": "0s"}, "window"),
        ({"for": -1}, "for"),
        ({"agg": "median"}, "agg"),
        ({"op": "=>"}, "op"),
        ({"severity": "urgent"}, "severity"),
        ({"group_by": "service"}, "group_by"),
        ({"where": {"service": ["a"]}}, "where.service"),
        ({"labels": {"bad-name": "x"}}, "labels.bad-name"),
        ({"annotations": {"summary": "{{ $labels.x | upper }}"}}, "annotations.summary"),
        ({"annotations": {"summary": "{{ $labels.x "}}, "annotations.summary"),
        ({"colour": "red"}, "colour"),
        ({"enabled": "yes"}, "enabled"),
        ({"escalation": [{"after": "5m"}]}, "escalation[0]"),
        ({"escalation": [{"after": "5m", "channels": ["a"]}, {"after": "1m", "channels": ["b"]}]},
         "escalation[1].after"),
        ({"field": "*", "agg": "avg"}, "field"),
    ],
)  # fmt: skip
def test_invalid_rule_names_rule_and_field(changes: dict[str, Any], field: str) -> None:
    doc = {**BASE, **changes}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(InvalidRule) as info:
        parse_rule(doc)
    assert info.value.name == "hot"
    assert info.value.field == field
    assert "cannot load rule 'hot'" in info.value.reason
    assert info.value.to_dict()["field"] == field


def test_kind_specific_requirements() -> None:
    with pytest.raises(InvalidRule, match="numerator"):
        parse_rule({"name": "r", "kind": "ratio", "threshold": 1, "denominator": {"table": "t"}})
    with pytest.raises(InvalidRule, match="'sql'"):
        parse_rule({"name": "s", "kind": "sql"})
    with pytest.raises(InvalidRule, match="both or neither"):
        parse_rule({"name": "s", "kind": "sql", "sql": "select 1 as value", "threshold": 1})
    with pytest.raises(InvalidRule, match="baseline"):
        parse_rule({"name": "a", "kind": "anomaly", "table": "t", "window": "1h", "baseline": "90m"})
    with pytest.raises(InvalidRule, match="lookback"):
        parse_rule({"name": "a", "kind": "absence", "table": "t", "group_by": ["s"], "window": "2h"})
    with pytest.raises(InvalidRule, match="name"):
        parse_rule({"name": "has space", "kind": "sql", "sql": "select 1 as value"})


def test_duplicate_names_refused() -> None:
    with pytest.raises(InvalidRule, match="used twice"):
        parse_rules({"rules": [BASE, BASE]}, "test")


def test_rules_file_yaml(tmp_path: Any) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: hot, kind: threshold, table: temp, threshold: 10, window: 1m}\n")
    [rule] = load_rules_file(path)
    assert rule.window_s == 60.0
    path.write_text("rules: [\n")
    with pytest.raises(InvalidInput, match="cannot read rules file"):
        load_rules_file(path)


def test_default_pack_loads_and_covers_the_issue() -> None:
    names = {r.name for r in default_rules()}
    assert names == {
        "high_response_time", "slow_database_queries", "external_api_degradation", "high_error_rate",
        "service_unavailable", "dependency_failures", "payment_failures", "revenue_anomaly",
        "user_activity_drop", "authentication_failure_burst", "suspicious_access_pattern", "audit_trail_gap",
    }  # fmt: skip
    for rule in default_rules():
        assert rule.annotations["summary"]
        assert parse_rule(rule.to_dict()) == rule


durations = st.integers(min_value=0, max_value=10**9).map(lambda ms: ms / 1000)


@given(durations)
def test_duration_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("bad", ["", "5", "5x", "m5", "-1s", "1h-5m", True, None, [1]])
def test_duration_rejects(bad: Any) -> None:
    if bad == "5":  # a bare number is seconds
        assert parse_duration(bad) == 5.0
        return
    with pytest.raises(ValueError):
        parse_duration(bad)


label_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
tag_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(
    name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,20}", fullmatch=True),
    kind=st.sampled_from(["threshold", "anomaly", "absence", "sql", "ratio"]),
    group_by=st.lists(label_names, unique=True, max_size=3),
    where=st.dictionaries(label_names, tag_values, max_size=3),
    labels=st.dictionaries(label_names, tag_values, max_size=3),
    window_s=st.integers(min_value=1, max_value=86400),
    for_s=st.integers(min_value=0, max_value=86400),
    threshold=st.floats(allow_nan=False, allow_infinity=False, width=32),
    severity=st.sampled_from(["info", "warning", "error", "critical"]),
    enabled=st.booleans(),
)
def test_rule_document_round_trip(
    *,
    name: str, kind: str, group_by: list[str], where: dict[str, str], labels: dict[str, str],
    window_s: int, for_s: int, threshold: float, severity: str, enabled: bool,
) -> None:  # fmt: skip
    doc: dict[str, Any] = {
        "name": name, "kind": kind, "for": for_s, "severity": severity, "labels": labels, "enabled": enabled,
    }  # fmt: skip
    if kind == "sql":
        doc.update(sql="select 'a' as s, 1.0 as value", op="<", threshold=threshold)
    elif kind == "ratio":
        doc.update(
            numerator={"table": "errors", "where": where, "agg": "rate"},
            denominator={"table": "requests", "agg": "increase"},
            group_by=group_by, window=window_s, threshold=threshold,
        )  # fmt: skip
    else:
        doc.update(table="t", where=where, group_by=group_by, window=window_s)
        if kind == "threshold":
            doc.update(threshold=threshold, agg="p95")
        if kind == "anomaly":
            doc.update(baseline=window_s * 10, min_baseline=3)
        if kind == "absence":
            doc.update(lookback=window_s * 2)
    rule = parse_rule(doc)
    assert parse_rule(rule.to_dict()) == rule


def test_templates() -> None:
    labels = {"service": "api", "route": "/x"}
    text = (
        'svc={{ $labels.service }} v={{ $value | printf "%.2f" }} r={{ $rule }} missing=[{{ $labels.nope }}]'
    )
    assert render(text, labels, 1.23456, rule="hot") == "svc=api v=1.23 r=hot missing=[]"
    assert render("{{ $value | humanize }}", {}, 12345.0) == "12.35k"
    assert render("{{ $value | humanizePercentage }}", {}, 0.05) == "5%"
    assert render('{{ $labels["route"] }}', labels, 0.0) == "/x"
    with pytest.raises(ValueError, match="unknown pipeline"):
        check_template("{{ $value | shout }}")


@given(
    st.sampled_from(["=", "!=", "=~", "!~"]), label_names, st.from_regex(r"[a-z0-9.]{0,6}", fullmatch=True)
)
def test_matcher_string_round_trip(op: str, name: str, value: str) -> None:
    m = parse_matcher(f'{name}{op}"{value}"')
    assert (m.name, m.op, m.value) == (name, op, value)
    assert parse_matcher(str(m)) == m
    assert parse_matcher(m.to_dict()) == m


def test_config_errors_name_the_key() -> None:
    with pytest.raises(InvalidInput, match=r"alerting\.channels\.hook\.url"):
        parse_alerting({"channels": {"hook": {"type": "webhook", "url": "ftp://x"}}})
    with pytest.raises(InvalidInput, match=r"alerting\.routes\[0\]\.channels"):
        parse_alerting({"routes": [{"channels": ["nope"]}]})
    with pytest.raises(InvalidInput, match=r"alerting\.colour"):
        parse_alerting({"colour": 1})
    with pytest.raises(InvalidInput, match=r"alerting\.channels\.m\.to"):
        parse_alerting({"channels": {"m": {"type": "email"}}})
    cfg = parse_alerting(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:1/x", "timeout": "2s"}},
         "routes": [{"matchers": ['severity="critical"'], "channels": ["hook"], "group_wait": "30s"}]}
    )  # fmt: skip
    assert cfg.channels["hook"].timeout_s == 2.0
    assert cfg.routes[0].group_wait_s == 30.0
    assert cfg.default_route.channels == ("console",)


def test_cli_rules_check(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from tsengine.cli import main

    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {name: hot, kind: threshold, table: temp, threshold: 10}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: hot, kind: threshold, table: temp, threshold: 10, window: 5q}\n")
    assert main(["rules", "check", str(good)], environ={}) == 0
    assert "ok, 1 rules (threshold)" in capsys.readouterr().out
    assert main(["rules", "check", str(good), str(bad)], environ={}) == 1
    assert "cannot load rule 'hot': field 'window'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"kind": "sql", "sql": "delete from spans", "table": None}, "sql", "DELETE"),
        ({"kind": "sql", "sql": "select * from read_csv('/etc/passwd')", "table": None}, "sql", "read_csv"),
        ({"kind": "sql", "sql": "select 1 as value; select 2 as value", "table": None}, "sql", "sandbox"),
        ({"expr": "value + (select count(*) from read_parquet('x'))"}, "expr", "read_parquet"),
        ({"where": {"a": "=~("}}, "where", "invalid regex"),
        ({"where": {"time": "x"}}, "where.time", "time column"),
        ({"group_by": ["a b"]}, "group_by", "'a b' is not a valid label name"),
        ({"group_by": ["__tsx"]}, "group_by", "reserved"),
        ({"limit": -1}, "limit", ">= 0"),
        ({"limit": 2.5}, "limit", "integer"),
    ],
)
def test_rules_that_would_fail_every_evaluation_are_refused(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    doc = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    if doc["kind"] == "sql":
        doc.pop("threshold")
    with pytest.raises(InvalidRule, match=reason) as info:
        parse_rule(doc)
    assert info.value.name == "hot" and info.value.field == field


def test_ratio_and_absence_selectors_are_checked_too() -> None:
    ratio = {
        "name": "r",
        "kind": "ratio",
        "threshold": 0.1,
        "numerator": {"table": "t", "where": {"status": "=~5(("}},
        "denominator": {"table": "t"},
    }
    with pytest.raises(InvalidRule, match="invalid regex") as info:
        parse_rule(ratio)
    assert info.value.field == "numerator.where"
    with pytest.raises(InvalidRule, match="invalid regex"):
        parse_rule({"name": "a", "kind": "absence", "table": "t", "where": {"x": "!~["}})
    # a read-only query over a table that does not exist yet is fine: nothing runs at load
    assert parse_rule({"name": "s", "kind": "sql", "sql": "SELECT 1.0 AS value FROM later"}).limit == 0
    assert parse_rule({**BASE, "limit": 5}).to_dict()["limit"] == 5
