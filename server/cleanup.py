"""Wiring of the storage lifecycle into the server: the ``cleanup`` task and its admin routes.

:func:`install` (one call from the app factory) parses the config file's ``storage`` section
and the ``METRICS_RETENTION_HOURS``/``EVENTS_RETENTION_HOURS`` defaults (the edge: the only
place the server reads them), takes compaction and retention over from the engine's persister
thread (``engine.maintenance_external``), and adds a startup step that — off the event loop,
since it may reach an S3 endpoint and reconciles an interrupted archive move — builds the
:class:`~tsengine.lifecycle.Lifecycle` and registers the ``cleanup`` task (every
``tasks.intervals.cleanup``, 30 min by default) on the scheduler. A run's result is the counts
of each step (downsampling, retention, budget, compaction), shown by ``GET /api/v1/tasks`` and
``/health/telemetry``; ``POST /api/v1/tasks/cleanup/run`` runs it now.

Metrics (the server's registry): ``tsengine_storage_local_bytes`` (Parquet + WAL after the last
pass), ``tsengine_storage_evicted_files_total{reason,action}`` (reason ``retention``/``budget``,
action ``archived``/``dropped``), ``tsengine_storage_budget_exceeded_total``,
``tsengine_storage_rollup_rows_total``, ``tsengine_storage_compacted_files_total``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from server.keys import CONFIG_KEY, ENGINE_KEY, EXECUTORS_KEY, LIFECYCLE_KEY, METRICS_KEY, SCHEDULER_KEY
from server.routes import storage
from server.scheduler import interval_for
from tsengine.instrument import Counter, Gauge
from tsengine.lifecycle import Lifecycle, StorageConfig, defaults_from_env

__all__ = ["install"]


class _StorageMetrics:
    def __init__(self, registry: Any) -> None:
        self.local_bytes = Gauge(
            "tsengine_storage_local_bytes", "Bytes of local Parquet files and WAL after the last cleanup.",
            registry=registry,
        )  # fmt: skip
        self.evicted = Counter(
            "tsengine_storage_evicted_files", "Local files archived or dropped, by reason and action.",
            ("reason", "action"), registry=registry,
        )  # fmt: skip
        self.budget = Counter(
            "tsengine_storage_budget_exceeded", "Cleanup passes that found the storage budget exceeded.",
            registry=registry,
        )  # fmt: skip
        self.rollup_rows = Counter(
            "tsengine_storage_rollup_rows", "Rollup rows written by downsampling.", registry=registry
        )
        self.compacted = Counter(
            "tsengine_storage_compacted_files", "Files merged away by compaction.", registry=registry
        )

    def observe(self, result: Mapping[str, Any], local_bytes: int) -> None:
        self.local_bytes.set(local_bytes)
        self.rollup_rows.inc(result.get("downsampling", {}).get("rollup_rows", 0))
        for reason in ("retention", "budget"):
            step = result.get(reason, {})
            for action in ("archived", "dropped"):
                if step.get(action):
                    self.evicted.labels(reason, action).inc(step[action])
        if result.get("budget", {}).get("bytes_freed"):
            self.budget.inc()
        self.compacted.inc(result.get("compaction", {}).get("files_removed", 0))


def install(app: web.Application, environ: Mapping[str, str] | None = None) -> None:
    """Wire the lifecycle into ``app`` (call from the app factory, before the app starts).

    Raises:
        InvalidInput: the ``storage`` section or a retention variable is invalid.
    """
    config = app[CONFIG_KEY]
    engine = app[ENGINE_KEY]
    storage_config = StorageConfig.from_mapping(config.storage, source="config storage")
    env_defaults = defaults_from_env(os.environ if environ is None else environ)
    interval_s = interval_for(config.tasks, "cleanup")
    engine.maintenance_external = True
    metrics = _StorageMetrics(app[METRICS_KEY].registry)

    async def lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
        def build() -> Lifecycle:
            life = Lifecycle(engine, storage_config)
            for key, hours in env_defaults.items():  # the environment wins over the file
                engine.retention.set_default(key, hours)
            return life

        loop = asyncio.get_running_loop()
        life = await loop.run_in_executor(app[EXECUTORS_KEY]["background"], build)
        app[LIFECYCLE_KEY] = life

        def cleanup() -> dict[str, Any]:
            result = life.run()
            metrics.observe(result, life.local_bytes())
            return result

        app[SCHEDULER_KEY].add("cleanup", cleanup, interval_s)
        yield

    app.cleanup_ctx.append(lifecycle_ctx)
    app.router.add_routes(storage.ROUTES)
