"""Automatic spans: the request and call hooks, client-span helpers, and wiring into the runtime.

Who calls it: :meth:`Telemetry.apply` calls :func:`apply_tracing` with the config (tracing on:
configure the tracer, register the hooks, install the trace-id provider and build the span
exporter :func:`span_export_target` names); the middleware calls the registered
:class:`TracingRequestHook` around each request, the business decorators the
:class:`TracingCallHook` around each call; the httpx event hooks and the aiohttp ``TraceConfig`` call
:func:`start_client_span` / :func:`end_client_span`.

What the spans look like (OpenTelemetry's HTTP semantic conventions):

* SERVER span per request, continuing the incoming ``traceparent``; named ``GET /users/{id}``
  from the route *template* (``GET`` alone when no route matched); attributes
  ``http.request.method``, ``url.path``, ``http.route``, ``http.response.status_code``; ERROR
  when the status is 5xx or the handler raised (4xx is the client's error: status stays UNSET).
* CLIENT span per outgoing request, named by the method, child of the current span; its
  ``traceparent`` is injected into the request headers; ERROR for a 4xx/5xx answer or a failure.
* INTERNAL span per decorated business call, named ``<domain>.<operation>``; ERROR when the
  call raised.

An exception gets its ``exception`` event on the innermost span it left (see ``span.py``).
All hook methods are cheap and never block; the hook seam catches and counts their failures.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from tsengine.instrument._config import ConfigError
from tsengine.instrument._context import set_trace_context_provider
from tsengine.instrument._hooks import CallInfo, RequestInfo
from tsengine.instrument._tracing.exporter import (
    EmbeddedSpanExporter,
    OtlpSpanExporter,
    SpanExporter,
    traces_url,
)
from tsengine.instrument._tracing.propagation import extract, inject
from tsengine.instrument._tracing.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from tsengine.instrument._tracing.span import Span, SpanKind, StatusCode, current_span_var
from tsengine.instrument._tracing.tracer import _CURRENT, Tracer

if TYPE_CHECKING:
    from tsengine.instrument._config import TelemetryConfig
    from tsengine.instrument._runtime import Telemetry

__all__ = [
    "TracingCallHook",
    "TracingRequestHook",
    "apply_tracing",
    "check_tracing_config",
    "end_client_span",
    "get_tracer",
    "span_export_target",
    "start_client_span",
]

log = logging.getLogger("tsengine.instrument")

_UNMATCHED = "<unmatched>"  # the middleware's route for paths no route matched
_SERVER = SpanKind.SERVER
_CLIENT = SpanKind.CLIENT
_INTERNAL = SpanKind.INTERNAL


class TracingRequestHook:
    """A SERVER span per request (see the module docstring)."""

    __slots__ = ("tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def on_request_start(self, info: RequestInfo) -> object:
        tracer = self.tracer
        if not tracer.enabled:
            return None
        span = tracer._start(info.method, _SERVER, extract(info.headers), None, None, None, True)
        span.__enter__()
        return span

    def on_request_end(self, info: RequestInfo, token: object) -> None:
        if type(token) is not Span:
            return
        span = token
        try:
            if span.recording:
                route = info.route
                status = info.status
                attrs: dict[str, Any] = {"http.request.method": info.method, "url.path": info.path}
                if route and route != _UNMATCHED:
                    span.name = f"{info.method} {route}"
                    attrs["http.route"] = route
                if status is not None:
                    attrs["http.response.status_code"] = status
                if span._attributes:
                    span._attributes.update(attrs)
                else:
                    span._attributes = attrs
                if info.error is not None:
                    span.fail(info.error)
                elif status is not None and status >= 500:
                    span.set_status(StatusCode.ERROR)
        finally:
            span.__exit__(None, None, None)


class TracingCallHook:
    """An INTERNAL span per decorated business call."""

    __slots__ = ("tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def on_call_start(self, info: CallInfo) -> object:
        tracer = self.tracer
        if not tracer.enabled:
            return None
        span = tracer._start(f"{info.domain}.{info.operation}", _INTERNAL, _CURRENT, None, None, None, True)
        span.__enter__()
        return span

    def on_call_end(self, info: CallInfo, token: object) -> None:
        if type(token) is not Span:
            return
        span = token
        try:
            if span.recording:
                span.set_attribute("tsengine.domain", info.domain)
                span.set_attribute("tsengine.operation", info.operation)
                args = info.attributes.get("args")
                if isinstance(args, dict):
                    for name, value in args.items():
                        span.set_attribute(f"tsengine.arg.{name}", value)
                if info.error is not None:
                    span.fail(info.error)
        finally:
            span.__exit__(None, None, None)


# -- client spans ---------------------------------------------------------------------------------


def _client_tracer() -> Tracer | None:
    current = current_span_var.get()
    if current is not None and current.trace_id:
        return current._tracer
    from tsengine.instrument._runtime import get_telemetry  # lazy: the runtime imports this module

    tracer = get_telemetry().tracer
    return tracer if tracer.enabled else None


def start_client_span(
    method: str, url: str, host: str | None, headers: MutableMapping[str, str], tracer: Tracer | None = None
) -> Span | None:
    """Start a CLIENT span (child of the current span) and inject its ``traceparent`` into ``headers``.

    ``tracer``: default the current span's tracer, else the default runtime's (None when tracing
    is off: nothing is started or injected). Never raises: a failure is logged and counted.
    """
    try:
        tracer = tracer or _client_tracer()
        if tracer is None or not tracer.enabled:
            return None
        span = tracer._start(method, _CLIENT, _CURRENT, None, None, None, False)
        inject(headers, span)
        if span.recording:
            attrs: dict[str, Any] = {"http.request.method": method, "url.full": url}
            if host:
                attrs["server.address"] = host
            span._attributes = attrs
        return span
    except Exception:  # telemetry boundary: the outgoing request goes on untraced
        _failed("start_client_span")
        return None


def end_client_span(span: Span | None, status: int | None = None, error: BaseException | None = None) -> None:
    """End a span from :func:`start_client_span` with the response status or the failure. Never raises."""
    if span is None:
        return
    try:
        if span.recording:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 400:
                    span.set_status(StatusCode.ERROR)
            if error is not None:
                span.fail(error)
        span.end()
    except Exception:  # telemetry boundary
        _failed("end_client_span")


def _failed(where: str) -> None:
    log.exception("tracing failed in %s; the request continues", where)
    from tsengine.instrument._runtime import get_telemetry

    get_telemetry().record_error("tracing")


# -- wiring -----------------------------------------------------------------------------------------


def _trace_ids() -> tuple[str, str] | None:
    span = current_span_var.get()
    if span is None or not span.trace_id:
        return None
    return f"{span.trace_id:032x}", f"{span.span_id:016x}"


def sampler_for(rate: float) -> Sampler:
    """The default sampler: parent-based, ratio-based on the trace id for root spans."""
    return ParentBased(ALWAYS_ON if rate >= 1.0 else TraceIdRatioBased(rate))


def span_export_target(config: TelemetryConfig) -> tuple[str, str] | None:
    """Where finished spans go: ``("otlp", endpoint)``, ``("embedded", data_dir)`` or None.

    ``TRACING_EXPORTER_ENDPOINT`` wins when set (OTLP/HTTP there, whatever ``TELEMETRY_EXPORT``
    says); else ``TELEMETRY_EXPORT`` decides: ``http`` and ``otlp`` → OTLP/HTTP to
    ``TELEMETRY_EXPORTER_ENDPOINT``'s ``/v1/traces``, ``embedded`` → the ``spans`` table of the
    engine at ``TELEMETRY_EXPORT_PATH``, ``none`` → no span export. Tracing off → None.
    """
    if not config.tracing_on:
        return None
    if config.tracing_exporter_endpoint:
        return "otlp", config.tracing_exporter_endpoint
    kind = config.export_kind
    if kind in ("http", "otlp") and config.exporter_endpoint:
        return "otlp", config.exporter_endpoint
    if kind == "embedded" and config.export_path:
        return "embedded", config.export_path
    return None


def check_tracing_config(config: TelemetryConfig) -> None:
    """Raise ConfigError naming the variable when the trace exporter's endpoint is unusable."""
    target = span_export_target(config)
    if target is None or target[0] != "otlp":
        return
    endpoint = target[1]
    try:
        traces_url(endpoint)
    except ValueError:
        key = (
            "TRACING_EXPORTER_ENDPOINT" if config.tracing_exporter_endpoint else "TELEMETRY_EXPORTER_ENDPOINT"
        )
        raise ConfigError(f"cannot use {key}={endpoint!r}: expected http(s)://host[:port]", key=key) from None


