"""The trace backend behind ``server.routes.traces``: what the routes compute, kept off aiohttp.

In: query parameters and the engine's ``spans`` table (written by ``POST /v1/traces`` through
:mod:`tsengine.protocols.otlp_traces`). Out: plain dicts the routes serialise. Modules:

* :mod:`server.tracing.params` — query-parameter parsing (times, durations, booleans);
* :mod:`server.tracing.queries` — the SQL of trace lookup, trace search and the service
  dependency map, run through ``Engine.sql`` (blocking: call on a worker pool); a span id
  counts once in each, however many copies of it the append-only table holds;
* :mod:`server.tracing.tree` — a trace's rows → the span tree, with error origins;
* :mod:`server.tracing.hub` — the bounded fan-out of stored spans to live-stream subscribers.
"""
