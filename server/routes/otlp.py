"""OTLP/HTTP metrics: ``POST /v1/metrics``.

``Content-Type: application/x-protobuf`` or ``application/json``; ``Content-Encoding: gzip``
allowed; ``db`` selects the database. Success is 200 with an empty
``ExportMetricsServiceResponse`` in the request's encoding, as the OTLP/HTTP specification
requires; a bad body → 400 (not retried by exporters), overload → 429 with Retry-After.
"""

from __future__ import annotations

import functools

from aiohttp import web

from server.auth import requires
from server.body import otlp_content_type
from server.ingest import ingest
from tsengine.protocols import otlp_metrics

__all__ = ["ROUTES"]

PROTOCOL = "otlp"
_JSON = otlp_metrics.CONTENT_TYPE_JSON
_PROTOBUF = otlp_metrics.CONTENT_TYPE_PROTOBUF


@requires("write")
async def metrics(request: web.Request) -> web.StreamResponse:
    content_type = otlp_content_type(request, "metrics")
    parse = functools.partial(
        otlp_metrics.parse, content_type=content_type, db=request.query.get("db") or "default"
    )
    if content_type == _JSON:
        ok = functools.partial(web.Response, status=200, body=b"{}", content_type=_JSON)
    else:
        ok = functools.partial(web.Response, status=200, body=b"", content_type=_PROTOBUF)
    return await ingest(request, PROTOCOL, parse, response=ok)


ROUTES = [web.post("/v1/metrics", metrics)]
