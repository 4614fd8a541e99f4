"""Telemetry: one object holding the config and every component, and the process default.

``Telemetry(config)`` builds a registry, a metrics collector, an event tracker, a performance
monitor, a system sampler and the hook lists, wired to each other; tests build their own.
The package-level ``metrics_collector``, ``event_tracker`` and ``performance_monitor`` are the
components of the default instance (:func:`get_telemetry`), which :func:`configure` updates
*in place*, so names imported before ``configure()`` stay valid.

Lifecycle: construction starts nothing. ``start()`` starts the system sampler (if enabled);
``stop()`` stops it and shuts an installed exporter down. The framework adapters call them
from the app's startup/shutdown.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tsengine.instrument._alerts import AppAlerts
from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._collector import MetricsCollector
from tsengine.instrument._config import ConfigError, TelemetryConfig
from tsengine.instrument._events import EventTracker
from tsengine.instrument._export import Exporter
from tsengine.instrument._hooks import Hooks
from tsengine.instrument._performance import PerformanceMonitor
from tsengine.instrument._registry import REGISTRY, CollectorRegistry
from tsengine.instrument._system import SystemMetrics
from tsengine.instrument._tracing.hooks import apply_tracing, check_tracing_config
from tsengine.instrument._tracing.tracer import Tracer

__all__ = ["Telemetry", "configure", "get_telemetry"]


class Telemetry:
    """The SDK's components for one application.

    Args:
        config: settings (default: ``TelemetryConfig()``).
        registry: metric registry (default: a new one sized by the config).
        clock: time source for every component.
        psutil_module: passed to the system sampler (tests pass a fake).
    """

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        psutil_module: Any = None,
    ) -> None:
        config = config or TelemetryConfig()
        self.config = config
        self.clock = clock
        if registry is None:
            registry = CollectorRegistry(
                max_series_per_metric=config.metrics_max_series_per_metric, clock=clock
            )
        self.registry = registry
        self.metrics = MetricsCollector(registry=self.registry, clock=clock)
        self.events = EventTracker(registry=self.registry, clock=clock)
        self.system = SystemMetrics(registry=self.registry, psutil_module=psutil_module, clock=clock)
        self.performance = PerformanceMonitor(
            registry=self.registry, system_snapshot=self.system.snapshot, tracker=self.events, clock=clock
        )
        self.alerts = AppAlerts(self.events, clock=clock, on_error=lambda: self.record_error("alerts"))
        self.hooks = Hooks()
        self.tracer = Tracer(clock=clock)  # disabled until the config turns tracing on
        self.hooks.on_error = lambda: self.record_error("hook")
        self.exporter: Exporter | None = None
        self._config_exporter: tuple[Any, ...] | None = None  # settings of an exporter built by apply()
        self._lock = threading.Lock()
        self.apply(config)

    def apply(self, config: TelemetryConfig) -> None:
        """Reconfigure every component in place.

        Starts no thread; stops the system sampler if the new config turns it off (joining it,
        which blocks for at most one sample).
        """
        if config.enabled and config.exporter_endpoint:
            _check_exporter_endpoint(config.exporter_endpoint)  # before changing anything
        check_tracing_config(config)
        self.config = config
        # Plain attributes, read on every request and call (cheaper than the config's properties).
        self.enabled = config.enabled
        self.metrics_on = config.metrics_on
        self.events_on = config.events_on
        self.registry.max_series_per_metric = config.metrics_max_series_per_metric
        # Metrics built directly (Counter(...) at import time too) follow METRICS_ENABLED here.
        self.registry.set_enabled(config.metrics_on)
        self.metrics.configure(
            enabled=config.metrics_on,
            max_data_points=config.metrics_max_data_points,
            retention_hours=config.metrics_retention_hours,
        )
        self.events.configure(
            enabled=config.events_on,
            max_events=config.events_max_events,
            retention_hours=config.events_retention_hours,
            audit_spill_path=config.audit_spill_path,
        )
        self.performance.enabled = config.performance_on
        self.performance.metrics_enabled = config.metrics_on
        self.events.count_metrics = config.metrics_on
        self.performance.default_threshold_s = config.slow_request_threshold_s
        alerts_on = config.enabled and config.alerts_enabled
        self.alerts.configure(enabled=alerts_on, max_alerts=config.alerts_max_alerts)
        self.performance.request_observer = self.alerts.observe_request if alerts_on else None
        self.system.interval_s = config.system_metrics_interval_s
        if not config.system_metrics_on:
            self.system.stop()
        self._apply_exporter(config)
        apply_tracing(self, config)  # tracer, request/call hooks, trace-id provider, OTLP span exporter

    def _apply_exporter(self, config: TelemetryConfig) -> None:
        """Build (not start) the exporter named by ``TELEMETRY_EXPORT`` / ``TELEMETRY_EXPORTER_*``.

        ``http`` → :class:`HttpExporter`, ``otlp`` → :class:`OtlpMetricsExporter`, ``embedded``
        → :class:`EmbeddedExporter` on ``TELEMETRY_EXPORT_PATH``, ``none`` → no exporter. Only an
        exporter built here is replaced or removed; one installed by ``set_exporter`` stays when
        the config names none.
        """
        kind = config.export_kind if config.enabled else "none"
        key = None
        if kind != "none":
            key = (
                kind,
                config.exporter_endpoint,
                config.export_path,
                config.exporter_token,
                config.exporter_batch_size,
                config.exporter_queue_size,
                config.exporter_flush_interval_s,
                config.service_name,
            )
        if key == self._config_exporter and not getattr(self.exporter, "is_shut_down", False):
            return  # unchanged, and not shut down by stop(): keep it (as the span exporter does)
        if key is None:
            if self._config_exporter is not None:
                self._config_exporter = None
                self.set_exporter(None)
            return
        settings: dict[str, Any] = {
            "batch_size": config.exporter_batch_size,
            "max_queue": config.exporter_queue_size,
            "interval_s": config.exporter_flush_interval_s,
            "service": config.service_name,
        }
        exporter: Exporter
        if kind == "embedded":
            from tsengine.instrument._embedded import EmbeddedExporter

            exporter = EmbeddedExporter(path=config.export_path, **settings)
        elif kind == "otlp":
            from tsengine.instrument._otlp_metrics_export import OtlpMetricsExporter

            exporter = OtlpMetricsExporter(config.exporter_endpoint or "", config.exporter_token, **settings)
        else:
            from tsengine.instrument._push import HttpExporter

            exporter = HttpExporter(config.exporter_endpoint or "", config.exporter_token, **settings)
        self.set_exporter(exporter)
        self._config_exporter = key

    def set_exporter(self, exporter: Exporter | None) -> None:
        """Install the exporter (see ``_export``); the previous one is shut down.

        An exporter with an ``attach(telemetry)`` method (:class:`HttpExporter`) is attached:
        it takes registry snapshots and subscribes to events. Its worker starts with
        :meth:`start` (or at once if it was started by the caller).
        """
        with self._lock:
            old, self.exporter = self.exporter, exporter
            self._config_exporter = None
        if old is not None and old is not exporter:
            old.shutdown(5.0)
        attach = getattr(exporter, "attach", None)
        if attach is not None:
            attach(self)

    def record_error(self, component: str) -> None:
        """Count a swallowed failure of ``component``; never raises."""
        # The error counter itself failing must not surface either.
        with contextlib.suppress(Exception):
            self.registry.self_metrics.errors.labels(component).inc()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start background work allowed by the config (the system sampler). Idempotent."""
        if self.config.system_metrics_on:
            self.system.start()
        start = getattr(self.exporter, "start", None)
        if start is not None:
            start()
        if self.tracer.enabled:
            self.tracer.start()  # the OTLP span exporter's worker

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop background work and shut the exporter down. Idempotent."""
        self.system.stop(timeout_s)
        self.tracer.shutdown(timeout_s)
        if self.exporter is not None:
            self.exporter.shutdown(timeout_s)

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Per-component state and the SDK's own counters, for ``/health/telemetry``."""
        sm = self.registry.self_metrics
        errors = {s.labels["component"]: s.value for fam in sm.errors.collect() for s in fam.samples}
        return {
            "status": "ok" if self.config.enabled else "disabled",
            "service": self.config.service_name,
            "config": self.config.to_dict(),
            "components": {
                "metrics": {
                    "enabled": self.config.metrics_on,
                    "collectors": len(self.registry.collectors()),
                    "series": sum(getattr(c, "series_count", 0) for c in self.registry.collectors()),
                    "data_points": len(self.metrics.get_data_points()),
                    "series_dropped": sum(s.value for f in sm.series_dropped.collect() for s in f.samples),
                },
                "events": {
                    "enabled": self.config.events_on,
                    "in_memory": len(self.events),
                    "audit_spilled": sm.audit_spilled.get(),
                    "audit_lost": sm.audit_lost.get(),
                },
                "system_metrics": {
                    "enabled": self.config.system_metrics_on,
                    "running": self.system.running,
                    "samples": self.system.samples,
                    "last_error": self.system.last_error,
                    "last_sample_duration_s": self.system.last_duration_s,
                    "snapshot": self.system.snapshot(),
                },
                "performance": {
                    "enabled": self.config.performance_on,
                    "slow_endpoints": self.performance.slow_endpoints(5),
                },
                "exporter": self._exporter_health(),
                "alerts": self.alerts.health(),
                "tracing": self.tracer.health(),
            },
            "errors": errors,
        }

    def _exporter_health(self) -> dict[str, Any]:
        exporter = self.exporter
        out: dict[str, Any] = {"installed": exporter is not None}
        stats = getattr(exporter, "stats", None)
        if stats is not None:
            out.update(
                endpoint=getattr(exporter, "endpoint", None),
                running=getattr(exporter, "running", None),
                queued_rows=getattr(exporter, "queued_rows", None),
                **stats.values,
            )
        return out


def _check_exporter_endpoint(endpoint: str) -> None:
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"cannot use TELEMETRY_EXPORTER_ENDPOINT={endpoint!r}: expected http(s)://host[:port]",
            key="TELEMETRY_EXPORTER_ENDPOINT",
        )


_default: Telemetry | None = None
_default_lock = threading.Lock()


def get_telemetry() -> Telemetry:
    """The process-wide default instance (built on first use over the default registry)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Telemetry(registry=REGISTRY)
    return _default


def configure(
    config: TelemetryConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> TelemetryConfig:
    """Configure the default instance in place and return the config in force.

    With ``config``, use it (plus ``overrides``). Otherwise read ``environ`` — ``os.environ``
    when not given; this is the one place the SDK reads the environment — then apply
    ``overrides`` (field names of :class:`TelemetryConfig`). Raises ConfigError naming the
    variable. Call it at startup, before ``setup_telemetry_for_app``.
    """
    if config is None:
        config = TelemetryConfig.from_env(os.environ if environ is None else environ, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    telemetry = get_telemetry()
    telemetry.apply(config)
    return config
