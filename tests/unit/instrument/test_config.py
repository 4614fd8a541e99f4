"""TelemetryConfig.from_env: every variable honoured, errors naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

import tsengine.instrument as ti
from tsengine.instrument import ConfigError, TelemetryConfig, configure

ENV = {
    "TELEMETRY_ENABLED": "true",
    "METRICS_ENABLED": "no",
    "EVENTS_ENABLED": "0",
    "PERFORMANCE_MONITORING_ENABLED": "off",
    "DISTRIBUTED_TRACING_ENABLED": "yes",
    "ALERTS_ENABLED": "1",
    "METRICS_MAX_DATA_POINTS": "500",
    "EVENTS_MAX_EVENTS": "1_000",
    "TRACING_MAX_TRACES": "77",
    "TRACING_SAMPLING_RATE": "0.25",
    "METRICS_RETENTION_HOURS": "2.5",
    "EVENTS_RETENTION_HOURS": "48",
    "ALERTS_MAX_ALERTS": "9",
    "TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:8428",
    "TELEMETRY_EXPORTER_TOKEN": "secret",
    "TELEMETRY_EXPORTER_BATCH_SIZE": "250",
}


def test_defaults_are_valid_and_documented() -> None:
    cfg = TelemetryConfig()
    assert cfg.enabled and cfg.metrics_on and cfg.events_on and cfg.performance_on
    assert not cfg.tracing_on
    for f in dataclasses.fields(cfg):
        assert f.metadata["env"] and f.metadata["doc"], f.name


def test_every_variable_is_read() -> None:
    cfg = TelemetryConfig.from_env(ENV)
    assert cfg.enabled is True
    assert cfg.metrics_enabled is False and not cfg.metrics_on
    assert cfg.events_enabled is False
    assert cfg.performance_monitoring_enabled is False
    assert cfg.distributed_tracing_enabled is True
    assert cfg.alerts_enabled is True
    assert cfg.metrics_max_data_points == 500
    assert cfg.events_max_events == 1000
    assert cfg.tracing_max_traces == 77
    assert cfg.tracing_sampling_rate == 0.25
    assert cfg.metrics_retention_hours == 2.5
    assert cfg.events_retention_hours == 48.0
    assert cfg.alerts_max_alerts == 9
    assert cfg.exporter_endpoint == "http://127.0.0.1:8428"
    assert cfg.exporter_batch_size == 250
    assert cfg.to_dict()["exporter_token"] == "***"


def test_master_switch_turns_everything_off() -> None:
    cfg = TelemetryConfig.from_env({"TELEMETRY_ENABLED": "false"})
    assert not (cfg.metrics_on or cfg.events_on or cfg.performance_on or cfg.system_metrics_on)


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        ("METRICS_ENABLED", "maybe", "true/false"),
        ("METRICS_MAX_DATA_POINTS", "lots", "integer"),
        ("EVENTS_MAX_EVENTS", "0", "positive"),
        ("TRACING_SAMPLING_RATE", "1.5", "0..1"),
        ("TRACING_SAMPLING_RATE", "nan", "0..1"),
        ("METRICS_RETENTION_HOURS", "-1", "positive"),
        ("EVENTS_RETENTION_HOURS", "soon", "number"),
    ],
)
def test_errors_name_the_variable(key: str, raw: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        TelemetryConfig.from_env({key: raw})
    assert info.value.key == key
    assert key in str(info.value)
    assert str(info.value).startswith("cannot ")


def test_sampling_rate_zero_is_allowed() -> None:
    assert TelemetryConfig.from_env({"TRACING_SAMPLING_RATE": "0"}).tracing_sampling_rate == 0.0


def test_empty_optional_string_means_unset() -> None:
    assert TelemetryConfig.from_env({"TELEMETRY_EXPORTER_ENDPOINT": ""}).exporter_endpoint is None


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TelemetryConfig.from_env({}, no_such_field=1)


def test_configure_updates_the_default_instance_in_place() -> None:
    cfg = configure(environ={"EVENTS_MAX_EVENTS": "3", "METRICS_ENABLED": "false"})
    assert cfg.events_max_events == 3
    assert ti.event_tracker.max_events == 3
    assert ti.metrics_collector.enabled is False
    assert ti.REGISTRY.enabled is False  # metrics built directly are switched off too
    assert ti.get_telemetry().config is cfg
    configure(cfg, metrics_enabled=True)
    assert ti.metrics_collector.enabled is True
    assert ti.REGISTRY.enabled is True


def test_configure_with_bad_environment_raises() -> None:
    with pytest.raises(ConfigError) as info:
        configure(environ={"ALERTS_MAX_ALERTS": "x"})
    assert info.value.key == "ALERTS_MAX_ALERTS"


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, "none"),
        ({"TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:1"}, "http"),
        ({"TELEMETRY_EXPORT": "otlp", "TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:1"}, "otlp"),
        ({"TELEMETRY_EXPORT": "embedded", "TELEMETRY_EXPORT_PATH": "/tmp/x"}, "embedded"),
        ({"TELEMETRY_EXPORT": "none", "TELEMETRY_EXPORTER_ENDPOINT": "http://127.0.0.1:1"}, "none"),
    ],
)
def test_export_kind(env: dict[str, str], kind: str) -> None:
    assert TelemetryConfig.from_env(env).export_kind == kind


@pytest.mark.parametrize(
    ("env", "key", "reason"),
    [
        ({"TELEMETRY_EXPORT": "kafka"}, "TELEMETRY_EXPORT", "http, otlp, embedded, none"),
        ({"TELEMETRY_EXPORT": "otlp"}, "TELEMETRY_EXPORTER_ENDPOINT", "not set"),
        ({"TELEMETRY_EXPORT": "http"}, "TELEMETRY_EXPORTER_ENDPOINT", "not set"),
        ({"TELEMETRY_EXPORT": "embedded"}, "TELEMETRY_EXPORT_PATH", "not set"),
    ],
)
def test_export_errors_name_the_variable(env: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        TelemetryConfig.from_env(env)
    assert info.value.key == key
    assert key in str(info.value)
