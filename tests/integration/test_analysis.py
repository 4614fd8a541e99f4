"""The analysis tasks on crafted data: each insight row checked by SQL against a hand-computed value.

Data goes in through the real write path (``engine.write_rows`` off the loop, or NDJSON
``/api/v1/import`` in the SDK's row shape) at times relative to the ManualClock; the tasks run
through ``POST /api/v1/tasks/{name}/run``; results are read back with ``/api/v1/sql``.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from server import ServerConfig
from tests.integration.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS, assert_error, engine_of, query
from tsengine.clock import ManualClock
from tsengine.protocols.prom_remote import build_write_request

NS = 1_000_000_000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REMOTE_WRITE_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
#: Prometheus' staleness marker: a NaN with this exact bit pattern.
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


async def write(client: Any, table: str, rows: list[dict[str, Any]], tags: list[str]) -> None:
    await asyncio.to_thread(engine_of(client).write_rows, table, rows, tags=tags)


async def run(client: Any, task: str) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/tasks/{task}/run", headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    return body["last_result"]


async def rows_of(client: Any, sql: str) -> list[dict[str, Any]]:
    resp = await client.post(
        "/api/v1/sql", json={"sql": sql}, headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    body = await resp.json()
    assert resp.status == 200, body
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, r, strict=True)) for r in body["rows"]]


@pytest.fixture
async def api(make_client: Any) -> Any:
    return await make_client(ServerConfig(port=0, tokens=TOKENS))


# -- metrics_aggregation --------------------------------------------------------------------------


def counter_rows(now: int, values: list[float], every_s: int, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Samples ending at ``now``, ``every_s`` apart."""
    start = now - (len(values) - 1) * every_s * NS
    return [{"time": start + i * every_s * NS, **labels, "value": v} for i, v in enumerate(values)]


async def test_derived_rates_equal_the_hand_computed_values_across_a_reset(
    api: Any, clock: ManualClock
) -> None:
    now = clock.now_ns()
    labels = {"service": "shop", "method": "GET", "route": "/items/{id}"}
    ok = [6.0 * i for i in range(21)]  # every 30 s for 10 min: +6 per sample
    # +2 per sample, then the process restarts after sample 15 (the counter starts again at 1).
    err = [2.0 * i for i in range(16)] + [1.0 + 2.0 * i for i in range(5)]
    rows = counter_rows(now, ok, 30, {**labels, "status": "200"})
    rows += counter_rows(now, err, 30, {**labels, "status": "503"})
    await write(api, "http_requests_total", rows, ["service", "method", "route", "status"])
    result = await run(api, "metrics_aggregation")
    assert result["rows"]["analysis_derived_metrics"] == 6  # 3 metrics x (the route, the service)
    got = {
        (r["metric"], r["route"]): r
        for r in await rows_of(
            api, "SELECT metric, route, value, numerator, denominator FROM analysis_derived_metrics"
        )
    }
    # Window (now-300 s, now]: samples 11..20. ok: 10 x 6 = 60. errors: 5 x 2, the reset (1), 4 x 2 = 19.
    assert got[("error_rate", "/items/{id}")]["value"] == pytest.approx(19 / 79)
    assert (
        got[("error_rate", "/items/{id}")]["numerator"] == 19
        and got[("error_rate", "/items/{id}")]["denominator"] == 79
    )
    assert got[("success_rate", "/items/{id}")]["value"] == pytest.approx(60 / 79)
    assert got[("requests_per_second", "/items/{id}")]["value"] == pytest.approx(79 / 300)
    assert got[("error_rate", None)]["value"] == pytest.approx(19 / 79)  # the service as a whole