def apply_tracing(rt: Telemetry, config: TelemetryConfig) -> None:
    """Configure ``rt.tracer`` from ``config``: hooks, trace-id provider, sampler, store and exporter.

    Starts no thread (the exporter's worker starts with ``Telemetry.start()``). Called by
    :meth:`Telemetry.apply`.
    """
    check_tracing_config(config)
    tracer = rt.tracer
    on = config.tracing_on
    tracer.configure(
        enabled=on, sampler=sampler_for(config.tracing_sampling_rate), max_traces=config.tracing_max_traces
    )
    hooks = tracer._hooks
    if on and hooks is None:
        hooks = tracer._hooks = (TracingRequestHook(tracer), TracingCallHook(tracer))
        rt.hooks.add_request_hook(hooks[0])
        rt.hooks.add_call_hook(hooks[1])
        # Events are stamped with the current trace and span ids from now on. The provider only
        # reads the process-wide current-span contextvar, so it is right for every instance and
        # stays installed (without spans it answers None).
        set_trace_context_provider(_trace_ids)
    elif not on and hooks is not None:
        tracer._hooks = None
        rt.hooks.remove_request_hook(hooks[0])
        rt.hooks.remove_call_hook(hooks[1])
    _apply_exporter(rt, config)


def _apply_exporter(rt: Telemetry, config: TelemetryConfig) -> None:
    """Build (not start) the span exporter :func:`span_export_target` names; replace or drop the old one."""
    tracer = rt.tracer
    target = span_export_target(config)
    token = config.tracing_exporter_token or config.exporter_token
    key = None
    if target is not None:
        key = (
            *target,
            token,
            config.tracing_exporter_batch_size,
            config.tracing_exporter_queue_size,
            config.tracing_exporter_flush_interval_s,
            config.service_name,
        )
    old_key, old = tracer._config_exporter
    if key == old_key and not (old is not None and old.is_shut_down):  # a stopped app gets a new one
        return
    if old is not None:
        tracer.remove_processor(old)
        old.shutdown(5.0)
    tracer._config_exporter = (None, None)
    if target is None:
        return
    settings: dict[str, Any] = {
        "batch_size": config.tracing_exporter_batch_size,
        "max_queue": config.tracing_exporter_queue_size,
        "interval_s": config.tracing_exporter_flush_interval_s,
        "service": config.service_name,
        "registry": rt.registry,
    }
    exporter: SpanExporter
    if target[0] == "embedded":
        exporter = EmbeddedSpanExporter(path=target[1], **settings)
    else:
        exporter = OtlpSpanExporter(target[1], token, **settings)
    tracer.add_processor(exporter)
    tracer._config_exporter = (key, exporter)


def get_tracer() -> Tracer:
    """The default runtime's tracer (disabled — handing out ids-less no-op spans — until
    ``configure()`` turns ``DISTRIBUTED_TRACING_ENABLED`` on)."""
    from tsengine.instrument._runtime import get_telemetry

    return get_telemetry().tracer
