"""HTTP routes, one module per group; each exposes ``ROUTES``, a list of ``web.RouteDef``.

Handlers are thin: read parameters, hand the body to a pure parser or the engine through
:func:`server.ingest.ingest` / :func:`server.keys.run_blocking`, answer. Errors are raised as
:class:`~tsengine.errors.TsengineError` and turned into JSON by :mod:`server.errors`.
"""
