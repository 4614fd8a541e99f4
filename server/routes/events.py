"""Events: write them, search them, follow them live. The rows are the SDK's ``events`` table.

* ``POST /api/v1/events`` (write) — one JSON event, a JSON array of them, or NDJSON
  (``application/x-ndjson``): ``{"time"?, "service", "category", "severity", "name",
  "message"?, "attributes"?, "id"?, "user_id"?, "session_id"?, "correlation_id"?, "trace_id"?,
  "span_id"?}`` (:func:`tsengine.protocols._events.parse_json`); ``db`` selects the database.
  All or nothing: a bad event → 400 naming its index and field. ``time`` defaults to the
  server's clock, ``id`` to a random int64. 200 ``{"written": n}``.
* ``GET /api/v1/events?service=&category=&severity=&name=&start=&end=&q=&limit=`` (read) —
  newest first; ``severity`` is a minimum (``warning`` → warning, error, critical); ``q`` a
  substring of the message (case-insensitive); default window the last hour, ``limit`` ≤ 1000.
* ``GET /api/v1/events/stream?service=&category=&severity=`` (read; the token may also be
  given as ``?p=``, since a browser's ``EventSource`` cannot send headers) — server-sent
  events, one ``event: event`` per stored event, from every path that writes events through
  the server (this route, ``/api/v1/import`` rows of table ``events``, ``POST /v1/logs``): a
  bounded buffer per client, a slow client is disconnected (:class:`server.tracing.hub.Hub`).

:func:`publish` is how the writing routes hand stored batches to the stream.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from server.auth import requires
from server.body import UnsupportedMediaType
from server.ingest import ingest
from server.keys import ENGINE_KEY, EVENT_HUB_KEY, METRICS_KEY, run_blocking
from server.routes import json_response
from server.tracing.hub import Hub, serve_stream
from server.tracing.params import parse_db, parse_limit, time_range
from tsengine.errors import InvalidInput
from tsengine.model import TableBatch
from tsengine.protocols._events import CATEGORIES, CONTEXT_IDS, EVENTS_TABLE, SEVERITIES, parse_json

__all__ = ["ROUTES", "EventFilter", "encode_events", "make_hub", "publish"]

PROTOCOL = "events"
_ACCEPTED = ("application/json", "application/x-ndjson", "application/ndjson", "application/jsonl")
MAX_LIMIT = 1000
_COLUMNS = ("service", "category", "severity", "name", "id", "message", "attributes", *CONTEXT_IDS)


def _min_severity(value: str | None) -> str | None:
    if not value:
        return None
    if value.lower() not in SEVERITIES:
        raise InvalidInput(
            f"cannot read parameter 'severity': {value[:40]!r} is not one of {', '.join(SEVERITIES)}"
        )
    return value.lower()


def _category(value: str | None) -> str | None:
    if value and value not in CATEGORIES:
        raise InvalidInput(
            f"cannot read parameter 'category': {value[:40]!r} is not one of {', '.join(sorted(CATEGORIES))}"
        )
    return value or None


@dataclass(frozen=True)
class EventFilter:
    """Which events a stream subscriber wants (a :class:`server.tracing.hub.StreamFilter`)."""

    db: str = "default"
    service: str | None = None
    category: str | None = None
    min_severity: str | None = None

    def select(self, batch: TableBatch) -> np.ndarray:
        mask = np.ones(batch.num_rows, dtype=bool)
        for tag, wanted in (("service", self.service), ("category", self.category)):
            if wanted is not None:
                col = batch.tags.get(tag)
                mask &= False if col is None else np.asarray(col.to_numpy(zero_copy_only=False) == wanted)
        if self.min_severity is not None:
            col = batch.tags.get("severity")
            floor = SEVERITIES[self.min_severity]
            ranks = [SEVERITIES.get(s, 0) if s else 0 for s in col.to_pylist()] if col is not None else []
            mask &= np.array(ranks, dtype=np.int64) >= floor if ranks else False
        return mask


def encode_events(batch: TableBatch) -> list[bytes]:
    """One ``event: event`` SSE per row; data: the event as one JSON line (attributes parsed)."""
    n = batch.num_rows
    cols: dict[str, list[Any]] = {"time_ns": batch.time.tolist()}
    for name in _COLUMNS:
        arr = batch.tags.get(name)
        if arr is None:
            arr = batch.fields.get(name)
        cols[name] = arr.to_pylist() if arr is not None else [None] * n
    attributes = cols["attributes"]
    for i, text in enumerate(attributes):
        if isinstance(text, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # an importer's free text: sent as it is
                attributes[i] = orjson.loads(text)
    return [
        b"event: event\ndata: " + orjson.dumps({name: cols[name][i] for name in cols}) + b"\n\n"
        for i in range(n)
    ]


def make_hub() -> Hub:
    return Hub(encode_events, what="events")


def publish(app: web.Application, batches: Iterable[TableBatch]) -> None:
    """Offer the stored ``events`` rows among ``batches`` to stream subscribers. Event loop only."""
    hub = app[EVENT_HUB_KEY]
    for batch in batches:
        if batch.table == EVENTS_TABLE and batch.num_rows:
            hub.publish(batch)


@requires("write")
async def post_events(request: web.Request) -> web.StreamResponse:
    content_type = request.content_type
    if content_type not in _ACCEPTED:
        raise UnsupportedMediaType(
            f"cannot read events: Content-Type {content_type!r} is not application/json or "
            "application/x-ndjson"
        )
    app = request.app
    engine = app[ENGINE_KEY]
    db = parse_db(request.query)
    parsed: list[TableBatch] = []

    def parse(body: bytes) -> list[TableBatch]:  # on an ingest worker
        batch = parse_json(body, content_type=content_type, db=db, now_ns=engine.clock.now_ns())
        if batch is not None:
            parsed.append(batch)
        return parsed

    def respond() -> web.StreamResponse:  # after the engine acknowledged the write
        publish(app, parsed)
        return json_response({"written": sum(b.num_rows for b in parsed)})

    return await ingest(request, PROTOCOL, parse, response=respond)


def _search(
    engine: Any, db: str, conds: list[str], params: list[Any], *, filtered: set[str], limit: int
) -> list[dict[str, Any]]:
    """The newest matching events (blocking: DuckDB).

    ``filtered``: the columns ``conds`` test; a table without one of them has no matching event.
    Other columns the table lacks (a context id never set) read as NULL.
    """
    if (db, EVENTS_TABLE) not in engine.tables(db):
        return []
    have = {c.name for c in engine.schema(EVENTS_TABLE, db).columns}
    if not filtered <= have:
        return []
    select = ", ".join(name if name in have else f"NULL AS {name}" for name in _COLUMNS)
    where = " AND ".join(conds)
    sql = (
        f"SELECT epoch_ns(time) AS time_ns, {select} FROM {EVENTS_TABLE} WHERE {where} "
        f"ORDER BY time DESC LIMIT {int(limit)}"
    )
    rows: list[dict[str, Any]] = engine.sql(sql, params, db=db).to_pylist()
    for row in rows:
        if isinstance(row["attributes"], str):
            with contextlib.suppress(orjson.JSONDecodeError):
                row["attributes"] = orjson.loads(row["attributes"])
    return rows


@requires("read")
async def get_events(request: web.Request) -> web.StreamResponse:
    q = request.query
    engine = request.app[ENGINE_KEY]
    db = parse_db(request.query)
    start, end = time_range(q, engine.clock.now_ns())
    limit = parse_limit(q.get("limit"), default=100, maximum=MAX_LIMIT)
    # Values are bound parameters; only the column names (fixed here) are part of the SQL text.
    params: list[Any] = [start, end]
    conds = ["time BETWEEN make_timestamp_ns($1::BIGINT) AND make_timestamp_ns($2::BIGINT)"]
    filtered: set[str] = set()
    category = _category(q.get("category"))
    for column, value in (("service", q.get("service")), ("category", category), ("name", q.get("name"))):
        if value:
            params.append(value)
            conds.append(f"{column} = ${len(params)}")
            filtered.add(column)
    severity = _min_severity(q.get("severity"))
    if severity is not None:
        allowed = [name for name, rank in SEVERITIES.items() if rank >= SEVERITIES[severity]]
        params.append(allowed)
        conds.append(f"list_contains(${len(params)}::VARCHAR[], severity)")
        filtered.add("severity")
    if q.get("q"):
        params.append(q["q"])
        conds.append(f"contains(lower(message), lower(${len(params)}))")
        filtered.add("message")
    search = functools.partial(_search, filtered=filtered, limit=limit)
    rows = await run_blocking(request, "query", search, engine, db, conds, params)
    return json_response({"start_ns": start, "end_ns": end, "events": rows})


@requires("read", query_credentials=True)
async def stream(request: web.Request) -> web.StreamResponse:
    events_filter = EventFilter(
        db=parse_db(request.query),
        service=request.query.get("service") or None,
        category=_category(request.query.get("category")),
        min_severity=_min_severity(request.query.get("severity")),
    )
    metrics = request.app[METRICS_KEY]
    return await serve_stream(
        request,
        request.app[EVENT_HUB_KEY],
        events_filter,
        clients=metrics.event_stream_clients,
        dropped=metrics.event_stream_dropped,
    )


ROUTES = [
    web.post("/api/v1/events", post_events),
    web.get("/api/v1/events/stream", stream),
    web.get("/api/v1/events", get_events),
]
