"""Analysis reports: ``GET /api/v1/reports/{performance,user-activity,events}`` (read scope).

Who calls it: dashboards and operators. Each report is built from the latest run of its analysis
task (:mod:`server.analysis.report`), or computed on demand when the task has not run yet in
that database. ``?format=json`` (default), ``html`` or ``markdown`` (``md``); ``?db=`` picks the
database (default: the task's configured ``db``). The work (DuckDB) runs on the query pool.

:func:`install` is the app factory's one call for the analysis feature: it registers the three
analysis tasks with the scheduler (settings checked now: a bad ``tasks.*`` key fails app creation
with a message naming it) and adds these routes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from aiohttp import web

from server.analysis import register_tasks
from server.analysis.report import (
    events_report,
    performance_report,
    render_html,
    render_markdown,
    user_activity_report,
)
from server.analysis.settings import EventSettings, PerformanceSettings, read_settings
from server.auth import requires
from server.keys import CONFIG_KEY, ENGINE_KEY, SCHEDULER_KEY, run_blocking
from server.routes import json_response
from tsengine.errors import InvalidInput
from tsengine.model.names import validate_db

__all__ = ["ROUTES", "install"]

_FORMATS = {"json": "json", "html": "html", "markdown": "markdown", "md": "markdown"}


def install(app: web.Application) -> None:
    """Register the analysis tasks with ``app``'s scheduler and add the report routes."""
    register_tasks(app[SCHEDULER_KEY], app[ENGINE_KEY], app[CONFIG_KEY].tasks)
    app.router.add_routes(ROUTES)


async def _report(
    request: web.Request, settings_cls: type[Any], build: Callable[[Any, Any], dict[str, Any]]
) -> web.StreamResponse:
    fmt = _FORMATS.get(request.query.get("format", "json").lower())
    if fmt is None:
        raise InvalidInput(
            f"cannot render report: unknown format {request.query['format']!r} (use json, html or markdown)"
        )
    settings = read_settings(request.app[CONFIG_KEY].tasks, settings_cls)
    if "db" in request.query:
        settings = dataclasses.replace(settings, db=validate_db(request.query["db"]))
    report = await run_blocking(request, "query", build, request.app[ENGINE_KEY], settings)
    if fmt == "html":
        return web.Response(text=render_html(report), content_type="text/html")
    if fmt == "markdown":
        return web.Response(text=render_markdown(report), content_type="text/markdown")
    return json_response(report)


@requires("read")
async def performance(request: web.Request) -> web.StreamResponse:
    return await _report(request, PerformanceSettings, performance_report)


@requires("read")
async def user_activity(request: web.Request) -> web.StreamResponse:
    return await _report(request, EventSettings, user_activity_report)


@requires("read")
async def events(request: web.Request) -> web.StreamResponse:
    return await _report(request, EventSettings, events_report)


ROUTES = [
    web.get("/api/v1/reports/performance", performance),
    web.get("/api/v1/reports/user-activity", user_activity),
    web.get("/api/v1/reports/events", events),
]
