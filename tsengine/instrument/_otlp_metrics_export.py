"""OtlpMetricsExporter: the registry's metrics as OTLP/HTTP protobuf, to ``{endpoint}/v1/metrics``.

Who calls it: the runtime (``TELEMETRY_EXPORT=otlp``) or the application
(``get_telemetry().set_exporter(OtlpMetricsExporter("http://collector:4318"))``). What comes in:
registry snapshots. What goes out: ``POST {endpoint}/v1/metrics`` with an
``ExportMetricsServiceRequest`` (``Content-Type: application/x-protobuf``), accepted by
tsengine's ``/v1/metrics`` and by any OpenTelemetry collector's OTLP/HTTP receiver.

The mapping (cumulative temporality throughout, start time = when the exporter was attached):

* a counter → a monotonic cumulative **Sum** named like its exposed sample (``orders_total``);
* a gauge → a **Gauge**; an info and an enum (stateset) → a **Gauge** per sample
  (``build_info`` = 1 with the pairs as attributes; ``task_state`` = 1/0 per state);
* a histogram (and a ``TIMER``) → a cumulative **Histogram** with explicit bounds (``+Inf``
  implied), per-bucket counts, count and sum;
* a summary → a **Summary** with count and sum (no quantiles, as the metric has none);
* labels → data point attributes; the service name → the resource attribute ``service.name``;
  the scope is ``tsengine.instrument`` with the package version.

On tsengine's server that lands as the OpenTelemetry SDK's metrics would: tables
``orders_total`` (tags ``otel_temporality``, ``otel_monotonic``), ``queue_depth``,
``job_seconds_bucket``/``_sum``/``_count``, with the tag ``service_name`` instead of the native
exporter's ``service``. Non-finite gauge and counter values are skipped, as the native exporter
does. Events go as OTLP log records to ``{endpoint}/v1/logs`` through :attr:`OtlpMetricsExporter.logs`
(:mod:`tsengine.instrument._otlp_logs_export`; tsengine stores them in ``events``); recent data
points are not sent (OTLP has no place for them).

The protobuf wire format is written by hand (a dozen message shapes, all length-delimited,
varint or fixed64), so neither ``protobuf`` nor ``opentelemetry-proto`` is imported by the SDK;
the tests decode the bodies with ``opentelemetry.proto``. Queue, worker and retry policy are
those of :class:`~tsengine.instrument.HttpExporter`, one queued item per data point.
"""

from __future__ import annotations

import math
import struct
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsengine.instrument._family import MetricType
from tsengine.instrument._push import HttpExporter, _Batch

if TYPE_CHECKING:
    from tsengine.instrument._collector import DataPoint
    from tsengine.instrument._event import Event
    from tsengine.instrument._family import MetricFamily
    from tsengine.instrument._runtime import Telemetry

__all__ = ["OtlpMetricsExporter", "encode_request"]

CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "tsengine.instrument"
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(frozen=True, slots=True)
class Point:
    """One OTLP data point of one metric (a queued item).

    ``kind`` is ``sum``, ``gauge``, ``histogram`` or ``summary``. ``value`` is the number for
    sums and gauges; for histograms ``bounds`` (finite upper bounds), ``counts`` (per bucket,
    one more than ``bounds``), ``count`` and ``total``; for summaries ``count`` and ``total``.
    """

    name: str
    kind: str
    description: str
    unit: str
    attributes: tuple[tuple[str, str], ...]
    start_ns: int
    time_ns: int
    value: float = 0.0
    count: int = 0
    total: float = 0.0
    bounds: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()


