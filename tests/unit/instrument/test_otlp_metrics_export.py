"""The hand-written OTLP protobuf encoder, decoded with opentelemetry-proto (the reference)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

import tsengine
from tsengine.instrument import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    OtlpMetricsExporter,
    Summary,
)
from tsengine.instrument._otlp_metrics_export import Point, encode_request, family_points

CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
T0, T1 = 1_700_000_000 * 10**9, 1_700_000_060 * 10**9


def decode(body: bytes) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    return request


def attrs(point: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}  # type: ignore[attr-defined]


def snapshot(registry: CollectorRegistry) -> list[Point]:
    return [p for fam in registry.collect() for p in family_points(fam, start_ns=T0, time_ns=T1)]


def test_registry_snapshot_decodes_as_the_otlp_data_model(registry: CollectorRegistry) -> None:
    orders = Counter("orders_total", "Orders placed.", ["plan"], registry=registry)
    orders.labels("pro").inc(3)
    orders.labels("free").inc()
    Gauge("queue_depth", "Jobs waiting.", registry=registry).set(-7.5)
    latency = Histogram("job_seconds", "Job duration.", ["job"], registry=registry, buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.7, 3.0):
        latency.labels("import").observe(v)
    Summary("payload_bytes", "Sizes.", registry=registry).observe(1200)

    request = decode(encode_request(snapshot(registry), service="shop"))

    (rm,) = request.resource_metrics
    assert attrs(rm.resource) == {"service.name": "shop"}
    (sm,) = rm.scope_metrics
    assert (sm.scope.name, sm.scope.version) == ("tsengine.instrument", tsengine.__version__)
    metrics = {m.name: m for m in sm.metrics}
    assert set(metrics) == {"orders_total", "queue_depth", "job_seconds", "payload_bytes"}

    orders_m = metrics["orders_total"]
    assert orders_m.description == "Orders placed."
    assert orders_m.WhichOneof("data") == "sum"
    assert orders_m.sum.is_monotonic and orders_m.sum.aggregation_temporality == CUMULATIVE
    got = {
        attrs(p)["plan"]: (p.as_double, p.start_time_unix_nano, p.time_unix_nano)
        for p in orders_m.sum.data_points
    }
    assert got == {"pro": (3.0, T0, T1), "free": (1.0, T0, T1)}

    gauge = metrics["queue_depth"]
    assert gauge.WhichOneof("data") == "gauge"
    (gp,) = gauge.gauge.data_points
    assert (gp.as_double, gp.time_unix_nano, attrs(gp)) == (-7.5, T1, {})

    hist = metrics["job_seconds"]
    assert hist.WhichOneof("data") == "histogram"
    assert hist.histogram.aggregation_temporality == CUMULATIVE
    (hp,) = hist.histogram.data_points
    assert attrs(hp) == {"job": "import"}
    assert list(hp.explicit_bounds) == [0.1, 1.0]
    assert list(hp.bucket_counts) == [1, 2, 1]  # per bucket, +Inf last
    assert (hp.count, hp.sum, hp.start_time_unix_nano) == (4, pytest.approx(4.25), T0)

    summary = metrics["payload_bytes"]
    assert summary.WhichOneof("data") == "summary"
    (sp,) = summary.summary.data_points
    assert (sp.count, sp.sum, list(sp.quantile_values)) == (1, 1200.0, [])


def test_non_finite_values_are_skipped(registry: CollectorRegistry) -> None:
    Gauge("g", "g", registry=registry).set(math.nan)
    Gauge("h", "h", registry=registry).set(math.inf)
    assert snapshot(registry) == []


def test_no_service_means_no_resource_attribute() -> None:
    request = decode(encode_request([], service=None))
    assert list(request.resource_metrics[0].resource.attributes) == []
    assert list(request.resource_metrics[0].scope_metrics[0].metrics) == []


label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
number_points = st.builds(
    Point,
    name=st.sampled_from(["a", "b_total", "ü.metric"]),
    kind=st.sampled_from(["sum", "gauge"]),
    description=label_text,
    unit=st.sampled_from(["", "s", "By"]),
    attributes=st.lists(st.tuples(label_text, label_text), max_size=3).map(tuple),
    start_ns=st.integers(0, 2**64 - 1),
    time_ns=st.integers(0, 2**64 - 1),
    value=st.floats(allow_nan=False),
)


@st.composite
def histogram_points(draw: st.DrawFn) -> Point:
    bounds = tuple(sorted(set(draw(st.lists(st.floats(-1e9, 1e9), max_size=5)))))
    counts = tuple(draw(st.lists(st.integers(0, 2**40), min_size=len(bounds) + 1, max_size=len(bounds) + 1)))
    return Point(
        draw(st.sampled_from(["h", "lat_seconds"])),
        draw(st.sampled_from(["histogram", "summary"])),
        "",
        "",
        draw(st.lists(st.tuples(label_text, label_text), max_size=2).map(tuple)),
        draw(st.integers(0, 2**63)),
        draw(st.integers(0, 2**63)),
        count=sum(counts),
        total=draw(st.floats(allow_nan=False)),
        bounds=bounds,
        counts=counts,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(number_points, histogram_points()), max_size=8), st.one_of(st.none(), label_text))
def test_encoding_round_trips_through_the_reference_decoder(points: list[Point], service: str | None) -> None:
    request = decode(encode_request(points, service=service, scope_version="9"))
    decoded: list[Point] = []
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        kind = metric.WhichOneof("data")
        for p in getattr(metric, kind).data_points:
            base = (metric.name, kind, metric.description, metric.unit)
            pairs = tuple((kv.key, kv.value.string_value) for kv in p.attributes)
            if kind in ("sum", "gauge"):
                start = p.start_time_unix_nano
                decoded.append(Point(*base, pairs, start, p.time_unix_nano, p.as_double))
            else:
                extra = (
                    {"bounds": tuple(p.explicit_bounds), "counts": tuple(p.bucket_counts)}
                    if kind == "histogram"
                    else {}
                )
                decoded.append(
                    Point(
                        *base,
                        pairs,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        count=p.count,
                        total=p.sum,
                        **extra,
                    )
                )
    expected = [
        p
        if p.kind != "gauge"
        else Point(p.name, p.kind, p.description, p.unit, p.attributes, 0, p.time_ns, p.value)
        for p in points
    ]
    expected = [
        p
        if p.kind != "summary"
        else Point(p.name, p.kind, "", "", p.attributes, p.start_ns, p.time_ns, count=p.count, total=p.total)
        for p in expected
    ]
    assert decoded == expected


def test_exporter_posts_metrics_to_v1_metrics_and_events_to_v1_logs() -> None:
    exporter = OtlpMetricsExporter("http://127.0.0.1:4318/base", db="ops")
    assert exporter._target.url == "http://127.0.0.1:4318/base/v1/metrics?db=ops"
    assert exporter.logs._target.url == "http://127.0.0.1:4318/base/v1/logs?db=ops"
    assert OtlpMetricsExporter("http://127.0.0.1:4318")._target.url == "http://127.0.0.1:4318/v1/metrics"
    assert exporter._target.headers["Content-Type"] == "application/x-protobuf"
    from tsengine.instrument import Event, EventCategory, EventSeverity

    exporter.export_events([Event(1, 0, EventCategory.SYSTEM, EventSeverity.INFO, "e")])
    assert (exporter.queued_rows, exporter.logs.queued_rows) == (0, 1)
    exporter.shutdown(0.0)


def test_events_encode_as_otlp_log_records() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from tsengine.instrument import Event, EventCategory, EventSeverity
    from tsengine.instrument._otlp_logs_export import encode_logs_request

    ev = Event(
        -42, 1_700_000_000_123_456_789, EventCategory.SECURITY, EventSeverity.ERROR, "login_failed",
        message="bad password", attributes={"ip": "10.0.0.1", "attempt": 3, "ok": False, "ratio": 0.5,
        "tags": ["a", "b"]}, user_id="alice", correlation_id="c-1",
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
    )  # fmt: skip
    req = ExportLogsServiceRequest.FromString(encode_logs_request([ev], service="shop", scope_version="9"))
    (rl,) = req.resource_logs
    assert [(a.key, a.value.string_value) for a in rl.resource.attributes] == [("service.name", "shop")]
    (sl,) = rl.scope_logs
    assert (sl.scope.name, sl.scope.version) == ("tsengine.instrument", "9")
    (rec,) = sl.log_records
    assert rec.time_unix_nano == rec.observed_time_unix_nano == ev.time_ns
    assert (rec.severity_number, rec.severity_text, rec.event_name) == (17, "ERROR", "login_failed")
    assert rec.body.string_value == "bad password"
    assert rec.trace_id.hex() == ev.trace_id and rec.span_id.hex() == ev.span_id
    attrs = {a.key: a.value for a in rec.attributes}
    assert attrs["ip"].string_value == "10.0.0.1" and attrs["attempt"].int_value == 3
    assert attrs["ok"].HasField("bool_value") and not attrs["ok"].bool_value
    assert attrs["ratio"].double_value == 0.5 and attrs["tags"].string_value == '["a", "b"]'
    assert attrs["event.id"].int_value == -42 and attrs["event.category"].string_value == "security"
    assert attrs["enduser.id"].string_value == "alice" and attrs["correlation.id"].string_value == "c-1"
    assert "session.id" not in attrs
