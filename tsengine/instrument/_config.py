"""SDK settings: one frozen dataclass, built once at the edge from a mapping.

``TelemetryConfig.from_env(environ)`` reads the variables named in each field's metadata from
the mapping it is given (``os.environ`` is passed by :func:`tsengine.instrument.configure`, the
only place that reads it). A bad value raises :class:`ConfigError` naming the variable; unknown
variables are ignored. Every field has a documented default, so ``TelemetryConfig()`` is a
working configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsengine.errors import InvalidInput

__all__ = ["ConfigError", "TelemetryConfig"]

#: Values of ``TELEMETRY_EXPORT``.
EXPORT_KINDS = ("http", "otlp", "embedded", "none")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(InvalidInput, ValueError):
    """A configuration value that cannot be used.

    Attributes:
        key: the environment variable (or field) at fault.
    """

    def __init__(self, reason: str, *, key: str) -> None:
        super().__init__(reason)
        self.key = key


def _env(key: str, doc: str) -> dict[str, str]:
    return {"env": key, "doc": doc}


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """Settings of the instrumentation SDK. Defaults are production-safe."""

    enabled: bool = field(default=True, metadata=_env("TELEMETRY_ENABLED", "master switch; off = no-ops"))
    metrics_enabled: bool = field(default=True, metadata=_env("METRICS_ENABLED", "metrics and /metrics"))
    events_enabled: bool = field(default=True, metadata=_env("EVENTS_ENABLED", "the event tracker"))
    performance_monitoring_enabled: bool = field(
        default=True, metadata=_env("PERFORMANCE_MONITORING_ENABLED", "request/db/external-call timings")
    )
    distributed_tracing_enabled: bool = field(
        default=False, metadata=_env("DISTRIBUTED_TRACING_ENABLED", "tracing (the tracing issue plugs in)")
    )
    alerts_enabled: bool = field(default=False, metadata=_env("ALERTS_ENABLED", "app-side alerts"))
    system_metrics_enabled: bool = field(
        default=True, metadata=_env("SYSTEM_METRICS_ENABLED", "psutil sampling in a background thread")
    )
    system_metrics_interval_s: float = field(
        default=15.0, metadata=_env("SYSTEM_METRICS_INTERVAL_S", "seconds between psutil samples")
    )
    metrics_max_data_points: int = field(
        default=10_000, metadata=_env("METRICS_MAX_DATA_POINTS", "recent data points kept in memory")
    )
    metrics_max_series_per_metric: int = field(
        default=1000, metadata=_env("METRICS_MAX_SERIES_PER_METRIC", "label sets per metric")
    )
    metrics_retention_hours: float = field(
        default=24.0, metadata=_env("METRICS_RETENTION_HOURS", "age limit of recent data points")
    )
    events_max_events: int = field(
        default=10_000, metadata=_env("EVENTS_MAX_EVENTS", "events kept in memory (audit: as many again)")
    )
    events_retention_hours: float = field(
        default=24.0, metadata=_env("EVENTS_RETENTION_HOURS", "age limit of events in memory")
    )
    audit_spill_path: str | None = field(
        default=None, metadata=_env("EVENTS_AUDIT_SPILL_PATH", "JSON-lines file for overflowing audit events")
    )
    tracing_max_traces: int = field(default=1000, metadata=_env("TRACING_MAX_TRACES", "traces in memory"))
    tracing_sampling_rate: float = field(
        default=1.0, metadata=_env("TRACING_SAMPLING_RATE", "fraction of traces kept, 0..1")
    )
    alerts_max_alerts: int = field(default=1000, metadata=_env("ALERTS_MAX_ALERTS", "alerts in memory"))
    slow_request_threshold_s: float = field(
        default=1.0, metadata=_env("PERFORMANCE_SLOW_REQUEST_S", "default slow-request threshold")
    )
    service_name: str = field(
        default="unknown_service", metadata=_env("TELEMETRY_SERVICE_NAME", "service stamped on exports")
    )
    exporter_endpoint: str | None = field(
        default=None, metadata=_env("TELEMETRY_EXPORTER_ENDPOINT", "tsengine server URL; None = no export")
    )
    exporter_token: str | None = field(
        default=None, metadata=_env("TELEMETRY_EXPORTER_TOKEN", "bearer token for the server")
    )
    exporter_batch_size: int = field(
        default=1000, metadata=_env("TELEMETRY_EXPORTER_BATCH_SIZE", "items per pushed batch")
    )
    exporter_queue_size: int = field(
        default=10_000, metadata=_env("TELEMETRY_EXPORTER_QUEUE_SIZE", "queued items before drop-oldest")
    )
    exporter_flush_interval_s: float = field(
        default=5.0, metadata=_env("TELEMETRY_EXPORTER_FLUSH_INTERVAL_S", "seconds between pushes")
    )
    export: str | None = field(
        default=None,
        metadata=_env("TELEMETRY_EXPORT", "http|otlp|embedded|none; unset = http when an endpoint is set"),
    )
    export_path: str | None = field(
        default=None, metadata=_env("TELEMETRY_EXPORT_PATH", "data directory of the embedded engine")
    )
    tracing_exporter_endpoint: str | None = field(
        default=None,
        metadata=_env("TRACING_EXPORTER_ENDPOINT", "OTLP/HTTP URL for spans; unset = TELEMETRY_EXPORT's"),
    )
    tracing_exporter_token: str | None = field(
        default=None, metadata=_env("TRACING_EXPORTER_TOKEN", "bearer token for spans; unset = exporter's")
    )
    tracing_exporter_batch_size: int = field(
        default=512, metadata=_env("TRACING_EXPORTER_BATCH_SIZE", "spans per OTLP request")
    )
    tracing_exporter_queue_size: int = field(
        default=2048, metadata=_env("TRACING_EXPORTER_QUEUE_SIZE", "queued spans before drop-oldest")
    )
    tracing_exporter_flush_interval_s: float = field(
        default=5.0, metadata=_env("TRACING_EXPORTER_FLUSH_INTERVAL_S", "seconds between span pushes")
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = f.metadata["env"]
            if f.type == "int" and value < 1:
                raise ConfigError(f"cannot use {key}={value!r}: must be a positive integer", key=key)
            if f.type == "float" and f.name != "tracing_sampling_rate" and not value > 0:
                raise ConfigError(f"cannot use {key}={value!r}: must be a positive number", key=key)
        if not 0.0 <= self.tracing_sampling_rate <= 1.0:  # also refuses NaN
            raise ConfigError(
                f"cannot use TRACING_SAMPLING_RATE={self.tracing_sampling_rate!r}: must be within 0..1",
                key="TRACING_SAMPLING_RATE",
            )
        self._check_export()

    def _check_export(self) -> None:
        if self.export is not None and self.export not in EXPORT_KINDS:
            raise ConfigError(
                f"cannot use TELEMETRY_EXPORT={self.export!r}: expected one of {', '.join(EXPORT_KINDS)}",
                key="TELEMETRY_EXPORT",
            )
        kind = self.export_kind
        if kind in ("http", "otlp") and not self.exporter_endpoint:
            raise ConfigError(
                f"cannot use TELEMETRY_EXPORT={kind}: TELEMETRY_EXPORTER_ENDPOINT is not set",
                key="TELEMETRY_EXPORTER_ENDPOINT",
            )
        if kind == "embedded" and not self.export_path:
            raise ConfigError(
                "cannot use TELEMETRY_EXPORT=embedded: TELEMETRY_EXPORT_PATH is not set",
                key="TELEMETRY_EXPORT_PATH",
            )

    @property
    def export_kind(self) -> str:
        """The exporter in force: ``TELEMETRY_EXPORT``, else ``http`` with an endpoint, else ``none``."""
        if self.export is not None:
            return self.export
        return "http" if self.exporter_endpoint else "none"

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> TelemetryConfig:
        """Build from ``environ`` (variables named in each field's metadata), then ``overrides``."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f.metadata["env"]
            raw = environ.get(key)
            if raw is None:
                continue
            values[f.name] = _parse(key, str(f.type), raw)
        values.update(overrides)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"cannot configure telemetry: {exc}", key="overrides") from exc

    def replace(self, **changes: Any) -> TelemetryConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- derived switches -----------------------------------------------------------------------

    @property
    def metrics_on(self) -> bool:
        return self.enabled and self.metrics_enabled

    @property
    def events_on(self) -> bool:
        return self.enabled and self.events_enabled

    @property
    def performance_on(self) -> bool:
        return self.enabled and self.performance_monitoring_enabled

    @property
    def system_metrics_on(self) -> bool:
        return self.metrics_on and self.system_metrics_enabled

    @property
    def tracing_on(self) -> bool:
        return self.enabled and self.distributed_tracing_enabled

    def to_dict(self) -> dict[str, object]:
        """The settings, with the exporter token masked (for /health/telemetry)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["exporter_token"]:
            out["exporter_token"] = "***"
        if out["tracing_exporter_token"]:
            out["tracing_exporter_token"] = "***"
        return out


def _parse(key: str, type_name: str, raw: str) -> Any:
    text = raw.strip()
    if type_name == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"cannot read {key}={raw!r}: expected true/false, 1/0, yes/no or on/off", key=key)
    if type_name == "int":
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"cannot read {key}={raw!r}: expected an integer", key=key) from None
    if type_name == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"cannot read {key}={raw!r}: expected a number", key=key) from None
    # str and str | None: an empty string means "unset".
    return text or None if "None" in type_name else text
