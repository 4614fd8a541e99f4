"""OTLP/HTTP metrics: an ``ExportMetricsServiceRequest`` (protobuf or JSON) → table batches.

In: the (already un-gzipped) body of ``POST /v1/metrics`` and its ``Content-Type``
(``application/x-protobuf`` or ``application/json``). Out: one
:class:`~tsengine.model.TableBatch` per metric table, field ``value``. Called by the server's
OTLP route; pure (no I/O, no engine), thread-safe, CPU-bound (a few microseconds per data point).

The mapping follows Prometheus' OTLP receiver and the OpenTelemetry → Prometheus compatibility
specification, with the choices below:

* **Table names** are the OTLP metric name sanitised as Prometheus does without suffixes
  (``UnderscoreEscapingWithoutSuffixes``): every run of characters outside ``[a-zA-Z0-9_:]``
  becomes one ``_`` (leading and trailing runs are dropped) and a leading digit gets a ``_``
  prefix, so ``http.server.request.duration`` → ``http_server_request_duration``. No unit or
  ``_total``/``_ratio`` suffix is added: the name a service chose is the name it queries, and
  the unit is not stored (there is no table metadata to hold it yet).
* **Tags**: resource attributes, then data point attributes (a point attribute wins over a
  resource attribute of the same tag name), then the generated tags below (they win over both).
  Names are sanitised like Prometheus label names: runs of characters outside ``[a-zA-Z0-9]``
  become one ``_`` (``service.name`` → ``service_name``, ``service.instance.id`` →
  ``service_instance_id``), ``__x__`` keeps its underscores, a leading digit gets ``key_``.
  Attributes that collapse onto one name are joined with ``;`` in order of their original keys.
  Values are stringified as OpenTelemetry's ``AsString`` does: strings as is, booleans
  ``true``/``false``, integers in decimal, doubles in ECMAScript number form (except that -0
  stays ``-0``, as ``AsString`` writes it), bytes in base64, arrays and key-value lists as
  compact JSON with sorted keys. An empty value means no tag.
  The scope adds ``otel_scope_name`` and ``otel_scope_version`` when they are not empty.
* **gauge** → ``<name>``; **sum** → ``<name>`` with tags ``otel_temporality``
  (``cumulative``/``delta``) and ``otel_monotonic`` (``true``/``false``). The value is float64
  for ``as_double`` points and int64 for ``as_int`` points; a table that gets both in one request
  is float64.
* **histogram** → ``<name>_bucket`` (tag ``le``, cumulative counts, ``+Inf`` last, as Prometheus
  exposes them), ``<name>_sum`` (when the point has a sum) and ``<name>_count``, all float64 and
  tagged ``otel_temporality``. ``min``/``max`` are not stored.
* **exponential histogram** → the same three tables; the ``le`` bounds are computed from
  ``scale`` and the bucket offsets (negative buckets, the zero bucket when it has observations
  with ``le`` = its threshold, positive buckets, ``+Inf``).
* **summary** → ``<name>`` with tag ``quantile``, ``<name>_sum`` and ``<name>_count``.
* ``le`` and ``quantile`` use the shortest exact decimal without exponent (``0.005``, ``1``).
* A point flagged "no recorded value" writes Prometheus' staleness marker (NaN
  ``0x7ff0000000000002``) to every row it would have written.
* ``time`` is ``time_unix_nano``; start times, exemplars, descriptions and metadata are dropped.

Errors: an undecodable body, an unsupported content type → :class:`~tsengine.errors.ParseError`
without an item; a bad metric, point or attribute → ``ParseError`` whose ``item`` is its path,
e.g. ``resource_metrics[0].scope_metrics[1].metrics[2].sum.data_points[3]``. A request with any
bad item is rejected whole. Rows keep the request's order; tables come in order of first
appearance, so the same body always gives the same batches.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tsengine.errors import InvalidName, ParseError
from tsengine.model import TableBatch, validate_column
from tsengine.protocols._otlp_encoding import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    PROTOBUF_TYPES,
    media_type,
    unsupported_type,
)
from tsengine.protocols._proto_series import (
    STALE_NAN,
    TableRows,
    bucket_rows,
    exponential_upper_bounds,
    format_bound,
)

__all__ = ["CONTENT_TYPE_JSON", "CONTENT_TYPE_PROTOBUF", "metric_table_name", "parse", "tag_name"]


_NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_TEMPORALITY = {
    metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}
_MAX_TIME_NS = 2**63 - 1
_MIN_SCALE, _MAX_SCALE = -10, 20  # the range the OTLP data model allows
_INVALID_METRIC_RUN = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL_RUN = re.compile(r"[^a-zA-Z0-9]+")
_FIELD = "value"


def parse(body: bytes, *, content_type: str, db: str = "default") -> list[TableBatch]:
    """Decode an OTLP metrics export into one batch per table.

    Args:
        body: the request body, not compressed (the server undoes ``Content-Encoding``).
        content_type: the request's ``Content-Type``; parameters such as charset are ignored.
        db: database the batches belong to.

    Raises:
        ParseError: an undecodable body or a bad item (``item`` = its path in the request).
    """
    request = _decode(body, content_type)
    decoder = _Decoder()
    for r, resource_metrics in enumerate(request.resource_metrics):
        path = f"resource_metrics[{r}]"
        resource_tags = decoder.tags(resource_metrics.resource.attributes, f"{path}.resource")
        for s, scope_metrics in enumerate(resource_metrics.scope_metrics):
            scope = scope_metrics.scope
            scope_tags = {
                tag: value
                for tag, value in (("otel_scope_name", scope.name), ("otel_scope_version", scope.version))
                if value
            }
            for m, metric in enumerate(scope_metrics.metrics):
                item = f"{path}.scope_metrics[{s}].metrics[{m}]"
                decoder.metric(metric, resource_tags, scope_tags, item)
    return [rows.build(db) for rows in decoder.tables.values()]


def _decode(body: bytes, content_type: str) -> Any:
    request = ExportMetricsServiceRequest()
    media = media_type(content_type)
    if media in PROTOBUF_TYPES:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise ParseError(
                f"cannot decode OTLP metrics: not an ExportMetricsServiceRequest ({exc})"
            ) from exc
    elif media == CONTENT_TYPE_JSON:
        # json_format reads OTLP/JSON as is: camelCase or snake_case keys, enums as integers,
        # 64-bit integers as strings or numbers. Trace and span ids (hex in OTLP/JSON) only
        # occur in exemplars, which are dropped; hex is valid base64, so they never fail here.
        try:
            json_format.Parse(body, request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, RecursionError) as exc:
            raise ParseError(f"cannot decode OTLP metrics JSON: {exc}") from exc
    else:
        raise unsupported_type("metrics", content_type)
    return request


def metric_table_name(name: str) -> str | None:
    """The table of an OTLP metric name, or None if nothing of it survives sanitising."""
    table = "_".join(token for token in _INVALID_METRIC_RUN.split(name) if token)
    if table[:1].isdigit():
        table = "_" + table
    return table if table.strip("_") else None


def tag_name(key: str) -> str | None:
    """The tag name of an attribute key, or None if nothing of it survives sanitising."""
    reserved = len(key) > 4 and key.startswith("__") and key.endswith("__")
    inner = key[2:-2] if reserved else key
    name = _INVALID_LABEL_RUN.sub("_", inner)
    if reserved:
        name = f"__{name}__"
    if name[:1].isdigit():
        name = "key_" + name
    return name if name.strip("_") else None


def _number(value: float) -> str:
    """ECMAScript Number-to-String, as OpenTelemetry's ``AsString`` formats doubles."""
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0 or 1e-6 <= abs(value) < 1e21:
        return np.format_float_positional(value, trim="-")
    return np.format_float_scientific(value, trim="-", exp_digits=1)


