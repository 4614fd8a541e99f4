"""Fixtures for the server tests: a real engine on a temp dir, a real server on 127.0.0.1.

``make_client(config=..., **engine_settings)`` builds an engine (fsync none: durability is
tested in the engine's own suite), an app and an ``aiohttp_client`` on a free port;
``client`` is the default one (no auth). Peer helpers: :func:`require_binary` fails under
``CI`` and skips otherwise when a peer program is missing; :func:`poll` waits with a deadline.
Stream helpers: :func:`read_sse` reads server-sent events; :func:`stuck_stream_client` is a
raw client that subscribes to a stream and then reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import ServerConfig, Token, create_app
from tsengine.clock import ManualClock

T = TypeVar("T")

WRITE_TOKEN = "w-token-0123456789"
READ_TOKEN = "r-token-0123456789"
ADMIN_TOKEN = "a-token-0123456789"
TOKENS = (
    Token(WRITE_TOKEN, frozenset({"write"}), name="writer"),
    Token(READ_TOKEN, frozenset({"read"}), name="reader"),
    Token(ADMIN_TOKEN, frozenset({"admin"}), name="admin"),
)


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token`` (a new dict each call)."""
    return {"Authorization": f"Bearer {token}"}


def require_binary(name: str) -> str:
    """Path of a peer program; fail under CI, skip with a reason elsewhere, when missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        message = f"{name} is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll(check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str) -> T:
    """Await ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


async def read_sse(resp: Any, event: str, count: int, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The data of the next ``count`` ``event:`` events of an SSE response (others and comments skipped)."""
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        kind = None
        while len(events) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind == event:
                events.append(orjson.loads(line[len("data: ") :]))

    await asyncio.wait_for(collect(), timeout_s)
    return events


@contextlib.asynccontextmanager
async def stuck_stream_client(
    port: int, path: str, *, timeout_s: float = 30.0
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A raw socket with a small receive buffer, subscribed to the stream at ``path``, that reads
    nothing more. Yields ``read_to_end()``, which returns once the server has closed the connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)

    async def read_to_end() -> None:
        while await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout_s):
            pass

    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b": subscribed" not in head:
            head += await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout_s)
        assert head.startswith(b"HTTP/1.1 200"), head
        yield read_to_end
    finally:
        sock.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engines(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., Any]]:
    """Factory of engines on fresh directories, closed at teardown."""
    from tsengine import Engine

    opened: list[Any] = []

    def make(**settings: Any) -> Any:
        settings.setdefault("fsync", "none")
        eng = Engine.open(tmp_path / f"data{len(opened)}", clock=settings.pop("clock", clock), **settings)
        opened.append(eng)
        return eng

    yield make
    for eng in opened:
        eng.close()


#: A callback holding the event loop longer than this fails the test (blocking work belongs on
#: the worker pools). Generous: on a loaded two-core machine a worker thread holding the GIL can
#: stretch an honest 1 ms step past 250 ms; a query or parse run on the loop by mistake takes longer.
SLOW_CALLBACK_S = 1.0


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Executing") and " took " in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture
async def no_blocking() -> AsyncIterator[None]:
    """Fail the test if anything holds the event loop longer than SLOW_CALLBACK_S."""
    loop = asyncio.get_running_loop()
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
    assert not handler.messages, f"the event loop was blocked: {handler.messages}"


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], engines: Callable[..., Any], no_blocking: None
) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    async def make(
        config: ServerConfig | None = None,
        engine: Any = None,
        *,
        auto_decompress: bool = False,
        **settings: Any,
    ) -> TestClient:
        # Opening an engine blocks (files, DuckDB): not on the loop the server shares.
        eng = engine if engine is not None else await asyncio.to_thread(engines, **settings)
        app = create_app(eng, config or ServerConfig(port=0))
        # As tsengine serve runs it: bodies arrive as sent (see server.body).
        server = TestServer(app)
        await server.start_server(auto_decompress=auto_decompress)
        return await aiohttp_client(server)

    yield make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    return await make_client()


@pytest.fixture
async def auth_client(make_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    return await make_client(ServerConfig(port=0, tokens=TOKENS))


def engine_of(client: TestClient) -> Any:
    from server.keys import ENGINE_KEY

    return client.app[ENGINE_KEY]  # type: ignore[index]


async def query(client: TestClient, sql: str, *, token: str | None = None) -> list[list[Any]]:
    """Rows of a SQL answer (asserting a 200)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.post("/api/v1/sql", json={"sql": sql}, headers=headers)
    body = await resp.json()
    assert resp.status == 200, body
    return body["rows"]


def otlp_error_message(body: bytes, content_type: str) -> str:
    """The message of an OTLP route's error body (``/v1/metrics``, ``/v1/traces``, ``/v1/logs``).

    ``content_type`` is the *response's*. Reads both the server's JSON error (``{"error",
    "message", ...}``) and the OTLP specification's ``google.rpc.Status`` — protobuf when the
    response is protobuf, ``{"code", "message"}`` when it is JSON — so tests hold across the switch.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ("application/x-protobuf", "application/protobuf"):
        from google.rpc import status_pb2

        return str(status_pb2.Status.FromString(body).message)
    return str(orjson.loads(body)["message"])


async def assert_otlp_error(resp: Any, status: int, *needles: str) -> str:
    """Check an OTLP route's error status and that its message (either form) contains each needle."""
    body = await resp.read()
    assert resp.status == status, body
    message = otlp_error_message(body, resp.headers.get("Content-Type", ""))
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in message
    return message


async def assert_error(resp: Any, status: int, error: str, *needles: str) -> dict[str, Any]:
    """Check status, JSON error name and that the message contains each needle."""
    body = await resp.json()
    assert resp.status == status, body
    assert resp.content_type == "application/json"
    assert body["error"] == error, body
    for needle in needles:
        assert needle in body["message"], body
    assert "Traceback" not in body["message"]
    return body


class SpyEngine:
    """The real engine, with its write calls recorded."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.writes: list[int] = []  # rows of each successful call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def write_batches(self, batches: list[Any]) -> int:
        rows = self._engine.write_batches(batches)
        self.writes.append(rows)
        return rows


class LiveServer:
    """create_app served by an AppRunner on 127.0.0.1:<free port> in a background thread.

    For tests that drive the server synchronously (hypothesis): :meth:`post` blocks.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-server", daemon=True)
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        self.port = 0
        self.last_content_type = ""  # of the last answer to post()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            self.last_content_type = resp.getheader("Content-Type", "")
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, SpyEngine]]:
    """One :class:`LiveServer` per test module over a real engine wrapped in a :class:`SpyEngine`."""
    from tsengine import Engine

    engine = Engine.open(Path(tmp_path_factory.mktemp("live")) / "data", fsync="none")
    spy = SpyEngine(engine)
    server = LiveServer(create_app(spy, ServerConfig(port=0)))  # type: ignore[arg-type]
    server.start()
    yield server, spy
    server.stop()
    engine.close()
