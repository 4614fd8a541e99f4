"""tsengine.instrument: the in-process instrumentation SDK.

Who calls it: a service owner's application. What comes in: counter increments, gauge sets,
histogram observations, info pairs and enum states (prometheus_client's API: switching is a
change of import), manual
``metrics_collector.record_metric(...)`` calls, events, request/query/call timings from the
middleware, decorators and wrappers, and psutil samples from a background thread. What goes
out: ``/metrics`` (Prometheus text or OpenMetrics), ``/health/telemetry`` (JSON), JSON
exports, event subscriptions and streams, and — through the :class:`Exporter` seam, by
:class:`HttpExporter` — batches pushed to a tsengine server's ``/api/v1/import`` (or, by
:class:`OtlpMetricsExporter`, OTLP/HTTP ``/v1/metrics``; by :class:`EmbeddedExporter`, written
into an engine in the same process).

Tracing (``DISTRIBUTED_TRACING_ENABLED``, :mod:`tsengine.instrument._tracing`): spans from
:func:`get_tracer` and automatically from the middleware, HTTP clients and decorators, W3C
``traceparent`` in and out (:func:`inject`, :func:`extract`), and — by
:class:`OtlpSpanExporter` — OTLP/HTTP ``/v1/traces``.

Importing this package is cheap and side-effect free: no duckdb, pyarrow or aiohttp, no
thread, no environment read. ``configure()`` reads the environment; ``setup_telemetry_for_app``
or ``get_telemetry().start()`` starts the background sampler. Framework adapters live in
:mod:`tsengine.instrument.asgi` and :mod:`tsengine.instrument.aiohttp`.

Quick start::

    from tsengine.instrument import Counter, configure, setup_telemetry_for_app

    configure()                          # from os.environ
    app = FastAPI()
    setup_telemetry_for_app(app)         # middleware, /metrics, /health/telemetry
    orders = Counter("orders_total", "Orders placed.", ["plan"])
    orders.labels("pro").inc()
"""

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock, SystemClock
from tsengine.instrument._collector import DataPoint, MetricsCollector
from tsengine.instrument._config import ConfigError, TelemetryConfig
from tsengine.instrument._context import (
    TelemetryContext,
    bind_context,
    current_context,
    current_trace_ids,
    new_correlation_id,
    set_trace_context_provider,
)
from tsengine.instrument._dbapi import instrument_connection, sql_operation
from tsengine.instrument._decorators import (
    billing_telemetry,
    document_telemetry,
    payment_telemetry,
    telemetry,
    user_activity_telemetry,
)
from tsengine.instrument._embedded import EmbeddedExporter
from tsengine.instrument._event import Event, EventCategory, EventSeverity
from tsengine.instrument._events import EventTracker
from tsengine.instrument._export import Exporter
from tsengine.instrument._exposition import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_OPENMETRICS,
    generate_latest,
    generate_openmetrics,
    to_json,
)
from tsengine.instrument._family import Collector, MetricFamily, MetricType, Sample
from tsengine.instrument._hooks import CallHook, CallInfo, Hooks, RequestHook, RequestInfo
from tsengine.instrument._http_client import (
    AsyncInstrumentedTransport,
    InstrumentedTransport,
    httpx_event_hooks,
)
from tsengine.instrument._http_server import make_asgi_app, make_wsgi_app, start_http_server
from tsengine.instrument._metrics import (
    DEFAULT_BUCKETS,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Metric,
    Summary,
)
from tsengine.instrument._names import MetricDefinitionError
from tsengine.instrument._noop import NOOP_METRIC, NoopMetric
from tsengine.instrument._otlp_metrics_export import OtlpMetricsExporter
from tsengine.instrument._performance import PerformanceMonitor, SlowOperation
from tsengine.instrument._push import HttpExporter
from tsengine.instrument._registry import REGISTRY, CollectorRegistry, Registry
from tsengine.instrument._runtime import Telemetry, configure, get_telemetry
from tsengine.instrument._security import SecurityMonitor
from tsengine.instrument._setup import setup_telemetry_for_app
from tsengine.instrument._subscription import EventStream, Subscription
from tsengine.instrument._system import SystemMetrics
from tsengine.instrument._timer import Timer
from tsengine.instrument._tracing import (
    ALWAYS_OFF,
    ALWAYS_ON,
    EmbeddedSpanExporter,
    OtlpSpanExporter,
    ParentBased,
    Sampler,
    Span,
    SpanContext,
    SpanKind,
    SpanProcessor,
    StatusCode,
    TraceIdRatioBased,
    Tracer,
    current_span,
    extract,
    get_tracer,
    inject,
)

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "CONTENT_TYPE_LATEST",
    "CONTENT_TYPE_OPENMETRICS",
    "DEFAULT_BUCKETS",
    "NOOP_METRIC",
    "REGISTRY",
    "SYSTEM_CLOCK",
    "AsyncInstrumentedTransport",
    "CallHook",
    "CallInfo",
    "Clock",
    "Collector",
    "CollectorRegistry",
    "ConfigError",
    "Counter",
    "DataPoint",
    "EmbeddedExporter",
    "EmbeddedSpanExporter",
    "Enum",
    "Event",
    "EventCategory",
    "EventSeverity",
    "EventStream",
    "EventTracker",
    "Exporter",
    "Gauge",
    "Histogram",
    "Hooks",
    "HttpExporter",
    "Info",
    "InstrumentedTransport",
    "Metric",
    "MetricDefinitionError",
    "MetricFamily",
    "MetricType",
    "MetricsCollector",
    "NoopMetric",
    "OtlpMetricsExporter",
    "OtlpSpanExporter",
    "ParentBased",
    "PerformanceMonitor",
    "Registry",
    "RequestHook",
    "RequestInfo",
    "Sample",
    "Sampler",
    "SecurityMonitor",
    "SlowOperation",
    "Span",
    "SpanContext",
    "SpanKind",
    "SpanProcessor",
    "StatusCode",
    "Subscription",
    "Summary",
    "SystemClock",
    "SystemMetrics",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryContext",
    "Timer",
    "TraceIdRatioBased",
    "Tracer",
    "billing_telemetry",
    "bind_context",
    "configure",
    "current_context",
    "current_span",
    "current_trace_ids",
    "document_telemetry",
    "event_tracker",
    "extract",
    "generate_latest",
    "generate_openmetrics",
    "get_telemetry",
    "get_tracer",
    "httpx_event_hooks",
    "inject",
    "instrument_connection",
    "make_asgi_app",
    "make_wsgi_app",
    "metrics_collector",
    "new_correlation_id",
    "payment_telemetry",
    "performance_monitor",
    "set_trace_context_provider",
    "setup_telemetry_for_app",
    "sql_operation",
    "start_http_server",
    "telemetry",
    "to_json",
    "user_activity_telemetry",
]

# The default instance's components. configure() updates them in place, so these names stay
# valid for the life of the process. Building them starts no thread and reads no environment.
metrics_collector: MetricsCollector = get_telemetry().metrics
event_tracker: EventTracker = get_telemetry().events
performance_monitor: PerformanceMonitor = get_telemetry().performance