async def test_prometheus_style_labels_and_payment_success_rate(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    # What prometheus-fastapi-instrumentator sends by remote write: handler, status "2xx"/"5xx".
    rows = counter_rows(
        now, [10.0 * i for i in range(11)], 60, {"handler": "/pay", "method": "POST", "status": "2xx"}
    )
    rows += counter_rows(
        now, [5.0 * i for i in range(11)], 60, {"handler": "/pay", "method": "POST", "status": "5xx"}
    )
    await write(api, "http_requests_total", rows, ["handler", "method", "status"])
    pay = counter_rows(now, [9.0 * i for i in range(11)], 60, {"method": "card", "status": "success"})
    pay += counter_rows(now, [1.0 * i for i in range(11)], 60, {"method": "card", "status": "failure"})
    await write(api, "payments_total", pay, ["method", "status"])
    result = await run(api, "metrics_aggregation")
    assert not any(s.startswith(("http_requests_total", "payments_total")) for s in result["skipped"])
    got = await rows_of(
        api,
        "SELECT metric, method, route, value FROM analysis_derived_metrics "
        "WHERE route = '/pay' OR metric = 'payment_success_rate' ORDER BY metric, method NULLS FIRST",
    )
    values = {(r["metric"], r["method"]): r["value"] for r in got}
    assert values[("error_rate", "POST")] == pytest.approx(25 / 75)  # 5 samples in the 5 min window
    assert values[("payment_success_rate", "card")] == pytest.approx(0.9)


async def test_trend_slope_sign_and_magnitude(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    rising = [
        {"time": now - i * 10 * NS, "queue": "orders", "value": 100.0 - 0.5 * 10 * i} for i in range(90)
    ]
    falling = [{"time": now - i * 10 * NS, "queue": "mails", "value": 5.0 + 2.0 * 10 * i} for i in range(90)]
    await write(api, "queue_depth", rising + falling, ["queue"])
    await run(api, "metrics_aggregation")
    got = await rows_of(
        api,
        "SELECT series, slope_per_s, samples FROM analysis_trends "
        "WHERE metric = 'queue_depth' AND period = '15m' ORDER BY series",
    )
    assert [r["series"] for r in got] == ['{queue="mails"}', '{queue="orders"}']
    assert got[0]["slope_per_s"] == pytest.approx(-2.0)
    assert got[1]["slope_per_s"] == pytest.approx(0.5)
    assert got[1]["samples"] == 90  # (now - 15 min, now]


async def test_anomaly_flags_the_series_that_jumped(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    rows = []
    for i in range(120):  # every 30 s for the last hour: the baseline, then the 5 min window
        t = now - i * 30 * NS
        wiggle = (-1.0) ** i
        in_window = i < 10
        rows.append({"time": t, "host": "a", "value": 50.0 + wiggle + (40.0 if in_window else 0.0)})
        rows.append({"time": t, "host": "b", "value": 50.0 + wiggle})
    await write(api, "cpu_percent", rows, ["host"])
    result = await run(api, "metrics_aggregation")
    got = {
        r["series"]: r
        for r in await rows_of(api, "SELECT * FROM analysis_anomalies WHERE metric = 'cpu_percent'")
    }
    assert got['{host="a"}']["anomalous"] is True and got['{host="a"}']["z_score"] > 30
    assert got['{host="b"}']["anomalous"] is False and abs(got['{host="b"}']["z_score"]) < 1
    assert any('host="a"' in f for f in result["findings"])


# -- performance_analysis -------------------------------------------------------------------------


def histogram_rows(
    now: int, route: str, per_sample: list[list[float]], les: list[str]
) -> list[dict[str, Any]]:
    """Cumulative bucket samples every 60 s ending at ``now``; ``per_sample[i]`` are the i-th
    sample's new observations per bucket (cumulative over ``le``)."""
    rows, cum = [], [0.0] * len(les)
    start = now - (len(per_sample) - 1) * 60 * NS
    for i, adds in enumerate(per_sample):
        cum = [c + a for c, a in zip(cum, adds, strict=True)]
        for le, c in zip(les, cum, strict=True):
            rows.append({"time": start + i * 60 * NS, "service": "shop", "method": "GET", "route": route,
                         "le": le, "value": c})  # fmt: skip
    return rows


LES = ["0.1", "0.5", "1", "2.5", "+Inf"]


async def write_latency(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    n = 71  # 70 minutes of samples: a 60 min baseline, then the 10 min window
    fast = [[20, 20, 20, 20, 20]] * n  # everything under 100 ms
    slow = [[0, 20, 20, 20, 20]] * (n - 10) + [[0, 0, 2, 20, 20]] * 10  # 0.1-0.5 s, then 1-2.5 s
    rows = histogram_rows(now, "/fast", fast, LES) + histogram_rows(now, "/reports/{id}", slow, LES)
    await write(api, "http_request_duration_seconds_bucket", rows, ["service", "method", "route", "le"])


async def test_degraded_endpoint_is_flagged(api: Any, clock: ManualClock) -> None:
    await write_latency(api, clock)
    result = await run(api, "performance_analysis")
    assert result["rows"] == {"analysis_endpoint_performance": 2}
    assert result["findings"] == ["degraded: GET /reports/{id} p95 2.417 s vs baseline 0.480 s"]
    got = {r["endpoint"]: r for r in await rows_of(api, "SELECT * FROM analysis_endpoint_performance")}
    slow, fast = got["GET /reports/{id}"], got["GET /fast"]
    # histogram_quantile: rank 0.95 x 200 = 190 in the (1, 2.5] bucket holding 180 of 200 → 1 + 1.5 x 170/180.
    assert slow["p95_s"] == pytest.approx(1 + 1.5 * (190 - 20) / 180)
    assert slow["p95_baseline_s"] == pytest.approx(0.1 + 0.4 * 0.95)
    assert slow["degraded"] is True and slow["rank"] == 1
    assert slow["degradation_ratio"] == pytest.approx(slow["p95_s"] / slow["p95_baseline_s"])
    assert slow["requests"] == 200 and slow["requests_per_s"] == pytest.approx(200 / 600)
    assert fast["degraded"] is False and fast["p95_s"] == pytest.approx(0.095) and fast["rank"] == 2
    assert fast["trend"] == "steady"


async def test_worsening_trend_is_reported(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    # baseline p95 in (0.1, 0.5], previous window in (0.5, 1], now in (1, 2.5]: rising step by step
    per = [[0, 20, 20, 20, 20]] * 51 + [[0, 0, 20, 20, 20]] * 10 + [[0, 0, 0, 20, 20]] * 10
    rows = histogram_rows(now, "/search", per, LES)
    await write(api, "http_request_duration_seconds_bucket", rows, ["service", "method", "route", "le"])
    config_result = await run(api, "performance_analysis")
    got = (await rows_of(api, "SELECT trend, degraded FROM analysis_endpoint_performance"))[0]
    assert got == {"trend": "worsening", "degraded": True}
    assert config_result["findings"][0].startswith("degraded: GET /search")


async def test_reports_contain_the_slow_endpoint_in_every_format(api: Any, clock: ManualClock) -> None:
    await write_latency(api, clock)
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    # Before any run: computed on demand.
    on_demand = await (await api.get("/api/v1/reports/performance", headers=read)).json()
    assert on_demand["source"] == "on_demand"
    assert on_demand["sections"]["slowest"][0]["endpoint"] == "GET /reports/{id}"
    assert (await rows_of(api, "SELECT count(*) AS n FROM (SELECT 1)"))[0]["n"] == 1
    await run(api, "performance_analysis")
    report = await (await api.get("/api/v1/reports/performance", headers=read)).json()
    assert report["source"] == "analysis"
    assert [r["endpoint"] for r in report["sections"]["slowest"]] == ["GET /reports/{id}", "GET /fast"]
    assert [r["endpoint"] for r in report["sections"]["degraded"]] == ["GET /reports/{id}"]
    assert report["summary"]["degraded"] == 1
    html = await api.get("/api/v1/reports/performance?format=html", headers=read)
    assert html.content_type == "text/html"
    text = await html.text()
    assert "<td>GET /reports/{id}</td>" in text and "<h2>Degraded</h2>" in text
    md = await api.get("/api/v1/reports/performance?format=markdown", headers=read)
    assert md.content_type == "text/markdown"
    assert "| 1 | GET /reports/{id} | shop |" in await md.text()
    await assert_error(await api.get("/api/v1/reports/performance"), 401, "Unauthorized")
    resp = await api.get("/api/v1/reports/performance?format=pdf", headers=read)
    await assert_error(resp, 400, "InvalidInput", "unknown format 'pdf'")


# -- event_aggregation ----------------------------------------------------------------------------


def event(t: int, name: str, category: str, *, user: str | None = None, ip: str | None = None,
          severity: str = "info") -> dict[str, Any]:  # fmt: skip
    """A row as the SDK's HttpExporter sends it to /api/v1/import."""
    fields: dict[str, Any] = {"id": 1, "message": "", "attributes": json.dumps({"ip": ip} if ip else {})}
    if user is not None:
        fields["user_id"] = user
    tags = {"service": "shop", "category": category, "severity": severity, "name": name}
    return {"table": "events", "time": t, "tags": tags, "fields": fields}


async def import_events(api: Any, events: list[dict[str, Any]]) -> None:
    body = "\n".join(json.dumps(e) for e in events)
    resp = await api.post(
        "/api/v1/import", data=body, headers={**ADMIN, "Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 204, await resp.text()


async def test_auth_failure_bursts_per_user_and_per_address(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    evs = []
    # mallory: 6 failures in the last 5 min from 6 addresses (a burst per user only).
    evs += [
        event(now - i * 20 * NS, "login_failed", "security", user="mallory", ip=f"10.0.1.{i}")
        for i in range(6)
    ]
    # 10.0.0.66: 7 failures against 7 users (a burst per address only).
    evs += [
        event(now - i * 15 * NS - 1, "login_failed", "security", user=f"u{i}", ip="10.0.0.66")
        for i in range(7)
    ]
    # alice: 4 failures (under the threshold of 5) and 10 older than the window (not counted).
    evs += [
        event(now - i * NS - 2, "login_failed", "security", user="alice", ip="10.0.2.1") for i in range(4)
    ]
    evs += [
        event(now - 600 * NS - i * NS, "login_failed", "security", user="alice", ip="10.0.2.2")
        for i in range(10)
    ]
    evs += [event(now - 5 * NS, "login", "user_action", user="alice")]  # not a failure
    await import_events(api, evs)
    result = await run(api, "event_aggregation")
    assert result["rows"]["analysis_security_findings"] == 2
    got = await rows_of(
        api, "SELECT kind, subject, count, threshold FROM analysis_security_findings ORDER BY kind"
    )
    assert got == [
        {"kind": "auth_failure_burst_address", "subject": "10.0.0.66", "count": 7, "threshold": 5},
        {"kind": "auth_failure_burst_user", "subject": "mallory", "count": 6, "threshold": 5},
    ]
    # The public health page shows the run's counts, never who or where (stored data).
    health = await (await api.get("/health/telemetry")).text()
    assert "mallory" not in health and "10.0.0.66" not in health
    assert '"analysis_security_findings":2' in health.replace(" ", "")


async def test_event_spike_is_flagged_against_the_baseline(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    window = 900 * NS
    evs = []
    for w in range(1, 25):  # 24 windows of 15 min before now (the 6 h baseline): 2 errors, 5 logins each
        evs += [
            event(now - w * window - i * NS, "checkout_error", "error", severity="error") for i in range(2)
        ]
        evs += [
            event(now - w * window - 100 * NS - i * NS, "login", "user_action", user=f"u{i}")
            for i in range(5)
        ]
    evs += [event(now - i * NS, "checkout_error", "error", severity="error") for i in range(30)]
    evs += [event(now - 100 * NS - i * NS, "login", "user_action", user=f"u{i}") for i in range(6)]
    await import_events(api, evs)
    await run(api, "event_aggregation")
    got = {
        r["name"]: r
        for r in await rows_of(
            api, "SELECT name, count, baseline_mean, ratio, spike FROM analysis_event_counts"
        )
    }
    expected = {"name": "checkout_error", "count": 30, "baseline_mean": 2.0, "ratio": 15.0, "spike": True}
    assert got["checkout_error"] == expected
    assert got["login"]["spike"] is False and got["login"]["count"] == 6
    activity = {
        (r["metric"], r["item"]): r["value"]
        for r in await rows_of(api, "SELECT metric, item, value FROM analysis_user_activity")
    }
    assert activity[("active_users", None)] == 6
    assert activity[("user_action", "login")] == 6
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    report = await (await api.get("/api/v1/reports/events", headers=read)).json()
    assert [r["name"] for r in report["sections"]["spikes"]] == ["checkout_error"]
    users = await (await api.get("/api/v1/reports/user-activity?format=markdown", headers=read)).text()
    assert "## Top users" in users and "| u0 |" in users


async def test_feature_usage_from_the_sdk_counter(api: Any, clock: ManualClock) -> None:
    now = clock.now_ns()
    rows = counter_rows(now, [3.0 * i for i in range(11)], 60, {"feature": "export", "tier": "pro"})
    rows += counter_rows(now, [1.0 * i for i in range(11)], 60, {"feature": "share", "tier": "free"})
    await write(api, "feature_usage_total", rows, ["feature", "tier"])
    result = await run(api, "event_aggregation")
    assert result["skipped"] == ["events: no such table in db 'default'"]
    got = await rows_of(
        api, "SELECT item, value FROM analysis_user_activity WHERE metric = 'feature_usage' ORDER BY item"
    )
    # 11 samples a minute apart, all inside the 15 min window: 10 increases each.
    assert got == [{"item": "export", "value": 30.0}, {"item": "share", "value": 10.0}]


# -- no input yet ---------------------------------------------------------------------------------


async def test_tasks_on_an_empty_database_do_nothing_and_say_so(api: Any) -> None:
    for task in ("metrics_aggregation", "performance_analysis", "event_aggregation"):
        result = await run(api, task)
        assert sum(result["rows"].values()) == 0, result
        assert result["findings"] == [] and result["skipped"], result
    runs = await rows_of(api, "SELECT task, rows FROM analysis_runs ORDER BY task")
    assert runs == [
        {"task": "event_aggregation", "rows": 0},
        {"task": "metrics_aggregation", "rows": 0},
        {"task": "performance_analysis", "rows": 0},
    ]
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    report = await (await api.get("/api/v1/reports/performance", headers=read)).json()
    assert report["source"] == "analysis" and report["sections"]["endpoints"] == []


async def test_settings_from_the_config_change_the_analysis(make_client: Any, clock: ManualClock) -> None:
    tasks = {"event_aggregation": {"auth_failure_threshold": 3, "auth_window": "1m"}}
    api = await make_client(ServerConfig(port=0, tokens=TOKENS, tasks=tasks))
    now = clock.now_ns()
    evs = [event(now - i * NS, "auth_failure", "security", user="eve") for i in range(3)]
    evs += [
        event(now - 120 * NS - i * NS, "auth_failure", "security", user="bob") for i in range(9)
    ]  # too old
    await import_events(api, evs)
    await run(api, "event_aggregation")
    got = await rows_of(api, "SELECT subject, count, threshold, window_s FROM analysis_security_findings")
    assert got == [{"subject": "eve", "count": 3, "threshold": 3, "window_s": 60.0}]


async def test_latest_run_is_what_the_report_shows(api: Any, clock: ManualClock) -> None:
    await write_latency(api, clock)
    await run(api, "performance_analysis")
    clock.advance(3 * 3600)  # the data is now out of every window
    await run(api, "performance_analysis")
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    report = await (await api.get("/api/v1/reports/performance", headers=read)).json()
    assert report["sections"]["endpoints"] == [] and report["summary"]["endpoints"] == 0
    n = await query(api, "SELECT count(*) FROM analysis_endpoint_performance", token=READ_TOKEN)
    assert n == [[2]]  # the first run's rows stay queryable


# -- Prometheus remote write ----------------------------------------------------------------------


async def test_remote_write_data_with_staleness_markers(api: Any, clock: ManualClock) -> None:
    now_ms = clock.now_ns() // 1_000_000
    times = [now_ms - (10 - i) * 60_000 for i in range(11)]  # every minute for 10 min, ending now
    series = []
    for code, per_min in (("200", 50.0), ("500", 10.0)):
        labels = {
            "__name__": "http_requests_total",
            "job": "api",
            "instance": "a:80",
            "handler": "/q",
            "code": code,
        }
        series.append((labels, [(t, per_min * i) for i, t in enumerate(times)]))
    for le, per_min in (("0.25", 30.0), ("1", 55.0), ("+Inf", 60.0)):
        labels = {"__name__": "http_request_duration_seconds_bucket", "job": "api", "instance": "a:80",
                  "handler": "/q", "method": "GET", "le": le}  # fmt: skip
        series.append((labels, [(t, per_min * i) for i, t in enumerate(times)]))
    # The target went away once: a staleness marker (NaN), then the counter carries on.
    stale = {
        "__name__": "http_requests_total",
        "job": "api",
        "instance": "b:80",
        "handler": "/q",
        "code": "200",
    }
    series.append((stale, [(times[-3], 7.0), (times[-2], STALE_NAN)]))
    resp = await api.post(
        "/api/v1/write", data=build_write_request(series), headers={**ADMIN, **REMOTE_WRITE_HEADERS}
    )
    assert resp.status == 204, await resp.text()
    await run(api, "metrics_aggregation")
    got = await rows_of(
        api, "SELECT value FROM analysis_derived_metrics WHERE metric = 'error_rate' AND route = '/q'"
    )
    assert got == [{"value": pytest.approx(50 / 300)}]  # 5 minutes: 250 ok + 50 errors; NaN ignored
    await run(api, "performance_analysis")
    perf = (await rows_of(api, "SELECT endpoint, p50_s, p95_s, requests FROM analysis_endpoint_performance"))[
        0
    ]
    # 600 observations: 300 <= 0.25 s, 250 in (0.25, 1], 50 above 1 s. p50 → rank 300 → 0.25;
    # p95 → rank 570 in the +Inf bucket → the highest finite bound, 1.
    assert perf == {"endpoint": "GET /q", "p50_s": pytest.approx(0.25), "p95_s": 1.0, "requests": 600.0}
