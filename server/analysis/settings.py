"""Settings of the three analysis tasks, read from the server config's ``tasks:`` section.

Who calls it: :func:`server.analysis.register_tasks` (once, at app creation) and the report
routes. In: ``ServerConfig.tasks``, a mapping such as::

    tasks:
      intervals: {metrics_aggregation: 5m}          # read by server.scheduler.interval_for
      metrics_aggregation: {window: 5m, baseline: 1h, trend_windows: [15m, 1h], anomaly_z: 3}
      performance_analysis: {window: 10m, baseline: 1h, degradation_factor: 1.5}
      event_aggregation: {window: 15m, auth_failure_threshold: 5, auth_window: 5m}

Out: frozen dataclasses with a documented default per field. Keys are the field names, with
durations (fields ending in ``_s``) written without the suffix and given as seconds or ``"5m"``.
Every error is an :class:`~tsengine.errors.InvalidInput` naming the key, e.g.
``cannot read config tasks.performance_analysis.degradation_factor=0: must be a number > 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from server.scheduler import parse_duration_s
from tsengine.errors import InvalidInput, TsengineError
from tsengine.model.names import validate_db, validate_table

__all__ = ["EventSettings", "MetricsSettings", "PerformanceSettings", "read_settings"]


@dataclass(frozen=True)
class MetricsSettings:
    """``tasks.metrics_aggregation``."""

    #: Database read and written (the SDK's default).
    db: str = "default"
    #: The "now" window: rates over it, and the window an anomaly score looks at.
    window_s: float = 300.0
    #: Trailing baseline before the window that anomaly scores compare against.
    baseline_s: float = 3600.0
    #: Windows (ending now) of the least-squares trend slopes.
    trend_windows_s: tuple[float, ...] = (900.0, 3600.0)
    #: |z| at or above which a series is flagged anomalous.
    anomaly_z: float = 3.0
    #: Baseline samples a series needs before it is scored at all.
    min_baseline_samples: int = 5
    #: Counter of HTTP requests (labels method, route/handler, status/code).
    requests_metric: str = "http_requests_total"
    #: Counter of payments (labels method, status success/failure).
    payments_metric: str = "payments_total"
    #: Tables scored for trends and anomalies; empty means every metric table.
    metrics: tuple[str, ...] = ()
    #: Rows written per output table per run, at most (memory and output bound).
    max_series: int = 10_000


@dataclass(frozen=True)
class PerformanceSettings:
    """``tasks.performance_analysis``."""

    db: str = "default"
    #: The "now" window percentiles are computed over.
    window_s: float = 600.0
    #: Trailing window before "now" that percentiles are compared against.
    baseline_s: float = 3600.0
    #: p95 (or p99) now above this multiple of the baseline's flags the endpoint degraded.
    degradation_factor: float = 1.5
    #: Requests an endpoint needs in a window before its percentiles count.
    min_requests: int = 10
    #: Histograms analysed (base names; the ``_bucket`` table is read).
    histograms: tuple[str, ...] = ("http_request_duration_seconds",)
    #: Labels summed over (not part of an endpoint's identity).
    ignore_labels: tuple[str, ...] = ("instance",)
    #: Endpoints listed in the report's "slowest" section.
    top: int = 10
    max_series: int = 10_000


@dataclass(frozen=True)
class EventSettings:
    """``tasks.event_aggregation``."""

    db: str = "default"
    #: The SDK's events table.
    events_table: str = "events"
    #: Counting window ("now").
    window_s: float = 900.0
    #: Trailing baseline, cut into windows of ``window_s`` for the spike comparison.
    baseline_s: float = 6 * 3600.0
    #: A count this many times the baseline's mean per window (floor 1) is a spike …
    spike_factor: float = 3.0
    #: … if it is also at least this large.
    spike_min_count: int = 10
    #: Window of the authentication-failure burst check.
    auth_window_s: float = 300.0
    #: Failures per user or per source address within ``auth_window`` that make a burst.
    auth_failure_threshold: int = 5
    #: Event names that are authentication failures.
    auth_failure_names: tuple[str, ...] = (
        "auth_failure",
        "auth_failed",
        "authentication_failed",
        "login_failed",
        "login_failure",
    )
    #: Keys of the event's ``attributes`` JSON holding the source address, first found wins.
    address_attributes: tuple[str, ...] = ("client_ip", "source_ip", "ip", "remote_addr", "client")
    #: Counter of feature usage (label ``feature``).
    feature_metric: str = "feature_usage_total"
    #: Users listed in the user-activity output and report.
    top_users: int = 20
    max_series: int = 10_000


S = TypeVar("S", MetricsSettings, PerformanceSettings, EventSettings)

_SECTIONS: dict[str, type[Any]] = {
    "metrics_aggregation": MetricsSettings,
    "performance_analysis": PerformanceSettings,
    "event_aggregation": EventSettings,
}


def read_settings(tasks_config: Mapping[str, Any], cls: type[S]) -> S:
    """The settings of one task from ``tasks_config`` (``ServerConfig.tasks``).

    Raises:
        InvalidInput: an unknown key or a bad value; the message names ``tasks.<task>.<key>``.
    """
    section = next(name for name, c in _SECTIONS.items() if c is cls)
    raw = tasks_config.get(section) or {}
    where = f"config tasks.{section}"
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"cannot read {where}: must be a mapping of settings")
    fields = {_key(f.name): f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None:
            raise InvalidInput(f"cannot read {where}.{key}: unknown setting (known: {sorted(fields)})")
        values[f.name] = _value(f.name, getattr(cls(), f.name), value, f"{where}.{key}")
    return cls(**values)


def _key(field_name: str) -> str:
    return field_name.removesuffix("_s")


def _value(name: str, default: Any, raw: Any, where: str) -> Any:
    if name.endswith("_s"):
        if isinstance(default, tuple):
            if not isinstance(raw, list | tuple) or not raw:
                raise InvalidInput(f"cannot read {where}={raw!r}: must be a non-empty list of durations")
            return tuple(_positive_duration(item, f"{where}[{i}]") for i, item in enumerate(raw))
        return _positive_duration(raw, where)
    if isinstance(default, tuple):
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) and v for v in raw):
            raise InvalidInput(f"cannot read {where}={raw!r}: must be a list of names")
        if name in ("metrics", "histograms"):
            for v in raw:
                _check_name(v, validate_table, where)
        return tuple(raw)
    if isinstance(default, bool):
        raise InvalidInput(f"BUG: no boolean settings expected ({where})")
    if isinstance(default, int):
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise InvalidInput(f"cannot read {where}={raw!r}: must be an integer >= 1")
        return raw
    if isinstance(default, float):
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0:
            raise InvalidInput(f"cannot read {where}={raw!r}: must be a number > 0")
        if name == "degradation_factor" and not raw > 1:
            raise InvalidInput(f"cannot read {where}={raw!r}: must be a number > 1")
        return float(raw)
    if not isinstance(raw, str) or not raw:
        raise InvalidInput(f"cannot read {where}={raw!r}: must be a non-empty string")
    _check_name(raw, validate_db if name == "db" else validate_table, where)
    return raw


def _positive_duration(raw: Any, where: str) -> float:
    seconds = parse_duration_s(raw)
    if seconds is None or seconds <= 0:
        raise InvalidInput(f"cannot read {where}={raw!r}: must be a positive duration (seconds or '5m')")
    return seconds


def _check_name(value: str, check: Any, where: str) -> None:
    try:
        check(value)
    except TsengineError as exc:
        raise InvalidInput(f"cannot read {where}={value!r}: {exc}") from exc
