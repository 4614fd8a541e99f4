"""OTLP/HTTP logs: ``POST /v1/logs`` (write) → rows of the ``events`` table.

An ``ExportLogsServiceRequest``, ``application/x-protobuf`` or ``application/json``, gzip
allowed, ``db`` selects the database. Decoded by :mod:`tsengine.protocols.otlp_logs` (one event
per log record; records without a time take the server's clock), written in one engine call,
then offered to ``GET /api/v1/events/stream`` subscribers. 200 with an
``ExportLogsServiceResponse`` in the request's encoding, ``partial_success`` naming the
rejected records; an undecodable body → 400; overload → 429/503 with Retry-After.
"""

from __future__ import annotations

from aiohttp import web

from server.auth import requires
from server.body import UnsupportedMediaType
from server.ingest import ingest
from server.keys import CONFIG_KEY, ENGINE_KEY
from server.routes.events import publish
from tsengine.model import TableBatch, validate_db
from tsengine.protocols import otlp_logs

__all__ = ["ROUTES"]

PROTOCOL = "otlp_logs"
_JSON = otlp_logs.CONTENT_TYPE_JSON
_PROTOBUF = otlp_logs.CONTENT_TYPE_PROTOBUF
_ACCEPTED = (_PROTOBUF, "application/protobuf", _JSON)


@requires("write")
async def export(request: web.Request) -> web.StreamResponse:
    content_type = request.content_type
    if content_type not in _ACCEPTED:
        raise UnsupportedMediaType(
            f"cannot decode OTLP logs: Content-Type {content_type!r} is not {_PROTOBUF} or {_JSON}"
        )
    app = request.app
    engine, config = app[ENGINE_KEY], app[CONFIG_KEY]
    db = request.query.get("db") or "default"
    validate_db(db)
    decoded: list[otlp_logs.LogBatch] = []

    def parse(body: bytes) -> list[TableBatch]:  # on an ingest worker
        result = otlp_logs.parse(
            body,
            content_type=content_type,
            db=db,
            now_ns=engine.clock.now_ns(),
            max_tag_bytes=config.max_label_value_bytes,
        )
        decoded.append(result)
        return [result.batch] if result.batch is not None else []

    def respond() -> web.StreamResponse:  # after the engine acknowledged the write
        result = decoded[0] if decoded else None
        if result is not None and result.batch is not None:
            publish(app, [result.batch])
        body = otlp_logs.encode_response(result, content_type)
        return web.Response(status=200, body=body, content_type=content_type)

    return await ingest(request, PROTOCOL, parse, response=respond)


ROUTES = [web.post("/v1/logs", export)]
