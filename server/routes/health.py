"""Health: ``GET /health`` (liveness) and ``GET /health/telemetry`` (state of each part).

``/health`` answers ``{"status": "ok"}`` while the event loop runs, ``"draining"`` with 503
during shutdown. ``/health/telemetry`` adds the engine's statistics (tables, buffer fill, WAL
last sequence, Parquet files and bytes), the server's uptime and configuration limits, and the
latest psutil sample of the process (taken in the background, never on this request).
``tasks`` is the background scheduler's state per task (last start, duration, result, error,
next run; of a result only its counts — the findings are behind ``GET /api/v1/tasks``),
``storage`` the lifecycle's (archive store, budget, local bytes), ``alerts`` the
number of alert instances per state. Both are public: they expose no stored data.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from server.keys import (
    ALERTING_KEY,
    CONFIG_KEY,
    DRAINING_KEY,
    ENGINE_KEY,
    LIFECYCLE_KEY,
    METRICS_KEY,
    SCHEDULER_KEY,
    STARTED_KEY,
    run_blocking,
)
from server.routes import json_response

__all__ = ["ROUTES"]


async def health(request: web.Request) -> web.StreamResponse:
    if request.app[DRAINING_KEY].is_set():
        return json_response({"status": "draining"}, status=503)
    return json_response({"status": "ok"})


def engine_state(engine: Any) -> dict[str, Any]:
    """Engine statistics plus disk use (blocking: takes the engine lock; run off the loop)."""
    stats = dict(engine.stats())
    stats["disk_bytes"] = engine.disk_usage()
    stats["buffer_fill_ratio"] = stats["buffer_bytes"] / max(stats["max_buffer_bytes"], 1)
    stats["data_dir"] = str(engine.path)
    return stats


def _counts_only(value: Any) -> Any:
    """The numbers (and flags) of a task result; strings and lists may hold stored data."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, _counts_only(v)) for k, v in value.items()) if v is not None}
        return kept or None
    return None


def _public_tasks(status: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Task state for this public page: a result's counts only (findings name users and
    addresses; ``GET /api/v1/tasks``, behind the read scope, has them whole)."""
    return {name: {**s, "last_result": _counts_only(s.get("last_result"))} for name, s in status.items()}


async def telemetry(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG_KEY]
    engine = await run_blocking(request, "control", engine_state, app[ENGINE_KEY])
    lifecycle = app.get(LIFECYCLE_KEY)
    storage = await run_blocking(request, "control", lifecycle.status) if lifecycle is not None else None
    alerting = app.get(ALERTING_KEY)
    alerts = None
    if alerting is not None:
        states = [a["state"] for a in alerting.alerts()]
        alerts = {s: states.count(s) for s in ("pending", "firing", "resolved")}
    sm = app[METRICS_KEY]
    process = sm.process
    return json_response(
        {
            "status": "draining" if app[DRAINING_KEY].is_set() else "ok",
            "uptime_s": round(time.monotonic() - app[STARTED_KEY], 3),
            "engine": engine,
            "server": {
                "auth": config.auth_enabled,
                "max_body_bytes": config.max_body_bytes,
                "max_decompressed_bytes": config.max_decompressed_bytes,
                "max_rows_per_request": config.max_rows_per_request,
                "query_max_rows": config.query_max_rows,
                "worker_threads": config.worker_threads,
                "max_concurrent_writes": config.max_concurrent_writes,
                "writes_in_flight": int(sm.writes_in_flight.get()),
                "writes_waiting": int(sm.writes_waiting.get()),
            },
            "tasks": _public_tasks(app[SCHEDULER_KEY].status()),
            "storage": storage,
            "alerts": alerts,
            "process": {
                "samples": process.samples,
                "last_error": process.last_error,
                **process.snapshot(),
            },
        }
    )


ROUTES = [web.get("/health", health), web.get("/health/telemetry", telemetry)]
