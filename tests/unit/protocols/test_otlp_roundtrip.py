"""OTLP metrics decoder, property-based: a rendered request (protobuf and JSON) round-trips exactly.

Hypothesis builds ``ExportMetricsServiceRequest`` messages together with the rows the module
docstring of :mod:`tsengine.protocols.otlp_metrics` says they map to (computed here
independently: ECMAScript number strings, shortest-digit ``le`` bounds, cumulative buckets),
renders them as protobuf and as OTLP/JSON and checks every row of every table.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pbm
from opentelemetry.proto.resource.v1 import resource_pb2

from tsengine.model import TableBatch
from tsengine.protocols import otlp_metrics
from tsengine.protocols._proto_series import STALE_NAN_BITS

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DB = "otel"
CUMULATIVE = pbm.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pbm.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = pbm.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


class _Stale:
    """Expected value of a row written for a "no recorded value" point: the staleness marker."""

    def __repr__(self) -> str:
        return "STALE"


STALE = _Stale()


# --- independent renderings of the documented string forms -------------------------------------


def ecma_number(x: float) -> str:
    """ECMAScript Number::toString of a finite double other than -0 (shortest round-trip digits)."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    t = Decimal(repr(abs(x))).normalize().as_tuple()
    ds = "".join(map(str, t.digits))
    k = len(ds)
    n = int(t.exponent) + k  # value = 0.ds * 10**n
    if k <= n <= 21:
        s = ds + "0" * (n - k)
    elif 0 < n <= 21:
        s = ds[:n] + "." + ds[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + ds
    else:
        e = n - 1
        s = ds[0] + ("." + ds[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + s


def le_string(bound: float) -> str:
    """Shortest exact decimal without exponent (Go's FormatFloat(v, 'f', -1, 64))."""
    return format(Decimal(repr(bound)).normalize(), "f")


def test_reference_renderings() -> None:
    assert [ecma_number(x) for x in (1.0, 0.5, 1e21, 1e20, 1e-6, 1e-7, -1.5e300, 123.456)] == [
        "1",
        "0.5",
        "1e+21",
        "100000000000000000000",
        "0.000001",
        "1e-7",
        "-1.5e+300",
        "123.456",
    ]
    assert [le_string(x) for x in (0.005, 1.0, 100.0, 1e-7, 2.5e21)] == [
        "0.005",
        "1",
        "100",
        "0.0000001",
        "2500000000000000000000",
    ]


# --- strategies ------------------------------------------------------------------------------------

#: Attribute keys and metric names that sanitise to themselves (no '_' runs, no leading digit).
#: 'value' and 'time' are refused as tag names (tested elsewhere), so never drawn here.
otlp_keys = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True).filter(lambda k: k not in {"value", "time"})
otlp_metric_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9:]{0,7}", fullmatch=True)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
_int64 = st.integers(-(2**63), 2**63 - 1)
_uint = st.integers(0, 2**32)
#: Point values: anything, with the awkward doubles (NaN payloads, signed zero, subnormals) common.
_doubles = st.one_of(
    st.floats(),
    st.sampled_from(
        [0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF0_0000_DEAD_BEEF, 0x8000_0000_0000_0000, 1]
    ).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0]),
)
#: -0.0 is left out: OpenTelemetry's AsString (Go's pdata) writes "-0" where ECMAScript writes "0".
_attr_doubles = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: bits(x) != bits(-0.0))


def _array_item() -> st.SearchStrategy[tuple[common.AnyValue, Any]]:
    return st.one_of(
        _text.map(lambda s: (common.AnyValue(string_value=s), s)),
        _int64.map(lambda i: (common.AnyValue(int_value=i), i)),
        st.booleans().map(lambda b: (common.AnyValue(bool_value=b), b)),
    )


def _array(items: list[tuple[common.AnyValue, Any]]) -> tuple[common.AnyValue, str]:
    value = common.AnyValue(array_value=common.ArrayValue(values=[v for v, _ in items]))
    return value, json.dumps([p for _, p in items], separators=(",", ":"), ensure_ascii=False)


