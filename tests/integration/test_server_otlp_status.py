"""OTLP/HTTP error bodies: a ``google.rpc.Status`` in the request's encoding, as the spec requires.

An OpenTelemetry exporter logs the Status message of a refused export; a JSON request gets the
JSON form, a protobuf request the protobuf form; Retry-After stays on 429/503.
"""

from __future__ import annotations

import gzip

import orjson
import pytest
from google.rpc import status_pb2

from server import ServerConfig
from tests.integration.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/traces"])
async def test_protobuf_request_gets_a_protobuf_status(make_client, path: str) -> None:
    client = await make_client()
    r = await client.post(path, data=b"\xff\xff\xff", headers={"Content-Type": "application/x-protobuf"})
    assert r.status == 400
    assert r.content_type == "application/x-protobuf"
    status = status_pb2.Status.FromString(await r.read())
    assert status.code == 3  # INVALID_ARGUMENT
    assert "cannot" in status.message


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/traces"])
async def test_json_request_gets_a_json_status(make_client, path: str) -> None:
    client = await make_client()
    r = await client.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400
    body = orjson.loads(await r.read())
    assert body["code"] == 3 and "cannot" in body["message"]


async def test_auth_failures_are_statuses_too(make_client) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    body = gzip.compress(b"")
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    r = await client.post("/v1/traces", data=body, headers=headers)
    assert r.status == 401
    assert status_pb2.Status.FromString(await r.read()).code == 16  # UNAUTHENTICATED
    r = await client.post(
        "/v1/traces", data=body, headers={**headers, "Authorization": f"Bearer {READ_TOKEN}"}
    )
    assert r.status == 403
    assert status_pb2.Status.FromString(await r.read()).code == 7  # PERMISSION_DENIED
    r = await client.post(
        "/v1/traces", data=body, headers={**headers, "Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert r.status == 200


async def test_other_routes_keep_json_errors(make_client) -> None:
    client = await make_client()
    r = await client.post("/api/v1/import", data=b"{bad", headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert set(orjson.loads(await r.read())) >= {"error", "message"}
