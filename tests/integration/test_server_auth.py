"""Authentication and scopes, error mapping at the boundary, and the server configuration."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server import ServerConfig, Token, create_app, load_config
from server.auth import check_bind
from tests.integration.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    assert_error,
    engine_of,
)
from tsengine.errors import InvalidInput


def basic(token: str, user: str = "prometheus") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


async def test_no_token_is_401(auth_client):
    resp = await auth_client.post("/write", data=b"m v=1 1")
    body = await assert_error(resp, 401, "Unauthorized", "no token", "'write'")
    assert "write" in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await assert_error(await auth_client.post("/api/v1/sql", data=b"SELECT 1"), 401, "Unauthorized")


async def test_unknown_token_and_scheme_are_401(auth_client):
    resp = await auth_client.post("/write", data=b"m v=1 1", headers={"Authorization": "Bearer nope"})
    await assert_error(resp, 401, "Unauthorized", "unknown token")
    resp = await auth_client.post("/write", data=b"m v=1 1", headers={"Authorization": "Digest x"})
    await assert_error(resp, 401, "Unauthorized", "unsupported scheme")
    resp = await auth_client.post("/write", data=b"m v=1 1", headers={"Authorization": "Basic !!!"})
    await assert_error(resp, 401, "Unauthorized", "malformed")


async def test_wrong_scope_is_403(auth_client):
    resp = await auth_client.post(
        "/write", data=b"m v=1 1", headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    await assert_error(resp, 403, "Forbidden", "lacks scope 'write'", "reader")
    resp = await auth_client.post(
        "/api/v1/sql",
        data=b"SELECT 1",
        headers={"Authorization": f"Token {WRITE_TOKEN}", "Content-Type": "text/plain"},
    )
    await assert_error(resp, 403, "Forbidden", "lacks scope 'read'")
    assert engine_of(auth_client).tables() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {WRITE_TOKEN}"},
        {"Authorization": f"Token {WRITE_TOKEN}"},
        basic(WRITE_TOKEN),
        {"Authorization": f"bearer {ADMIN_TOKEN}"},
    ],
    ids=["bearer", "token", "basic", "admin"],
)
async def test_accepted_credentials(auth_client, headers):
    resp = await auth_client.post("/write", data=b"m v=1 1", headers=headers)
    assert resp.status == 204, await resp.text()


async def test_admin_may_read_and_write(auth_client):
    h = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await auth_client.post("/write", data=b"m v=1 1", headers=h)).status == 204
    resp = await auth_client.post("/api/v1/sql", json={"sql": "SELECT v FROM m"}, headers=h)
    assert (await resp.json())["rows"] == [[1.0]]


async def test_health_and_metrics_are_public(auth_client):
    for path in ("/health", "/health/telemetry", "/metrics"):
        assert (await auth_client.get(path)).status == 200, path


async def test_unknown_route_and_method_are_json(client):
    await assert_error(await client.get("/nope"), 404, "NotFound")
    resp = await client.get("/write")
    await assert_error(resp, 405, "MethodNotAllowed")
    assert "POST" in resp.headers["Allow"]


class _ExplodingEngine:
    """A real engine whose writes fail with an unexpected error (a bug, not bad input)."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def write_batches(self, batches):
        raise RuntimeError("BUG: secret internal detail")


async def test_unexpected_error_is_json_500_without_traceback(make_client, engines, caplog):
    client = await make_client(engine=_ExplodingEngine(engines()))
    resp = await client.post("/write", data=b"m v=1 1")
    body = await assert_error(resp, 500, "InternalError", "internal error")
    assert "secret" not in str(body)
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


def test_refuses_public_bind_without_tokens(engines):
    with pytest.raises(InvalidInput, match=r"cannot listen on 0\.0\.0\.0"):
        check_bind(ServerConfig(host="0.0.0.0"))
    with pytest.raises(InvalidInput, match="no tokens"):
        create_app(engines(), ServerConfig(host="10.1.2.3"))
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(ServerConfig(host=host))
    check_bind(ServerConfig(host="0.0.0.0", tokens=(Token("t1", frozenset({"read"})),)))


def test_config_from_env_names_the_variable():
    cfg = ServerConfig.from_env(
        {
            "TSENGINE_PORT": "9999",
            "TSENGINE_TOKENS": "abc:write+read, def:admin",
            "TSENGINE_QUERY_TIMEOUT_S": "2.5",
        }
    )
    assert cfg.port == 9999 and cfg.query_timeout_s == 2.5
    assert [(t.token, sorted(t.scopes)) for t in cfg.tokens] == [
        ("abc", ["read", "write"]),
        ("def", ["admin"]),
    ]
    with pytest.raises(InvalidInput, match="TSENGINE_PORT"):
        ServerConfig.from_env({"TSENGINE_PORT": "eighty"})
    with pytest.raises(InvalidInput, match="TSENGINE_TOKENS"):
        ServerConfig.from_env({"TSENGINE_TOKENS": "abc:superuser"})
    with pytest.raises(InvalidInput, match="max_body_bytes"):
        ServerConfig.from_env({"TSENGINE_MAX_BODY_BYTES": "0"})


def test_alerts_max_alerts_from_env_lands_in_the_alerting_section(tmp_path: Path):
    y = tmp_path / "c.yaml"
    y.write_text("alerting: {default_rules: false, max_alerts: 50}\n")
    cfg = load_config(y, {"ALERTS_MAX_ALERTS": "7"})
    assert cfg.alerting == {"default_rules": False, "max_alerts": 7}
    with pytest.raises(InvalidInput, match="ALERTS_MAX_ALERTS"):
        ServerConfig.from_env({"ALERTS_MAX_ALERTS": "many"})


def test_config_file_yaml_and_toml(tmp_path: Path):
    y = tmp_path / "c.yaml"
    y.write_text("port: 1234\ntokens:\n  - {token: s1, scopes: [write], name: tg}\nengine: {fsync: always}\n")
    cfg = load_config(y, {"TSENGINE_PORT": "4321"})
    assert cfg.port == 4321  # the environment wins over the file
    assert cfg.tokens[0].name == "tg" and cfg.engine == {"fsync": "always"}
    t = tmp_path / "c.toml"
    t.write_text('host = "::1"\nmax_rows_per_request = 10\n')
    assert load_config(t, {}).max_rows_per_request == 10
    bad = tmp_path / "bad.yaml"
    bad.write_text("prot: 1\n")
    with pytest.raises(InvalidInput, match="unknown key 'prot'"):
        load_config(bad, {})
    bad.write_text("port: [1]\n")
    with pytest.raises(InvalidInput, match="port"):
        load_config(bad, {})
    bad.write_text("tokens:\n  - {token: x, scopes: [root]}\n")
    with pytest.raises(InvalidInput, match=r"tokens\[0\]"):
        load_config(bad, {})
    with pytest.raises(InvalidInput, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", {})
