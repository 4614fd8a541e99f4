"""prometheus_client's exposition entry points: ``start_http_server``, ``make_wsgi_app``, ``make_asgi_app``.

Who calls it: services that expose ``/metrics`` without a web framework (a worker, a batch job)
or mount it into a WSGI/ASGI app, as they would with prometheus_client — same names, same
arguments, so switching is a change of import. What comes in: scrapes (``GET`` any path, like
prometheus_client; ``?name[]=`` filters families by name). What goes out: the registry as
Prometheus text 0.0.4, or OpenMetrics 1.0 when the ``Accept`` header asks for it.

``start_http_server`` serves from a daemon thread (stdlib ``http.server``, one thread per
scrape); it never touches the application's request path. Like prometheus_client it binds
``0.0.0.0`` by default — pass ``addr="127.0.0.1"`` to keep it local.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tsengine.instrument._exposition import choose_format, generate_latest, generate_openmetrics
from tsengine.instrument._registry import REGISTRY, CollectorRegistry

__all__ = ["make_asgi_app", "make_wsgi_app", "start_http_server"]


def _render(registry: CollectorRegistry, accept: str | None, query: str) -> tuple[str, bytes]:
    content_type, openmetrics = choose_format(accept)
    families = registry.collect()
    names = set(urllib.parse.parse_qs(query).get("name[]", []))
    if names:
        families = [f for f in families if f.name in names or f"{f.name}_total" in names]
    return content_type, generate_openmetrics(families) if openmetrics else generate_latest(families)


def start_http_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``registry`` on ``addr:port`` from a daemon thread; returns ``(server, thread)``.

    ``server.shutdown()`` then ``server.server_close()`` stops it. Port 0 picks a free port
    (``server.server_port``).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                content_type, body = _render(
                    registry, self.headers.get("Accept"), urllib.parse.urlsplit(self.path).query
                )
                status = 200
            except Exception:  # the scrape fails, the application does not
                content_type, body, status = "text/plain; charset=utf-8", b"cannot render metrics\n", 500
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not logged
            return None

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tsengine-metrics-http", daemon=True)
    thread.start()
    return server, thread


def make_wsgi_app(registry: CollectorRegistry = REGISTRY) -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering every request with the exposition of ``registry``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        content_type, body = _render(registry, environ.get("HTTP_ACCEPT"), environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


def make_asgi_app(registry: CollectorRegistry = REGISTRY) -> Callable[..., Any]:
    """An ASGI app (e.g. ``app.mount("/metrics", make_asgi_app())``) serving ``registry``."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        accept = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept"), None)
        content_type, body = _render(registry, accept, scope.get("query_string", b"").decode("latin-1"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
