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
from server.body import otlp_content_type
from server.ingest import ingest
from server.keys import CONFIG_KEY, ENGINE_KEY
from server.routes.events import publish
from server.tracing.params import parse_db
from tsengine.model import TableBatch
from tsengine.protocols import otlp_logs

__all__ = ["ROUTES"]

PROTOCOL = "otlp_logs"


@requires("write")
async def export(request: web.Request) -> web.StreamResponse:
    content_type = otlp_content_type(request, "logs")
    app = request.app
    engine, config = app[ENGINE_KEY], app[CONFIG_KEY]
    db = parse_db(request.query)
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
