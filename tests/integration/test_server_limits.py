"""Request limits and engine overload, each with its status code and message."""

from __future__ import annotations

import pytest

from server import ServerConfig
from tests.integration.conftest import assert_error, engine_of
from tsengine.protocols.prom_remote import build_write_request
from tsengine.settings import Settings


async def test_rows_per_request(make_client):
    client = await make_client(ServerConfig(port=0, max_rows_per_request=3))
    assert (await client.post("/write", data=b"m v=1 1\nm v=2 2\nm v=3 3\n")).status == 204
    resp = await client.post("/write", data=b"m v=1 1\nm v=2 2\nn v=3 3\nn v=4 4\n")
    await assert_error(resp, 400, "LimitExceeded", "4 rows", "max_rows_per_request=3")


async def test_labels_per_series(make_client):
    client = await make_client(ServerConfig(port=0, max_labels_per_series=2))
    # Three tag keys over the request, but no row has more than two: accepted.
    assert (await client.post("/write", data=b"m,a=1,b=2 v=1 1\nm,c=3 v=2 2\n")).status == 204
    resp = await client.post("/write", data=b"m,a=1 v=1 1\nm,a=1,b=2,c=3 v=1 2\n")
    await assert_error(resp, 400, "LimitExceeded", "row 2 has 3 tags", "max_labels_per_series=2")
    body = build_write_request([({"__name__": "x", "a": "1", "b": "2", "c": "3"}, [(1, 1.0)])])
    resp = await client.post("/api/v1/write", data=body, headers={"Content-Encoding": "snappy"})
    await assert_error(resp, 400, "LimitExceeded", "max_labels_per_series=2")


async def test_label_name_and_value_length(make_client):
    client = await make_client(ServerConfig(port=0, max_label_name_bytes=8, max_label_value_bytes=10))
    resp = await client.post("/write", data=b"m,averyveryverylongname=x v=1 1")
    await assert_error(resp, 400, "LimitExceeded", "max_label_name_bytes=8")
    resp = await client.post("/write", data=b"m,t=short v=1 1\nm,t=" + b"x" * 11 + b" v=1 2")
    await assert_error(resp, 400, "LimitExceeded", "tag 't'", "11 bytes in row 2", "max_label_value_bytes=10")
    assert engine_of(client).tables() == []


async def test_overload_is_429_with_retry_after(make_client):
    client = await make_client(max_buffer_bytes=1000, overload_retry_after_s=2.5)
    resp = await client.post("/write", data=b"m v=1 1")
    body = await assert_error(resp, 429, "Overloaded", "buffers are full")
    assert resp.headers["Retry-After"] == "3"
    assert body["retry_after_s"] == 2.5
    resp = await client.post("/api/v1/write", data=build_write_request([({"__name__": "x"}, [(1, 1.0)])]))
    assert resp.status == 429 and resp.headers["Retry-After"] == "3"


@pytest.mark.skipif(
    "max_series_per_table" not in Settings.__dataclass_fields__,
    reason="the engine has no Settings.max_series_per_table yet",
)
async def test_series_cardinality_per_table(make_client):
    client = await make_client(max_series_per_table=2)
    assert (await client.post("/write", data=b"m,h=a v=1 1\nm,h=b v=1 1\n")).status == 204
    resp = await client.post("/write", data=b"m,h=a v=2 2\nm,h=c v=2 2\n")
    await assert_error(resp, 400, "LimitExceeded")
    # Existing series are still accepted.
    assert (await client.post("/write", data=b"m,h=a v=3 3\nm,h=b v=3 3\n")).status == 204
