"""The alerting API on a real server: rule CRUD and validation, scopes, the default pack on an
empty server, the rules file, history and statistics, metrics, the scheduler task."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from server import ServerConfig
from tests.integration.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    assert_error,
    bearer,
    engine_of,
    query,
)
from tsengine.clock import ManualClock

Make = Callable[..., Awaitable[TestClient]]
ADMIN = bearer(ADMIN_TOKEN)
HOT = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
       "group_by": ["room"], "threshold": 30, "for": "1m"}  # fmt: skip


def config(**alerting: Any) -> ServerConfig:
    return ServerConfig(
        port=0, tokens=TOKENS, alerting=alerting, tasks={"intervals": {"alert_evaluation": 0}}
    )


async def test_rule_crud_validation_and_scopes(make_client: Make) -> None:
    client = await make_client(config(default_rules=False))
    read, write = bearer(READ_TOKEN), bearer(WRITE_TOKEN)
    await assert_error(await client.get("/api/v1/rules", headers=read), 403, "Forbidden", "admin")
    await assert_error(await client.post("/api/v1/rules/evaluate", headers=write), 403, "Forbidden")
    resp = await client.post("/api/v1/rules", json={**HOT, "window": "5q"}, headers=ADMIN)
    body = await assert_error(resp, 400, "InvalidRule", "cannot load rule 'hot'", "'window'")
    assert body["name"] == "hot" and body["field"] == "window"
    resp = await client.post(
        "/api/v1/rules", data=b"{nope", headers={**ADMIN, "Content-Type": "application/json"}
    )
    await assert_error(resp, 400, "ParseError", "invalid JSON")
    assert (await client.post("/api/v1/rules", json=HOT, headers=ADMIN)).status == 201
    await assert_error(
        await client.post("/api/v1/rules", json=HOT, headers=ADMIN), 400, "InvalidRule", "taken"
    )
    yaml_rule = b"name: cold\nkind: threshold\ntable: temp\nop: '<'\nthreshold: 5\n"
    resp = await client.put(
        "/api/v1/rules/cold", data=yaml_rule, headers={**ADMIN, "Content-Type": "application/yaml"}
    )
    assert resp.status == 200 and (await resp.json())["op"] == "<"
    resp = await client.put("/api/v1/rules/other", json=HOT, headers=ADMIN)
    await assert_error(resp, 400, "InvalidRule", "differs")
    resp = await client.put(
        "/api/v1/rules/hot", json={**HOT, "threshold": 40, "enabled": False}, headers=ADMIN
    )
    assert (await resp.json())["threshold"] == 40.0
    rules = (await (await client.get("/api/v1/rules", headers=ADMIN)).json())["rules"]
    assert [(r["name"], r["source"], r["enabled"]) for r in rules] == [
        ("cold", "api", True),
        ("hot", "api", False),
    ]
    assert (await client.delete("/api/v1/rules/cold", headers=ADMIN)).status == 204
    await assert_error(await client.delete("/api/v1/rules/cold", headers=ADMIN), 404, "NotFound")
    await assert_error(await client.get("/api/v1/rules/cold", headers=ADMIN), 404, "NotFound")
    await assert_error(
        await client.post("/api/v1/alerts/nope/ack", json={"by": "x"}, headers=write), 404, "NotFound"
    )
    await assert_error(await client.get("/api/v1/alerts?state=odd", headers=read), 400, "InvalidInput")


async def test_default_pack_on_an_empty_server_is_quiet(make_client: Make, clock: ManualClock) -> None:
    client = await make_client(config())
    rules = (await (await client.get("/api/v1/rules", headers=ADMIN)).json())["rules"]
    assert len(rules) == 12 and {r["source"] for r in rules} == {"default"}
    for _ in range(3):
        result = await (await client.post("/api/v1/rules/evaluate", headers=ADMIN)).json()
        assert result["rules"] == 12 and result["errors"] == 0 and result["firing"] == 0
        clock.advance(60)
    # disabling one default rule through the API
    rule = next(r for r in rules if r["name"] == "audit_trail_gap")
    body = {k: v for k, v in rule.items() if k not in ("source", "last_error")}
    resp = await client.put("/api/v1/rules/audit_trail_gap", json={**body, "enabled": False}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["source"] == "api"
    result = await (await client.post("/api/v1/rules/evaluate", headers=ADMIN)).json()
    assert result["rules"] == 11


async def test_default_pack_fires_on_sdk_shaped_data(make_client: Make, clock: ManualClock) -> None:
    client = await make_client(config())
    engine = engine_of(client)
    now = clock.now_ns()
    # what tsengine.instrument's HttpExporter writes: counters as cumulative samples, `service` tag
    rows = []
    for i, ago in enumerate((290, 200, 100, 0)):
        t = now - ago * 1_000_000_000
        rows += [
            {
                "time": t,
                "service": "shop",
                "method": "GET",
                "route": "/pay",
                "status": "200",
                "value": 100.0 * i,
            },
            {
                "time": t,
                "service": "shop",
                "method": "GET",
                "route": "/pay",
                "status": "500",
                "value": 20.0 * i,
            },
        ]
    engine.write_rows("http_requests_total", rows, tags=["service", "method", "route", "status"])
    engine.write_rows(
        "events",
        [{"time": now - k, "service": "shop", "category": "security", "severity": "warning",
          "name": "auth_failure_burst", "message": "20 failures"} for k in range(2)],
        tags=["service", "category", "severity", "name"],
    )  # fmt: skip
    await client.post("/api/v1/rules/evaluate", headers=ADMIN)
    clock.advance(300)
    alerts = (await (await client.get("/api/v1/alerts", headers=ADMIN)).json())["alerts"]
    states = {a["rule"]: a["state"] for a in alerts}
    assert states == {"high_error_rate": "pending", "authentication_failure_burst": "firing"}
    [err] = [a for a in alerts if a["rule"] == "high_error_rate"]
    assert err["labels"]["service"] == "shop" and abs(err["value"] - 60 / 360) < 1e-9
    assert err["annotations"]["summary"] == "High error rate on shop"


async def test_rules_file_history_stats_metrics(
    make_client: Make, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - {HOT}\n".replace("'", '"'))
    client = await make_client(config(default_rules=False, rules_file=str(path)))
    [rule] = (await (await client.get("/api/v1/rules", headers=ADMIN)).json())["rules"]
    assert rule["source"] == "file" and rule["for"] == "1m"
    engine = engine_of(client)

    def temp(value: float) -> None:
        engine.write_rows(
            "temp", [{"time": clock.now_ns(), "room": "kitchen", "value": value}], tags=["room"]
        )

    temp(35)
    await client.post("/api/v1/rules/evaluate", headers=ADMIN)
    clock.advance(60)
    temp(35)
    await client.post("/api/v1/rules/evaluate", headers=ADMIN)
    [alert] = (await (await client.get("/api/v1/alerts?state=firing", headers=ADMIN)).json())["alerts"]
    clock.advance(90)
    resp = await client.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "erin"}, headers=ADMIN)
    assert resp.status == 200
    clock.advance(30)
    temp(10)
    await client.post("/api/v1/rules/evaluate", headers=ADMIN)
    resp = await client.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "erin"}, headers=ADMIN)
    await assert_error(resp, 400, "InvalidInput", "resolved")
    history = (await (await client.get("/api/v1/alerts/history?rule=hot", headers=ADMIN)).json())["history"]
    # the resolution is not sent yet: the group's last notification is younger than group_interval
    assert [h["event"] for h in history] == [
        "resolved",
        "acknowledged",
        "notification_sent",
        "firing",
        "pending",
    ]
    assert history[1]["actor"] == "erin" and history[1]["duration_s"] == 90.0
    stats = await (await client.get("/api/v1/alerts/stats", headers=ADMIN)).json()
    assert stats["time_to_acknowledge"]["count"] == 1 and stats["time_to_acknowledge"]["mean_s"] == 90.0
    assert stats["time_to_resolve"]["mean_s"] == 120.0
    assert stats["noisiest_rules"] == [{"rule": "hot", "firings": 1, "instances": 1}]
    rows = await query(client, "SELECT count(*) FROM alerts_history WHERE rule = 'hot'", token=ADMIN_TOKEN)
    assert rows == [[5]]
    await assert_error(
        await client.get("/api/v1/alerts/history?colour=red", headers=ADMIN), 400, "InvalidInput", "colour"
    )
    metrics = await (await client.get("/metrics")).text()
    assert 'tsengine_alert_rule_evaluations_total{rule="hot",result="ok"} 3' in metrics
    assert "tsengine_alert_evaluation_duration_seconds_count 3" in metrics
    assert 'tsengine_alerts{state="resolved"} 1' in metrics
    # the scheduler knows the task and runs it on demand
    resp = await client.post("/api/v1/tasks/alert_evaluation/run", headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["last_result"]["rules"] == 1


async def test_a_failing_rule_does_not_stop_the_others(make_client: Make, clock: ManualClock) -> None:
    client = await make_client(config(default_rules=False))
    broken = {"name": "broken", "kind": "sql", "sql": "SELECT nope AS value FROM temp"}
    works = {"name": "works", "kind": "sql", "sql": "SELECT 1.0 AS value"}
    for rule in (broken, works):
        assert (await client.post("/api/v1/rules", json=rule, headers=ADMIN)).status == 201
    engine_of(client).write_rows("temp", [{"time": clock.now_ns(), "value": 1.0}])
    result = await (await client.post("/api/v1/rules/evaluate", headers=ADMIN)).json()
    assert result["errors"] == 1 and result["firing"] == 1
    rule = await (await client.get("/api/v1/rules/broken", headers=ADMIN)).json()
    assert "cannot evaluate rule 'broken'" in rule["last_error"]
    metrics = await (await client.get("/metrics")).text()
    assert 'tsengine_alert_rule_evaluations_total{rule="broken",result="error"} 1' in metrics


async def test_invalid_rules_refused_at_the_api(make_client: Make) -> None:
    client = await make_client(config(default_rules=False))
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"name": "s", "kind": "sql", "sql": "delete from spans"}, "sql", "DELETE"),
        ({"name": "s", "kind": "sql", "sql": "select * from read_csv('/etc/passwd')"}, "sql", "read_csv"),
        ({**HOT, "where": {"a": "=~("}}, "where", "invalid regex"),
        ({**HOT, "group_by": ["a b"]}, "group_by", "'a b'"),
    ]
    for doc, field, needle in cases:
        resp = await client.post("/api/v1/rules", json=doc, headers=ADMIN)
        body = await assert_error(resp, 400, "InvalidRule", f"cannot load rule {doc['name']!r}", needle)
        assert body["field"] == field
    assert (await (await client.get("/api/v1/rules", headers=ADMIN)).json())["rules"] == []


async def test_partial_put_alertmanager_silences_history_filters(
    make_client: Make, clock: ManualClock
) -> None:
    client = await make_client(config())  # with the default pack
    t0 = clock.now_ns() / 1e9
    resp = await client.put("/api/v1/rules/high_error_rate", json={"enabled": False}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    rule = await resp.json()
    assert rule["enabled"] is False and rule["source"] == "api" and rule["kind"] == "ratio"
    clock.advance(60)
    resp = await client.put("/api/v1/rules/high_response_time", json={"for": "10m"}, headers=ADMIN)
    assert (await resp.json())["for"] == "10m"
    await assert_error(
        await client.put("/api/v1/rules/nope", json={"enabled": False}, headers=ADMIN),
        400, "InvalidRule", "no rule of this name",
    )  # fmt: skip
    await assert_error(
        await client.put("/api/v1/rules/high_response_time", json={"window": "5q"}, headers=ADMIN),
        400, "InvalidRule", "'high_response_time'", "'window'",
    )  # fmt: skip
    # Alertmanager's silence shape (as amtool and Grafana send it)
    clock.advance(60)
    starts = "2030-01-01T00:00:00Z"
    am = {
        "matchers": [
            {"name": "service", "value": "api|web", "isRegex": True, "isEqual": True},
            {"name": "env", "value": "dev", "isRegex": False, "isEqual": False},
        ],
        "startsAt": starts,
        "endsAt": "2030-01-01T02:00:00Z",
        "createdBy": "dave",
        "comment": "deploy",
    }
    resp = await client.post("/api/v1/silences", json=am, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    silence = await resp.json()
    assert silence["matchers"] == ['service=~"api|web"', 'env!="dev"']
    assert silence["created_by"] == "dave" and silence["state"] == "pending"
    assert silence["ends_at"] - silence["starts_at"] == 7200
    await assert_error(
        await client.post("/api/v1/silences", json={**am, "ends_at": 1}, headers=ADMIN),
        400, "InvalidInput", "endsAt or ends_at",
    )  # fmt: skip
    # history by time range, rule and limit
    base = "/api/v1/alerts/history"

    async def events(params: str) -> list[tuple[str, str]]:
        body = await (await client.get(f"{base}?{params}", headers=ADMIN)).json()
        return [(h["event"], h["rule"]) for h in body["history"]]

    assert await events(f"start={t0}") == [
        ("silence_created", ""), ("rule_changed", "high_response_time"), ("rule_changed", "high_error_rate"),
    ]  # fmt: skip
    assert await events(f"start={t0 + 30}&end={t0 + 90}") == [("rule_changed", "high_response_time")]
    assert await events(f"start={t0}&rule=high_error_rate") == [("rule_changed", "high_error_rate")]
    assert await events(f"start={t0}&limit=1") == [("silence_created", "")]
    iso_end = dt.datetime.fromtimestamp(t0 + 30, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await events(f"start={t0}&end={iso_end}") == [("rule_changed", "high_error_rate")]
    await assert_error(
        await client.get(f"{base}?start=yesterday", headers=ADMIN), 400, "InvalidInput", "start"
    )
    await assert_error(
        await client.get(f"{base}?start={t0 + 10}&end={t0}", headers=ADMIN), 400, "InvalidInput", "before"
    )
    for bad in ("start=inf", "end=-inf", "since=inf", "since=nan"):  # were 500s (OverflowError)
        key = bad.partition("=")[0]
        await assert_error(await client.get(f"{base}?{bad}", headers=ADMIN), 400, "InvalidInput", key)
    await assert_error(
        await client.get("/api/v1/alerts/stats?since=inf", headers=ADMIN), 400, "InvalidInput", "since"
    )
