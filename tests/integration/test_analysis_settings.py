"""``tasks.<task>`` settings: defaults, durations, and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.analysis.settings import EventSettings, MetricsSettings, PerformanceSettings, read_settings
from tsengine.errors import InvalidInput


def test_defaults_without_a_section() -> None:
    assert read_settings({}, MetricsSettings) == MetricsSettings()
    assert read_settings({"performance_analysis": None}, PerformanceSettings) == PerformanceSettings()
    assert EventSettings().window_s == 900.0 and PerformanceSettings().degradation_factor == 1.5


def test_values_and_durations_are_read() -> None:
    config = {
        "metrics_aggregation": {
            "window": "2m",
            "trend_windows": ["30m", 7200],
            "anomaly_z": 4,
            "metrics": ["cpu"],
        },
        "performance_analysis": {"baseline": "2h", "degradation_factor": 2, "histograms": ["rpc_seconds"]},
        "event_aggregation": {"auth_window": "90s", "auth_failure_threshold": 3, "db": "apps"},
    }
    m = read_settings(config, MetricsSettings)
    assert (m.window_s, m.trend_windows_s, m.anomaly_z, m.metrics) == (120.0, (1800.0, 7200.0), 4.0, ("cpu",))
    p = read_settings(config, PerformanceSettings)
    assert (p.baseline_s, p.degradation_factor, p.histograms) == (7200.0, 2.0, ("rpc_seconds",))
    e = read_settings(config, EventSettings)
    assert (e.auth_window_s, e.auth_failure_threshold, e.db) == (90.0, 3, "apps")


@pytest.mark.parametrize(
    ("section", "cls", "key", "value", "reason"),
    [
        ("metrics_aggregation", MetricsSettings, "window", "soon", "positive duration"),
        ("metrics_aggregation", MetricsSettings, "window", 0, "positive duration"),
        ("metrics_aggregation", MetricsSettings, "trend_windows", [], "non-empty list"),
        ("metrics_aggregation", MetricsSettings, "anomaly_z", -1, "number > 0"),
        ("metrics_aggregation", MetricsSettings, "max_series", 0, "integer >= 1"),
        ("metrics_aggregation", MetricsSettings, "max_series", True, "integer >= 1"),
        ("metrics_aggregation", MetricsSettings, "metrics", "cpu", "list of names"),
        ("performance_analysis", PerformanceSettings, "degradation_factor", 1.0, "number > 1"),
        ("performance_analysis", PerformanceSettings, "histograms", ["__tsbad"], "__ts"),
        ("event_aggregation", EventSettings, "db", "no spaces", "database"),
        ("event_aggregation", EventSettings, "window_s", "5m", "unknown setting"),
        ("event_aggregation", EventSettings, "colour", "red", "unknown setting"),
    ],
)
def test_bad_values_name_the_key(section: str, cls: type[Any], key: str, value: Any, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        read_settings({section: {key: value}}, cls)
    message = str(info.value)
    assert f"config tasks.{section}.{key}" in message and reason in message, message


def test_a_section_that_is_not_a_mapping() -> None:
    with pytest.raises(InvalidInput, match=r"tasks\.event_aggregation: must be a mapping"):
        read_settings({"event_aggregation": [1]}, EventSettings)


@given(
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=6), st.none()), max_size=4)
)
def test_any_section_is_read_or_refused_with_invalid_input(section: dict[str, Any]) -> None:
    try:
        read_settings({"performance_analysis": section}, PerformanceSettings)
    except InvalidInput as exc:
        assert "tasks.performance_analysis" in str(exc)
