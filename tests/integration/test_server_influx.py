"""Influx line protocol over HTTP: /write (1.x) and /api/v2/write (2.x), and influxdb-client."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from server import ServerConfig
from tests.integration.conftest import (
    ADMIN_TOKEN,
    TOKENS,
    WRITE_TOKEN,
    assert_error,
    engine_of,
    query,
)

T0 = 1_700_000_000_000_000_000


async def test_v1_write_stores_typed_values(client):
    body = (
        'cpu,host=a,region=eu usage=0.5,count=3i,big=7u,ok=t,note="hi \\"there\\"" 1700000000000000000\n'
        "# a comment\n\n"
        "cpu,host=b usage=1e3 1700000000000000001\n"
    )
    resp = await client.post("/write?db=default", data=body)
    assert resp.status == 204, await resp.text()
    rows = await query(client, "SELECT host, region, usage, count, big, ok, note FROM cpu ORDER BY time")
    assert rows == [["a", "eu", 0.5, 3, 7, True, 'hi "there"'], ["b", None, 1000.0, None, None, None, None]]
    types = await client.post("/api/v1/sql", json={"sql": "SELECT count, big, ok FROM cpu LIMIT 1"})
    assert [c["type"] for c in (await types.json())["columns"]] == ["int64", "uint64", "bool"]


async def test_v1_precision_and_db(client):
    resp = await client.post("/write?db=metrics&precision=s", data=b"m v=1 1700000000")
    assert resp.status == 204
    rows = await query(client, 'SELECT epoch_ns(time), v FROM "metrics".m')
    assert rows == [[T0, 1.0]]


async def test_missing_timestamp_uses_server_clock(client, clock):
    assert (await client.post("/write", data=b"m v=1")).status == 204
    assert await query(client, "SELECT epoch_ns(time) FROM m") == [[clock.now_ns()]]


async def test_v2_bucket_org_precision(client):
    resp = await client.post(
        "/api/v2/write?org=acme&bucket=telegraf/autogen&precision=ms", data=b"mem used=5i 1700000000000"
    )
    assert resp.status == 204, await resp.text()
    assert await query(client, 'SELECT epoch_ns(time), used FROM "telegraf".mem') == [[T0, 5]]


async def test_gzip_body(client):
    resp = await client.post(
        "/api/v2/write?bucket=default",
        data=gzip.compress(b"g v=2 1\ng v=3 2\n"),
        headers={"Content-Encoding": "gzip"},
    )
    assert resp.status == 204
    assert await query(client, "SELECT v FROM g ORDER BY time") == [[2.0], [3.0]]


async def test_bad_line_names_it_and_writes_nothing(client):
    body = b"ok v=1 1\nok v=2 2\nbad v=oops 3\nok v=4 4\n"
    resp = await client.post("/write", data=body)
    err = await assert_error(resp, 400, "ParseError", "line 3")
    assert err["line"] == 3
    assert engine_of(client).tables() == []


async def test_type_conflict_with_stored_field_is_400(client):
    assert (await client.post("/write", data=b"m v=1 1")).status == 204
    resp = await client.post("/write", data=b'm v="text" 2')
    await assert_error(resp, 400, "SchemaConflict", "v")
    assert await query(client, "SELECT count(*) FROM m") == [[1]]


async def test_unknown_precision_and_bad_db(client):
    await assert_error(
        await client.post("/write?precision=days", data=b"m v=1"), 400, "ParseError", "precision"
    )
    await assert_error(
        await client.post("/write?db=no%20spaces", data=b"m v=1"), 400, "InvalidName", "database"
    )


async def test_body_over_limit_is_413(make_client):
    client = await make_client(ServerConfig(port=0, max_body_bytes=1000))
    resp = await client.post("/write", data=b"m v=1 1\n" * 200)
    await assert_error(resp, 413, "BodyTooLarge", "1000 bytes")
    assert engine_of(client).tables() == []


async def test_body_over_limit_without_content_length_is_413(make_client):
    client = await make_client(ServerConfig(port=0, max_body_bytes=1000))

    async def chunks():
        for _ in range(50):
            yield b"m v=1 1\n" * 10

    resp = await client.post("/write", data=chunks())
    await assert_error(resp, 413, "BodyTooLarge", "1000 bytes")


async def test_gzip_bomb_is_413(make_client):
    client = await make_client(ServerConfig(port=0, max_decompressed_bytes=1 << 20))
    bomb = gzip.compress(b"m v=1 1\n" * (1 << 20))  # 8 MiB of lines in ~20 KB
    assert len(bomb) < 100_000
    resp = await client.post("/write", data=bomb, headers={"Content-Encoding": "gzip"})
    await assert_error(resp, 413, "BodyTooLarge", "inflates to more than the limit of 1048576 bytes")
    assert engine_of(client).tables() == []


async def test_corrupt_gzip_is_400(client):
    resp = await client.post("/write", data=b"\x1f\x8bnot gzip at all", headers={"Content-Encoding": "gzip"})
    await assert_error(resp, 400, "ParseError", "cannot decode gzip request body")
    # Cut short: must not be taken as a shorter body ("m v=1 1\nm v=1" would parse).
    truncated = gzip.compress(b"m v=1 1\n" * 100)[:-12]
    resp = await client.post("/write", data=truncated, headers={"Content-Encoding": "gzip"})
    await assert_error(resp, 400, "ParseError", "ends before the end of the stream")
    assert engine_of(client).tables() == []


async def test_when_aiohttp_inflates_bodies_the_bounds_still_hold(make_client):
    """An app served with aiohttp's default auto_decompress=True (an embedding application)."""
    client = await make_client(ServerConfig(port=0, max_decompressed_bytes=1 << 20), auto_decompress=True)
    gz = {"Content-Encoding": "gzip"}
    assert (await client.post("/write", data=gzip.compress(b"m v=1 1\n"), headers=gz)).status == 204
    bomb = gzip.compress(b"m v=1 1\n" * (1 << 20))
    await assert_error(await client.post("/write", data=bomb, headers=gz), 413, "BodyTooLarge", "inflates")
    resp = await client.post("/write", data=b"\x1f\x8bnot gzip at all", headers=gz)
    await assert_error(resp, 400, "BrokenBody", "cannot read gzip body")


