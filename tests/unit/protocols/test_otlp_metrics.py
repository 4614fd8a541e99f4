"""OTLP/HTTP metrics decoder: bodies from the real OpenTelemetry SDK, JSON, mapping rules, errors."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pbm
from opentelemetry.proto.resource.v1 import resource_pb2

from tsengine.errors import ParseError
from tsengine.model import TableBatch
from tsengine.protocols import otlp_metrics
from tsengine.protocols._proto_series import STALE_NAN_BITS

PROTOBUF = "application/x-protobuf"
T0 = 1_700_000_000_000_000_000
CUMULATIVE = pbm.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pbm.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = pbm.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

Row = tuple[int, dict[str, str], Any]


def bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def rows_of(batch: TableBatch) -> list[Row]:
    tags = {name: col.to_pylist() for name, col in batch.tags.items()}
    values = batch.fields["value"].to_pylist()
    return [
        (int(batch.time[i]), {k: col[i] for k, col in tags.items() if col[i] is not None}, values[i])
        for i in range(batch.num_rows)
    ]


def decode(request: Any, content_type: str = PROTOBUF) -> dict[str, list[Row]]:
    body = request.SerializeToString() if content_type == PROTOBUF else json_format.MessageToJson(request)
    batches = otlp_metrics.parse(body, content_type=content_type, db="otel")
    assert all(b.db == "otel" for b in batches)
    assert len({b.table for b in batches}) == len(batches), "one batch per table"
    return {b.table: rows_of(b) for b in batches}


def attrs(**values: Any) -> list[common.KeyValue]:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            any_value = common.AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = common.AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = common.AnyValue(double_value=value)
        else:
            any_value = common.AnyValue(string_value=value)
        out.append(common.KeyValue(key=key, value=any_value))
    return out


def request_of(*metrics: pbm.Metric, resource: Sequence[common.KeyValue] = ()) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pbm.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=list(resource)),
                scope_metrics=[
                    pbm.ScopeMetrics(scope=common.InstrumentationScope(name="scope"), metrics=list(metrics))
                ],
            )
        ]
    )


def gauge(name: str, *points: pbm.NumberDataPoint) -> pbm.Metric:
    return pbm.Metric(name=name, gauge=pbm.Gauge(data_points=list(points)))


SCOPE = {"otel_scope_name": "scope"}


# --- the real OpenTelemetry SDK --------------------------------------------------------------


@pytest.fixture
def encode_metrics() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("opentelemetry-exporter-otlp-proto-common is missing in CI: add it to the test extra")
        pytest.skip("opentelemetry-exporter-otlp-proto-common is not installed")
    return encode_metrics


EXP_VALUES = (1.0, 2.0, 3.0, 4.0, 1000.0, 1500.0)


@pytest.fixture
def sdk_request(encode_metrics: Any) -> Iterator[ExportMetricsServiceRequest]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "checkout", "service.instance.id": "i-1"}),
        views=[
            View(
                instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation(max_size=20)
            )
        ],
    )
    try:
        meter = provider.get_meter("test-scope", "1.2.3")
        requests = meter.create_counter("http.requests")
        requests.add(3, {"http.method": "GET"})
        requests.add(2, {"http.method": "GET"})
        requests.add(1, {"http.method": "POST"})
        depth = meter.create_up_down_counter("queue.depth")
        depth.add(5)
        depth.add(-2)
        meter.create_gauge("cpu.temp").set(21.5, {"core": 0})
        duration = meter.create_histogram(
            "request.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0]
        )
        for value in (0.05, 0.3, 0.3, 2.0):
            duration.record(value)
        size = meter.create_histogram("payload.size", unit="By")
        for value in EXP_VALUES:
            size.record(value)
        yield encode_metrics(reader.get_metrics_data())
    finally:
        provider.shutdown()


def _sdk_base(tags: dict[str, str]) -> None:
    assert tags["service_name"] == "checkout"
    assert tags["service_instance_id"] == "i-1"
    assert tags["telemetry_sdk_language"] == "python"
    assert tags["otel_scope_name"] == "test-scope"
    assert tags["otel_scope_version"] == "1.2.3"


@pytest.mark.peer
def test_sdk_counter_and_up_down_counter_are_int_sums(sdk_request: ExportMetricsServiceRequest) -> None:
    tables = decode(sdk_request)
    by_method = {tags["http_method"]: (tags, value) for _, tags, value in tables["http_requests"]}
    assert {m: v for m, (_, v) in by_method.items()} == {"GET": 5, "POST": 1}
    tags = by_method["GET"][0]
    _sdk_base(tags)
    assert tags["otel_temporality"] == "cumulative"
    assert tags["otel_monotonic"] == "true"
    ((_, depth_tags, depth),) = tables["queue_depth"]
    assert depth == 3
    assert depth_tags["otel_monotonic"] == "false"
    point = sdk_request.resource_metrics[0].scope_metrics[0].metrics[0]
    assert point.name == "http.requests"
    assert {t for t, _, _ in tables["http_requests"]} == {p.time_unix_nano for p in point.sum.data_points}


@pytest.mark.peer
def test_sdk_gauge_is_a_float_with_stringified_attributes(sdk_request: ExportMetricsServiceRequest) -> None:
    ((_, tags, value),) = decode(sdk_request)["cpu_temp"]
    assert value == 21.5
    assert tags["core"] == "0"
    assert "otel_temporality" not in tags
    _sdk_base(tags)


@pytest.mark.peer
def test_sdk_histogram_becomes_le_buckets_sum_and_count(sdk_request: ExportMetricsServiceRequest) -> None:
    tables = decode(sdk_request)
    buckets = [(tags["le"], value) for _, tags, value in tables["request_duration_bucket"]]
    assert buckets == [("0.1", 1.0), ("0.5", 3.0), ("1", 3.0), ("+Inf", 4.0)]
    ((_, sum_tags, total),) = tables["request_duration_sum"]
    assert total == pytest.approx(2.65)
    assert tables["request_duration_count"][0][2] == 4.0
    assert sum_tags["otel_temporality"] == "cumulative"
    _sdk_base(sum_tags)


@pytest.mark.peer
def test_sdk_exponential_histogram_buckets_count_values_up_to_le(
    sdk_request: ExportMetricsServiceRequest,
) -> None:
    tables = decode(sdk_request)
    rows = [(tags["le"], value) for _, tags, value in tables["payload_size_bucket"]]
    assert rows[-1] == ("+Inf", float(len(EXP_VALUES)))
    for le, cumulative in rows:
        assert cumulative == sum(v <= float(le) for v in EXP_VALUES), le
    assert "1024" in dict(rows) and "2048" in dict(rows)
    assert tables["payload_size_sum"][0][2] == sum(EXP_VALUES)
    assert tables["payload_size_count"][0][2] == len(EXP_VALUES)


@pytest.mark.peer
def test_sdk_request_as_json_decodes_the_same(sdk_request: ExportMetricsServiceRequest) -> None:
    assert decode(sdk_request, "application/json; charset=utf-8") == decode(sdk_request)


# --- mapping rules on hand-built requests ----------------------------------------------------


def test_otlp_json_quirks_are_accepted() -> None:
    doc = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeMetrics": [
                    {
                        "scope": {"name": "s", "version": ""},
                        "metrics": [
                            {
                                "name": "jobs.done",
                                "unit": "1",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "attributes": [{"key": "queue", "value": {"stringValue": "q1"}}],
                                            "startTimeUnixNano": "1",
                                            "timeUnixNano": str(T0),
                                            "asInt": "9007199254740993",
                                            "exemplars": [
                                                {
                                                    "timeUnixNano": str(T0),
                                                    "asDouble": 1.0,
                                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                                    "spanId": "eee19b7ec3c1b174",
                                                }
                                            ],
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "temp",
                                "gauge": {"dataPoints": [{"timeUnixNano": T0, "asDouble": "Infinity"}]},
                            },
                        ],
                        "someFutureField": {"x": 1},
                    }
                ],
            }
        ]
    }
    tables = {
        b.table: rows_of(b)
        for b in otlp_metrics.parse(json.dumps(doc).encode(), content_type="application/json")
    }
    base = {"service_name": "svc", "otel_scope_name": "s"}
    assert tables == {
        "jobs_done": [
            (
                T0,
                {**base, "queue": "q1", "otel_temporality": "delta", "otel_monotonic": "true"},
                9007199254740993,
            )
        ],
        "temp": [(T0, base, math.inf)],
    }


def test_summary_becomes_quantiles_sum_and_count() -> None:
    point = pbm.SummaryDataPoint(
        time_unix_nano=T0,
        count=10,
        sum=4.5,
        quantile_values=[
            pbm.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.3),
            pbm.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=0.9),
        ],
        attributes=attrs(route="/x"),
    )
    tables = decode(request_of(pbm.Metric(name="rpc.latency", summary=pbm.Summary(data_points=[point]))))
    tags = {**SCOPE, "route": "/x"}
    assert tables == {
        "rpc_latency": [(T0, {**tags, "quantile": "0.5"}, 0.3), (T0, {**tags, "quantile": "0.99"}, 0.9)],
        "rpc_latency_sum": [(T0, tags, 4.5)],
        "rpc_latency_count": [(T0, tags, 10.0)],
    }


def test_exponential_histogram_with_negative_and_zero_buckets() -> None:
    point = pbm.ExponentialHistogramDataPoint(
        time_unix_nano=T0,
        count=10,
        sum=1.0,
        scale=1,
        zero_count=2,
        zero_threshold=0.5,
        positive=pbm.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[3, 1]),
        negative=pbm.ExponentialHistogramDataPoint.Buckets(offset=-1, bucket_counts=[1, 3]),
    )
    metric = pbm.Metric(
        name="x",
        exponential_histogram=pbm.ExponentialHistogram(aggregation_temporality=DELTA, data_points=[point]),
    )
    tables = decode(request_of(metric))
    # base sqrt(2): negative bucket -1 = [-1, -0.707..), bucket 0 = [-1.414.., -1); positive
    # bucket 0 = (1, 1.414..], bucket 1 = (1.414.., 2].
    assert [(tags["le"], v) for _, tags, v in tables["x_bucket"]] == [
        ("-1", 3.0),
        ("-0.7071067811865476", 4.0),
        ("0.5", 6.0),
        ("1.4142135623730951", 9.0),
        ("2", 10.0),
        ("+Inf", 10.0),
    ]
    assert tables["x_count"] == [(T0, {**SCOPE, "otel_temporality": "delta"}, 10.0)]


def test_histogram_without_buckets_or_sum() -> None:
    point = pbm.HistogramDataPoint(time_unix_nano=T0, count=3)
    metric = pbm.Metric(
        name="h", histogram=pbm.Histogram(aggregation_temporality=CUMULATIVE, data_points=[point])
    )
    tables = decode(request_of(metric))
    assert [(tags["le"], v) for _, tags, v in tables["h_bucket"]] == [("+Inf", 3.0)]
    assert "h_sum" not in tables
    assert tables["h_count"][0][2] == 3.0


def test_no_recorded_value_writes_the_staleness_marker() -> None:
    hist = pbm.HistogramDataPoint(time_unix_nano=T0, flags=NO_RECORDED_VALUE, explicit_bounds=[1.0])
    metrics = [
        gauge("g", pbm.NumberDataPoint(time_unix_nano=T0, flags=NO_RECORDED_VALUE)),
        pbm.Metric(name="h", histogram=pbm.Histogram(aggregation_temporality=CUMULATIVE, data_points=[hist])),
    ]
    batches = otlp_metrics.parse(request_of(*metrics).SerializeToString(), content_type=PROTOBUF)
    for batch in batches:
        values = batch.fields["value"].to_numpy(zero_copy_only=False)
        assert [bits(float(v)) for v in values] == [STALE_NAN_BITS] * batch.num_rows, batch.table
    assert {b.table: b.num_rows for b in batches} == {"g": 1, "h_bucket": 2, "h_sum": 1, "h_count": 1}


def test_attribute_values_are_stringified_and_names_sanitised() -> None:
    kvs = [
        common.KeyValue(key="flag", value=common.AnyValue(bool_value=True)),
        common.KeyValue(key="big", value=common.AnyValue(double_value=1e21)),
        common.KeyValue(key="half", value=common.AnyValue(double_value=0.5)),
        common.KeyValue(key="raw", value=common.AnyValue(bytes_value=b"\x00\xff")),
        common.KeyValue(
            key="list",
            value=common.AnyValue(
                array_value=common.ArrayValue(
                    values=[common.AnyValue(int_value=1), common.AnyValue(string_value="ä")]
                )
            ),
        ),
        common.KeyValue(
            key="map",
            value=common.AnyValue(
                kvlist_value=common.KeyValueList(
                    values=[
                        common.KeyValue(key="z", value=common.AnyValue(bool_value=False)),
                        common.KeyValue(key="a", value=common.AnyValue(double_value=1.5)),
                    ]
                )
            ),
        ),
        common.KeyValue(key="empty", value=common.AnyValue(string_value="")),
        common.KeyValue(key="unset", value=common.AnyValue()),
        common.KeyValue(key="a_b", value=common.AnyValue(string_value="second")),
        common.KeyValue(key="a.b", value=common.AnyValue(string_value="first")),
        common.KeyValue(key="1st", value=common.AnyValue(string_value="d")),
        common.KeyValue(key="__meta__", value=common.AnyValue(string_value="m")),
        common.KeyValue(key="k8s..pod--name", value=common.AnyValue(string_value="p")),
    ]
    ((_, tags, _),) = decode(
        request_of(gauge("g", pbm.NumberDataPoint(time_unix_nano=T0, as_int=1, attributes=kvs)))
    )["g"]
    assert tags == {
        **SCOPE,
        "flag": "true",
        "big": "1e+21",
        "half": "0.5",
        "raw": "AP8=",
        "list": '[1,"ä"]',
        "map": '{"a":1.5,"z":false}',
        "a_b": "first;second",
        "key_1st": "d",
        "__meta__": "m",
        "k8s_pod_name": "p",
    }


def test_point_attributes_override_resource_attributes() -> None:
    point = pbm.NumberDataPoint(time_unix_nano=T0, as_double=1.0, attributes=attrs(host="point"))
    tables = decode(request_of(gauge("g", point), resource=attrs(host="resource", region="eu")))
    assert tables["g"] == [(T0, {**SCOPE, "host": "point", "region": "eu"}, 1.0)]


def test_int_and_double_points_in_one_table_become_float() -> None:
    points = [
        pbm.NumberDataPoint(time_unix_nano=T0, as_int=2),
        pbm.NumberDataPoint(time_unix_nano=T0 + 1, as_double=2.5),
    ]
    batches = otlp_metrics.parse(request_of(gauge("g", *points)).SerializeToString(), content_type=PROTOBUF)
    assert str(batches[0].fields["value"].type) == "double"
    assert batches[0].fields["value"].to_pylist() == [2.0, 2.5]


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("http.server.request.duration", "http_server_request_duration"),
        ("1st.metric", "_1st_metric"),
        ("a..b--c", "a_b_c"),
        ("ns:metric_total", "ns:metric_total"),
        ("été.temps", "t_temps"),
        ("...", None),
    ],
)
def test_metric_names_are_sanitised_like_prometheus(name: str, table: str | None) -> None:
    assert otlp_metrics.metric_table_name(name) == table


def test_deterministic() -> None:
    request = request_of(
        gauge("b", pbm.NumberDataPoint(time_unix_nano=T0, as_double=1.0)),
        gauge("a", pbm.NumberDataPoint(time_unix_nano=T0, as_double=2.0, attributes=attrs(x="1"))),
    )
    assert list(decode(request)) == ["b", "a"]
    assert decode(request) == decode(request)


# --- errors ----------------------------------------------------------------------------------

ITEM = "resource_metrics[0].scope_metrics[0].metrics[0]"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"\xff\xff\xff\xff garbage", PROTOBUF, "cannot decode OTLP metrics"),
        (b'{"resourceMetrics": [', "application/json", "cannot decode OTLP metrics JSON"),
        (b'{"resourceMetrics": 5}', "application/json", "cannot decode OTLP metrics JSON"),
        (b"\xff\xfe", "application/json", "cannot decode OTLP metrics JSON"),
        (b"", "text/plain", "unsupported content type"),
    ],
)
def test_undecodable_bodies(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as err:
        otlp_metrics.parse(body, content_type=content_type)
    assert err.value.item is None


@pytest.mark.parametrize(
    ("metric", "item", "reason"),
    [
        (gauge("...", pbm.NumberDataPoint(time_unix_nano=T0, as_int=1)), ITEM, "no letter or digit"),
        (
            gauge("g", pbm.NumberDataPoint(time_unix_nano=T0)),
            f"{ITEM}.gauge.data_points[0]",
            "neither as_double",
        ),
        (
            gauge("g", pbm.NumberDataPoint(time_unix_nano=2**63, as_int=1)),
            f"{ITEM}.gauge.data_points[0]",
            "beyond the int64 range",
        ),
        (
            gauge("g", pbm.NumberDataPoint(time_unix_nano=T0, as_int=1, attributes=attrs(ok="1", value="x"))),
            f"{ITEM}.gauge.data_points[0].attributes[1]",
            "'value' is the field",
        ),
        (
            gauge("g", pbm.NumberDataPoint(time_unix_nano=T0, as_int=1, attributes=attrs(time="x"))),
            f"{ITEM}.gauge.data_points[0].attributes[0]",
            "time column",
        ),
        (
            pbm.Metric(name="s", sum=pbm.Sum(data_points=[pbm.NumberDataPoint(time_unix_nano=T0, as_int=1)])),
            ITEM,
            "temporality 0 is not delta or cumulative",
        ),
        (
            pbm.Metric(
                name="h",
                histogram=pbm.Histogram(
                    aggregation_temporality=CUMULATIVE,
                    data_points=[pbm.HistogramDataPoint(explicit_bounds=[1.0, 2.0], bucket_counts=[1, 2])],
                ),
            ),
            f"{ITEM}.histogram.data_points[0]",
            "need 3 bucket counts, got 2",
        ),
        (
            pbm.Metric(
                name="h",
                histogram=pbm.Histogram(
                    aggregation_temporality=CUMULATIVE,
                    data_points=[pbm.HistogramDataPoint(explicit_bounds=[2.0, 1.0], bucket_counts=[1, 2, 3])],
                ),
            ),
            f"{ITEM}.histogram.data_points[0]",
            "not increasing",
        ),
        (
            pbm.Metric(
                name="e",
                exponential_histogram=pbm.ExponentialHistogram(
                    aggregation_temporality=CUMULATIVE,
                    data_points=[pbm.ExponentialHistogramDataPoint(scale=21)],
                ),
            ),
            f"{ITEM}.exponential_histogram.data_points[0]",
            "scale 21 outside",
        ),
        (
            gauge("x" * 300, pbm.NumberDataPoint(time_unix_nano=T0, as_int=1)),
            f"{ITEM}.gauge.data_points[0]",
            "longer than",
        ),
    ],
)
def test_bad_items_name_their_path(metric: pbm.Metric, item: str, reason: str) -> None:
    good = gauge("fine", pbm.NumberDataPoint(time_unix_nano=T0, as_int=1))
    request = request_of(metric, good)
    for content_type in (PROTOBUF, "application/json"):
        body = request.SerializeToString() if content_type == PROTOBUF else json_format.MessageToJson(request)
        with pytest.raises(ParseError, match=reason) as err:
            otlp_metrics.parse(body, content_type=content_type)
        assert err.value.item == item
