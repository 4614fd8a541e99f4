"""Metric and label name rules, and escaping for the text exposition formats.

The rules are Prometheus's, so that whatever the SDK accepts every Prometheus-compatible
scraper (and the tsengine server) accepts too:

* metric names match ``[a-zA-Z_:][a-zA-Z0-9_:]*``;
* label names match ``[a-zA-Z_][a-zA-Z0-9_]*`` and must not start with ``__`` (reserved);
* label values are any Unicode string, at most :data:`MAX_LABEL_VALUE_CHARS` characters — a
  longer value is truncated rather than refused, because label values arrive at run time from
  the application (a route, an error type) and refusing them would break the caller.

Metric and label *names* are fixed when a metric is defined, so a bad one is a programming
error and raises :class:`MetricDefinitionError` (a ``ValueError``, like prometheus_client).
"""

from __future__ import annotations

import re

from tsengine.errors import InvalidInput

__all__ = [
    "MAX_LABEL_VALUE_CHARS",
    "MetricDefinitionError",
    "escape_help",
    "escape_label_value",
    "is_label_name",
    "validate_label_names",
    "validate_metric_name",
]

#: Longer label values are cut here; a value this long is almost always an id leaking into a label.
MAX_LABEL_VALUE_CHARS = 256

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Labels the exposition itself uses for histograms; user labels may not take them.
_RESERVED_LABELS = frozenset({"le", "quantile"})


class MetricDefinitionError(InvalidInput, ValueError):
    """A metric was defined with a bad name, label names, buckets or a conflicting type.

    Subclasses ``ValueError`` so code written against prometheus_client keeps catching it.
    """


def validate_metric_name(name: str) -> str:
    """Return ``name`` if it is a valid Prometheus metric name, else raise MetricDefinitionError."""
    if not isinstance(name, str) or not _METRIC_NAME_RE.match(name):
        raise MetricDefinitionError(
            f"cannot define metric {name!r}: the name must match [a-zA-Z_:][a-zA-Z0-9_:]*"
        )
    return name


def is_label_name(name: object) -> bool:
    """Whether ``name`` is a usable label name: the label-name syntax, not ``__``-prefixed."""
    return isinstance(name, str) and bool(_LABEL_NAME_RE.match(name)) and not name.startswith("__")


def validate_label_names(metric: str, labelnames: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return ``labelnames`` as a tuple if every name is valid and unique, else raise."""
    names = tuple(labelnames)
    for label in names:
        if not isinstance(label, str) or not _LABEL_NAME_RE.match(label):
            raise MetricDefinitionError(
                f"cannot define metric {metric!r}: label name {label!r} must match [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if label.startswith("__"):
            raise MetricDefinitionError(
                f"cannot define metric {metric!r}: label name {label!r} starts with the reserved '__'"
            )
        if label in _RESERVED_LABELS:
            raise MetricDefinitionError(
                f"cannot define metric {metric!r}: label name {label!r} is reserved by the exposition format"
            )
    if len(set(names)) != len(names):
        raise MetricDefinitionError(f"cannot define metric {metric!r}: duplicate label names {names!r}")
    return names


def escape_label_value(value: str) -> str:
    r"""Escape a label value for both text formats: ``\`` → ``\\``, ``"`` → ``\"``, newline → ``\n``."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def escape_help(text: str, *, openmetrics: bool = False) -> str:
    r"""Escape HELP text: ``\`` and newline always; ``"`` too in OpenMetrics."""
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        text = text.replace('"', r"\"")
    return text
