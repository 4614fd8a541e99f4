"""The request boundary: every answer that is not a success becomes a JSON error here.

:func:`boundary_middleware` is the outermost middleware. It times every request into the
self-metrics and maps what a handler raises:

* a :class:`~tsengine.errors.TsengineError` → its ``http_status`` and ``to_dict()`` as the JSON
  body (``{"error": "ParseError", "message": "cannot ...", "line": 3}``);
  :class:`~tsengine.errors.Overloaded` adds ``Retry-After`` (whole seconds, rounded up);
* an aiohttp ``HTTPException`` (404 from the router, 405, a 413 from aiohttp's own size check)
  → the same status with a JSON body, keeping its headers (``Allow``);
* anything else → logged with its traceback, answered with a JSON 500 that carries no
  traceback. This is the only broad ``except`` of the server.

On the OTLP routes (:data:`OTLP_ROUTES`) the same errors are answered with the
``google.rpc.Status`` OTLP/HTTP specifies (``code``, ``message``), protobuf or JSON like the
request, with the same status and headers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from server.keys import METRICS_KEY
from tsengine.errors import LimitExceeded, Overloaded, TsengineError, Unauthorized

__all__ = ["BodyTooLarge", "ServiceUnavailable", "boundary_middleware", "error_response"]

log = logging.getLogger("tsengine.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

#: OTLP/HTTP routes: their 4xx/5xx bodies are a ``google.rpc.Status`` in the request's encoding
#: (protobuf, or JSON for JSON requests), as the OTLP/HTTP specification requires.
OTLP_ROUTES = frozenset({"/v1/metrics", "/v1/traces", "/v1/logs"})
# HTTP status → gRPC status code (google.rpc.Code) for the Status body.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class BodyTooLarge(LimitExceeded):
    """A request body, as sent or once decompressed, is larger than the server takes (HTTP 413)."""

    http_status = 413


class ServiceUnavailable(Overloaded):
    """The server takes no write now: it is shutting down, or every write slot stayed busy (HTTP 503)."""

    http_status = 503


def _answer(
    request: web.Request, status: int, body: dict[str, Any], headers: dict[str, str], *, otlp: bool
) -> web.Response:
    """The error answer: the JSON ``body``, or on an OTLP route the ``google.rpc.Status`` of its
    message (protobuf, or JSON ``{"code", "message"}`` for a JSON request)."""
    if not otlp:
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )
    code = _GRPC_CODES.get(status, 13 if status >= 500 else 3)
    message = str(body.get("message", ""))
    if request.content_type == "application/json":
        return web.json_response({"code": code, "message": message}, status=status, headers=headers)
    text = message.encode()
    status_pb = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text  # Status{code=1, message=2}
    return web.Response(status=status, body=status_pb, content_type="application/x-protobuf", headers=headers)


def error_response(err: TsengineError, request: web.Request, *, otlp: bool = False) -> web.Response:
    """The answer for a deliberate error."""
    headers = {}
    if isinstance(err, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    elif isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="tsengine"'
    return _answer(request, err.http_status, err.to_dict(), headers, otlp=otlp)


def _http_exception_response(exc: web.HTTPException, request: web.Request, *, otlp: bool) -> web.Response:
    headers = {
        k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")
    }
    body = {"error": exc.__class__.__name__.removeprefix("HTTP"), "message": exc.text or exc.reason}
    return _answer(request, exc.status, body, headers, otlp=otlp)


@web.middleware
async def boundary_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    resource = request.match_info.route.resource
    # The route's pattern, not the path: unmatched paths must not grow the label set.
    route = resource.canonical if resource is not None else "unmatched"
    otlp = route in OTLP_ROUTES
    try:
        response = await handler(request)
    except TsengineError as err:
        response = error_response(err, request, otlp=otlp)
        if getattr(err, "close_connection", False):
            response.force_close()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _http_exception_response(exc, request, otlp=otlp)
    except Exception:  # the request boundary: log the traceback, never send it
        log.exception("cannot answer %s %s: unexpected error", request.method, request.path)
        body = {"error": "InternalError", "message": "cannot answer: internal error, see the server log"}
        response = _answer(request, 500, body, {}, otlp=otlp)
    metrics = request.app[METRICS_KEY]
    method = request.method if request.method in _METHODS else "other"  # any token is a method
    metrics.http_requests.labels(route, method, str(response.status)).inc()
    metrics.http_latency.labels(route).observe(time.perf_counter() - start)
    return response
