"""The dashboard: ``GET /`` (public) serves one static HTML page, ``server/static/dashboard.html``.

Also ``GET /api/v1/tables?db=`` (read): the tables the engine holds, with their tag and field
columns — what the page lists. (DuckDB's ``information_schema`` is no catalogue of them: the
query layer creates a table's view only when a query first names the table.)

The page holds no data: its script calls the JSON API (health and tasks, tables and the SDK's
request metrics through ``/api/v1/sql``, alerts, events and their live stream, slow traces, the
dependency map) with the token the user types, kept in the browser's localStorage. Inline CSS
and JavaScript, nothing loaded from elsewhere; the Content-Security-Policy says so. The file is
package data (``[tool.setuptools.package-data]``), read once on first request (off the loop).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from aiohttp import web

from server.auth import requires
from server.keys import ENGINE_KEY, run_blocking
from server.routes import json_response
from tsengine.errors import NotFound
from tsengine.model import validate_db

__all__ = ["ROUTES"]

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _page() -> bytes:
    return resources.files("server").joinpath("static", "dashboard.html").read_bytes()


async def dashboard(request: web.Request) -> web.StreamResponse:
    body = await run_blocking(request, "control", _page)
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _tables(engine: Any, db: str | None) -> list[dict[str, Any]]:
    out = []
    for table_db, table in engine.tables(db):
        try:
            schema = engine.schema(table, table_db)
        except NotFound:  # dropped in between
            continue
        out.append(
            {
                "db": table_db,
                "table": table,
                "tags": schema.tags,
                "fields": {name: kind.value for name, kind in schema.fields.items()},
                "append_only": schema.append_only,
            }
        )
    return out


@requires("read")
async def tables(request: web.Request) -> web.StreamResponse:
    db = request.query.get("db") or None
    if db is not None:
        validate_db(db)
    found = await run_blocking(request, "control", _tables, request.app[ENGINE_KEY], db)
    return json_response({"tables": found})


ROUTES = [web.get("/", dashboard), web.get("/api/v1/tables", tables)]