class OtlpMetricsExporter(HttpExporter):
    """Batched background push of metric snapshots as OTLP/HTTP protobuf. See the module docstring.

    Args:
        endpoint: the base URL, ``http://host:port`` — ``/v1/metrics`` is appended (a tsengine
            server, or a collector's OTLP/HTTP receiver, usually port 4318).
        token: sent as ``Authorization: Bearer`` (tsengine needs the ``write`` scope).
        db: the tsengine database (``?db=``; not sent when ``default``).
        **kwargs: the queue and worker settings of :class:`HttpExporter`; ``batch_size`` and
            ``max_queue`` count data points.
    """

    content_type = CONTENT_TYPE
    exports_events = False  # events go through ``self.logs``

    def __init__(
        self, endpoint: str, token: str | None = None, *, db: str = "default", **kwargs: Any
    ) -> None:
        from tsengine.instrument._otlp_logs_export import OtlpLogsExporter

        super().__init__(endpoint, token, db=db, **kwargs)
        self._start_ns = self._time_ns()
        #: Events as OTLP log records to ``/v1/logs``, with their own queue and worker.
        self.logs = OtlpLogsExporter(endpoint, token, db=db, **kwargs)

    def _api_path(self, db: str) -> str:
        return "/v1/metrics" + ("" if db == "default" else "?" + urllib.parse.urlencode({"db": db}))

    def attach(self, telemetry: Telemetry) -> None:
        super().attach(telemetry)
        self.logs.service = self.logs.service or self.service
        self.logs.attach(telemetry)
        self._start_ns = self._time_ns()

    def detach(self) -> None:
        self.logs.detach()
        super().detach()

    def start(self) -> None:
        super().start()
        self.logs.start()

    def wake(self) -> None:
        super().wake()
        self.logs.wake()

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        metrics_ok = super().flush(timeout_s)
        return self.logs.flush(max(0.0, deadline - time.monotonic())) and metrics_ok

    def shutdown(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        super().shutdown(timeout_s)
        self.logs.shutdown(max(0.05, deadline - time.monotonic()))

    def export_metrics(self, families: Sequence[MetricFamily], *, time_ns: int) -> None:
        try:
            points: list[Point] = []
            for fam in families:
                points.extend(family_points(fam, start_ns=self._start_ns, time_ns=time_ns))
            self._enqueue(list(points))
        except Exception:
            self._internal_error("export_metrics")

    def export_data_points(self, points: Sequence[DataPoint]) -> None:
        """Not sent over OTLP (see the module docstring)."""

    def export_events(self, events: Sequence[Event]) -> None:
        """Handed to :attr:`logs` (OTLP log records to ``/v1/logs``)."""
        self.logs.export_events(events)

    def _encode(self, batch: _Batch) -> bytes:
        if batch.body is None:
            batch.body = encode_request(batch.rows, service=self.service)
        return batch.body


#: Kinds whose every sample is one point (OTLP has no info or stateset: they go as gauges).
_ONE_POINT_PER_SAMPLE = (MetricType.COUNTER, MetricType.GAUGE, MetricType.INFO, MetricType.STATESET)


def family_points(fam: MetricFamily, *, start_ns: int, time_ns: int) -> list[Point]:
    """The OTLP data points of one family snapshot (Prometheus-shaped samples regrouped)."""
    kind = fam.type
    doc, unit = fam.documentation, fam.unit
    out: list[Point] = []
    if kind in _ONE_POINT_PER_SAMPLE:
        otlp_kind = "sum" if kind is MetricType.COUNTER else "gauge"  # info and stateset: gauges
        for s in fam.samples:
            value = float(s.value)
            if math.isfinite(value):
                out.append(Point(s.name, otlp_kind, doc, unit, _attrs(s.labels), start_ns, time_ns, value))
        return out
    # Histograms and summaries: one point per label set (without ``le``), in order of appearance.
    groups: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in fam.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        group = groups.setdefault(_attrs(labels), {"buckets": [], "count": 0.0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            group["buckets"].append((float(s.labels["le"]), float(s.value)))
        elif s.name.endswith("_count"):
            group["count"] = float(s.value)
        elif s.name.endswith("_sum"):
            group["sum"] = float(s.value)
    for attrs, group in groups.items():
        count, total = int(group["count"]), group["sum"]
        if kind is MetricType.SUMMARY:
            out.append(
                Point(fam.name, "summary", doc, unit, attrs, start_ns, time_ns, count=count, total=total)
            )
            continue
        buckets = sorted(group["buckets"])
        bounds = tuple(le for le, _ in buckets if le != math.inf)
        counts: list[int] = []
        previous = 0.0
        for _, cumulative in buckets:
            counts.append(int(cumulative - previous))
            previous = cumulative
        if len(counts) == len(bounds):  # no +Inf bucket exposed: the rest of the count
            counts.append(max(count - int(previous), 0))
        out.append(
            Point(
                fam.name,
                "histogram",
                doc,
                unit,
                attrs,
                start_ns,
                time_ns,
                count=count,
                total=total,
                bounds=bounds,
                counts=tuple(counts),
            )
        )
    return out


def _attrs(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(labels.items())


# -- protobuf wire format (also used by the logs and the span encoders) ---------------------------

_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    """The varint of ``n >= 0`` (mask negative int64 values with ``& (1 << 64) - 1`` first)."""
    if n < 0x80:  # tags, small lengths and enums: no loop (the span encoder's common case)
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field with a precomputed ``tag`` (``_tag(field, 2)``)."""
    return tag + _varint(len(payload)) + payload


def _message(field: int, payload: bytes) -> bytes:
    return _len_field(_tag(field, 2), payload)


def _string(field: int, text: str) -> bytes:
    return _message(field, text.encode("utf-8"))


def _fixed64(field: int, n: int) -> bytes:
    return _tag(field, 1) + struct.pack("<Q", n)


def _double(field: int, x: float) -> bytes:
    return _tag(field, 1) + struct.pack("<d", x)


def _key_value(field: int, key: str, value: str) -> bytes:
    # KeyValue{key = 1; value = 2: AnyValue{string_value = 1}}
    return _message(field, _string(1, key) + _message(2, _string(1, value)))


def _data_point(p: Point) -> bytes:
    if p.kind in ("sum", "gauge"):
        # NumberDataPoint{start = 2; time = 3; as_double = 4; attributes = 7}
        attrs = b"".join(_key_value(7, k, v) for k, v in p.attributes)
        start = _fixed64(2, p.start_ns) if p.kind == "sum" else b""
        return attrs + start + _fixed64(3, p.time_ns) + _double(4, p.value)
    if p.kind == "histogram":
        # HistogramDataPoint{start = 2; time = 3; count = 4; sum = 5; bucket_counts = 6 (packed);
        # explicit_bounds = 7 (packed); attributes = 9}
        attrs = b"".join(_key_value(9, k, v) for k, v in p.attributes)
        body = _fixed64(2, p.start_ns) + _fixed64(3, p.time_ns) + _fixed64(4, p.count) + _double(5, p.total)
        body += _message(6, struct.pack(f"<{len(p.counts)}Q", *p.counts))
        if p.bounds:
            body += _message(7, struct.pack(f"<{len(p.bounds)}d", *p.bounds))
        return attrs + body
    # SummaryDataPoint{start = 2; time = 3; count = 4; sum = 5; attributes = 7}
    attrs = b"".join(_key_value(7, k, v) for k, v in p.attributes)
    return (
        attrs + _fixed64(2, p.start_ns) + _fixed64(3, p.time_ns) + _fixed64(4, p.count) + _double(5, p.total)
    )


_KIND_FIELD = {"gauge": 5, "sum": 7, "histogram": 9, "summary": 11}  # fields of Metric


def _metric(first: Point, points: list[Point]) -> bytes:
    data = b"".join(_message(1, _data_point(p)) for p in points)  # data_points = 1 in every kind
    if first.kind == "sum":
        data += _tag(2, 0) + _varint(_CUMULATIVE) + _tag(3, 0) + b"\x01"  # temporality, is_monotonic
    elif first.kind == "histogram":
        data += _tag(2, 0) + _varint(_CUMULATIVE)
    head = _string(1, first.name)
    if first.description:
        head += _string(2, first.description)
    if first.unit:
        head += _string(3, first.unit)
    return head + _message(_KIND_FIELD[first.kind], data)


def encode_request(
    points: Sequence[Point], *, service: str | None, scope_version: str | None = None
) -> bytes:
    """An ``ExportMetricsServiceRequest`` holding ``points`` (one resource, one scope).

    Consecutive points of the same metric (name, kind, description, unit) share one ``Metric``.
    """
    if scope_version is None:
        import tsengine

        scope_version = tsengine.__version__
    metrics: list[bytes] = []
    run: list[Point] = []
    for p in points:
        first = run[0] if run else p
        if (p.name, p.kind, p.description, p.unit) != (first.name, first.kind, first.description, first.unit):
            metrics.append(_message(2, _metric(run[0], run)))
            run = []
        run.append(p)
    if run:
        metrics.append(_message(2, _metric(run[0], run)))
    resource = _key_value(1, "service.name", service) if service else b""
    scope = _string(1, SCOPE_NAME) + _string(2, scope_version)
    scope_metrics = _message(1, scope) + b"".join(metrics)
    resource_metrics = _message(1, resource) + _message(2, scope_metrics)
    return _message(1, resource_metrics)
