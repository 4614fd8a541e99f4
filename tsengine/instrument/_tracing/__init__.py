"""Distributed tracing for ``tsengine.instrument``: a lean tracer, W3C propagation, OTLP export.

Data flow::

    middleware ──RequestHook──▶ SERVER span (continues the incoming traceparent)
    decorators ──CallHook─────▶ INTERNAL span          │  current span: one contextvar
    httpx / aiohttp client ───▶ CLIENT span + traceparent injected
    application: tracer.start_as_current_span(...), @tracer.traced
                     │ span.end() (sampled spans only)
                     ├──▶ SpanStore: newest TRACING_MAX_TRACES traces in memory
                     └──▶ OtlpSpanExporter queue ──worker──▶ POST {endpoint}/v1/traces (protobuf)

Modules: ``span`` (Span, SpanContext, SpanKind, StatusCode), ``sampling`` (the four OTel
samplers), ``propagation`` (inject/extract of traceparent/tracestate), ``tracer`` (Tracer,
SpanStore), ``otlp`` (hand-written protobuf encoder), ``exporter`` (OtlpSpanExporter,
EmbeddedSpanExporter), ``hooks`` (automatic spans and wiring into the runtime).
Imports only the standard library.

Why not the OpenTelemetry SDK underneath: an OTel span costs ~14 µs to start and end on this
machine (context objects, attribute bounding, locks, a processor chain); the goal here is a
fifth of that. The wire formats (traceparent, OTLP) are what make us interoperable, not the
SDK; spans from either side continue each other's traces.
"""

from tsengine.instrument._tracing.exporter import EmbeddedSpanExporter, OtlpSpanExporter
from tsengine.instrument._tracing.hooks import get_tracer
from tsengine.instrument._tracing.propagation import extract, inject
from tsengine.instrument._tracing.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from tsengine.instrument._tracing.span import Link, Span, SpanContext, SpanKind, StatusCode
from tsengine.instrument._tracing.tracer import SpanProcessor, SpanStore, Tracer, current_span

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "EmbeddedSpanExporter",
    "Link",
    "OtlpSpanExporter",
    "ParentBased",
    "Sampler",
    "Span",
    "SpanContext",
    "SpanKind",
    "SpanProcessor",
    "SpanStore",
    "StatusCode",
    "TraceIdRatioBased",
    "Tracer",
    "current_span",
    "extract",
    "get_tracer",
    "inject",
]
