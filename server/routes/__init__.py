"""HTTP routes, one module per group; each exposes ``ROUTES``, a list of ``web.RouteDef``.

Handlers are thin: read parameters, hand the body to a pure parser or the engine through
:func:`server.ingest.ingest` / :func:`server.keys.run_blocking`, answer. Errors are raised as
:class:`~tsengine.errors.TsengineError` and turned into JSON by :mod:`server.errors`; a JSON
success is :func:`json_response`.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_response"]


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as an ``application/json`` answer (orjson)."""
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
