"""Metric and label name validation follows Prometheus's rules (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsengine.instrument import CollectorRegistry, Counter, Gauge, MetricDefinitionError
from tsengine.instrument._names import validate_label_names, validate_metric_name

from .strategies import invalid_metric_names, label_names, metric_names


@given(metric_names)
def test_valid_metric_names_accepted(name: str) -> None:
    assert validate_metric_name(name) == name


@given(invalid_metric_names)
def test_invalid_metric_names_refused_with_the_rule(name: str) -> None:
    with pytest.raises(MetricDefinitionError, match=r"must match \[a-zA-Z_:\]"):
        validate_metric_name(name)


@given(st.lists(label_names, max_size=5, unique=True))
def test_valid_label_names_accepted(names: list[str]) -> None:
    assert validate_label_names("m", names) == tuple(names)


@given(st.from_regex(r"__[a-zA-Z0-9_]{0,10}", fullmatch=True))
def test_reserved_label_prefix_refused(name: str) -> None:
    with pytest.raises(MetricDefinitionError, match="reserved"):
        validate_label_names("m", [name])


@pytest.mark.parametrize("bad", ["1abc", "a-b", "a b", "", "é", "le", "quantile"])
def test_bad_label_names_refused(bad: str) -> None:
    with pytest.raises(MetricDefinitionError):
        Counter("m_total", "M.", [bad], registry=CollectorRegistry())


def test_duplicate_label_names_refused() -> None:
    with pytest.raises(MetricDefinitionError, match="duplicate"):
        Gauge("m", "M.", ["a", "a"], registry=CollectorRegistry())


def test_definition_error_is_a_value_error_like_prometheus_client() -> None:
    with pytest.raises(ValueError):
        Gauge("bad name", "M.", registry=CollectorRegistry())
