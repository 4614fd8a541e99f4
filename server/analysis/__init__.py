"""Analysis of stored telemetry, run by the server's scheduler and written back as tables.

What comes in: the tables the tsengine SDK (and Prometheus remote write, OTLP) fill — a table per
metric sample name (tags = labels, field ``value``; counters cumulative, histograms as ``le``
buckets) and the ``events`` table. What goes out: ``analysis_*`` tables written through the
engine into the same database, so SQL, the dashboard and alert rules read them like any other
table; each task's result dict (rows written per table, findings, skipped inputs) is its
scheduler result. Who calls it: :func:`register_tasks` (from ``server.routes.reports.install``,
which the app factory calls) adds the three tasks to the scheduler; the report routes read the
latest analysis or compute one on demand.

Modules: ``settings`` (``tasks.<task>`` config), ``sql`` (SQL builders), ``tables`` (inputs and
output shapes), ``metrics`` / ``performance`` / ``events`` (the tasks), ``report`` (the reports and
their JSON/HTML/Markdown renderings). All computation is DuckDB SQL through ``engine.sql``;
every task blocks and runs on the scheduler's background pool.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from server.analysis.events import run_event_aggregation
from server.analysis.metrics import run_metrics_aggregation
from server.analysis.performance import run_performance_analysis
from server.analysis.settings import EventSettings, MetricsSettings, PerformanceSettings, read_settings
from server.analysis.tables import OUTPUTS, AnalysisEngine
from server.scheduler import Scheduler, interval_for

__all__ = [
    "OUTPUTS",
    "TASKS",
    "EventSettings",
    "MetricsSettings",
    "PerformanceSettings",
    "register_tasks",
    "run_event_aggregation",
    "run_metrics_aggregation",
    "run_performance_analysis",
]

#: The analysis tasks by scheduler name.
TASKS = ("metrics_aggregation", "performance_analysis", "event_aggregation")


def register_tasks(scheduler: Scheduler, engine: AnalysisEngine, tasks_config: Mapping[str, Any]) -> None:
    """Add the three analysis tasks to ``scheduler`` with their configured intervals and settings.

    Raises:
        InvalidInput: a bad ``tasks.*`` setting (checked here, at app creation, not at first run).
    """
    runs: dict[str, Any] = {
        "metrics_aggregation": functools.partial(
            run_metrics_aggregation, engine, read_settings(tasks_config, MetricsSettings)
        ),
        "performance_analysis": functools.partial(
            run_performance_analysis, engine, read_settings(tasks_config, PerformanceSettings)
        ),
        "event_aggregation": functools.partial(
            run_event_aggregation, engine, read_settings(tasks_config, EventSettings)
        ),
    }
    for name in TASKS:
        scheduler.add(name, runs[name], interval_for(tasks_config, name))
