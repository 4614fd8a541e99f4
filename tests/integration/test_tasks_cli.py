"""``tsengine task list|run`` against a real ``tsengine serve`` process: exit codes and output.

One server subprocess (tokens from ``TSENGINE_TOKENS``, a free port on 127.0.0.1) serves every
case; the CLI runs as its own subprocess, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
WRITER, READER, ADMIN = "cli-w-0123456789", "cli-r-0123456789", "cli-a-0123456789"
TIMEOUT_S = 60


def _request(url: str, data: bytes | None = None, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("tasks-cli") / "data"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TSENGINE_TOKENS": f"{WRITER}:write {READER}:read {ADMIN}:admin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsengine.cli", "serve", "--port", str(port), "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=data.parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # poll /health with a deadline
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if _request(url + "/health") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tsengine serve did not answer /health within {TIMEOUT_S} s")
            time.sleep(0.05)
        yield url
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSENGINE_")}
    env["PYTHONPATH"] = str(ROOT)
    if token is not None:
        env["TSENGINE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tsengine.cli", "task", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_task_list(server: str) -> None:
    done = cli("list", "--url", server, token=READER)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["task", "interval_s", "runs"]
    names = {line.split()[0] for line in lines[2:-1]}
    assert {"metrics_aggregation", "performance_analysis", "event_aggregation"} <= names


def _import(server: str, rows: list[dict[str, object]]) -> None:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    headers = {"Authorization": f"Bearer {WRITER}", "Content-Type": "application/x-ndjson"}
    req = urllib.request.Request(server + "/api/v1/import", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def test_task_run_prints_the_result(server: str) -> None:
    now = time.time_ns()
    tags = {"route": "/a", "method": "GET"}
    _import(
        server,
        [
            {"table": "http_requests_total", "time": now - (10 - i) * 30 * 10**9,
             "tags": {**tags, "status": "500" if i % 2 else "200"}, "fields": {"value": float(i)}}
            for i in range(11)
        ],
    )  # fmt: skip
    done = cli("run", "metrics_aggregation", "--url", server, "--token", ADMIN)
    assert done.returncode == 0, done.stderr
    first, _, rest = done.stdout.partition("\n")
    assert first.startswith("task metrics_aggregation: ok in ")
    result = json.loads(rest)
    assert result["rows"]["analysis_derived_metrics"] > 0


def test_task_run_without_admin_scope_exits_1(server: str) -> None:
    done = cli("run", "metrics_aggregation", "--url", server, token=READER)
    assert done.returncode == 1
    assert "lacks scope 'admin'" in done.stderr and "(HTTP 403)" in done.stderr
    assert done.stdout == ""


def test_unknown_task_exits_1(server: str) -> None:
    done = cli("run", "nope", "--url", server, "--token", ADMIN)
    assert done.returncode == 1
    assert "cannot run task 'nope': unknown task" in done.stderr and "(HTTP 404)" in done.stderr


def test_failing_task_exits_1_with_the_error(server: str) -> None:
    # A user table named like an output table, with a clashing column type: the run cannot write.
    status = _request(
        server + "/write?db=default", b'analysis_user_activity,metric=mine value="oops"', token=WRITER
    )
    assert status == 204
    tags = {"category": "user_action", "name": "login"}
    _import(server, [{"table": "events", "time": time.time_ns(), "tags": tags, "fields": {"user_id": "u1"}}])
    done = cli("run", "event_aggregation", "--url", server, "--token", ADMIN)
    assert done.returncode == 1
    assert "cannot run task event_aggregation: SchemaConflict" in done.stderr
    assert "(HTTP 500)" in done.stderr
    assert done.stdout == ""


def test_unreachable_server_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("run", "metrics_aggregation", "--url", url, "--token", ADMIN)
    assert done.returncode == 1 and f"cannot reach {url}" in done.stderr
