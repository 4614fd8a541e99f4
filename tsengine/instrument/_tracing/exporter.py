"""OtlpSpanExporter: batch finished spans to ``{endpoint}/v1/traces`` over OTLP/HTTP protobuf.

Who calls it: the tracer, for every finished sampled span (``on_end``, a span processor); the
runtime builds it from ``TRACING_EXPORTER_*`` (or the metrics exporter's endpoint and token)
and starts it with the app. What goes out: ``POST {endpoint}/v1/traces`` with
``Content-Type: application/x-protobuf`` and an ``ExportTraceServiceRequest`` body (hand-encoded,
:mod:`.otlp`) — accepted by a tsengine server or any OpenTelemetry collector — over the standard
library's ``http.client`` from one daemon thread.

The rules are the metrics exporter's (:mod:`tsengine.instrument._push`):

* ``on_end`` only appends to a bounded queue of batches (``batch_size`` spans each,
  ``max_queue`` spans in all) under a short lock: it never blocks on the network and never
  raises. Beyond ``max_queue`` the *oldest batch* is dropped and its spans counted in
  ``tsengine_instrument_trace_export_dropped_total``.
* 5xx, 429 and connection errors are retried with exponential backoff (0.5 s doubling to
  ``max_backoff_s``, full jitter, ``Retry-After`` honoured); the batch stays at the head of the
  queue, so a receiver that comes back gets everything still queued.
* any other 4xx is final: the batch is discarded, counted in ``..._rejected_total``, the first
  such answer logged at WARNING (later ones at DEBUG).

The worker sends when a batch fills or every ``interval_s``. ``flush(timeout_s)`` sends on the
calling thread; ``shutdown(timeout_s)`` flushes and stops the worker (idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tsengine.instrument._metrics import Counter
from tsengine.instrument._self_metrics import PREFIX
from tsengine.instrument._tracing.otlp import encode_export_request
from tsengine.instrument._tracing.span import Span

if TYPE_CHECKING:
    from tsengine.instrument._registry import CollectorRegistry

__all__ = ["OtlpSpanExporter", "traces_url"]

log = logging.getLogger("tsengine.instrument")

_OK, _REJECTED, _RETRY = "ok", "rejected", "retry"
TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> urllib.parse.SplitResult:
    """The parsed ``/v1/traces`` URL of ``endpoint`` (a base URL, or one already ending in it)."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"cannot use trace exporter endpoint {endpoint!r}: expected http(s)://host[:port]")
    path = parsed.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return parsed._replace(path=path)


class _Batch:
    __slots__ = ("body", "sealed", "spans")

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.sealed = False  # taken by a sender: no more spans go in
        self.body: bytes | None = None  # encoded once, kept for retries


class _Stats:
    NAMES = {
        "sent": "Spans accepted by the OTLP receiver.",
        "dropped": "Spans dropped from the full trace export queue (oldest batch first).",
        "rejected": "Spans in batches the receiver refused with a 4xx other than 429 (not retried).",
        "retries": "Failed span pushes that will be retried (5xx, 429, connection errors).",
    }

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.NAMES, 0)
        self.counters: dict[str, Any] = {}
        self._lock = threading.Lock()

    def bind(self, registry: CollectorRegistry) -> None:
        for key, doc in self.NAMES.items():
            name = f"{PREFIX}_trace_export_{key}"
            existing = registry.get(name)
            counter = existing if isinstance(existing, Counter) else None
            if counter is None:
                with contextlib.suppress(Exception):
                    counter = Counter(f"{name}_total", doc, registry=registry)
            if counter is not None:
                self.counters[key] = counter

    def inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.values[key] += n
        counter = self.counters.get(key)
        if counter is not None:
            with contextlib.suppress(Exception):
                counter.inc(n)


