"""Framework-neutral parts of the adapters: the two endpoints' bodies and correlation ids.

Both adapters (ASGI and aiohttp) serve ``/metrics`` and ``/health/telemetry`` from these
functions and take the correlation id the same way: ``X-Correlation-ID``, else
``X-Request-ID``, else a new one; a header value that is too long or not printable ASCII is
replaced (it would end up in logs and events).
"""

from __future__ import annotations

import json
import re

from tsengine.instrument._exposition import choose_format, generate_latest, generate_openmetrics
from tsengine.instrument._runtime import Telemetry

__all__ = [
    "CORRELATION_HEADER",
    "REQUEST_ID_HEADER",
    "UNMATCHED_ROUTE",
    "health_body",
    "metrics_body",
    "pick_correlation_id",
]

CORRELATION_HEADER = "x-correlation-id"
REQUEST_ID_HEADER = "x-request-id"
#: Route label of requests no route matched: one series for all of them, whatever the path.
UNMATCHED_ROUTE = "<unmatched>"

_ID_RE = re.compile(r"[\x21-\x7e]{1,128}\Z")


def pick_correlation_id(correlation: str | None, request_id: str | None, new: str) -> str:
    """The first acceptable of the two header values, else ``new``."""
    for value in (correlation, request_id):
        if value and _ID_RE.match(value):
            return value
    return new


def metrics_body(rt: Telemetry, accept: str | None) -> tuple[int, str, bytes]:
    """``(status, content_type, body)`` for ``GET /metrics``; 404 when metrics are off."""
    if not rt.config.metrics_on:
        return 404, "text/plain; charset=utf-8", b"metrics are disabled\n"
    content_type, openmetrics = choose_format(accept)
    families = rt.registry.collect()
    body = generate_openmetrics(families) if openmetrics else generate_latest(families)
    return 200, content_type, body


def health_body(rt: Telemetry) -> tuple[int, str, bytes]:
    """``(status, content_type, body)`` for ``GET /health/telemetry``."""
    return 200, "application/json", json.dumps(rt.health(), default=str).encode("utf-8")
