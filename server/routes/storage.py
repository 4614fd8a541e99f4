"""Retention and archive admin: ``/api/v1/retention[/{db}[/{table}]]`` and ``/api/v1/storage``.

* ``GET /api/v1/retention`` (read): defaults, run-time overrides, and the effective hours of
  every table. ``GET /api/v1/retention/{db}[/{table}]``: the effective policy of one.
* ``PUT /api/v1/retention/{db}[/{table}]`` (admin), body ``{"hours": 24}`` (``null`` = keep
  forever): overrides the policy, persisted in the data directory (survives a restart),
  applied by the next ``cleanup`` run (``POST /api/v1/tasks/cleanup/run`` runs it now).
* ``DELETE /api/v1/retention/{db}[/{table}]`` (admin): removes the override (the default
  applies again); 404 when there was none.
* ``GET /api/v1/storage`` (read): the lifecycle's state (archive, budget, local bytes, rollup
  watermarks, counters) and per table the archived files, rows and bytes.
* ``POST /api/v1/storage/archive?older_than=&db=&table=`` (admin): what ``tsengine archive``
  does, for a directory a running server holds — move every local file whose rows are all
  older than ``older_than`` (``7d``, ``12h``, ``90m``; default: the expired ones) of the selected
  tables to the archive, verified, and answer the counts. 404 when no archive is configured.

Bad input is a 400 naming the key; the routes answer 503 until the lifecycle has started.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from server.auth import requires
from server.body import decode_body, read_body
from server.keys import ENGINE_KEY, LIFECYCLE_KEY, run_blocking
from server.routes import json_response
from tsengine.errors import InvalidInput, NotFound, Overloaded
from tsengine.lifecycle.policies import policy_key
from tsengine.model.names import validate_db, validate_table

__all__ = ["ROUTES"]

_MAX_BODY = 4096


def _target(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["db"], request.match_info.get("table")


def _policy(engine: Any, db: str, table: str | None) -> dict[str, Any]:
    policies = engine.retention
    key = policy_key(db, table)
    hours = policies.hours_for(db, table)
    overrides = policies.describe()["overrides"]
    return {"key": key, "hours": hours or None, "override": key in overrides, "forever": not hours}


@requires("read")
async def list_retention(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    policies = engine.retention
    doc = policies.describe()
    tables = {f"{db}.{t}": policies.hours_for(db, t) or None for db, t in engine.tables()}
    return json_response({**doc, "tables": tables})


@requires("read")
async def get_retention(request: web.Request) -> web.StreamResponse:
    db, table = _target(request)
    return json_response(_policy(request.app[ENGINE_KEY], db, table))


@requires("admin")
async def put_retention(request: web.Request) -> web.StreamResponse:
    db, table = _target(request)
    body = decode_body(await read_body(request, _MAX_BODY), _MAX_BODY)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"cannot set retention: the body is not JSON ({exc})") from exc
    if not isinstance(doc, dict) or "hours" not in doc:
        raise InvalidInput('cannot set retention: expected {"hours": <number or null>}')
    engine = request.app[ENGINE_KEY]
    await run_blocking(request, "control", engine.set_retention, db, table, doc["hours"])
    return json_response(_policy(engine, db, table))


@requires("admin")
async def delete_retention(request: web.Request) -> web.StreamResponse:
    db, table = _target(request)
    engine = request.app[ENGINE_KEY]
    if not await run_blocking(request, "control", engine.retention.delete, db, table):
        key = db if table is None else f"{db}.{table}"
        raise NotFound(f"cannot delete retention of {key}: no override is set")
    return json_response(_policy(engine, db, table))


def _storage_state(life: Any) -> dict[str, Any]:
    state = life.status()
    tables = {}
    if life.archiver is not None:
        for db, table in life.archiver.store.tables():
            m = life.archiver.manifest(db, table)
            if m is not None:
                tables[f"{db}.{table}"] = {
                    "files": len(m.files),
                    "rows": sum(f.rows for f in m.files.values()),
                    "bytes": sum(f.bytes for f in m.files.values()),
                }
    return {**state, "archived_tables": tables}


_UNITS_NS = {"m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def _older_than_ns(raw: str) -> int:
    text = raw.strip()
    try:
        amount = float(text[:-1]) if text[-1:] in _UNITS_NS else float("nan")
    except ValueError:
        amount = float("nan")
    if not amount >= 0 or amount == float("inf"):
        raise InvalidInput(f"cannot archive: older_than={raw!r} is not a duration like 7d, 12h or 90m")
    return int(amount * _UNITS_NS[text[-1]])


@requires("admin")
async def archive_now(request: web.Request) -> web.StreamResponse:
    life = request.app.get(LIFECYCLE_KEY)
    if life is None:
        raise Overloaded("cannot archive: the lifecycle is starting", retry_after_s=1.0)
    q = request.query
    db, table = q.get("db") or None, q.get("table") or None
    if db is not None:
        validate_db(db)
    if table is not None:
        validate_table(table)
    older = q.get("older_than")
    older_than_ns = None
    if older:
        older_than_ns = request.app[ENGINE_KEY].clock.now_ns() - _older_than_ns(older)

    def run() -> dict[str, int]:
        return life.archive_now(db=db, table=table, older_than_ns=older_than_ns)

    return json_response(await run_blocking(request, "background", run))


@requires("read")
async def storage_state(request: web.Request) -> web.StreamResponse:
    life = request.app.get(LIFECYCLE_KEY)
    if life is None:
        raise Overloaded("cannot describe storage: the lifecycle is starting", retry_after_s=1.0)
    return json_response(await run_blocking(request, "control", _storage_state, life))


ROUTES = [
    web.get("/api/v1/retention", list_retention),
    web.get("/api/v1/retention/{db}", get_retention),
    web.get("/api/v1/retention/{db}/{table}", get_retention),
    web.put("/api/v1/retention/{db}", put_retention),
    web.put("/api/v1/retention/{db}/{table}", put_retention),
    web.delete("/api/v1/retention/{db}", delete_retention),
    web.delete("/api/v1/retention/{db}/{table}", delete_retention),
    web.get("/api/v1/storage", storage_state),
    web.post("/api/v1/storage/archive", archive_now),
]
