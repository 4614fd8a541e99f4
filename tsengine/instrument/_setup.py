"""``setup_telemetry_for_app(app)``: instrument an aiohttp or an ASGI (FastAPI/Starlette) app.

The framework is recognised without importing it: an ``aiohttp.web.Application`` goes to
:mod:`tsengine.instrument.aiohttp` (imported only then), anything with ``add_middleware``
(Starlette, FastAPI) gets the pure ASGI middleware. Call it once, at startup, after
``configure()`` and before the app serves. With telemetry disabled it installs nothing.
"""

from __future__ import annotations

from typing import Any

from tsengine.instrument._runtime import Telemetry, get_telemetry

__all__ = ["setup_telemetry_for_app"]


def setup_telemetry_for_app(app: Any, *, telemetry: Telemetry | None = None, **options: Any) -> Any:
    """Add middleware, ``/metrics`` and ``/health/telemetry`` to ``app``; return the app.

    ``options`` go to the adapter (``excluded_paths``, ``metrics_path``, ``health_path``…).
    Raises TypeError for an app of an unknown kind.
    """
    rt = telemetry or get_telemetry()
    if not rt.config.enabled:
        return app
    if type(app).__module__.startswith("aiohttp"):
        from tsengine.instrument.aiohttp import setup_aiohttp

        return setup_aiohttp(app, telemetry=rt, **options)
    if hasattr(app, "add_middleware"):
        from tsengine.instrument.asgi import setup_asgi

        return setup_asgi(app, telemetry=rt, **options)
    raise TypeError(
        f"cannot instrument {type(app).__qualname__}: expected an aiohttp.web.Application or a "
        "Starlette/FastAPI app; wrap other ASGI apps in tsengine.instrument.asgi.TelemetryMiddleware"
    )
