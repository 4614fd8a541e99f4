"""Message classes for Prometheus remote write 1.0, built without protoc.

The schema is ``prometheus/prompb/types.proto`` and ``remote.proto`` (package ``prometheus``),
field numbers copied from there; gogoproto options are dropped, they change nothing on the wire.
The descriptors are assembled as a :class:`~google.protobuf.descriptor_pb2.FileDescriptorProto`
and registered in a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`, so the
classes decode in protobuf's C backend (upb) and cannot clash with another library that registers
``prometheus.WriteRequest`` in the default pool.

Besides the real messages, this module defines a *column view* of the same bytes
(``WriteRequestColumns``): a second schema for the same wire format in which ``timeseries`` and
a series' ``labels`` are declared *singular* and ``Label``'s fields *repeated*. Protobuf merges
repeated occurrences of a singular message field and concatenates repeated fields while merging,
so upb turns the whole request into three flat containers with no Python code per label or
sample: every label name, every label value, and every ``Sample``'s encoded bytes (decoded by
numpy in :mod:`tsengine.protocols.prom_remote`). The label columns only line up when no label
omits a field (proto3 leaves empty strings off the wire); the decoder checks that against the
real messages' counts and falls back to them where it does not hold.

Pure data: building the classes does no I/O and reads no environment.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "BucketSpan",
    "Exemplar",
    "Histogram",
    "Label",
    "MetricMetadata",
    "Sample",
    "TimeSeries",
    "WriteRequest",
    "WriteRequestColumns",
]

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    *,
    repeated: bool = False,
    type_name: str | None = None,
    oneof: int | None = None,
) -> None:
    fld = msg.field.add(name=name, number=number, type=ftype, label=_REP if repeated else _OPT)
    if type_name is not None:
        fld.type_name = type_name
    if oneof is not None:
        fld.oneof_index = oneof


def _enum(parent: Any, name: str, values: list[str]) -> None:
    enum = parent.enum_type.add(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)


def _prompb_file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tsengine/prompb/remote.proto", package="prometheus", syntax="proto3"
    )

    msg = fdp.message_type.add(name="WriteRequest")
    _field(msg, "timeseries", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.TimeSeries")
    msg.reserved_range.add(start=2, end=3)  # Cortex's "source"; reserved by the spec
    _field(msg, "metadata", 3, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.MetricMetadata")

    msg = fdp.message_type.add(name="MetricMetadata")
    _enum(
        msg,
        "MetricType",
        ["UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET"],
    )
    _field(msg, "type", 1, _F.TYPE_ENUM, type_name=".prometheus.MetricMetadata.MetricType")
    _field(msg, "metric_family_name", 2, _F.TYPE_STRING)
    _field(msg, "help", 4, _F.TYPE_STRING)
    _field(msg, "unit", 5, _F.TYPE_STRING)

    msg = fdp.message_type.add(name="Sample")
    _field(msg, "value", 1, _F.TYPE_DOUBLE)
    _field(msg, "timestamp", 2, _F.TYPE_INT64)  # milliseconds since the epoch

    msg = fdp.message_type.add(name="Exemplar")
    _field(msg, "labels", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.Label")
    _field(msg, "value", 2, _F.TYPE_DOUBLE)
    _field(msg, "timestamp", 3, _F.TYPE_INT64)

    msg = fdp.message_type.add(name="Histogram")
    _enum(msg, "ResetHint", ["UNKNOWN", "YES", "NO", "GAUGE"])
    msg.oneof_decl.add(name="count")
    msg.oneof_decl.add(name="zero_count")
    _field(msg, "count_int", 1, _F.TYPE_UINT64, oneof=0)
    _field(msg, "count_float", 2, _F.TYPE_DOUBLE, oneof=0)
    _field(msg, "sum", 3, _F.TYPE_DOUBLE)
    _field(msg, "schema", 4, _F.TYPE_SINT32)
    _field(msg, "zero_threshold", 5, _F.TYPE_DOUBLE)
    _field(msg, "zero_count_int", 6, _F.TYPE_UINT64, oneof=1)
    _field(msg, "zero_count_float", 7, _F.TYPE_DOUBLE, oneof=1)
    _field(msg, "negative_spans", 8, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.BucketSpan")
    _field(msg, "negative_deltas", 9, _F.TYPE_SINT64, repeated=True)  # integer histograms
    _field(msg, "negative_counts", 10, _F.TYPE_DOUBLE, repeated=True)  # float histograms
    _field(msg, "positive_spans", 11, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.BucketSpan")
    _field(msg, "positive_deltas", 12, _F.TYPE_SINT64, repeated=True)
    _field(msg, "positive_counts", 13, _F.TYPE_DOUBLE, repeated=True)
    _field(msg, "reset_hint", 14, _F.TYPE_ENUM, type_name=".prometheus.Histogram.ResetHint")
    _field(msg, "timestamp", 15, _F.TYPE_INT64)
    _field(msg, "custom_values", 16, _F.TYPE_DOUBLE, repeated=True)  # schema -53 (NHCB) bounds

    msg = fdp.message_type.add(name="BucketSpan")
    _field(msg, "offset", 1, _F.TYPE_SINT32)  # first span: start index; later spans: gap
    _field(msg, "length", 2, _F.TYPE_UINT32)

    msg = fdp.message_type.add(name="TimeSeries")
    _field(msg, "labels", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.Label")
    _field(msg, "samples", 2, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.Sample")
    _field(msg, "exemplars", 3, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.Exemplar")
    _field(msg, "histograms", 4, _F.TYPE_MESSAGE, repeated=True, type_name=".prometheus.Histogram")

    msg = fdp.message_type.add(name="Label")
    _field(msg, "name", 1, _F.TYPE_STRING)
    _field(msg, "value", 2, _F.TYPE_STRING)
    return fdp


def _columns_file() -> descriptor_pb2.FileDescriptorProto:
    """The column view: same field numbers, singular (so merged) sub-messages."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tsengine/prompb/columns.proto", package="tsengine.prompb", syntax="proto3"
    )
    msg = fdp.message_type.add(name="WriteRequestColumns")
    _field(msg, "timeseries", 1, _F.TYPE_MESSAGE, type_name=".tsengine.prompb.SeriesColumns")

    msg = fdp.message_type.add(name="SeriesColumns")
    _field(msg, "labels", 1, _F.TYPE_MESSAGE, type_name=".tsengine.prompb.LabelColumns")
    _field(msg, "samples", 2, _F.TYPE_BYTES, repeated=True)

    msg = fdp.message_type.add(name="LabelColumns")
    _field(msg, "name", 1, _F.TYPE_STRING, repeated=True)
    _field(msg, "value", 2, _F.TYPE_STRING, repeated=True)
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_prompb_file())
_POOL.Add(_columns_file())


def _cls(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


WriteRequest = _cls("prometheus.WriteRequest")
MetricMetadata = _cls("prometheus.MetricMetadata")
TimeSeries = _cls("prometheus.TimeSeries")
Label = _cls("prometheus.Label")
Sample = _cls("prometheus.Sample")
Exemplar = _cls("prometheus.Exemplar")
Histogram = _cls("prometheus.Histogram")
BucketSpan = _cls("prometheus.BucketSpan")
WriteRequestColumns = _cls("tsengine.prompb.WriteRequestColumns")
