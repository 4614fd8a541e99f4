"""SQL: ``POST /api/v1/sql``.

The statement comes as JSON ``{"sql": "...", "db": "default"}`` or as a ``text/plain`` body
(``?db=`` then). It runs in the engine's read-only sandbox on a worker thread, with the engine's
time limit. The answer follows ``Accept``:

* ``application/json`` (default): ``{"columns": [{"name", "type"}], "rows": [[...]],
  "truncated": bool}``; timestamps as RFC 3339 strings with nanoseconds (``...Z``), NaN and
  infinities as ``null``;
* ``text/csv``: a header line and the rows (lists, structs, maps and intervals as JSON text);
* ``application/vnd.apache.arrow.stream``: an Arrow IPC stream (the fastest for clients with
  Arrow).

At most ``query_max_rows`` rows are sent; ``truncated`` (JSON) or the header
``X-Tsengine-Truncated: true`` (CSV, Arrow) says when rows were cut. Errors: bad SQL → 400 with
DuckDB's message; a sandbox refusal → 403 saying what was refused.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from server.auth import requires
from server.body import UnsupportedMediaType, decode_body, read_body
from server.keys import CONFIG_KEY, ENGINE_KEY, METRICS_KEY, run_blocking
from server.results import encode
from tsengine.errors import InvalidInput, ParseError, TsengineError
from tsengine.model.names import validate_db

__all__ = ["ROUTES"]
_MAX_SQL_BYTES = 1024 * 1024


def _run(engine: Any, sql: str, db: str, max_rows: int, accept: str) -> tuple[bytes, str, bool]:
    result = engine.sql(sql, db=db)
    truncated = result.num_rows > max_rows
    if truncated:
        result = result.slice(0, max_rows)
    body, content_type = encode(result, truncated, accept)
    return body, content_type, truncated


async def _statement(request: web.Request) -> tuple[str, str]:
    body = decode_body(await read_body(request, _MAX_SQL_BYTES), _MAX_SQL_BYTES)
    db = request.query.get("db") or "default"
    if request.content_type == "application/json":
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"cannot read query: invalid JSON ({exc})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("sql"), str):
            raise ParseError('cannot read query: expected {"sql": "...", "db": "..."}')
        db = doc.get("db") or db
        if not isinstance(db, str):
            raise ParseError("cannot read query: 'db' must be a string")
        sql = doc["sql"]
    elif request.content_type in ("text/plain", "application/sql", "application/octet-stream"):
        try:
            sql = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"cannot read query: not UTF-8 ({exc.reason})") from exc
    else:
        raise UnsupportedMediaType(
            f"cannot read query: Content-Type {request.content_type!r} is not application/json or text/plain"
        )
    validate_db(db)
    if not sql.strip():
        raise InvalidInput("cannot run query: the statement is empty")
    return sql, db


@requires("read")
async def sql(request: web.Request) -> web.StreamResponse:
    statement, db = await _statement(request)
    metrics = request.app[METRICS_KEY]
    start = time.perf_counter()
    try:
        body, content_type, truncated = await run_blocking(
            request,
            "query",
            _run,
            request.app[ENGINE_KEY],
            statement,
            db,
            request.app[CONFIG_KEY].query_max_rows,
            request.headers.get("Accept", "application/json"),
        )
    except TsengineError:
        metrics.queries.labels("error").inc()
        raise
    finally:
        metrics.query_latency.observe(time.perf_counter() - start)
    metrics.queries.labels("ok").inc()
    headers = {"X-Tsengine-Truncated": "true"} if truncated else {}
    return web.Response(body=body, content_type=content_type, headers=headers)


ROUTES = [web.post("/api/v1/sql", sql)]