def _plain(value: Any) -> Any:
    """An AnyValue as plain JSON-able Python (for arrays and key-value lists)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None if kind is None else getattr(value, kind)


def _stringify(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _number(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_plain(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return ""


class _Decoder:
    """Per-request state: the tables being filled and a cache of sanitised names."""

    def __init__(self) -> None:
        self.tables: dict[str, TableRows] = {}
        self._tag_names: dict[str, str] = {}

    def _rows(self, table: str, item: str) -> TableRows:
        rows = self.tables.get(table)
        if rows is None:
            rows = self.tables[table] = TableRows(table, item=item)
        return rows

    def _tag_name(self, key: str, item: str) -> str:
        name = self._tag_names.get(key)
        if name is not None:
            return name
        name = tag_name(key)
        if name is None:
            raise ParseError(
                f"cannot use attribute {key!r}: no letter or digit to make a tag name of", item=item
            )
        try:
            validate_column(name)
        except InvalidName as exc:
            raise ParseError(
                f"cannot use attribute {key!r} as tag {name!r}: {exc.reason}", item=item
            ) from exc
        if name == _FIELD:
            raise ParseError(
                f"cannot use attribute {key!r}: 'value' is the field of every metric table", item=item
            )
        self._tag_names[key] = name
        return name

    def tags(self, attributes: Iterable[Any], item: str) -> dict[str, str]:
        """Attributes → tags; keys that sanitise to one name are joined in key order."""
        by_name: dict[str, list[tuple[str, str]]] = {}
        for i, kv in enumerate(attributes):
            value = _stringify(kv.value)
            if value:
                by_name.setdefault(self._tag_name(kv.key, f"{item}.attributes[{i}]"), []).append(
                    (kv.key, value)
                )
        return {
            name: pairs[0][1] if len(pairs) == 1 else ";".join(v for _, v in sorted(pairs))
            for name, pairs in by_name.items()
        }

    def metric(self, metric: Any, resource: Mapping[str, str], scope: Mapping[str, str], item: str) -> None:
        table = metric_table_name(metric.name)
        if table is None:
            raise ParseError(f"cannot use metric name {metric.name!r}: it has no letter or digit", item=item)
        kind = metric.WhichOneof("data")
        if kind is None:
            return  # a metric without data has nothing to store
        data = getattr(metric, kind)
        generated = dict(scope)
        if kind in ("sum", "histogram", "exponential_histogram"):
            temporality = _TEMPORALITY.get(data.aggregation_temporality)
            if temporality is None:
                raise ParseError(
                    f"cannot use metric {metric.name!r}: aggregation temporality "
                    f"{data.aggregation_temporality} is not delta or cumulative",
                    item=item,
                )
            generated["otel_temporality"] = temporality
        if kind == "sum":
            generated["otel_monotonic"] = "true" if data.is_monotonic else "false"
        add = getattr(self, f"_{kind}")
        for i, point in enumerate(data.data_points):
            point_item = f"{item}.{kind}.data_points[{i}]"
            if point.time_unix_nano > _MAX_TIME_NS:
                raise ParseError(
                    f"cannot use time_unix_nano {point.time_unix_nano}: beyond the int64 range",
                    item=point_item,
                )
            tags = {**resource, **self.tags(point.attributes, point_item), **generated}
            add(table, point, tags, point_item)

    def _gauge(self, table: str, point: Any, tags: dict[str, str], item: str) -> None:
        if point.flags & _NO_RECORDED_VALUE:
            value: float | int = STALE_NAN
        else:
            kind = point.WhichOneof("value")
            if kind is None:
                raise ParseError("cannot use data point: it has neither as_double nor as_int", item=item)
            value = getattr(point, kind)
        self._rows(table, item).append(point.time_unix_nano, value, tags)

    _sum = _gauge

    def _summary(self, table: str, point: Any, tags: dict[str, str], item: str) -> None:
        t = point.time_unix_nano
        stale = bool(point.flags & _NO_RECORDED_VALUE)
        quantiles = self._rows(table, item)
        for q in point.quantile_values:
            quantiles.append(
                t, STALE_NAN if stale else q.value, {**tags, "quantile": format_bound(q.quantile)}
            )
        self._rows(f"{table}_sum", item).append(t, STALE_NAN if stale else point.sum, tags)
        self._rows(f"{table}_count", item).append(t, STALE_NAN if stale else float(point.count), tags)

    def _histogram(self, table: str, point: Any, tags: dict[str, str], item: str) -> None:
        bounds = np.array(point.explicit_bounds, dtype=np.float64)
        counts = np.array(point.bucket_counts, dtype=np.float64)
        if len(counts) and len(counts) != len(bounds) + 1:
            raise ParseError(
                f"cannot use histogram point: {len(bounds)} explicit bounds need "
                f"{len(bounds) + 1} bucket counts, got {len(counts)}",
                item=item,
            )
        if not (bounds[1:] > bounds[:-1]).all():  # compared, not subtracted: huge bounds overflow
            raise ParseError("cannot use histogram point: explicit bounds are not increasing", item=item)
        if len(counts):
            cumulative = np.cumsum(counts[:-1])
        elif point.flags & _NO_RECORDED_VALUE:
            cumulative = np.zeros(len(bounds))  # every bucket gets the staleness marker
        else:  # no buckets: only the +Inf one, which is the count
            bounds = cumulative = np.empty(0)
        les = [format_bound(b) for b in bounds.tolist()]
        les.append("+Inf")
        self._histogram_rows(
            table, point, tags, item, les=les, cumulative=[*cumulative.tolist(), float(point.count)]
        )

    def _exponential_histogram(self, table: str, point: Any, tags: dict[str, str], item: str) -> None:
        scale = point.scale
        if not _MIN_SCALE <= scale <= _MAX_SCALE:
            raise ParseError(
                f"cannot use exponential histogram point: scale {scale} outside [{_MIN_SCALE}, {_MAX_SCALE}]",
                item=item,
            )
        positive = np.array(point.positive.bucket_counts, dtype=np.float64)
        negative = np.array(point.negative.bucket_counts, dtype=np.float64)
        # OTLP bucket i holds (base**i, base**(i+1)]; negative bucket i mirrors it.
        positive_idx = point.positive.offset + np.arange(len(positive), dtype=np.int64)
        negative_idx = point.negative.offset + np.arange(len(negative), dtype=np.int64)
        les, cumulative = bucket_rows(
            negative_upper=-exponential_upper_bounds(scale, negative_idx),
            negative_counts=negative,
            zero_upper=point.zero_threshold if point.zero_count else None,
            zero_count=float(point.zero_count),
            positive_upper=exponential_upper_bounds(scale, positive_idx + 1),
            positive_counts=positive,
            total=float(point.count),
        )
        self._histogram_rows(table, point, tags, item, les=les, cumulative=cumulative.tolist())

    def _histogram_rows(
        self,
        table: str,
        point: Any,
        tags: dict[str, str],
        item: str,
        *,
        les: list[str],
        cumulative: list[float],
    ) -> None:
        t = point.time_unix_nano
        stale = bool(point.flags & _NO_RECORDED_VALUE)
        buckets = self._rows(f"{table}_bucket", item)
        for le, value in zip(les, cumulative, strict=True):
            buckets.append(t, STALE_NAN if stale else value, {**tags, "le": le})
        if point.HasField("sum") or stale:
            self._rows(f"{table}_sum", item).append(t, STALE_NAN if stale else point.sum, tags)
        self._rows(f"{table}_count", item).append(t, STALE_NAN if stale else float(point.count), tags)
