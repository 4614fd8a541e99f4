"""Native batch import: ``POST /api/v1/import``, by ``Content-Type``.

* ``application/json`` — columnar: ``{"table": "cpu", "time": [ns, ...], "tags": {"host":
  [...]}, "fields": {"usage": [...]}}`` or a list of such objects (each may name its own
  ``"db"``). Errors name the item (its index in the list).
* ``application/x-ndjson`` (also ``application/ndjson``, ``application/jsonl``) — one row per
  line: ``{"table": "cpu", "time": ns, "tags": {...}, "fields": {...}}``; rows are grouped by
  table; a key missing on a row is NULL there. Errors name the line.
* ``application/vnd.apache.arrow.stream`` — an Arrow IPC stream with a ``time`` column
  (int64 ns or timestamp); ``?table=`` names the table, ``?tags=a,b`` the tag columns
  (dictionary<string> columns and fields marked with ``tsengine.kind=tag`` are tags too). The
  fastest path: no per-row work at all.

``db`` selects the database (default ``default``); gzip is accepted; 204 on success. Rows of
table ``events`` are offered to ``GET /api/v1/events/stream`` once stored.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
from aiohttp import web

from server.auth import requires
from server.body import UnsupportedMediaType
from server.errors import BodyTooLarge
from server.ingest import ingest
from server.keys import CONFIG_KEY
from server.results import ARROW_STREAM
from server.routes import events
from tsengine.errors import InvalidInput, ParseError
from tsengine.model import TableBatch

__all__ = ["ARROW_STREAM", "ROUTES", "parse_arrow", "parse_columnar", "parse_ndjson"]

PROTOCOL = "import"
_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
_KEYS = frozenset({"table", "time", "tags", "fields", "db"})
DEFAULT_MAX_ARROW_BYTES = 128 * 1024 * 1024


def _build(obj: Any, db: str, **where: Any) -> dict[str, Any]:
    """Check the shape of one JSON object; returns its parts."""
    if not isinstance(obj, dict):
        raise ParseError("cannot import: expected a JSON object", **where)
    unknown = set(obj) - _KEYS
    if unknown:
        raise ParseError(f"cannot import: unknown keys {sorted(unknown)} (expected {sorted(_KEYS)})", **where)
    table, tags, fields = obj.get("table"), obj.get("tags", {}), obj.get("fields", {})
    if not isinstance(table, str):
        raise ParseError("cannot import: 'table' must be a string", **where)
    if not isinstance(tags, dict) or not isinstance(fields, dict):
        raise ParseError("cannot import: 'tags' and 'fields' must be objects", **where)
    row_db = obj.get("db", db)
    if not isinstance(row_db, str):
        raise ParseError("cannot import: 'db' must be a string", **where)
    return {"table": table, "time": obj.get("time"), "tags": tags, "fields": fields, "db": row_db}


def _batch(parts: Mapping[str, Any], **where: Any) -> TableBatch:
    try:
        return TableBatch.build(
            parts["table"], parts["time"], tags=parts["tags"], fields=parts["fields"], db=parts["db"]
        )
    except InvalidInput as exc:
        raise ParseError(exc.reason, **where) from exc
    except (pa.ArrowException, OverflowError) as exc:  # values Arrow cannot hold (ints past 64 bits)
        raise ParseError(f"cannot import table {parts['table']!r}: {exc}", **where) from exc


def parse_columnar(body: bytes, *, db: str) -> list[TableBatch]:
    """``application/json``: one columnar object or a list of them."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"cannot import: invalid JSON ({exc})") from exc
    items = doc if isinstance(doc, list) else [doc]
    out = []
    for i, obj in enumerate(items):
        parts = _build(obj, db, item=i)
        for key in ("tags", "fields"):
            for name, values in parts[key].items():
                if not isinstance(values, list):
                    raise ParseError(f"cannot import: {key}.{name} must be a list of values", item=i)
        if not isinstance(parts["time"], list):
            raise ParseError("cannot import: 'time' must be a list of int64 nanoseconds", item=i)
        out.append(_batch(parts, item=i))
    return out


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts → column lists, in order of first appearance; None where a row lacks a key."""
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: [row.get(name) for row in rows] for name in names}


def parse_ndjson(body: bytes, *, db: str) -> list[TableBatch]:
    """``application/x-ndjson``: one row object per line, grouped by (db, table)."""
    groups: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"cannot import: invalid JSON ({exc})", line=n) from exc
        parts = _build(obj, db, line=n)
        if isinstance(parts["time"], bool) or not isinstance(parts["time"], int):
            raise ParseError("cannot import: 'time' must be an integer (ns since the epoch)", line=n)
        for key in ("tags", "fields"):
            for name, value in parts[key].items():
                if isinstance(value, (list, dict)):
                    raise ParseError(f"cannot import: {key}.{name} must be a single value", line=n)
        groups.setdefault((parts["db"], parts["table"]), []).append((n, parts))
    out = []
    for (group_db, table), rows in groups.items():
        columns = {kind: _columns([parts[kind] for _, parts in rows]) for kind in ("tags", "fields")}
        time = [parts["time"] for _, parts in rows]
        first = rows[0][0]
        out.append(
            _batch(
                {"table": table, "time": time, "db": group_db, **columns},
                line=first if len(rows) == 1 else None,
                item=None if len(rows) == 1 else f"table {table!r} (first on line {first})",
            )
        )
    return out


def parse_arrow(
    body: bytes, *, db: str, table: str | None, tags: list[str], max_bytes: int = DEFAULT_MAX_ARROW_BYTES
) -> list[TableBatch]:
    """``application/vnd.apache.arrow.stream``: one table named by ``?table=``.

    Record batches are read one at a time and their decoded size summed, so a stream of
    compressed buffers (LZ4/ZSTD) that would decode past ``max_bytes`` is refused (413) after at
    most one batch more than the bound.
    """
    if not table:
        raise InvalidInput("cannot import an Arrow stream: the 'table' query parameter is required")
    if not body:
        return []
    batches = []
    decoded = 0
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(body))
        for batch in reader:
            decoded += batch.nbytes
            if decoded > max_bytes:
                raise BodyTooLarge(
                    f"cannot import an Arrow stream: it decodes to more than the limit of {max_bytes} bytes"
                )
            batches.append(batch)
        data = pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowException, OSError) as exc:
        raise ParseError(f"cannot import an Arrow stream: {exc}") from exc
    if data.num_rows == 0:
        return []
    try:
        return [TableBatch.from_arrow(table, data, tags=tags, db=db)]
    except (pa.ArrowException, OverflowError) as exc:
        raise ParseError(f"cannot import table {table!r}: {exc}") from exc


@requires("write")
async def import_(request: web.Request) -> web.StreamResponse:
    db = request.query.get("db") or "default"
    content_type = request.content_type
    if content_type == "application/json":
        parse = functools.partial(parse_columnar, db=db)
    elif content_type in _NDJSON:
        parse = functools.partial(parse_ndjson, db=db)
    elif content_type == ARROW_STREAM:
        tags = [t for t in request.query.get("tags", "").split(",") if t]
        parse = functools.partial(
            parse_arrow,
            db=db,
            table=request.query.get("table"),
            tags=tags,
            max_bytes=request.app[CONFIG_KEY].max_decompressed_bytes,
        )
    else:
        raise UnsupportedMediaType(
            f"cannot import: Content-Type {content_type!r} is not application/json, "
            f"application/x-ndjson or {ARROW_STREAM}"
        )
    stored: list[TableBatch] = []

    def parse_and_keep(body: bytes) -> list[TableBatch]:  # on an ingest worker
        stored.extend(parse(body))
        return stored

    def respond() -> web.StreamResponse:  # after the write: rows of `events` go to the live stream
        events.publish(request.app, stored)
        return web.Response(status=204)

    return await ingest(request, PROTOCOL, parse_and_keep, response=respond)


ROUTES = [web.post("/api/v1/import", import_)]
