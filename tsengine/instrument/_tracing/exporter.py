"""Span exporters: finished spans to ``{endpoint}/v1/traces`` (OTLP/HTTP) or an embedded engine.

Who calls it: the tracer, for every finished sampled span (``on_end``, a span processor); the
runtime builds one from ``TELEMETRY_EXPORT`` / ``TRACING_EXPORTER_*`` (``hooks._apply_exporter``)
and starts it with the app. What comes in: :class:`Span` objects. What goes out:

* :class:`OtlpSpanExporter`: ``POST {endpoint}/v1/traces`` with
  ``Content-Type: application/x-protobuf`` and an ``ExportTraceServiceRequest`` body
  (hand-encoded, :mod:`.otlp`) — accepted by a tsengine server or any OpenTelemetry collector —
  over the standard library's ``http.client``;
* :class:`EmbeddedSpanExporter`: the same request bytes decoded by the server's own decoder
  (:func:`tsengine.protocols.otlp_traces.parse`) into rows of the ``spans`` table (declared
  append-only, as the server does) and written into a :class:`tsengine.Engine` in this process
  — the rows a tsengine server would store for the same spans.

Queue, worker and failure policy are :class:`~tsengine.instrument._push.BatchExporter`'s, the
one every SDK exporter uses: ``on_end`` only appends to a bounded queue of batches
(``batch_size`` spans each, ``max_queue`` spans in all) under a short lock — it never blocks on
the network and never raises; beyond ``max_queue`` the *oldest batch* is dropped and its spans
counted in ``tsengine_instrument_trace_export_dropped_total``; 5xx, 429, connection errors (and
an overloaded or unavailable engine) are retried with capped jittered exponential backoff
honouring ``Retry-After``, the batch kept at the head of the queue; any other 4xx (an engine's
``InvalidInput``) is final, counted in ``..._rejected_total``. The worker delivers when a batch
fills or every ``interval_s``; ``flush(timeout_s)`` delivers on the calling thread;
``shutdown(timeout_s)`` flushes and stops the worker (idempotent).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tsengine.instrument._embedded import EngineExporter, write_to_engine
from tsengine.instrument._push import Attempt, BatchExporter, HttpTarget, _Batch
from tsengine.instrument._tracing.otlp import encode_export_request

if TYPE_CHECKING:
    from tsengine.engine import Engine
    from tsengine.model import TableBatch

__all__ = ["EmbeddedSpanExporter", "OtlpSpanExporter", "SpanExporter", "traces_url"]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
CONTENT_TYPE = "application/x-protobuf"


def traces_url(endpoint: str) -> urllib.parse.SplitResult:
    """The parsed ``/v1/traces`` URL of ``endpoint`` (a base URL, or one already ending in it)."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"cannot use trace exporter endpoint {endpoint!r}: expected http(s)://host[:port]")
    path = parsed.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return parsed._replace(path=path)


