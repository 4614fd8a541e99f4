"""``tsengine serve`` in a subprocess: write, query, SIGTERM, exit 0, data in Parquet on restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tsengine.cli import format_table, main

ROOT = Path(__file__).resolve().parents[2]


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if _request(url + "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"tsengine serve did not answer /health within {timeout_s} s")


def _serve(data: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TSENGINE_FSYNC": "always"}
    return subprocess.Popen(
        [sys.executable, "-m", "tsengine.cli", "serve", "--port", str(port), "--data", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=data.parent,
    )


def test_serve_write_query_sigterm_restart(tmp_path, capsys):
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(data, port)
    try:
        _wait_healthy(url, proc)
        status, _ = _request(url + "/write?db=default", b"cpu,host=a usage=0.5 1700000000000000000")
        assert status == 204
        status, body = _request(
            url + "/api/v1/sql", b"SELECT host, usage FROM cpu", {"Content-Type": "text/plain"}
        )
        assert status == 200 and json.loads(body)["rows"] == [["a", 0.5]]
        # The running server holds the directory: an embedded open is refused, not corrupting.
        assert main(["sql", "--data", str(data), "SELECT 1"], environ={}) == 2
        assert "in use" in capsys.readouterr().err
        # ... and the running server answers the same command with --url.
        assert main(["sql", "--url", url, "SELECT host, usage FROM cpu"], environ={}) == 0
        assert capsys.readouterr().out.splitlines()[2].split() == ["a", "0.5"]
        assert main(["sql", "--url", url, "--csv", "SELECT count(*) AS n FROM cpu"], environ={}) == 0
        assert capsys.readouterr().out.splitlines() == ['"n"', "1"]
        assert main(["sql", "--url", url, "SELECT * FROM nowhere"], environ={}) == 2
        assert "HTTP 400" in capsys.readouterr().err
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    banner = out.decode()
    assert f"listening on {url}" in banner
    assert f"curl -i -XPOST '{url}/write?db=default'" in banner and "/api/v1/sql" in banner
    assert list(data.glob("default/cpu/date=*/hour=*/*.parquet")), "buffers were not persisted on shutdown"

    # Restart: the row is served from Parquet.
    port2 = free_port()
    proc = _serve(data, port2)
    try:
        _wait_healthy(f"http://127.0.0.1:{port2}", proc)
        status, body = _request(
            f"http://127.0.0.1:{port2}/api/v1/sql", b'{"sql": "SELECT host, usage FROM cpu"}',
            {"Content-Type": "application/json"},
        )  # fmt: skip
        assert json.loads(body)["rows"] == [["a", 0.5]]
        telemetry = json.loads(_request(f"http://127.0.0.1:{port2}/health/telemetry")[1])
        assert telemetry["engine"]["files"] >= 1 and telemetry["engine"]["live_rows"] == 0
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_sql_subcommand(tmp_path, capsys):
    from tsengine import Engine

    with Engine.open(tmp_path / "d", fsync="none") as eng:
        eng.write("cpu", [1, 2], tags={"host": ["a", "b"]}, fields={"usage": [0.5, None]})
    assert (
        main(["sql", "--data", str(tmp_path / "d"), "SELECT host, usage FROM cpu ORDER BY time"], environ={})
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "host  usage",
        "----  -----",
        "a     0.5",
        "b     NULL",
        "(2 rows)",
    ]
    assert (
        main(
            ["sql", "--data", str(tmp_path / "d"), "--csv", "SELECT host FROM cpu ORDER BY host"], environ={}
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == ['"host"', '"a"', '"b"']
    query = "SELECT time, [time] AS l FROM cpu ORDER BY time"
    assert main(["sql", "--data", str(tmp_path / "d"), "--csv", query], environ={}) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith('"1970-01-01T00:00:00.000000001Z"')
    assert main(["sql", "--data", str(tmp_path / "d"), "SELECT time FROM cpu ORDER BY time"], environ={}) == 0
    assert capsys.readouterr().out.splitlines()[2] == "1970-01-01T00:00:00.000000001Z"
    assert main(["sql", "--data", str(tmp_path / "d"), "SELEC"], environ={}) == 2
    assert "cannot" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "run"])
def test_serve_refuses_public_host_without_tokens(tmp_path, capsys, command):
    assert main([command, "--host", "0.0.0.0", "--data", str(tmp_path / "d")], environ={}) == 2
    assert "no tokens are configured" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_config_errors_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_body_bytes: lots\n")
    assert main(["serve", "--config", str(cfg), "--data", str(tmp_path / "d")], environ={}) == 2
    assert "max_body_bytes" in capsys.readouterr().err
    assert main(["serve", "--data", str(tmp_path / "d")], environ={"TSENGINE_PORT": "x"}) == 2
    assert "TSENGINE_PORT" in capsys.readouterr().err


def test_format_table():
    assert format_table(["a"], []) == "a\n-\n(0 rows)\n"
