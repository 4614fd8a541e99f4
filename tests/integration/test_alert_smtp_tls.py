"""E-mail over STARTTLS + AUTH against a real SMTP server (aiosmtpd) on 127.0.0.1 whose
certificate the test generates: trusted through ``tls_ca_file`` it delivers; untrusted, the
delivery fails before any credential is sent, the failure is in ``alerts_history``, and the other
channels are unaffected; ``tls_verify: false`` is the explicit opt-out."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import ServerConfig
from tests.integration.conftest import engine_of, free_port, query
from tsengine.clock import ManualClock

Make = Callable[..., Awaitable[TestClient]]


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tsengine test {name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Mailbox:
    """Messages received and logins seen (AUTH is only accepted after STARTTLS)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("alerts", "s3cret"))


@pytest.fixture
async def tls_smtp(tmp_path: Path) -> AsyncIterator[tuple[int, Mailbox, Path]]:
    from aiosmtpd.controller import Controller

    cert, key = self_signed(tmp_path, "smtp")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
        authenticator=box.authenticate, auth_required=True, auth_require_tls=True,
    )  # fmt: skip
    await asyncio.to_thread(controller.start)
    yield port, box, cert
    await asyncio.to_thread(controller.stop)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[Any]]]:
    got: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/hook")), got
    await server.close()


async def test_starttls_verifies_the_certificate(
    make_client: Make, tls_smtp: tuple[int, Mailbox, Path], hook: tuple[str, list[Any]],
    clock: ManualClock, tmp_path: Path,
) -> None:  # fmt: skip
    port, box, cert = tls_smtp
    other_cert, _ = self_signed(tmp_path, "other")
    hook_url, hooked = hook
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "starttls": True,
        "username": "alerts",
        "password": "s3cret",
        "from": "alerts@example.com",
        "to": ["ops@example.com"],
        "timeout": "5s",
    }
    channels = {
        "trusted": {**mail, "tls_ca_file": str(cert)},
        "untrusted": {**mail, "tls_ca_file": str(other_cert)},  # a CA that did not sign it
        "system": mail,  # the system trust store does not know a self-signed certificate
        "optout": {**mail, "tls_verify": False},
        "team": {"type": "webhook", "url": hook_url, "retries": 0},
    }
    client = await make_client(
        ServerConfig(
            port=0,
            alerting={
                "default_rules": False,
                "channels": channels,
                "default_route": {"channels": list(channels), "group_by": ["room"]},
            },
            tasks={"intervals": {"alert_evaluation": 0}},
        )
    )
    rule = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "group_by": ["room"],
            "threshold": 30}  # fmt: skip
    assert (await client.post("/api/v1/rules", json=rule)).status == 201
    engine_of(client).write_rows(
        "temp", [{"time": clock.now_ns(), "room": "kitchen", "value": 35.0}], tags=["room"]
    )
    result = await (await client.post("/api/v1/rules/evaluate")).json()
    assert result["notifications_sent"] == 3 and result["notifications_failed"] == 2, result
    assert [m["Subject"] for m in box.messages] == ["[FIRING:1] hot (room=kitchen)"] * 2
    # credentials only ever went over the verified (or explicitly unverified) connections
    assert box.logins == [("alerts", "s3cret")] * 2
    assert len(hooked) == 1
    rows = await query(
        client,
        "SELECT channel, event, message FROM alerts_history "
        "WHERE event LIKE 'notification_%' ORDER BY channel",
    )
    assert [(r[0], r[1]) for r in rows] == [
        ("optout", "notification_sent"), ("system", "notification_failed"), ("team", "notification_sent"),
        ("trusted", "notification_sent"), ("untrusted", "notification_failed"),
    ]  # fmt: skip
    assert all("CERTIFICATE_VERIFY_FAILED" in r[2] for r in rows if r[1] == "notification_failed")


def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from server.alerting.config import parse_alerting
    from tsengine.errors import InvalidInput

    mail = {"type": "email", "to": ["ops@example.com"], "tls_ca_file": str(tmp_path / "nope.pem")}
    with pytest.raises(InvalidInput, match=r"alerting\.channels\.mail\.tls_ca_file"):
        parse_alerting({"channels": {"mail": mail}})
