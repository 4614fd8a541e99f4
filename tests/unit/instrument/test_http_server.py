"""prometheus_client's exposition entry points, served for real: a scrape over HTTP, WSGI, ASGI."""

from __future__ import annotations

import asyncio
import urllib.request
import wsgiref.validate
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tsengine.instrument import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_OPENMETRICS,
    CollectorRegistry,
    Counter,
    Gauge,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)


def _registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("jobs", "Jobs done.", ["kind"], registry=r).labels("import").inc(3)
    Gauge("queue_depth", "Jobs waiting.", registry=r).set(7)
    return r


def _values(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_start_http_server_serves_text_openmetrics_and_name_filters() -> None:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=_registry())
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert _values(resp.read().decode()) == {"jobs_total": 3.0, "queue_depth": 7.0}
        req = urllib.request.Request(base + "/", headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_OPENMETRICS
            assert resp.read().decode().endswith("# EOF\n")
        with urllib.request.urlopen(base + "/metrics?name[]=queue_depth", timeout=10) as resp:
            assert _values(resp.read().decode()) == {"queue_depth": 7.0}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()


def test_make_wsgi_app_is_a_valid_wsgi_app() -> None:
    app = wsgiref.validate.validator(make_wsgi_app(_registry()))
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/metrics", "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": __import__("io").BytesIO(), "wsgi.errors": __import__("sys").stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }  # fmt: skip
    result = app(environ, start_response)
    body = b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert seen["status"] == "200 OK" and seen["headers"]["Content-Type"] == CONTENT_TYPE_LATEST
    assert _values(body.decode()) == {"jobs_total": 3.0, "queue_depth": 7.0}


def test_make_asgi_app_mounted_in_a_client() -> None:
    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_asgi_app(_registry()))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    resp = asyncio.run(scrape())
    assert resp.status_code == 200 and resp.headers["content-type"] == CONTENT_TYPE_OPENMETRICS
    assert "jobs_total" in resp.text and resp.text.endswith("# EOF\n")
