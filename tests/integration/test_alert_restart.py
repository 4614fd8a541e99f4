"""Kill -9 between firing and resolving: no duplicate page, the acknowledgement is kept.

``tsengine serve`` runs in a subprocess with the real clock, so time is not driven here: the
rule has ``for: 0s`` and reads the last value within an hour, the data is written at the real
"now", and each round is started with ``POST /api/v1/rules/evaluate`` (the periodic task is off).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.conftest import free_port, poll

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/hook")), received
    await server.close()


def _serve(data: Path, port: int, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TSENGINE_FSYNC": "always"}
    return subprocess.Popen(
        [sys.executable, "-m", "tsengine.cli", "serve", "--port", str(port), "--data", str(data),
         "--config", str(config), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=data.parent,
    )  # fmt: skip


async def _healthy(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    async def up() -> bool:
        assert proc.poll() is None, f"tsengine serve exited with {proc.returncode}"
        try:
            async with http.get(url + "/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await poll(up, timeout_s=60, what="tsengine serve to answer /health")


async def test_sigkill_between_firing_and_resolving(
    tmp_path: Path, hook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, received = hook
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{
        "name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "1h",
        "group_by": ["room"], "threshold": 30, "for": "0s",
    }]}))  # fmt: skip
    config = tmp_path / "tsengine.yaml"
    config.write_text(yaml.safe_dump({
        "tasks": {"intervals": {"alert_evaluation": 0}},
        "alerting": {
            "default_rules": False, "rules_file": str(rules),
            "channels": {"team": {"type": "webhook", "url": hook_url, "timeout": "5s"}},
            "default_route": {"channels": ["team"], "group_interval": "0s", "repeat_interval": "4h"},
        },
    }))  # fmt: skip
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    async def start() -> None:
        procs.append(_serve(data, port, config))
        await _healthy(http, url, procs[-1])

    async def write(value: float) -> None:
        line = f"temp,room=kitchen value={value} {time.time_ns()}"
        async with http.post(url + "/write?db=default", data=line) as resp:
            assert resp.status == 204, await resp.text()

    async def evaluate() -> dict[str, Any]:
        async with http.post(url + "/api/v1/rules/evaluate") as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def alerts() -> list[dict[str, Any]]:
        async with http.get(url + "/api/v1/alerts") as resp:
            return list((await resp.json())["alerts"])

    async with aiohttp.ClientSession() as http:
        try:
            await start()
            await write(35)
            assert (await evaluate())["notifications_sent"] == 1
            [alert] = await alerts()
            async with http.post(
                f"{url}/api/v1/alerts/{alert['id']}/ack", json={"by": "dave", "comment": "looking"}
            ) as resp:
                assert resp.status == 200
            procs[-1].send_signal(signal.SIGKILL)
            await asyncio.to_thread(procs[-1].wait)

            await start()
            [alert] = await alerts()
            assert alert["state"] == "firing" and alert["acknowledged_by"] == "dave"
            assert alert["ack_comment"] == "looking"
            result = await evaluate()
            assert result["firing"] == 1 and result["notifications_sent"] == 0  # no second page
            await write(20)
            assert (await evaluate())["notifications_sent"] == 1
            assert [p["status"] for p in received] == ["firing", "resolved"]
            assert received[1]["alerts"][0]["acknowledgedBy"] == "dave"
            async with http.post(
                url + "/api/v1/sql",
                json={"sql": "SELECT event FROM alerts_history WHERE event NOT LIKE 'rule%' ORDER BY time"},
            ) as resp:
                events = [r[0] for r in (await resp.json())["rows"]]
            assert events == [
                "pending", "firing", "notification_sent", "acknowledged", "resolved", "notification_sent",
            ]  # fmt: skip
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
