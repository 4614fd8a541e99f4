"""InfluxDB line protocol: ``POST /write`` (1.x) and ``POST /api/v2/write`` (2.x).

1.x: ``db`` (default ``default``), ``precision`` (``n``/``ns``, ``u``/``us``, ``ms``, ``s``,
``m``, ``h``; default ns), ``rp`` ignored, ``u``/``p`` credentials. 2.x: ``bucket`` → database
(``db/rp`` buckets keep the part before ``/``; ``db=`` also works), ``org``/``orgID`` accepted
and ignored, ``precision`` (``ns``, ``us``, ``ms``, ``s``). Both take ``Content-Encoding: gzip``
and answer 204; a bad line → 400 naming it, and nothing of the request is written.
``GET``/``HEAD /ping`` answers 204 as InfluxDB does, for clients that probe before writing.
"""

from __future__ import annotations

import functools

from aiohttp import web

from server.auth import requires
from server.ingest import Parser, ingest
from server.keys import ENGINE_KEY
from tsengine.protocols import influx

__all__ = ["ROUTES"]

PROTOCOL = "influx"
#: What ``/ping`` reports in ``X-Influxdb-Version``: the line-protocol dialect we accept.
INFLUX_COMPAT_VERSION = "1.8-tsengine"


def _parser(request: web.Request, db: str, precision: str) -> Parser:
    now_ns = request.app[ENGINE_KEY].clock.now_ns()
    return functools.partial(influx.parse, db=db, precision=precision, now_ns=now_ns)


@requires("write", query_credentials=True)
async def write_v1(request: web.Request) -> web.StreamResponse:
    q = request.query
    return await ingest(
        request, PROTOCOL, _parser(request, q.get("db") or "default", q.get("precision") or "ns")
    )


@requires("write")
async def write_v2(request: web.Request) -> web.StreamResponse:
    q = request.query
    db = (q.get("bucket") or "").partition("/")[0] or q.get("db") or "default"
    return await ingest(request, PROTOCOL, _parser(request, db, q.get("precision") or "ns"))


async def ping(request: web.Request) -> web.StreamResponse:
    """InfluxDB's liveness probe (clients and Telegraf call it before writing): 204, public."""
    return web.Response(status=204, headers={"X-Influxdb-Version": INFLUX_COMPAT_VERSION})


ROUTES = [
    web.post("/write", write_v1),
    web.post("/api/v2/write", write_v2),
    web.get("/ping", ping),  # and HEAD
]
