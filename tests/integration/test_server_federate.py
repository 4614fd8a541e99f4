"""GET /federate: selectors, the latest sample per series, Prometheus text that promtool accepts."""

from __future__ import annotations

import asyncio
import struct
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import ServerConfig
from server.selectors import parse_selector
from tests.integration.conftest import READ_TOKEN, TOKENS, WRITE_TOKEN, assert_error, require_binary
from tsengine.errors import ParseError
from tsengine.protocols.prom_remote import build_write_request

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


async def _seed(client, headers=None) -> None:
    body = build_write_request(
        [
            ({"__name__": "up", "job": "api", "instance": "a:1"}, [(1000, 0.0), (2000, 1.0)]),
            ({"__name__": "up", "job": "db", "instance": "b:1"}, [(1000, 1.0)]),
            ({"__name__": "up", "job": "gone", "instance": "c:1"}, [(1000, 1.0), (2000, STALE_NAN)]),
            ({"__name__": "http_requests_total", "job": "api", "path": '/a"b\\'}, [(3000, 7.0)]),
        ]
    )
    resp = await client.post(
        "/api/v1/write", data=body, headers={"Content-Encoding": "snappy", **(headers or {})}
    )
    assert resp.status == 204
    lines = (
        b'cpu,host=a,dc=x\\ y usage=0.5,idle=3i,ok=true,note="s" 4000000000\n'
        b"cpu,host=b usage=1.5 5000000000\n"
    )
    assert (await client.post("/write", data=lines, headers=headers or {})).status == 204


def _samples(text: str) -> dict[tuple[str, frozenset], tuple[float, float | None]]:
    return {
        (s.name, frozenset(s.labels.items())): (s.value, s.timestamp)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_federate_latest_samples(client):
    await _seed(client)
    resp = await client.get(
        "/federate", params=[("match[]", "up"), ("match[]", '{__name__=~"cpu.*", host="a"}')]
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = _samples(await resp.text())
    assert got == {
        ("up", frozenset({("job", "api"), ("instance", "a:1")})): (1.0, 2.0),
        ("up", frozenset({("job", "db"), ("instance", "b:1")})): (1.0, 1.0),
        ("cpu_usage", frozenset({("host", "a"), ("dc", "x y")})): (0.5, 4.0),
        ("cpu_idle", frozenset({("host", "a"), ("dc", "x y")})): (3.0, 4.0),
        ("cpu_ok", frozenset({("host", "a"), ("dc", "x y")})): (1.0, 4.0),
    }


async def test_federate_matchers(client):
    await _seed(client)

    async def names(selector: str) -> set[tuple[str, frozenset]]:
        resp = await client.get("/federate", params={"match[]": selector})
        assert resp.status == 200, await resp.text()
        return set(_samples(await resp.text()))

    assert {n for n, _ in await names('{job="api"}')} == {"up", "http_requests_total"}
    assert await names('up{job!="api"}') == {("up", frozenset({("job", "db"), ("instance", "b:1")}))}
    assert {dict(lbl)["job"] for _, lbl in await names('up{job=~"a.*|d.*"}')} == {"api", "db"}
    assert {dict(lbl)["job"] for _, lbl in await names('up{job!~"a.*"}')} == {"db"}
    # A label a series does not have equals "".
    assert {dict(lbl)["host"] for _, lbl in await names('{__name__="cpu_usage", dc=""}')} == {"b"}
    escaped = await names("http_requests_total")
    assert dict(next(iter(escaped))[1])["path"] == '/a"b\\'
    assert await names('{job="nope"}') == set()


async def test_federate_errors_and_auth(make_client):
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    await _seed(client, {"Authorization": f"Bearer {WRITE_TOKEN}"})
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    await assert_error(await client.get("/federate", params={"match[]": "up"}), 401, "Unauthorized")
    resp = await client.get(
        "/federate", params={"match[]": "up"}, headers={"Authorization": f"Bearer {WRITE_TOKEN}"}
    )
    await assert_error(resp, 403, "Forbidden")
    await assert_error(await client.get("/federate", headers=read), 400, "InvalidInput", "match[]")
    resp = await client.get("/federate", params={"match[]": 'up{job="x"'}, headers=read)
    await assert_error(resp, 400, "ParseError", "position")
    resp = await client.get("/federate", params={"match[]": '{job=""}'}, headers=read)
    await assert_error(resp, 400, "ParseError", "empty string")
    assert (await client.get("/federate", params={"match[]": "up"}, headers=read)).status == 200


@pytest.mark.parametrize(
    ("text", "matchers"),
    [
        ("up", [("__name__", "=", "up")]),
        (' up { job = "a" , x!~`b.*` , } ', [("__name__", "=", "up"), ("job", "=", "a"), ("x", "!~", "b.*")]),
        ("{a='q\\'s\\n'}", [("a", "=", "q's\n")]),
        ('ns:metric{a!=""}', [("__name__", "=", "ns:metric"), ("a", "!=", "")]),
    ],
)
def test_selector_parsing(text, matchers):
    assert [(m.label, m.op, m.value) for m in parse_selector(text).matchers] == matchers


@pytest.mark.parametrize(
    "text", ["", "{}", "up{", 'up{a="b"', "up{a=b}", "1up", 'up{a~"b"}', 'up{a=~"("}', "up x"]
)
def test_selector_errors(text):
    with pytest.raises(ParseError, match=r"cannot (parse|use) selector"):
        parse_selector(text)


@pytest.mark.peer
async def test_promtool_check_metrics_on_federate(client):
    promtool = require_binary("promtool")
    await _seed(client)
    text = await (await client.get("/federate", params={"match[]": '{__name__=~".+"}'})).read()
    assert b"cpu_usage" in text and b"up{" in text
    proc = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, (proc.stdout, proc.stderr)
