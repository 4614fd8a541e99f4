"""Prometheus remote write and read over HTTP, and a real Prometheus 2.42 against the server.

The peer test runs one Prometheus that scrapes ``/metrics`` and ``/federate``, remote-writes
everything it has to the server and remote-reads from it.
"""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
import time
from pathlib import Path

import aiohttp
import cramjam
import pytest

from server import ServerConfig
from tests.integration.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    assert_error,
    bearer,
    engine_of,
    free_port,
    poll,
    query,
    require_binary,
)
from tsengine.protocols.prom_remote import build_write_request

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


async def test_remote_write_stores_samples(client):
    body = build_write_request(
        [
            ({"__name__": "http_requests_total", "job": "api", "code": "200"}, [(1000, 1.0), (2000, 5.0)]),
            ({"__name__": "http_requests_total", "job": "api", "code": "500"}, [(1000, 2.0)]),
            ({"__name__": "up", "job": "api"}, [(1000, 1.0), (2000, STALE_NAN)]),
        ]
    )
    resp = await client.post("/api/v1/write", data=body, headers=HEADERS)
    assert resp.status == 204, await resp.text()
    rows = await query(
        client, "SELECT code, epoch_ms(time::TIMESTAMP), value FROM http_requests_total ORDER BY 1, 2"
    )
    assert rows == [["200", 1000, 1.0], ["200", 2000, 5.0], ["500", 1000, 2.0]]
    # The staleness marker is kept bit for bit (JSON shows NaN as null).
    table = engine_of(client).sql("SELECT value FROM up ORDER BY time")
    stale = table.column("value").to_pylist()[1]
    assert math.isnan(stale) and struct.pack("<d", stale) == struct.pack("<d", STALE_NAN)


async def test_undecodable_body_is_400(client):
    await assert_error(
        await client.post("/api/v1/write", data=b"garbage", headers=HEADERS), 400, "ParseError"
    )
    not_proto = bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff\xff"))
    await assert_error(await client.post("/api/v1/write", data=not_proto, headers=HEADERS), 400, "ParseError")
    no_name = build_write_request([({"job": "x"}, [(1, 1.0)])])
    resp = await client.post("/api/v1/write", data=no_name, headers=HEADERS)
    await assert_error(resp, 400, "ParseError", "__name__")
    assert engine_of(client).tables() == []


async def test_snappy_bomb_is_413(make_client):
    client = await make_client(ServerConfig(port=0, max_decompressed_bytes=1 << 20))
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (4 << 20)))
    resp = await client.post("/api/v1/write", data=bomb, headers=HEADERS)
    await assert_error(resp, 413, "BodyTooLarge", "1048576")


async def test_db_parameter(client):
    body = build_write_request([({"__name__": "m"}, [(1, 3.0)])])
    assert (await client.post("/api/v1/write?db=prom", data=body, headers=HEADERS)).status == 204
    assert await query(client, 'SELECT value FROM "prom".m') == [[3.0]]


def _prometheus_config(path: Path, target: str, remote_write_url: str, remote_read_url: str) -> None:
    path.write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tsengine
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: federate
    metrics_path: /federate
    honor_labels: true
    params: {{"match[]": ['{{__name__="only_in_tsengine"}}']}}
    authorization: {{credentials: {READ_TOKEN}}}
    static_configs: [{{targets: ["{target}"]}}]
remote_write:
  - url: {remote_write_url}
    basic_auth: {{username: prometheus, password: {WRITE_TOKEN}}}
    queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}
remote_read:
  - url: {remote_read_url}
    read_recent: true
    authorization: {{credentials: {READ_TOKEN}}}
