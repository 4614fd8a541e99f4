"""The server's own metrics: ``GET /metrics``.

Prometheus text format 0.0.4 by default, OpenMetrics 1.0 when ``Accept`` asks for
``application/openmetrics-text`` (as Prometheus does). Engine gauges are refreshed off the event
loop just before rendering; process metrics come from the background psutil sampler. Public,
like ``/health``: it exposes counts, never stored data.
"""

from __future__ import annotations

from aiohttp import web

from server.keys import ENGINE_KEY, METRICS_KEY, run_blocking
from server.routes.health import engine_state
from tsengine.instrument import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_OPENMETRICS,
    generate_latest,
    generate_openmetrics,
)

__all__ = ["ROUTES"]


async def metrics(request: web.Request) -> web.StreamResponse:
    sm = request.app[METRICS_KEY]
    state = await run_blocking(request, "control", engine_state, request.app[ENGINE_KEY])
    sm.refresh_engine(state, state["disk_bytes"])
    families = sm.registry.collect()
    if "application/openmetrics-text" in request.headers.get("Accept", ""):
        body, content_type = generate_openmetrics(families), CONTENT_TYPE_OPENMETRICS
    else:
        body, content_type = generate_latest(families), CONTENT_TYPE_LATEST
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


ROUTES = [web.get("/metrics", metrics)]
