"""Native import: columnar JSON, NDJSON rows and Arrow IPC streams."""

from __future__ import annotations

import gzip

import orjson
import pyarrow as pa

from tests.integration.conftest import assert_error, engine_of, query

T0 = 1_700_000_000_000_000_000
ARROW = "application/vnd.apache.arrow.stream"


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def test_columnar_json_object_and_list(client):
    one = {"table": "cpu", "time": [T0, T0 + 1], "tags": {"host": ["a", "b"]}, "fields": {"usage": [0.5, 1]}}
    assert (await client.post("/api/v1/import", json=one)).status == 204
    many = [
        {"table": "cpu", "time": [T0 + 2], "tags": {"host": ["c"]}, "fields": {"usage": [2.5]}},
        {"table": "mem", "db": "other", "time": [T0], "fields": {"used": [7], "ok": [True]}},
    ]
    assert (await client.post("/api/v1/import", json=many)).status == 204
    assert await query(client, "SELECT host, usage FROM cpu ORDER BY time") == [
        ["a", 0.5],
        ["b", 1.0],
        ["c", 2.5],
    ]
    assert await query(client, 'SELECT used, ok FROM "other".mem') == [[7, True]]


async def test_ndjson_rows_grouped_by_table(client):
    lines = [
        {"table": "cpu", "time": T0, "tags": {"host": "a"}, "fields": {"usage": 1.0}},
        {"table": "disk", "time": T0, "fields": {"free": 10}},
        {
            "table": "cpu",
            "time": T0 + 1,
            "tags": {"host": "b", "dc": "x"},
            "fields": {"usage": 2.0, "steal": 0.1},
        },
    ]
    body = b"\n".join(orjson.dumps(x) for x in lines) + b"\n\n"
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    resp = await client.post("/api/v1/import", data=gzip.compress(body), headers=headers)
    assert resp.status == 204, await resp.text()
    assert await query(client, "SELECT host, dc, usage, steal FROM cpu ORDER BY time") == [
        ["a", None, 1.0, None],
        ["b", "x", 2.0, 0.1],
    ]
    assert await query(client, "SELECT free FROM disk") == [[10]]


async def test_arrow_stream(client):
    table = pa.table(
        {
            "time": pa.array([T0, T0 + 1], pa.timestamp("ns")),
            "host": pa.array(["a", "b"]).dictionary_encode(),
            "region": ["eu", "us"],
            "usage": [0.25, 0.75],
        }
    )
    resp = await client.post(
        "/api/v1/import?table=cpu&tags=region", data=arrow_stream(table), headers={"Content-Type": ARROW}
    )
    assert resp.status == 204, await resp.text()
    schema = engine_of(client).schema("cpu")
    assert set(schema.tags) == {"host", "region"}
    assert await query(client, "SELECT host, region, usage FROM cpu ORDER BY time") == [
        ["a", "eu", 0.25],
        ["b", "us", 0.75],
    ]


async def test_arrow_stream_decoding_past_the_bound_is_413(make_client):
    from server import ServerConfig

    client = await make_client(ServerConfig(port=0, max_decompressed_bytes=1 << 20))
    big = pa.table({"time": pa.array(range(300_000), pa.int64()), "v": pa.array([0.0] * 300_000)})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, big.schema, options=options) as writer:
        writer.write_table(big, max_chunksize=50_000)
    body = sink.getvalue().to_pybytes()
    assert len(body) < 1 << 20
    resp = await client.post("/api/v1/import?table=t", data=body, headers={"Content-Type": ARROW})
    await assert_error(resp, 413, "BodyTooLarge", "decodes to more than")
    assert engine_of(client).tables() == []


async def test_import_errors_name_the_item_and_write_nothing(client):
    bad_list = [
        {"table": "ok", "time": [T0], "fields": {"v": [1.0]}},
        {"table": "ok", "time": [T0], "fields": {"v": [1.0, 2.0]}},
    ]
    body = await assert_error(await client.post("/api/v1/import", json=bad_list), 400, "ParseError", "item 1")
    assert body["item"] == 1
    await assert_error(
        await client.post("/api/v1/import", json={"table": "t", "time": [1]}), 400, "ParseError", "field"
    )
    await assert_error(
        await client.post("/api/v1/import", json={"tabel": "t"}), 400, "ParseError", "unknown keys"
    )
    mixed = {"table": "t", "time": [1, 2], "fields": {"v": [1, "x"]}}
    await assert_error(await client.post("/api/v1/import", json=mixed), 400, "ParseError", "item 0")
    big_time = {"table": "t", "time": [2**64], "fields": {"v": [1]}}
    await assert_error(await client.post("/api/v1/import", json=big_time), 400, "ParseError")
    nd = b'{"table": "t", "time": 1, "fields": {"v": 1}}\n{"table": "t", "time": "x", "fields": {"v": 1}}\n'
    resp = await client.post("/api/v1/import", data=nd, headers={"Content-Type": "application/x-ndjson"})
    assert (await assert_error(resp, 400, "ParseError", "line 2"))["line"] == 2
    resp = await client.post("/api/v1/import", data=b"not arrow", headers={"Content-Type": ARROW})
    await assert_error(resp, 400, "InvalidInput", "'table' query parameter")
    resp = await client.post("/api/v1/import?table=t", data=b"not arrow", headers={"Content-Type": ARROW})
    await assert_error(resp, 400, "ParseError", "Arrow stream")
    no_time = arrow_stream(pa.table({"v": [1.0]}))
    resp = await client.post("/api/v1/import?table=t", data=no_time, headers={"Content-Type": ARROW})
    await assert_error(resp, 400, "InvalidInput", "no 'time' column")
    resp = await client.post("/api/v1/import", data=b"x", headers={"Content-Type": "text/csv"})
    await assert_error(resp, 415, "UnsupportedMediaType", "text/csv")
    assert engine_of(client).tables() == []