def _kvlist(items: dict[str, tuple[common.AnyValue, Any]]) -> tuple[common.AnyValue, str]:
    kvs = [common.KeyValue(key=k, value=v) for k, (v, _) in items.items()]
    plain = {k: p for k, (_, p) in items.items()}
    value = common.AnyValue(kvlist_value=common.KeyValueList(values=kvs))
    return value, json.dumps(plain, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


#: (AnyValue, its expected tag string); "" means "no tag".
otlp_any_values: st.SearchStrategy[tuple[common.AnyValue, str]] = st.one_of(
    _text.map(lambda s: (common.AnyValue(string_value=s), s)),
    st.booleans().map(lambda b: (common.AnyValue(bool_value=b), "true" if b else "false")),
    _int64.map(lambda i: (common.AnyValue(int_value=i), str(i))),
    _attr_doubles.map(lambda x: (common.AnyValue(double_value=x), ecma_number(x))),
    st.binary(max_size=6).map(
        lambda b: (common.AnyValue(bytes_value=b), base64.b64encode(b).decode("ascii"))
    ),
    st.lists(_array_item(), max_size=3).map(_array),
    st.dictionaries(otlp_keys, _array_item(), max_size=2).map(_kvlist),
    st.just((common.AnyValue(), "")),
)


@st.composite
def otlp_attributes(draw: st.DrawFn, max_size: int = 4) -> tuple[list[common.KeyValue], dict[str, str]]:
    """Attributes with distinct, self-sanitising keys, and the tags they give."""
    keys = draw(st.lists(otlp_keys, max_size=max_size, unique=True))
    kvs, tags = [], {}
    for key in keys:
        value, text = draw(otlp_any_values)
        kvs.append(common.KeyValue(key=key, value=value))
        if text:
            tags[key] = text
    return kvs, tags


@dataclass
class OtlpCase:
    """A request and the rows it must decode to: table → [(time, tags, value)], in order."""

    request: ExportMetricsServiceRequest
    tables: dict[str, list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)

    def add(self, table: str, time_ns: int, tags: dict[str, str], value: Any) -> None:
        self.tables.setdefault(table, []).append((time_ns, tags, value))


_KINDS = ("gauge_double", "gauge_int", "sum_double", "sum_int", "histogram")


@dataclass(frozen=True)
class Tags:
    """Tags every point of a metric gets: its resource's, and the generated ones (scope, sum flags)."""

    resource: dict[str, str]
    generated: dict[str, str]


def _number_point(
    draw: st.DrawFn, case: OtlpCase, name: str, is_int: bool, tags: Tags
) -> pbm.NumberDataPoint:
    attrs, point_tags = draw(otlp_attributes(max_size=3))
    t = draw(st.integers(0, 2**63 - 1))
    if is_int:
        value = draw(_int64)
        point = pbm.NumberDataPoint(attributes=attrs, time_unix_nano=t, as_int=value)
        expected: Any = value
    else:
        value = draw(_doubles)  # NaN payloads, infinities, -0.0: all carried bit for bit
        stale = draw(st.integers(0, 7)) == 0
        point = pbm.NumberDataPoint(
            attributes=attrs, time_unix_nano=t, as_double=value, flags=NO_RECORDED_VALUE if stale else 0
        )
        expected = STALE if stale else value
    case.add(name, t, {**tags.resource, **point_tags, **tags.generated}, expected)
    return point


def _histogram_point(draw: st.DrawFn, case: OtlpCase, name: str, tags: Tags) -> pbm.HistogramDataPoint:
    attrs, point_tags = draw(otlp_attributes(max_size=3))
    t = draw(st.integers(0, 2**63 - 1))
    bounds = sorted(draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4, unique=True)))
    has_buckets = draw(st.integers(0, 4)) > 0
    counts = draw(st.lists(_uint, min_size=len(bounds) + 1, max_size=len(bounds) + 1)) if has_buckets else []
    count = sum(counts) if has_buckets else draw(_uint)
    total = draw(st.none() | _doubles)
    stale = draw(st.integers(0, 7)) == 0
    point = pbm.HistogramDataPoint(
        attributes=attrs,
        time_unix_nano=t,
        count=count,
        explicit_bounds=bounds,
        bucket_counts=counts,
        flags=NO_RECORDED_VALUE if stale else 0,
    )
    if total is not None:
        point.sum = total
    row_tags = {**tags.resource, **point_tags, **tags.generated}
    if has_buckets:
        les = [*map(le_string, bounds), "+Inf"]
        running, cumulative = 0, []
        for c in counts[:-1]:
            running += c
            cumulative.append(float(running))
        cumulative.append(float(count))
    elif stale:
        les = [*map(le_string, bounds), "+Inf"]
        cumulative = [0.0] * len(les)
    else:
        les, cumulative = ["+Inf"], [float(count)]
    for le, value in zip(les, cumulative, strict=True):
        case.add(f"{name}_bucket", t, {**row_tags, "le": le}, STALE if stale else value)
    if total is not None or stale:
        case.add(f"{name}_sum", t, row_tags, STALE if stale else total)
    case.add(f"{name}_count", t, row_tags, STALE if stale else float(count))
    return point