class OtlpSpanExporter:
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
    """

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        resource: Mapping[str, Any] | None = None,
        service: str = "unknown_service",
        interval_s: float = 5.0,
        max_queue: int = 10_000,
        batch_size: int = 512,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        url = traces_url(endpoint)
        if interval_s <= 0 or timeout_s <= 0 or max_backoff_s <= 0:
            raise ValueError(
                "cannot configure trace exporter: interval_s, timeout_s and max_backoff_s must be > 0"
            )
        if batch_size < 1 or max_queue < 1:
            raise ValueError("cannot configure trace exporter: batch_size and max_queue must be >= 1")
        self.endpoint = urllib.parse.urlunsplit(url)
        self._scheme, self._host, self._port = url.scheme, url.hostname or "", url.port
        self._path = url.path + (f"?{url.query}" if url.query else "")
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": "tsengine-instrument",
            **(headers or {}),
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.resource: dict[str, Any] = {
            "service.name": service,
            "telemetry.sdk.name": "tsengine",
            "telemetry.sdk.language": "python",
            **(resource or {}),
        }
        self.interval_s = interval_s
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats = _Stats()
        self._registry: CollectorRegistry | None = None
        if registry is not None:
            self.bind_registry(registry)

        self._lock = threading.Lock()  # the queue
        self._send_lock = threading.Lock()  # one request at a time (worker or flush)
        self._cond = threading.Condition(threading.Lock())  # worker wake-ups
        self._queue: deque[_Batch] = deque()
        self._queued = 0
        self._failures = 0
        self._retry_at = 0.0
        self._logged_rejection = False
        self._thread: threading.Thread | None = None
        self._wake = False
        self._stopping = False
        self._shut_down = False

    def bind_registry(self, registry: CollectorRegistry) -> None:
        """Mirror the export counters into ``registry`` (idempotent per registry)."""
        if self._registry is None:
            self._registry = registry
            self.stats.bind(registry)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon worker. Idempotent; a no-op after shutdown."""
        with self._cond:
            if self._thread is not None or self._shut_down:
                return
            self._thread = threading.Thread(target=self._run, name="tsengine-trace-export", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    @property
    def queued_spans(self) -> int:
        return self._queued

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the worker and flush what is queued within ``timeout_s``. Idempotent."""
        with self._cond:
            if self._shut_down:
                return
            self._shut_down = True
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        deadline = time.monotonic() + timeout_s
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.flush(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """Ask the worker to push now, skipping a pending backoff (returns at once)."""
        with self._cond:
            self._retry_at = 0.0
            self._wake = True
            self._cond.notify_all()

    # -- the span processor (never blocks, never raises) ------------------------------------------

    def on_end(self, span: Span) -> None:
        full = False
        dropped: _Batch | None = None
        with self._lock:
            q = self._queue
            if self._queued >= self.max_queue:  # make room first: the count never passes the bound
                dropped = q.popleft()
                self._queued -= len(dropped.spans)
            tail = q[-1] if q else None
            if tail is None or tail.sealed or len(tail.spans) >= self.batch_size:
                tail = _Batch()
                q.append(tail)
            tail.spans.append(span)
            self._queued += 1
            full = len(tail.spans) >= self.batch_size
        if dropped is not None:
            self.stats.inc("dropped", len(dropped.spans))
        if full and self._thread is not None:
            with self._cond:
                self._wake = True
                self._cond.notify_all()

    # -- sending ----------------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Send everything queued, on this thread; True if all of it was accepted within ``timeout_s``.

        Do not call it on an event loop that also serves the receiver (use ``asyncio.to_thread``).
        """
        deadline = time.monotonic() + timeout_s
        all_ok = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._send_lock.acquire(timeout=remaining):
                return all_ok and not self._queue
            try:
                batch = self._take()
                if batch is None:
                    return all_ok
                outcome = self._send(batch, min(self.timeout_s, max(remaining, 0.05)))
            finally:
                self._send_lock.release()
            if outcome == _RETRY:
                delay = min(self._retry_at - time.monotonic(), deadline - time.monotonic())
                if delay > 0:
                    time.sleep(delay)  # the caller asked to wait for the backoff; nothing to poll
                continue
            all_ok = all_ok and outcome == _OK

    def _take(self) -> _Batch | None:
        with self._lock:
            if not self._queue:
                return None
            batch = self._queue[0]
            batch.sealed = True
            return batch

    def _done(self, batch: _Batch) -> None:
        with self._lock:
            if self._queue and self._queue[0] is batch:  # else dropped meanwhile (already counted)
                self._queue.popleft()
                self._queued -= len(batch.spans)

    def _send(self, batch: _Batch, timeout_s: float) -> str:
        """One POST of ``batch``; updates the queue and counters; returns the outcome."""
        try:
            if batch.body is None:
                batch.body = encode_export_request(batch.spans, self.resource)
            body = batch.body
        except Exception:
            self._internal_error("encode")
            self._done(batch)
            self.stats.inc("rejected", len(batch.spans))
            return _REJECTED
        import http.client  # here, not at import: an app without an endpoint never needs it

        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout_s)
        retry_after: float | None = None
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            resp = conn.getresponse()
            status = resp.status
            text = resp.read(4096)
            retry_after = _retry_after(resp.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:
            status, text = 0, str(exc).encode()
        finally:
            conn.close()
        if 200 <= status < 300:
            self._done(batch)
            self.stats.inc("sent", len(batch.spans))
            self._failures = 0
            self._retry_at = 0.0
            return _OK
        if status == 429 or status >= 500 or status == 0:
            self._failures += 1
            self.stats.inc("retries")
            delay = min(self.max_backoff_s, 0.5 * 2 ** min(self._failures - 1, 16))
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff_s))
            self._retry_at = time.monotonic() + delay
            log.debug(
                "span export to %s failed (%s), retrying in %.2f s", self.endpoint, status or text, delay
            )
            return _RETRY
        self._done(batch)
        self.stats.inc("rejected", len(batch.spans))
        level = logging.DEBUG if self._logged_rejection else logging.WARNING
        self._logged_rejection = True
        log.log(
            level,
            "span export to %s refused with %d, dropping %d spans (not retried): %s",
            self.endpoint,
            status,
            len(batch.spans),
            text[:500].decode("utf-8", "replace"),
        )
        return _REJECTED

    # -- worker -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = now + self.interval_s if self._retry_at <= now else self._retry_at
                if not self._stopping and not self._wake:
                    self._cond.wait(max(0.0, due - now))
                self._wake = False
                if self._stopping:
                    return
            try:
                if time.monotonic() >= self._retry_at:
                    self._drain()
            except Exception:  # the worker must survive anything
                self._internal_error("trace_exporter")

    def _drain(self) -> None:
        while not self._stopping:
            with self._send_lock:
                batch = self._take()
                if batch is None:
                    return
                if self._send(batch, self.timeout_s) == _RETRY:
                    return

    def _internal_error(self, where: str) -> None:
        log.exception("tsengine trace exporter failed in %s", where)
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.self_metrics.errors.labels("trace_exporter").inc()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare: an HTTP date; keeps the import cheap

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