"""
    )


@pytest.mark.peer
async def test_real_prometheus_scrapes_and_remote_writes(auth_client, tmp_path):
    binary = require_binary("prometheus")
    client = auth_client
    # Series only tsengine holds: one for Prometheus to get through /federate, one from half an
    # hour ago (before Prometheus started) for it to get through remote read.
    past_s = int(time.time()) - 1800
    lines = (
        f"only_in_tsengine,source=influx value=42.5 {time.time_ns()}\n"
        f"history_only_in_tsengine,source=influx value=7.25 {past_s * 10**9}\n"
    ).encode()
    resp = await client.post("/write", data=lines, headers=bearer(WRITE_TOKEN))
    assert resp.status == 204
    target = f"127.0.0.1:{client.port}"
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    _prometheus_config(config, target, f"http://{target}/api/v1/write", f"http://{target}/api/v1/read")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def target_up():
                try:
                    async with http.get(f"{prom}/api/v1/targets") as r:
                        targets = (await r.json())["data"]["activeTargets"]
                except aiohttp.ClientError:
                    return None
                up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
                return up >= {"tsengine", "federate"}

            await poll(
                target_up, timeout_s=30, what="Prometheus to report the /metrics and /federate targets up"
            )

            async def federated():
                async with http.get(f"{prom}/api/v1/query", params={"query": "only_in_tsengine"}) as r:
                    return (await r.json())["data"]["result"]

            result = await poll(federated, timeout_s=30, what="the federated series in Prometheus")
            # PromQL over history that only tsengine holds, through remote read.
            async with http.get(
                f"{prom}/api/v1/query", params={"query": "history_only_in_tsengine", "time": str(past_s + 1)}
            ) as r:
                history = (await r.json())["data"]["result"]
            assert [(h["metric"], float(h["value"][1])) for h in history] == [
                ({"__name__": "history_only_in_tsengine", "source": "influx"}, 7.25)
            ]
            labels = result[0]["metric"]
            assert labels["__name__"] == "only_in_tsengine" and labels["source"] == "influx"
            assert labels["job"] == "federate"  # the series has no job of its own
            assert float(result[0]["value"][1]) == 42.5

            sql = (
                "SELECT epoch_ms(time::TIMESTAMP) AS ms, value FROM scrape_samples_scraped "
                "WHERE job = 'tsengine' ORDER BY ms"
            )

            async def stored_samples():
                if ("default", "scrape_samples_scraped") not in engine_of(client).tables():
                    return None
                rows = await query(client, sql, token=ADMIN_TOKEN)
                return rows if len(rows) >= 2 else None

            rows = await poll(stored_samples, timeout_s=30, what="remote-written samples in tsengine")
            # Compare with what Prometheus holds: the same timestamps carry the same values.
            async with http.get(
                f"{prom}/api/v1/query", params={"query": 'scrape_samples_scraped{job="tsengine"}[5m]'}
            ) as r:
                result = (await r.json())["data"]["result"]
            raw = {round(float(ts) * 1000): float(v) for ts, v in result[0]["values"]}
            for ms, value in rows:
                assert raw.get(ms) == value, (ms, value, raw)
            # Prometheus' own series went through remote write too, with their labels as tags.
            up = await query(client, "SELECT DISTINCT job, instance FROM up", token=ADMIN_TOKEN)
            assert ["tsengine", target] in up
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


def _read_request(queries: list[tuple[int, int, list[tuple[int, str, str]]]]) -> bytes:
    from server.remote_read import ReadRequest

    req = ReadRequest()
    for start_ms, end_ms, matchers in queries:
        q = req.queries.add(start_timestamp_ms=start_ms, end_timestamp_ms=end_ms)
        for mtype, name, value in matchers:
            q.matchers.add(type=mtype, name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def _read_response(body: bytes) -> list[list[tuple[dict[str, str], list[tuple[int, float]]]]]:
    from server.remote_read import ReadResponse

    resp = ReadResponse.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        [
            ({lbl.name: lbl.value for lbl in ts.labels}, [(s.timestamp, s.value) for s in ts.samples])
            for ts in r.timeseries
        ]
        for r in resp.results
    ]


EQ, NEQ, RE, NRE = 0, 1, 2, 3


async def test_remote_read(client):
    body = build_write_request(
        [
            ({"__name__": "up", "job": "api", "instance": "a"}, [(1000, 1.0), (2000, 0.0), (3000, 1.0)]),
            ({"__name__": "up", "job": "db", "instance": "b"}, [(2000, 1.0), (9000, 1.0)]),
        ]
    )
    assert (await client.post("/api/v1/write", data=body, headers=HEADERS)).status == 204
    line = b"cpu,host=a usage=0.5,n=3i 2000000000\ncpu,host=b usage=1.5 2500000000\n"
    assert (await client.post("/write", data=line)).status == 204
    req = _read_request(
        [
            (1500, 3000, [(EQ, "__name__", "up")]),
            (0, 10_000, [(RE, "__name__", "cpu_.*"), (NEQ, "host", "b")]),
            (0, 10_000, [(EQ, "job", "nope")]),
        ]
    )
    resp = await client.post("/api/v1/read", data=req, headers={"Content-Encoding": "snappy"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Encoding"] == "snappy" and resp.content_type == "application/x-protobuf"
    up, cpu, none = _read_response(await resp.read())
    assert sorted(up, key=lambda s: s[0]["job"]) == [
        ({"__name__": "up", "instance": "a", "job": "api"}, [(2000, 0.0), (3000, 1.0)]),
        ({"__name__": "up", "instance": "b", "job": "db"}, [(2000, 1.0)]),
    ]
    assert sorted(cpu, key=lambda s: s[0]["__name__"]) == [
        ({"__name__": "cpu_n", "host": "a"}, [(2000, 3.0)]),
        ({"__name__": "cpu_usage", "host": "a"}, [(2000, 0.5)]),
    ]
    assert none == []


async def test_remote_read_errors(make_client):
    client = await make_client(ServerConfig(port=0, max_read_samples=1))
    body = build_write_request([({"__name__": "up"}, [(1000, 1.0), (2000, 1.0)])])
    assert (await client.post("/api/v1/write", data=body, headers=HEADERS)).status == 204
    resp = await client.post("/api/v1/read", data=_read_request([(0, 5000, [(EQ, "__name__", "up")])]))
    await assert_error(resp, 400, "LimitExceeded", "max_read_samples=1")
    await assert_error(await client.post("/api/v1/read", data=b"junk"), 400, "ParseError")
    resp = await client.post("/api/v1/read", data=_read_request([(0, 5000, [])]))
    await assert_error(resp, 400, "ParseError", "no matchers")
    resp = await client.post("/api/v1/read", data=_read_request([(0, 5000, [(7, "a", "b")])]))
    await assert_error(resp, 400, "ParseError", "unknown type 7")