async def test_unsupported_encoding_is_415(client):
    resp = await client.post("/write", data=b"m v=1", headers={"Content-Encoding": "compress"})
    await assert_error(resp, 415, "UnsupportedMediaType", "compress")


async def test_v1_query_credentials(make_client):
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    assert (await client.post(f"/write?u=anyone&p={WRITE_TOKEN}", data=b"m v=1 1")).status == 204
    await assert_error(await client.post("/write?u=x&p=wrong", data=b"m v=1 1"), 401, "Unauthorized")
    # ?p= is an Influx 1.x convention only: other routes ignore it.
    resp = await client.post(f"/api/v2/write?p={WRITE_TOKEN}", data=b"m v=1 2")
    await assert_error(resp, 401, "Unauthorized", "no token")


@pytest.mark.peer
async def test_influxdb_client_writes_through_v2(make_client):
    # The client is synchronous: it and its (slow) import run in a thread, off the event loop.
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    url = str(client.make_url("/")).rstrip("/")

    def write() -> None:
        from influxdb_client import InfluxDBClient, Point, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        with InfluxDBClient(url=url, token=WRITE_TOKEN, org="acme") as influx:
            api = influx.write_api(write_options=SYNCHRONOUS)
            api.write(
                bucket="bench",
                record=[
                    Point("weather").tag("city", "Berlin, DE").field("temp", 21.5).field("rain", 0)
                    .time(T0, WritePrecision.NS),
                    Point("weather").tag("city", "Oslo").field("temp", -3.25).field("rain", 2)
                    .time(T0 + 1, WritePrecision.NS),
                ],
            )  # fmt: skip
            api.write(
                bucket="bench", record="weather,city=Oslo temp=1.5,rain=4i 1700000000", write_precision="s"
            )

    await asyncio.to_thread(write)
    rows = await query(
        client,
        'SELECT city, temp, rain, epoch_ns(time) FROM "bench".weather ORDER BY time, city',
        token=ADMIN_TOKEN,
    )
    assert rows == [["Berlin, DE", 21.5, 0, T0], ["Oslo", 1.5, 4, T0], ["Oslo", -3.25, 2, T0 + 1]]

    def bad_write() -> str:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        with InfluxDBClient(url=url, token=WRITE_TOKEN, org="acme") as influx:
            try:
                influx.write_api(write_options=SYNCHRONOUS).write(bucket="bench", record="weather temp=")
            except ApiException as exc:
                return f"{exc.status} {exc.body}"
        return "no error"

    answer = await asyncio.to_thread(bad_write)
    assert answer.startswith("400") and "line 1" in answer


async def test_ping(auth_client):
    for method in ("GET", "HEAD"):
        resp = await auth_client.request(method, "/ping")
        assert resp.status == 204 and resp.headers["X-Influxdb-Version"]
