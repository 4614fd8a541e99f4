"""The app factory: ``create_app(engine, config) -> web.Application``.

The caller owns the engine (opens it before, closes it after the app has shut down); the app
owns its background work through ``cleanup_ctx``: the bounded worker pools every engine call
runs on (:mod:`server.keys`), the background scheduler (:mod:`server.scheduler`) and the psutil
sampler of the self-metrics. On shutdown the app
first marks itself draining (new writes get 503, ``/health`` says so), aiohttp then lets
in-flight requests finish, and the cleanup context shuts the pools down after the last of them.

Middlewares, outermost first: the request boundary (:mod:`server.errors`: JSON errors,
request metrics, the one catch-all) and authentication (:mod:`server.auth`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from server import cleanup as storage_lifecycle
from server.alerting import setup_alerting
from server.auth import auth_middleware, check_bind
from server.config import ServerConfig
from server.errors import boundary_middleware
from server.keys import (
    CONFIG_KEY,
    DRAINING_KEY,
    ENGINE_KEY,
    EVENT_HUB_KEY,
    EXECUTORS_KEY,
    METRICS_KEY,
    POOLS,
    SCHEDULER_KEY,
    STARTED_KEY,
    TRACE_DECODER_KEY,
    TRACE_HUB_KEY,
    WRITE_SLOTS_KEY,
)
from server.routes import (
    dashboard,
    events,
    federate,
    health,
    imports,
    influx,
    logs,
    metrics,
    otlp,
    prometheus,
    sql,
    tasks,
    traces,
)
from server.routes.reports import install as install_analysis
from server.scheduler import Scheduler
from server.selfmetrics import ServerMetrics
from server.tracing.decoder import SpanDecoder, default_processes
from server.tracing.hub import SpanHub

if TYPE_CHECKING:
    from tsengine.engine import Engine

__all__ = ["create_app"]


async def _worker_pools(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    sizes = {
        "ingest": config.worker_threads,
        "query": config.query_workers,
        "control": 1,
        "background": config.background_workers,
    }
    pools = {
        name: ThreadPoolExecutor(max_workers=sizes[name], thread_name_prefix=f"tsengine-{name}")
        for name in POOLS
    }
    app[EXECUTORS_KEY] = pools
    yield
    # Requests have finished by now; join the threads without holding up the loop.
    for pool in pools.values():
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER_KEY]
    scheduler.executor = app[EXECUTORS_KEY]["background"]
    await scheduler.start()
    yield
    await scheduler.stop()


async def _process_sampler(app: web.Application) -> AsyncIterator[None]:
    sampler = app[METRICS_KEY].process
    sampler.start()
    yield
    await asyncio.get_running_loop().run_in_executor(None, sampler.stop)


async def _span_decoder(app: web.Application) -> AsyncIterator[None]:
    yield
    await asyncio.get_running_loop().run_in_executor(None, app[TRACE_DECODER_KEY].close)


async def _mark_draining(app: web.Application) -> None:
    app[DRAINING_KEY].set()
    # Span streams never end by themselves; end them so that aiohttp's wait for in-flight
    # requests is not spent on them.
    app[TRACE_HUB_KEY].close()
    app[EVENT_HUB_KEY].close()


def create_app(engine: Engine, config: ServerConfig | None = None) -> web.Application:
    """Build the aiohttp application serving ``engine``.

    Raises:
        InvalidInput: ``config`` binds a non-loopback host without any token.
    """
    config = config or ServerConfig()
    check_bind(config)
    # aiohttp's own body limit backs up server.body.read_body (which answers with our JSON first).
    app = web.Application(
        middlewares=[boundary_middleware, auth_middleware], client_max_size=config.max_body_bytes + 1
    )
    app[ENGINE_KEY] = engine
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = ServerMetrics(
        process_sample_interval_s=config.process_sample_interval_s, data_dir=str(engine.path)
    )
    engine.observer = app[METRICS_KEY]  # WAL append/fsync and persist timings
    app[STARTED_KEY] = time.monotonic()
    app[TRACE_HUB_KEY] = SpanHub()
    app[EVENT_HUB_KEY] = events.make_hub()
    procs = config.span_decode_processes
    app[TRACE_DECODER_KEY] = SpanDecoder(processes=default_processes() if procs < 0 else procs)
    app[DRAINING_KEY] = asyncio.Event()
    app[WRITE_SLOTS_KEY] = asyncio.Semaphore(config.max_concurrent_writes)
    app[SCHEDULER_KEY] = Scheduler(
        registry=app[METRICS_KEY].registry, jitter=config.task_jitter, clock=engine.clock
    )
    app.cleanup_ctx.append(_worker_pools)
    app.cleanup_ctx.append(_scheduler)
    app.cleanup_ctx.append(_process_sampler)
    app.cleanup_ctx.append(_span_decoder)
    app.on_shutdown.append(_mark_draining)
    groups = (influx, prometheus, otlp, imports, sql, federate, health, metrics, tasks, traces, events, logs)
    for group in (*groups, dashboard):  # dashboard: GET /, the dashboard page
        app.router.add_routes(group.ROUTES)
    storage_lifecycle.install(app)  # the cleanup task, retention/storage admin routes
    install_analysis(app)  # the analysis tasks and the report routes (server.analysis)
    setup_alerting(app)  # the alert_evaluation task, the rule/alert/silence routes (server.alerting)
    return app
