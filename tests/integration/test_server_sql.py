"""POST /api/v1/sql: request forms, answer formats, row limit, errors."""

from __future__ import annotations

import pyarrow as pa

from server import ServerConfig
from tests.integration.conftest import assert_error

LINES = b"cpu,host=a usage=0.5,n=1i 1700000000000000000\ncpu,host=b usage=1.5,n=2i 1700000000000000001\n"


async def _seed(client) -> None:
    assert (await client.post("/write", data=LINES)).status == 204


async def test_json_answer(client):
    await _seed(client)
    resp = await client.post(
        "/api/v1/sql", json={"sql": "SELECT time, host, usage, n FROM cpu ORDER BY time"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["columns"] == [
        {"name": "time", "type": "timestamp[ns]"},
        {"name": "host", "type": "string"},
        {"name": "usage", "type": "double"},
        {"name": "n", "type": "int64"},
    ]
    assert body["rows"] == [
        ["2023-11-14T22:13:20.000000000Z", "a", 0.5, 1],
        ["2023-11-14T22:13:20.000000001Z", "b", 1.5, 2],
    ]
    assert body["truncated"] is False


async def test_text_plain_csv_and_arrow(client):
    await _seed(client)
    resp = await client.post(
        "/api/v1/sql", data=b"SELECT host, n FROM cpu ORDER BY host",
        headers={"Content-Type": "text/plain", "Accept": "text/csv"},
    )  # fmt: skip
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert (await resp.text()).splitlines() == ['"host","n"', '"a",1', '"b",2']
    resp = await client.post(
        "/api/v1/sql", json={"sql": "SELECT host, usage FROM cpu ORDER BY host"},
        headers={"Accept": "application/vnd.apache.arrow.stream"},
    )  # fmt: skip
    assert resp.content_type == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(await resp.read()).read_all()
    assert table.to_pydict() == {"host": ["a", "b"], "usage": [0.5, 1.5]}


async def test_row_limit_truncates(make_client):
    client = await make_client(ServerConfig(port=0, query_max_rows=3))
    resp = await client.post("/api/v1/sql", json={"sql": "SELECT * FROM range(10)"})
    body = await resp.json()
    assert body["rows"] == [[0], [1], [2]] and body["truncated"] is True
    resp = await client.post(
        "/api/v1/sql", json={"sql": "SELECT * FROM range(10)"}, headers={"Accept": "text/csv"}
    )
    assert resp.headers["X-Tsengine-Truncated"] == "true"
    assert len((await resp.text()).splitlines()) == 4


async def test_bad_sql_is_400_with_duckdb_message(client):
    body = await assert_error(await client.post("/api/v1/sql", json={"sql": "SELEC 1"}), 400, "QueryError")
    assert "syntax error" in body["message"].lower()
    await assert_error(
        await client.post("/api/v1/sql", json={"sql": "SELECT nope FROM range(1)"}), 400, "QueryError", "nope"
    )


async def test_sandbox_refusal_is_403(client):
    for sql in ("COPY (SELECT 1) TO '/tmp/x.csv'", "SELECT * FROM read_csv('/etc/passwd')", "INSTALL httpfs"):
        resp = await client.post("/api/v1/sql", json={"sql": sql})
        await assert_error(resp, 403, "SandboxViolation")


async def test_request_errors(client):
    await assert_error(await client.post("/api/v1/sql", json={"query": "x"}), 400, "ParseError", '"sql"')
    await assert_error(
        await client.post("/api/v1/sql", data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "ParseError",
    )
    await assert_error(await client.post("/api/v1/sql", json={"sql": "  "}), 400, "InvalidInput", "empty")
    await assert_error(
        await client.post("/api/v1/sql", data=b"x", headers={"Content-Type": "image/png"}),
        415,
        "UnsupportedMediaType",
    )
    resp = await client.post("/api/v1/sql", json={"sql": "SELECT 1", "db": "no/pe"})
    await assert_error(resp, 400, "InvalidName")


async def test_query_time_limit(make_client):
    client = await make_client(query_timeout_s=0.2)
    resp = await client.post(
        "/api/v1/sql", json={"sql": "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"}
    )
    await assert_error(resp, 400, "QueryError", "timed out after 0.2 s")


async def test_every_common_type_encodes(client):
    sql = (
        "SELECT now() AS ts_tz, DATE '2020-01-02' AS d, TIME '12:34:56' AS t, INTERVAL 1 DAY AS iv, "
        "1.25::DECIMAL(5, 2) AS dec, 'ab'::BLOB AS blob, [1, 2] AS list, {'a': 1} AS struct, "
        "MAP {'k': 1} AS map, uuid() AS id, 'NaN'::DOUBLE AS nan, NULL::DOUBLE AS missing, "
        "18446744073709551615::UBIGINT AS big, 170141183460469231731687303715884105727::HUGEINT AS huge"
    )
    for accept in ("application/json", "text/csv", "application/vnd.apache.arrow.stream"):
        resp = await client.post("/api/v1/sql", json={"sql": sql}, headers={"Accept": accept})
        assert resp.status == 200, (accept, await resp.text())
    body = await (await client.post("/api/v1/sql", json={"sql": sql})).json()
    row = dict(zip([c["name"] for c in body["columns"]], body["rows"][0], strict=True))
    assert row["ts_tz"].endswith("Z") and row["d"] == "2020-01-02" and row["t"] == "12:34:56"
    assert (
        row["dec"] == 1.25 and row["blob"] == "YWI=" and row["list"] == [1, 2] and row["struct"] == {"a": 1}
    )
    assert row["nan"] is None and row["missing"] is None and row["big"] == 18446744073709551615


async def test_nested_nanosecond_timestamps_encode(client):
    await _seed(client)
    sql = "SELECT [time] AS l, {'t': time} AS s, time - time AS d, time::TIME_NS AS tn FROM cpu ORDER BY time"
    for accept in ("application/json", "text/csv", "application/vnd.apache.arrow.stream"):
        resp = await client.post("/api/v1/sql", json={"sql": sql}, headers={"Accept": accept})
        assert resp.status == 200, (accept, await resp.text())
    rows = (await (await client.post("/api/v1/sql", json={"sql": sql})).json())["rows"]
    assert rows[0][0] == ["2023-11-14T22:13:20"] and rows[0][1] == {"t": "2023-11-14T22:13:20"}


async def test_db_selects_the_database_of_unqualified_names(client):
    for db, value in (("default", 1), ("other", 2)):
        resp = await client.post(f"/write?db={db}", data=f"cpu,host=a n={value}i 1000".encode())
        assert resp.status == 204
    resp = await client.post(
        "/api/v1/sql?db=other", data=b"SELECT n FROM cpu", headers={"Content-Type": "text/plain"}
    )
    assert (await resp.json())["rows"] == [[2]]
    resp = await client.post("/api/v1/sql", json={"sql": "SELECT n FROM cpu", "db": "other"})
    assert (await resp.json())["rows"] == [[2]]
    resp = await client.post("/api/v1/sql", json={"sql": "SELECT n FROM cpu"})
    assert (await resp.json())["rows"] == [[1]]