class SpanExporter(BatchExporter):
    """A span processor on the shared queue: ``on_end`` queues, deliveries send OTLP bytes.

    Subclasses deliver :meth:`_body` (:meth:`_attempt`).

    Args:
        resource: resource attributes; ``service.name`` is set from ``service`` if absent.
        service: the ``service.name`` resource attribute.
        batch_size: spans per delivery.
        **kwargs: the queue and worker settings of
            :class:`~tsengine.instrument._push.BatchExporter` (``interval_s``, ``max_queue``,
            ``timeout_s``, ``max_backoff_s``, ``registry``).
    """

    stats_prefix: ClassVar[str] = "trace_export"
    stats_docs: ClassVar[Mapping[str, str]] = {
        "sent": "Spans accepted by the OTLP receiver (or written into the embedded engine).",
        "dropped": "Spans dropped from the full trace export queue (oldest batch first).",
        "rejected": "Spans in batches the receiver refused with a 4xx other than 429 (not retried).",
        "retries": "Failed span pushes that will be retried (5xx, 429, connection errors, overload).",
    }
    component: ClassVar[str] = "trace_exporter"
    unit: ClassVar[str] = "spans"
    thread_name: ClassVar[str] = "tsengine-trace-export"

    def __init__(
        self,
        *,
        resource: Mapping[str, Any] | None = None,
        service: str = "unknown_service",
        batch_size: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.resource: dict[str, Any] = {
            "service.name": service,
            "telemetry.sdk.name": "tsengine",
            "telemetry.sdk.language": "python",
            **(resource or {}),
        }

    #: The span processor hook: queue the finished span (never blocks, never raises).
    on_end = BatchExporter._append

    @property
    def queued_spans(self) -> int:
        return self._queued_rows

    def _body(self, batch: _Batch) -> bytes:
        """The batch's ``ExportTraceServiceRequest`` bytes, encoded once (kept for retries)."""
        if batch.body is None:
            batch.body = encode_export_request(batch.rows, self.resource)
        return batch.body


class OtlpSpanExporter(SpanExporter):
    """Batched background export of spans over OTLP/HTTP. See the module docstring.

    Args:
        endpoint: base URL (``http://host:4318``) or the full ``.../v1/traces`` URL.
        token: sent as ``Authorization: Bearer`` (a tsengine server wants the ``write`` scope).
        headers: more request headers (a collector's API key…).
        resource: resource attributes; ``service.name`` is set from ``service`` if absent.
        service: the ``service.name`` resource attribute.
        interval_s: seconds between pushes of a partial batch.
        max_queue: spans held at most; beyond, the oldest batch is dropped.
        batch_size: spans per request.
        timeout_s: connect/read timeout of one request.
        max_backoff_s: cap of the retry delay (``Retry-After`` included).
        registry: where the export counters are created.

    Raises:
        ValueError: an endpoint that is not ``http(s)://host[:port]``, or a bad setting.
    """

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        url = urllib.parse.urlunsplit(traces_url(endpoint))
        super().__init__(**kwargs)
        self.endpoint = url
        self._target = HttpTarget(
            url, content_type=CONTENT_TYPE, token=token, headers=headers, what="trace exporter endpoint"
        )

    def _attempt(self, batch: _Batch, timeout_s: float) -> Attempt:
        return self._target.post(self._body(batch), timeout_s)


class EmbeddedSpanExporter(EngineExporter, SpanExporter):
    """Background writes of spans into the ``spans`` table of an in-process :class:`tsengine.Engine`.

    Args:
        engine: an open engine to write into (not closed by the exporter).
        path: or a data directory, opened on first use — shared with an
            :class:`~tsengine.instrument.EmbeddedExporter` on the same directory — and released
            on shutdown.
        db: the target database.
        engine_settings: passed to ``Engine.open`` with ``path`` (by the first exporter to open it).
        **kwargs: as :class:`OtlpSpanExporter` (``resource``, ``service``, ``interval_s``,
            ``max_queue``, ``batch_size``, ``timeout_s``, ``max_backoff_s``, ``registry``).

    Raises:
        ValueError: neither or both of ``engine`` and ``path``.
    """

    _logged_partial = False

    def _attempt(self, batch: _Batch, timeout_s: float) -> Attempt:
        return write_to_engine(self._use, lambda: self._rows(batch), self._declare)

    def _declare(self, engine: Engine) -> None:
        from tsengine.protocols.otlp_traces import SPANS_TABLE

        engine.declare_table(SPANS_TABLE, db=self.db, append_only=True)

    def _rows(self, batch: _Batch) -> list[TableBatch]:
        """The rows the server would store: the OTLP bytes through the server's decoder (once)."""
        if batch.decoded is None:
            from tsengine.protocols import otlp_traces

            result = otlp_traces.parse(
                self._body(batch), content_type=otlp_traces.CONTENT_TYPE_PROTOBUF, db=self.db
            )
            if result.rejected:  # spans the server would refuse too; the rest is written
                level = logging.DEBUG if self._logged_partial else logging.WARNING
                self._logged_partial = True
                log.log(level, "embedded span export to %s: %s", self.endpoint, result.error_message)
            batch.decoded = [result.batch] if result.batch is not None else []
        return batch.decoded
