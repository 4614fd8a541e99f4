"""In-process ASGI requests for the benchmarks: a request scope and no-op receive/send.

Who calls it: :mod:`benchmarks.bench_instrument` and :mod:`benchmarks.bench_tracing`, which time
a FastAPI app called through its ASGI interface (no sockets), as ``await app(dict(scope),
receive, send)`` — copy the scope per call, since apps and middleware write into it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["receive", "request_scope", "send"]


def request_scope(path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """An HTTP/1.1 ``GET path`` scope from 127.0.0.1 to host ``bench``, with ``headers`` after ``host``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }


async def receive() -> dict[str, Any]:
    """The request's one message: an empty body."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    """Drops the response."""
    return None