@st.composite
def otlp_cases(draw: st.DrawFn) -> OtlpCase:
    """1-2 resources, 1-2 scopes each, 1-3 metrics each; a metric name keeps one kind across the request."""
    names = draw(st.lists(otlp_metric_names, min_size=1, max_size=4, unique=True))
    kinds = {name: draw(st.sampled_from(_KINDS)) for name in names}
    case = OtlpCase(ExportMetricsServiceRequest())
    for _ in range(draw(st.integers(1, 2))):
        res_attrs, res_tags = draw(otlp_attributes())
        rm = case.request.resource_metrics.add()
        rm.resource.CopyFrom(resource_pb2.Resource(attributes=res_attrs))
        for _ in range(draw(st.integers(1, 2))):
            scope_name, scope_version = draw(_text), draw(_text)
            sm = rm.scope_metrics.add()
            sm.scope.CopyFrom(common.InstrumentationScope(name=scope_name, version=scope_version))
            scope_tags = {
                k: v for k, v in (("otel_scope_name", scope_name), ("otel_scope_version", scope_version)) if v
            }
            for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
                kind = kinds[name]
                metric = sm.metrics.add()
                metric.name = name
                temporality = draw(st.sampled_from([CUMULATIVE, DELTA]))
                generated = dict(scope_tags)
                tags = Tags(res_tags, generated)
                n_points = draw(st.integers(0, 3))
                if kind == "histogram":
                    generated["otel_temporality"] = "cumulative" if temporality == CUMULATIVE else "delta"
                    metric.histogram.aggregation_temporality = temporality
                    for _ in range(n_points):
                        metric.histogram.data_points.append(_histogram_point(draw, case, name, tags))
                    continue
                is_int = kind.endswith("_int")
                if kind.startswith("gauge"):
                    data = metric.gauge
                    data.SetInParent()
                else:
                    data = metric.sum
                    data.aggregation_temporality = temporality
                    data.is_monotonic = draw(st.booleans())
                    generated["otel_temporality"] = "cumulative" if temporality == CUMULATIVE else "delta"
                    generated["otel_monotonic"] = "true" if data.is_monotonic else "false"
                for _ in range(n_points):
                    data.data_points.append(_number_point(draw, case, name, is_int, tags))
    return case


# --- decoding and comparison -------------------------------------------------------------------


def render(request: ExportMetricsServiceRequest, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return request.SerializeToString()
    return json_format.MessageToJson(request).encode()


def decode(request: ExportMetricsServiceRequest, content_type: str) -> list[TableBatch]:
    batches = otlp_metrics.parse(render(request, content_type), content_type=content_type, db=DB)
    assert [b.db for b in batches] == [DB] * len(batches)
    assert len({b.table for b in batches}) == len(batches), "one batch per table"
    for b in batches:
        assert list(b.fields) == ["value"]
    return batches


def rows_of(batch: TableBatch) -> list[tuple[int, dict[str, str], Any]]:
    tags = {name: col.to_pylist() for name, col in batch.tags.items()}
    values = batch.fields["value"].to_pylist()
    return [
        (int(batch.time[i]), {k: col[i] for k, col in tags.items() if col[i] is not None}, values[i])
        for i in range(batch.num_rows)
    ]


def same_value(expected: Any, actual: Any, *, exact_nan: bool) -> bool:
    if expected is STALE:
        return isinstance(actual, float) and bits(actual) == STALE_NAN_BITS
    if isinstance(expected, int):
        return type(actual) is int and actual == expected
    if not isinstance(actual, float):
        return False
    if math.isnan(expected) and not exact_nan:
        return math.isnan(actual)  # OTLP/JSON writes "NaN": the payload does not survive JSON
    return bits(actual) == bits(expected)


def assert_decodes_to(case: OtlpCase, content_type: str) -> None:
    batches = decode(case.request, content_type)
    assert [b.table for b in batches] == list(case.tables), "tables in order of first appearance"
    for batch in batches:
        expected = case.tables[batch.table]
        is_int = all(isinstance(v, int) for _, _, v in expected)
        assert batch.fields["value"].type == (pa.int64() if is_int else pa.float64()), batch.table
        actual = rows_of(batch)
        assert len(actual) == len(expected), batch.table
        for i, ((t, tags, value), (t2, tags2, value2)) in enumerate(zip(expected, actual, strict=True)):
            where = f"{batch.table}[{i}]"
            assert t2 == t, where
            assert tags2 == tags, where
            assert same_value(value, value2, exact_nan=content_type == PROTOBUF), (where, value, value2)


@PROPERTY
@given(otlp_cases())
def test_protobuf_round_trips_exactly(case: OtlpCase) -> None:
    assert_decodes_to(case, PROTOBUF)


@PROPERTY
@given(otlp_cases())
def test_json_round_trips_exactly(case: OtlpCase) -> None:
    assert_decodes_to(case, JSON)


def _comparable(batch: TableBatch) -> tuple[Any, ...]:
    values = batch.fields["value"]
    if pa.types.is_floating(values.type):
        # Bit-exact, except that any NaN stands for any NaN: JSON cannot carry NaN payloads. The
        # staleness marker the decoder writes itself is kept exact.
        out = []
        for v in values.to_pylist():
            b = bits(v)
            out.append("nan" if math.isnan(v) and b != STALE_NAN_BITS else b)
    else:
        out = values.to_pylist()
    return (
        batch.db,
        batch.table,
        batch.time.dtype,
        batch.time.tolist(),
        [(name, col.type, col.to_pylist()) for name, col in batch.tags.items()],
        values.type,
        out,
    )


@PROPERTY
@given(otlp_cases())
def test_protobuf_and_json_bodies_give_identical_batches(case: OtlpCase) -> None:
    from_protobuf = [_comparable(b) for b in decode(case.request, PROTOBUF)]
    from_json = [_comparable(b) for b in decode(case.request, JSON)]
    assert from_protobuf == from_json


# --- sanitised names ---------------------------------------------------------------------------------

_segments = st.lists(st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,4}", fullmatch=True), min_size=1, max_size=4)
#: Runs of characters outside [a-zA-Z0-9] (label names) / [a-zA-Z0-9_:] (metric names).
_label_separators = st.text(alphabet=".-/ _é~", min_size=1, max_size=3)
_metric_separators = st.text(alphabet=".-/ é~", min_size=1, max_size=3)


@st.composite
def dotted(draw: st.DrawFn, separators: st.SearchStrategy[str]) -> tuple[str, list[str]]:
    """A name of segments joined by separator runs, possibly also leading and trailing ones."""
    segments = draw(_segments)
    seps = [draw(separators) for _ in range(len(segments) - 1)]
    name = segments[0] + "".join(s + seg for s, seg in zip(seps, segments[1:], strict=True))
    return name, segments


def gauge_request(
    name: str, point_attrs: Sequence[common.KeyValue], resource: Sequence[common.KeyValue] = ()
) -> ExportMetricsServiceRequest:
    point = pbm.NumberDataPoint(attributes=list(point_attrs), time_unix_nano=1, as_double=1.5)
    metric = pbm.Metric(name=name, gauge=pbm.Gauge(data_points=[point]))
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pbm.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=list(resource)),
                scope_metrics=[pbm.ScopeMetrics(metrics=[metric])],
            )
        ]
    )


