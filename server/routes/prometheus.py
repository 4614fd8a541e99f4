"""Prometheus remote write 1.0 (``POST /api/v1/write``) and remote read (``POST /api/v1/read``).

The body is a snappy (block format) ``WriteRequest``; ``db`` selects the database. Answers
204. An undecodable body or an invalid series is a 400, which Prometheus does not retry; only
overload (429 with Retry-After) and server faults (5xx) are retryable, as the specification
asks. A body that would decompress past ``max_decompressed_bytes`` is a 413, checked from the
snappy header before anything is inflated.

Remote read (scope ``read``) answers a snappy ``ReadRequest`` with a sampled ``ReadResponse``
(see :mod:`server.remote_read`), so a Prometheus with ``remote_read`` answers PromQL over
history only tsengine holds; at most ``max_read_samples`` samples per request (400 beyond).
"""

from __future__ import annotations

from aiohttp import web

from server import remote_read as remote_read_codec
from server.auth import requires
from server.body import read_body
from server.errors import BodyTooLarge
from server.ingest import ingest
from server.keys import CONFIG_KEY, ENGINE_KEY, run_blocking
from tsengine.errors import LimitExceeded
from tsengine.model import TableBatch
from tsengine.model.names import validate_db
from tsengine.protocols import prom_remote

__all__ = ["ROUTES"]

PROTOCOL = "prometheus_remote_write"
_SNAPPY = frozenset({"snappy"})


@requires("write")
async def remote_write(request: web.Request) -> web.StreamResponse:
    db = request.query.get("db") or "default"
    max_decoded = request.app[CONFIG_KEY].max_decompressed_bytes

    def parse(body: bytes) -> list[TableBatch]:
        try:
            return prom_remote.parse(body, db=db, max_decoded_bytes=max_decoded)
        except LimitExceeded as exc:  # the decoder's only LimitExceeded is the decoded size
            raise BodyTooLarge(exc.reason) from exc

    return await ingest(request, PROTOCOL, parse, passthrough=_SNAPPY)


@requires("read")
async def remote_read(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    db = request.query.get("db") or "default"
    validate_db(db)
    raw = await read_body(request, config.max_body_bytes, passthrough=_SNAPPY)

    def run() -> bytes:
        read_request = remote_read_codec.decode_request(
            raw.data, max_decoded_bytes=config.max_decompressed_bytes
        )
        response = remote_read_codec.answer(
            request.app[ENGINE_KEY], db, read_request, max_samples=config.max_read_samples
        )
        return remote_read_codec.encode_response(response)

    body = await run_blocking(request, "query", run)
    return web.Response(
        body=body,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
    )


ROUTES = [web.post("/api/v1/write", remote_write), web.post("/api/v1/read", remote_read)]
