"""The aiohttp server that makes the engine a service (see docs/http-api.md).

In: HTTP requests — Influx line protocol, Prometheus remote write, OTLP metrics, native
imports, SQL, federation and remote-read queries. Out: writes to one :class:`tsengine.Engine`,
query answers, ``/metrics`` and health. Who calls it: ``tsengine serve`` (:mod:`tsengine.cli`),
or an embedding application::

    from server import ServerConfig, create_app
    app = create_app(engine, ServerConfig())

Layout: :mod:`server.app` (factory, background work), :mod:`server.config`,
:mod:`server.auth`, :mod:`server.errors` (the request boundary), :mod:`server.body` (bounded
reading and decompression), :mod:`server.ingest` (the shared write pipeline),
:mod:`server.selfmetrics`, :mod:`server.selectors` and :mod:`server.promseries` (Prometheus
selectors and the table ↔ series mapping), :mod:`server.remote_read` (the remote-read codec and
query), and :mod:`server.routes` (one module per route group).
"""

from server.app import create_app
from server.config import ServerConfig, Token, load_config

__all__ = ["ServerConfig", "Token", "create_app", "load_config"]
