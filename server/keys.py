"""Typed application state (``web.AppKey``) and the one way handlers run blocking work.

The app factory fills these keys; routes read them. :func:`run_blocking` is how every engine
call (parse, write, SQL, stats) leaves the event loop. It runs on one of four bounded thread
pools, created and shut down by the app's ``cleanup_ctx`` and kept apart so that one kind of
work cannot starve another: ``ingest`` (decode, parse, write; ``worker_threads``), ``query``
(SQL, which may run up to ``query_timeout_s``; ``query_workers``) and ``control`` (engine
statistics for ``/health/telemetry`` and ``/metrics``: one thread, so a scrape still answers
while writes and queries are busy) and ``background`` (the scheduler's periodic tasks:
alert evaluation, analysis, retention and archival; two threads).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from server.alerting.service import AlertService
    from server.config import ServerConfig
    from server.scheduler import Scheduler
    from server.selfmetrics import ServerMetrics
    from server.tracing.decoder import SpanDecoder
    from server.tracing.hub import Hub, SpanHub
    from tsengine.engine import Engine
    from tsengine.lifecycle import Lifecycle

__all__ = [
    "ALERTING_KEY",
    "CONFIG_KEY",
    "DRAINING_KEY",
    "ENGINE_KEY",
    "EVENT_HUB_KEY",
    "EXECUTORS_KEY",
    "LIFECYCLE_KEY",
    "METRICS_KEY",
    "POOLS",
    "SCHEDULER_KEY",
    "STARTED_KEY",
    "TRACE_DECODER_KEY",
    "TRACE_HUB_KEY",
    "WRITE_SLOTS_KEY",
    "run_blocking",
]

T = TypeVar("T")

ENGINE_KEY: web.AppKey[Engine] = web.AppKey("engine")
CONFIG_KEY: web.AppKey[ServerConfig] = web.AppKey("config")
METRICS_KEY: web.AppKey[ServerMetrics] = web.AppKey("metrics")
#: The worker pools by name: "ingest", "query", "control", "background".
EXECUTORS_KEY: web.AppKey[dict[str, ThreadPoolExecutor]] = web.AppKey("executors")
POOLS = ("ingest", "query", "control", "background")
#: The background scheduler (:mod:`server.scheduler`): periodic tasks, run on "background".
SCHEDULER_KEY: web.AppKey[Scheduler] = web.AppKey("scheduler")
#: Retention, downsampling, archival and budget (:mod:`server.cleanup`); set at startup.
LIFECYCLE_KEY: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
#: Monotonic second the app started (for /health/telemetry's uptime).
STARTED_KEY: web.AppKey[float] = web.AppKey("started")
#: Set when shutdown begins: writes get 503 from then on.
DRAINING_KEY: web.AppKey[asyncio.Event] = web.AppKey("draining")
#: Admission of write requests (``ServerConfig.max_concurrent_writes`` slots).
WRITE_SLOTS_KEY: web.AppKey[asyncio.Semaphore] = web.AppKey("write_slots")
#: The alert manager (:mod:`server.alerting`): rules, alerts, silences, notifications.
ALERTING_KEY: web.AppKey[AlertService] = web.AppKey("alerting")
#: Fan-out of stored spans to ``GET /api/v1/traces/stream`` clients (:mod:`server.tracing.hub`).
TRACE_HUB_KEY: web.AppKey[SpanHub] = web.AppKey("trace_hub")
#: Fan-out of stored events to ``GET /api/v1/events/stream`` clients (:mod:`server.routes.events`).
EVENT_HUB_KEY: web.AppKey[Hub] = web.AppKey("event_hub")
#: Where ``POST /v1/traces`` bodies are decoded (:mod:`server.tracing.decoder`); closed by cleanup.
TRACE_DECODER_KEY: web.AppKey[SpanDecoder] = web.AppKey("trace_decoder")


async def run_blocking(request: web.Request, pool: str, func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` on the app's ``pool`` ("ingest", "query" or "control"); await it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[EXECUTORS_KEY][pool], functools.partial(func, *args))
