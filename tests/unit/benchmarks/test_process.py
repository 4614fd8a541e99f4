"""The benchmarks' server-process lifecycle on real child processes: start, ready, request, measure, stop."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks._process import ProcessMeter, ServerProcess, poster, wait_until


class HttpServer(ServerProcess):
    """``python -m http.server`` serving ``root``: the smallest real HTTP server at hand."""

    name = "http.server"
    start_timeout_s = 30.0

    def __init__(self, root: Path, log_path: Path) -> None:
        super().__init__(log_path=log_path, cwd=root)

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


class Exits(ServerProcess):
    name = "a server that exits"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"]


class NeverReady(ServerProcess):
    name = "a server that never listens"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_server_starts_answers_on_keep_alive_connections_and_stops(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hi")
    with HttpServer(tmp_path, tmp_path / "server.log") as server:
        pid = server.pid
        assert server.port > 0
        assert server.request("GET", "/hello.txt") == (200, b"hi")
        assert server.request("GET", "/missing")[0] == 404
        send = poster(server.request, "/hello.txt", {}, ok=200)
        assert send(b"x") == 501  # http.server has no POST
    with contextlib.suppress(psutil.NoSuchProcess):  # gone and reaped is the usual answer
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert server.stop() == 0.0  # stopping twice is a no-op


def test_a_server_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    server = Exits(log_path=tmp_path / "exits.log")
    with pytest.raises(
        RuntimeError, match=r"cannot start a server that exits: exited with 3, see .*exits\.log"
    ):
        server.start(timeout_s=30)
    assert (tmp_path / "exits.log").read_bytes() == b"bad flag\n"


def test_a_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    server = NeverReady()
    with pytest.raises(RuntimeError, match="cannot start a server that never listens: not ready within 1 s"):
        server.start(timeout_s=1)
    assert server.proc is not None and server.proc.poll() is not None  # stopped, not left behind


def test_process_meter_counts_a_busy_process_and_its_children() -> None:
    spin = "while True: pass"
    script = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {spin!r}])\n{spin}\n"
    proc = psutil.Popen([sys.executable, "-c", script])
    try:
        wait_until(
            "the child to start", lambda: bool(proc.children()), timeout_s=30, interval_s=0.01, say=False
        )
        start = proc.cpu_times().user
        with ProcessMeter(proc.pid, children=True) as meter:
            wait_until("0.2 s of CPU", lambda: proc.cpu_times().user - start >= 0.2, timeout_s=30, say=False)
        assert meter.cpu_s >= 0.15
        assert meter.children_cpu_s > 0
        assert meter.rss_peak > 1 << 20
        assert ProcessMeter(proc.pid, rss=False).rss_peak == 0
    finally:
        for child in proc.children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def test_wait_until_returns_the_wait_and_times_out_with_what_it_waited_for() -> None:
    calls = iter([False, False, True])
    assert wait_until("three calls", lambda: next(calls), timeout_s=5, interval_s=0.001, say=False) >= 0
    with pytest.raises(TimeoutError, match="cannot wait for nothing: not done within 0 s"):
        wait_until("nothing", lambda: False, timeout_s=0.01, interval_s=0.001, say=False)
