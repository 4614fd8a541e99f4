"""A second schema for OTLP trace requests in which a span's attributes stay undecoded bytes.

The real ``ExportTraceServiceRequest`` gives every span attribute a ``KeyValue`` message object,
and creating and reading those objects is most of the cost of decoding spans (about 3 µs of
5 per span with six attributes). In this view ``Span.attributes`` (field 9) is declared
``repeated bytes`` instead — the same wire format, since a message field and a bytes field are
both length-delimited — so upb hands back each attribute's encoded ``KeyValue`` as a ``bytes``
object. Attributes repeat heavily across the spans of a request (method, server address,
user agent...), so :mod:`tsengine.protocols.otlp_traces` decodes each distinct encoding once
(with the real ``KeyValue`` class, which checks it) and looks the rest up.

The descriptors are copied from the installed ``opentelemetry-proto`` modules into a private
:class:`~google.protobuf.descriptor_pool.DescriptorPool` (no clash with the real classes in the
default pool), with that one field changed. Pure data: building the classes does no I/O.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["ExportTraceServiceRequestView"]

_ATTRIBUTES_FIELD = 9  # Span.attributes in opentelemetry/proto/trace/v1/trace.proto


def _build() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        if module is trace_pb2:
            (span,) = [m for m in fdp.message_type if m.name == "Span"]
            (field,) = [f for f in span.field if f.number == _ATTRIBUTES_FIELD]
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest")
    )


#: ``ExportTraceServiceRequest`` with ``Span.attributes`` as ``repeated bytes``.
ExportTraceServiceRequestView: Any = _build()
