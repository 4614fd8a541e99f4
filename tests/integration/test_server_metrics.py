"""GET /metrics (Prometheus text and OpenMetrics, promtool-clean) and the health endpoints."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from server.keys import METRICS_KEY
from tests.integration.conftest import poll, require_binary


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for fam in parse_text(text) for s in fam.samples}


async def test_metrics_count_requests_and_samples(client):
    assert (await client.post("/write", data=b"m v=1,w=2 1\nm v=3 2\n")).status == 204
    assert (await client.post("/write", data=b"m v=bad 3")).status == 400
    assert (await client.post("/api/v1/sql", json={"sql": "SELECT 1"})).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(await resp.text())
    influx = frozenset({("protocol", "influx"), ("outcome", "accepted")})
    assert got[("tsengine_ingest_requests_total", influx)] == 1
    assert got[("tsengine_ingest_samples_total", influx)] == 3
    assert got[("tsengine_ingest_rows_total", frozenset({("protocol", "influx")}))] == 2
    rejected = frozenset({("protocol", "influx"), ("outcome", "rejected")})
    assert got[("tsengine_ingest_requests_total", rejected)] == 1
    write_400 = frozenset({("route", "/write"), ("method", "POST"), ("code", "400")})
    assert got[("tsengine_http_requests_total", write_400)] == 1
    assert got[("tsengine_http_request_duration_seconds_count", frozenset({("route", "/write")}))] == 2
    assert got[("tsengine_queries_total", frozenset({("outcome", "ok")}))] == 1
    assert got[("tsengine_tables", frozenset())] == 1
    assert got[("tsengine_buffer_rows", frozenset())] == 2
    assert 0 < got[("tsengine_buffer_fill_ratio", frozenset())] < 1
    # The engine reports its WAL appends (one per accepted request) through its observer.
    assert got[("tsengine_wal_append_duration_seconds_count", frozenset())] == 1
    assert got[("tsengine_wal_written_bytes_total", frozenset())] > 0


async def test_protocol_series_exist_from_the_start(client):
    got = samples(await (await client.get("/metrics")).text())
    for protocol in ("influx", "prometheus_remote_write", "otlp", "import"):
        for outcome in ("accepted", "rejected"):
            key = (
                "tsengine_ingest_requests_total",
                frozenset({("protocol", protocol), ("outcome", outcome)}),
            )
            assert got[key] == 0


async def test_unmatched_paths_share_one_label(client):
    for path in ("/a", "/b", "/c"):
        await client.get(path)
    got = samples(await (await client.get("/metrics")).text())
    assert (
        got[
            (
                "tsengine_http_requests_total",
                frozenset({("route", "unmatched"), ("method", "GET"), ("code", "404")}),
            )
        ]
        == 3
    )


async def test_process_metrics_come_from_the_background_sampler(client):
    sampler = client.app[METRICS_KEY].process

    async def sampled():
        return sampler.samples

    await poll(sampled, timeout_s=10, what="the first psutil sample")
    got = samples(await (await client.get("/metrics")).text())
    assert got[("process_resident_memory_bytes", frozenset())] > 0
    assert ("process_open_fds", frozenset()) in got
    assert ("process_cpu_seconds_total", frozenset()) in got


async def test_openmetrics_by_accept(client):
    await client.post("/write", data=b"m v=1 1")
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = await resp.text()
    assert text.endswith("# EOF\n")
    names = {fam.name for fam in parse_openmetrics(text)}
    assert {"tsengine_ingest_requests", "tsengine_http_request_duration_seconds"} <= names


@pytest.mark.peer
async def test_promtool_check_metrics_is_clean(client):
    promtool = require_binary("promtool")
    await client.post("/write", data=b"m v=1 1")
    await client.post("/api/v1/sql", json={"sql": "SELECT 1"})
    text = await (await client.get("/metrics")).read()
    proc = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, (proc.stdout, proc.stderr)


async def test_health(client):
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    await client.post("/write", data=b"m v=1 1")
    body = await (await client.get("/health/telemetry")).json()
    engine = body["engine"]
    assert engine["tables"] == 1 and engine["live_rows"] == 1 and engine["wal_last_seq"] >= 1
    assert engine["files"] == 0 and engine["disk_bytes"] == 0 and 0 < engine["buffer_fill_ratio"] < 1
    assert body["status"] == "ok" and body["uptime_s"] >= 0 and body["server"]["auth"] is False