def kv(key: str, value: str) -> common.KeyValue:
    return common.KeyValue(key=key, value=common.AnyValue(string_value=value))


@PROPERTY
@given(
    metric=dotted(_metric_separators),
    leading=st.sampled_from(["", ".", "-/"]),
    trailing=st.sampled_from(["", ".", "é."]),
    key=dotted(_label_separators),
    content_type=st.sampled_from([PROTOBUF, JSON]),
)
@example(
    metric=("http.server.request.duration", ["http", "server", "request", "duration"]),
    leading="",
    trailing="",
    key=("service.instance.id", ["service", "instance", "id"]),
    content_type=PROTOBUF,
)
def test_dotted_names_follow_the_documented_rule(
    metric: tuple[str, list[str]],
    leading: str,
    trailing: str,
    key: tuple[str, list[str]],
    content_type: str,
) -> None:
    """Metric names: runs outside [a-zA-Z0-9_:] → one '_', leading/trailing runs dropped.
    Tag names: runs outside [a-zA-Z0-9] → one '_' (segments start with a letter here)."""
    metric_name, metric_segments = metric
    key_name, key_segments = key
    if "_".join(key_segments) in {"value", "time"}:
        return
    request = gauge_request(leading + metric_name + trailing, [kv(key_name, "v")])
    batches = decode(request, content_type)
    assert [b.table for b in batches] == ["_".join(metric_segments)]
    assert rows_of(batches[0]) == [(1, {"_".join(key_segments): "v"}, 1.5)]


def test_documented_sanitisation_examples() -> None:
    request = gauge_request(
        "http.server.request.duration",
        [
            kv("service.name", "checkout"),
            kv("http.request.method", "GET"),
            kv("__meta.x__", "m"),
            kv("2xx.rate", "r"),
            kv("a.b", "dot"),
            kv("a-b", "dash"),
            kv("a_b", "underscore"),
        ],
        resource=[kv("service.instance.id", "i-1"), kv("service.name", "overridden")],
    )
    for content_type in (PROTOBUF, JSON):
        (batch,) = decode(request, content_type)
        assert batch.table == "http_server_request_duration"
        assert rows_of(batch) == [
            (
                1,
                {
                    "service_instance_id": "i-1",
                    "service_name": "checkout",
                    "http_request_method": "GET",
                    "__meta_x__": "m",
                    "key_2xx_rate": "r",
                    # collapsed onto one name: joined with ';' in order of the original keys
                    "a_b": "dash;dot;underscore",
                },
                1.5,
            )
        ]
    (batch,) = decode(gauge_request("9lives", []), PROTOBUF)
    assert batch.table == "_9lives"
