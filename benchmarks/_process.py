"""Server processes for the benchmarks: start, wait until ready, measure, stop.

Who calls it: the benchmarks that drive a real server in a child process —
:mod:`benchmarks.bench_http_ingest` and :mod:`benchmarks.bench_span_ingest` (tsengine),
:mod:`benchmarks.victoriametrics` (VictoriaMetrics), :mod:`benchmarks.bench_middleware` (the
FastAPI/aiohttp apps). What comes in: a subclass of :class:`ServerProcess` says which command
to run on which port and when the server is ready. What goes out: a running server on
127.0.0.1 with a thread-safe keep-alive :meth:`ServerProcess.request`, and
:class:`ProcessMeter`'s figures (CPU seconds and peak RSS of that process over a window).

Every server is bound to 127.0.0.1 on a free port; :meth:`ServerProcess.stop` signals only the
process that object started (SIGTERM, then SIGKILL after a bound). Waiting is polling with a
deadline (:func:`wait_until`): a child process's readiness has no event to wait on.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import psutil

__all__ = [
    "ProcessMeter",
    "RssSampler",
    "ServerProcess",
    "children_cpu_s",
    "free_port",
    "post_all",
    "poster",
    "wait_until",
]

RSS_INTERVAL_S = 0.05
READY_INTERVAL_S = 0.1

Request = Callable[..., tuple[int, bytes]]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    what: str, check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.5, say: bool = True
) -> float:
    """Poll ``check`` until it returns true; return the seconds waited. Blocks.

    ``check`` may raise to give up early (a process that exited). ``say``: print the wait.

    Raises:
        TimeoutError: not true within ``timeout_s``.
    """
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"cannot wait for {what}: not done within {timeout_s:.0f} s")
        time.sleep(interval_s)
    waited = time.monotonic() - t0
    if say:
        print(f"    waited {waited:.1f} s for {what}")
    return waited


class ServerProcess:
    """One server in a child process on 127.0.0.1; a context manager (start on enter, stop on exit).

    Subclasses give :meth:`command` (the argv for a port) and may refine :meth:`ready` (by
    default: the port accepts a TCP connection). Output goes to ``log_path`` (or nowhere).
    :meth:`request` is thread-safe (one keep-alive connection per thread); the rest is not.
    """

    #: What the server is called in error messages.
    name = "the server"
    #: Socket timeout of :meth:`request`: an ingest request may queue behind many others.
    http_timeout_s = 300.0
    start_timeout_s = 60.0
    stop_timeout_s = 30.0
    #: How often :meth:`start` asks :meth:`ready`.
    ready_interval_s = READY_INTERVAL_S

    def __init__(
        self,
        *,
        log_path: Path | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.log_path = log_path
        self.cwd = cwd
        self.preexec_fn = preexec_fn
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._local = threading.local()

    def command(self, port: int) -> list[str]:
        """The argv that serves on 127.0.0.1:``port``."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers yet; errors of a server still starting count as no."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, *, timeout_s: float | None = None) -> None:
        """Start the process on a free port and poll :meth:`ready` until true. Blocks.

        Raises:
            RuntimeError: the process exited or was not ready within ``timeout_s`` (then it is
                stopped).
        """
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        self.port = free_port()
        self._local = threading.local()
        argv = self.command(self.port)
        with contextlib.ExitStack() as stack:
            out: Any = subprocess.DEVNULL
            if self.log_path is not None:
                out = stack.enter_context(open(self.log_path, "wb"))
            self.proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,  # noqa: PLW1509 -- only sets the CPU affinity
            )
        proc = self.proc
        see = f", see {self.log_path}" if self.log_path is not None else ""

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"cannot start {self.name}: exited with {proc.returncode}{see}")
            return self.ready()

        try:
            wait_until(self.name, up, timeout_s=timeout_s, interval_s=self.ready_interval_s, say=False)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"cannot start {self.name}: not ready within {timeout_s:.0f} s{see}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout_s: float | None = None) -> float:
        """SIGTERM the process this object started (SIGKILL after ``timeout_s``); seconds taken."""
        self._close_connections()
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"BUG: {self.name} not started"
        return self.proc.pid

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One request on this thread's keep-alive connection: (status, body). Blocks.

        Raises:
            OSError, http.client.HTTPException: the connection failed (it is dropped; the next
                request opens a new one).
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.http_timeout_s
            )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise

    def _close_connections(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def poster(request: Request, path: str, headers: dict[str, str], *, ok: int) -> Callable[[bytes], int]:
    """A ``send(body) -> status`` that POSTs to ``path``; prints the first 3 answers other than ``ok``."""
    errors: list[bytes] = []

    def send(body: bytes) -> int:
        status, text = request("POST", path, body, headers)
        if status != ok and len(errors) < 3:
            errors.append(text[:300])
            print(f"    HTTP {status}: {text[:300]!r}", file=sys.stderr, flush=True)
        return status

    return send


def post_all(send: Callable[[bytes], int], bodies: Iterable[bytes], connections: int) -> Counter[int]:
    """``send`` every body over ``connections`` threads; how many answers had each status. Blocks."""
    with ThreadPoolExecutor(connections) as pool:
        return Counter(pool.map(send, bodies))


class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a thread; ``peak`` is the highest seen (bytes)."""

    def __init__(self, pid: int, *, interval_s: float = RSS_INTERVAL_S) -> None:
        self._proc = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.peak = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def children_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the live child processes of ``pid`` (recursively)."""
    total = 0.0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class ProcessMeter:
    """A process's CPU time (psutil user + system) and, optionally, peak RSS over a ``with`` block.

    ``children``: also the CPU of its child processes (those alive at both ends of the window).
    ``rss``: sample the RSS every 50 ms in a thread (off where a thread waking would be noise).
    """

    def __init__(self, pid: int, *, rss: bool = True, children: bool = False) -> None:
        self.pid = pid
        self._proc = psutil.Process(pid)
        self._rss = RssSampler(pid) if rss else None
        self._children = children
        self.cpu_s = 0.0
        self.system_s = 0.0
        self.children_cpu_s = 0.0

    @property
    def rss_peak(self) -> int:
        """Highest RSS seen, bytes (0 without ``rss``)."""
        return self._rss.peak if self._rss is not None else 0

    def __enter__(self) -> ProcessMeter:
        self._children0 = children_cpu_s(self.pid) if self._children else 0.0
        self._cpu0 = self._proc.cpu_times()
        if self._rss is not None:
            self._rss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rss is not None:
            self._rss.__exit__(*exc)
        cpu1 = self._proc.cpu_times()
        self.cpu_s = (cpu1.user + cpu1.system) - (self._cpu0.user + self._cpu0.system)
        self.system_s = cpu1.system - self._cpu0.system
        if self._children:
            self.children_cpu_s = children_cpu_s(self.pid) - self._children0
