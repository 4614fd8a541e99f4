"""Real peers: Prometheus Alertmanager 0.25 receives the alert and then its resolution; a real
SMTP server (aiosmtpd) on loopback receives the e-mail.

The engine's ManualClock starts at the real time here: Alertmanager judges ``endsAt`` against
its own clock, so our timestamps must be close to real ones.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from server import ServerConfig
from tests.integration.conftest import engine_of, free_port, poll, require_binary
from tsengine.clock import ManualClock

pytestmark = pytest.mark.peer

Make = Callable[..., Awaitable[TestClient]]

HOT = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
       "group_by": ["room"], "threshold": 30, "for": "0s",
       "annotations": {"summary": "{{ $labels.room }} is at {{ $value }} degrees"}}  # fmt: skip


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=time.time_ns())


async def alerting_client(make_client: Make, alerting: dict[str, Any]) -> TestClient:
    config = ServerConfig(
        port=0,
        alerting={"default_rules": False, **alerting},
        tasks={"intervals": {"alert_evaluation": 0}},
    )
    client = await make_client(config)
    resp = await client.post("/api/v1/rules", json=HOT)
    assert resp.status == 201, await resp.text()
    return client


def temp(client: TestClient, clock: ManualClock, room: str, value: float) -> None:
    engine_of(client).write_rows(
        "temp", [{"time": clock.now_ns(), "room": room, "value": value}], tags=["room"]
    )


async def evaluate(client: TestClient) -> dict[str, Any]:
    resp = await client.post("/api/v1/rules/evaluate")
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def test_alertmanager_receives_and_resolves(
    make_client: Make, alertmanager: str, clock: ManualClock
) -> None:
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            try:
                async with http.get(f"{alertmanager}/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await poll(ready, timeout_s=30, what="alertmanager to be ready")
        client = await alerting_client(
            make_client,
            {"channels": {"am": {"type": "alertmanager", "url": alertmanager, "timeout": "5s"}},
             "default_route": {"channels": ["am"]}},
        )  # fmt: skip
        temp(client, clock, "kitchen", 35)
        assert (await evaluate(client))["notifications_sent"] == 1

        async def am_alerts() -> list[dict[str, Any]]:
            async with http.get(f"{alertmanager}/api/v2/alerts?filter=alertname%3D%22hot%22") as resp:
                assert resp.status == 200
                return list(await resp.json())

        async def active() -> list[dict[str, Any]] | None:
            found = [a for a in await am_alerts() if a["status"]["state"] == "active"]
            return found or None

        [alert] = await poll(active, timeout_s=15, what="the alert to be active in alertmanager")
        assert alert["labels"] == {"alertname": "hot", "room": "kitchen", "severity": "warning"}
        assert alert["annotations"] == {"summary": "kitchen is at 35 degrees"}

        clock.advance(0.001)
        temp(client, clock, "kitchen", 20)
        assert (await evaluate(client))["notifications_sent"] == 1

        async def resolved() -> bool:
            return not [a for a in await am_alerts() if a["status"]["state"] == "active"]

        await poll(resolved, timeout_s=15, what="alertmanager to see the alert resolved")


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[int, Mailbox]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    yield port, box
    await asyncio.to_thread(controller.stop)


async def test_email_over_smtp(make_client: Make, smtp: tuple[int, Mailbox], clock: ManualClock) -> None:
    port, box = smtp
    mail = {"type": "email", "host": "127.0.0.1", "port": port, "from": "alerts@example.com",
            "to": ["ops@example.com"], "timeout": "5s"}  # fmt: skip
    client = await alerting_client(
        make_client,
        {
            "channels": {"mail": mail},
            "default_route": {"channels": ["mail"], "group_by": ["alertname", "room"]},
        },
    )
    temp(client, clock, "kitchen", 35)
    assert (await evaluate(client))["notifications_sent"] == 1
    [(rcpt, msg)] = box.messages
    assert rcpt == ["ops@example.com"]
    assert msg["Subject"] == "[FIRING:1] hot (room=kitchen)"
    assert msg["From"] == "alerts@example.com"
    body = msg.get_payload()
    assert "kitchen is at 35 degrees" in body and "[firing] hot value=35" in body
    clock.advance(300)  # the group's resolution waits for group_interval (5m by default)
    temp(client, clock, "kitchen", 20)
    await evaluate(client)
    assert box.messages[1][1]["Subject"] == "[RESOLVED] hot (room=kitchen)"
