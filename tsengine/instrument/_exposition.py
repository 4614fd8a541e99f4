"""Render collected families: Prometheus text 0.0.4, OpenMetrics 1.0 and JSON.

Input: a registry (collected on the spot, as prometheus_client's ``generate_latest(registry)``
does) or the :class:`MetricFamily` list of ``registry.collect()``. Output: bytes for ``/metrics``
(content type chosen by :func:`choose_format` from the ``Accept`` header, as Prometheus
negotiates it) or a JSON-ready dict. Pure functions; nothing here blocks or keeps state.

The text produced is checked in the tests by prometheus_client's parsers and by
``promtool check metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tsengine.instrument._family import MetricFamily, MetricType, Sample
from tsengine.instrument._names import escape_help, escape_label_value
from tsengine.instrument._registry import REGISTRY, CollectorRegistry

#: What the renderers take: a registry (collected now), as prometheus_client's do, or families.
Source = CollectorRegistry | Iterable[MetricFamily]

__all__ = [
    "CONTENT_TYPE_LATEST",
    "CONTENT_TYPE_OPENMETRICS",
    "choose_format",
    "format_float",
    "generate_latest",
    "generate_openmetrics",
    "to_json",
]

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_TEXT_SUFFIX = {MetricType.COUNTER: "_total", MetricType.INFO: "_info"}


def format_float(value: float) -> str:
    """Format like Go's ``strconv`` (what Prometheus prints): ``+Inf``, ``-Inf``, ``NaN``, repr."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    # Go switches to exponent notation sooner than Python does (1234567.0 -> 1.234567e+06).
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _sample_lines(samples: Iterable[Sample], out: list[str]) -> None:
    for s in samples:
        out.append(f"{s.name}{_labels(s.labels)} {format_float(s.value)}\n")


def _families(source: Source) -> Iterable[MetricFamily]:
    return source.collect() if isinstance(source, CollectorRegistry) else source


def generate_latest(source: Source = REGISTRY) -> bytes:
    """Prometheus text format 0.0.4 (``CONTENT_TYPE_LATEST``) of a registry or of families."""
    out: list[str] = []
    for fam in _families(source):
        # In 0.0.4 a counter's (an info's) HELP/TYPE name carries the _total (_info) its samples
        # carry; info and stateset are exposed as gauges (0.0.4 has neither type).
        name = fam.name + _TEXT_SUFFIX.get(fam.type, "")
        out.append(f"# HELP {name} {escape_help(fam.documentation)}\n")
        out.append(f"# TYPE {name} {fam.type.exposed_as_prometheus}\n")
        _sample_lines(fam.samples, out)
    return "".join(out).encode("utf-8")


def generate_openmetrics(source: Source = REGISTRY) -> bytes:
    """OpenMetrics 1.0 text (``CONTENT_TYPE_OPENMETRICS``), ending with ``# EOF``."""
    out: list[str] = []
    for fam in _families(source):
        out.append(f"# HELP {fam.name} {escape_help(fam.documentation, openmetrics=True)}\n")
        out.append(f"# TYPE {fam.name} {fam.type.exposed_as}\n")
        if fam.unit:
            out.append(f"# UNIT {fam.name} {fam.unit}\n")
        _sample_lines(fam.samples, out)
    out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def choose_format(accept: str | None) -> tuple[str, bool]:
    """Pick the content type for an ``Accept`` header: ``(content_type, openmetrics?)``."""
    if accept and "application/openmetrics-text" in accept:
        return CONTENT_TYPE_OPENMETRICS, True
    return CONTENT_TYPE_LATEST, False


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else format_float(value)


def to_json(source: Source = REGISTRY, *, time_ns: int | None = None) -> dict[str, object]:
    """JSON-ready export: ``{"time_ns": …, "metrics": [{name, type, help, unit, samples}]}``.

    Non-finite values become the strings ``"+Inf"``, ``"-Inf"``, ``"NaN"`` (JSON has no such
    numbers).
    """
    metrics = []
    for fam in _families(source):
        d = fam.to_dict()
        d["samples"] = [
            {"name": s.name, "labels": s.labels, "value": _json_number(s.value)} for s in fam.samples
        ]
        metrics.append(d)
    return {"time_ns": time_ns, "metrics": metrics}
