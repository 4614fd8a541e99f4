"""Queued exporters: the one bounded queue, worker and retry policy every SDK exporter uses.

Who calls it: the runtime (``Telemetry.set_exporter`` attaches an exporter, ``Telemetry.start``
starts it; the tracer hands finished spans to a span exporter), or the application directly.
What it holds: :class:`BatchExporter` — the bounded queue of batches, the daemon worker,
delivery with retries and capped jittered backoff, ``flush``/``shutdown`` and the counters —
and :class:`HttpTarget`, the one HTTP poster (stdlib ``http.client``; no aiohttp, pyarrow or
duckdb here). Built on it:

* :class:`QueuedExporter` (here): the :class:`~tsengine.instrument.Exporter` protocol for
  metrics, events and data points — registry snapshots every ``interval_s``, an event
  subscription, audit events spilled rather than lost;
* :class:`HttpExporter` (here): NDJSON rows ``{"table","time","tags","fields"}`` in
  ``POST {endpoint}/api/v1/import?db=...``;
* :class:`~tsengine.instrument.OtlpMetricsExporter` (``_otlp_metrics_export``): metrics as an
  OTLP/HTTP protobuf ``ExportMetricsServiceRequest`` to ``{endpoint}/v1/metrics``;
* :class:`~tsengine.instrument.EmbeddedExporter` (``_embedded``): the same rows as
  ``HttpExporter``, written straight into a :class:`tsengine.Engine` in this process;
* the span exporters (``_tracing/exporter``): ``OtlpSpanExporter`` (``{endpoint}/v1/traces``)
  and ``EmbeddedSpanExporter`` (the engine's ``spans`` table), fed by ``on_end``.

Row shapes (HttpExporter and EmbeddedExporter):

* a metric sample is a row of the table named like the exposed sample (``orders_total``,
  ``latency_seconds_bucket`` with tag ``le``, ``latency_seconds_sum``…), its labels plus
  ``service`` as tags and the field ``value`` — the shape of Prometheus remote write, so
  ``/federate`` and remote read give the metric back under its own name. Non-finite values
  (NaN, ±Inf) are skipped: JSON cannot carry them.
* an event is a row of ``events`` (``events_table``): tags ``service``, ``category``,
  ``severity``, ``name``; fields ``id``, ``message``, ``attributes`` (JSON text) and the
  context ids that are set.

Queue and failure policy (:class:`BatchExporter`, the same for every exporter):

* ``export_*`` and ``on_end`` only append to a bounded in-memory queue of batches
  (``batch_size`` items each, ``max_queue`` items in all) under a short lock: they never block
  on the network and never raise. When an item takes the queue past ``max_queue``, the oldest
  batch is dropped and its items counted in ``tsengine_instrument_export_dropped_total``
  (spans: ``..._trace_export_dropped_total``); audit events in a dropped batch go to the
  tracker's spill file (``EVENTS_AUDIT_SPILL_PATH``), or, without one, are logged at ERROR with
  their content and counted in ``tsengine_instrument_audit_events_lost_total``.
* a retryable failure (HTTP: 5xx, 429, connection errors; embedded: engine overloaded or
  unavailable) is retried with exponential backoff (0.5 s doubling, each wait drawn between
  half and all of it; ``Retry-After`` honoured, capped at ``max_backoff_s``); the batch stays
  at the head of the queue meanwhile, so a target that comes back receives everything still
  queued.
* a final refusal (HTTP: any other 4xx; embedded: invalid input) discards the batch, counts its
  items in ``..._rejected_total`` and logs the first such answer at WARNING (later ones at
  DEBUG), so a bad token cannot retry forever or flood the log.

The server (and the engine) store a request all or nothing, so one row it refuses (a label
named like the ``value`` field, a type conflict with an existing table) takes its whole batch
with it.

Lifecycle: construction starts nothing. ``start()`` starts one daemon thread, which delivers
when a span batch fills, on ``wake()`` and every ``interval_s`` (after a registry snapshot, for
``QueuedExporter``); ``shutdown(timeout_s)`` (``QueuedExporter``: takes a last snapshot,)
flushes and stops it (idempotent). ``flush(timeout_s)`` delivers on the calling thread — do not
call it on an event loop that also serves the target server.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tsengine.instrument._event import Event, EventCategory
from tsengine.instrument._metrics import Counter
from tsengine.instrument._self_metrics import PREFIX

if TYPE_CHECKING:
    from tsengine.instrument._collector import DataPoint
    from tsengine.instrument._family import MetricFamily
    from tsengine.instrument._registry import CollectorRegistry
    from tsengine.instrument._runtime import Telemetry
    from tsengine.instrument._subscription import Subscription

__all__ = ["BatchExporter", "HttpExporter", "HttpTarget", "QueuedExporter"]

log = logging.getLogger(__name__)

_OK, _REJECTED, _RETRY = "ok", "rejected", "retry"
#: One delivery's answer: (outcome, retry_after_s or None, detail for the log).
Attempt = tuple[str, float | None, str]


@dataclass(slots=True)
class _Batch:
    rows: list[Any] = field(default_factory=list)  # rows, Events, Points or Spans; encoded at send time
    sealed: bool = False  # taken by a sender: no more items go in
    sending: bool = False  # a delivery is in flight: the full queue drops the next batch instead
    body: bytes | None = None  # encoded once, re-sent as is on retries
    dict_rows: list[dict[str, Any]] | None = None  # rows as import dicts (events converted)
    decoded: list[Any] | None = None  # the engine's TableBatches (embedded span export)


class _Stats:
    """Counters of one exporter: plain ints (always) mirrored into a registry (once attached).

    ``prefix`` names them: ``tsengine_instrument_{prefix}_{sent,dropped,rejected,retries}_total``.
    """

    def __init__(self, prefix: str, docs: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.docs = docs
        self.values = dict.fromkeys(docs, 0)
        self.counters: dict[str, Any] = {}
        self._lock = threading.Lock()

    def bind(self, registry: CollectorRegistry) -> None:
        for key, doc in self.docs.items():
            name = f"{PREFIX}_{self.prefix}_{key}"
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


class HttpTarget:
    """Where an HTTP exporter POSTs: the parsed URL and the fixed headers. Thread-safe.

    Args:
        url: the full URL requests go to (``http`` or ``https``; query kept).
        content_type: the body's ``Content-Type``.
        token: sent as ``Authorization: Bearer``.
        headers: more request headers (a collector's API key…); override the defaults.
        what: names the endpoint in the error (``exporter endpoint``, ``trace exporter endpoint``).

    Raises:
        ValueError: ``url`` is not ``http(s)://host[:port]...``.
    """

    def __init__(
        self,
        url: str,
        *,
        content_type: str,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        what: str = "exporter endpoint",
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"cannot use {what} {url!r}: expected http(s)://host[:port]")
        self.url = url
        self._scheme, self._host, self._port = parsed.scheme, parsed.hostname, parsed.port
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self.headers = {"Content-Type": content_type, "User-Agent": "tsengine-instrument", **(headers or {})}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def post(self, body: bytes, timeout_s: float) -> Attempt:
        """One POST (blocks up to ``timeout_s`` per socket operation): 2xx ok; 5xx, 429 and
        connection errors retry (with the ``Retry-After`` seconds); any other status is final."""
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout_s)
        retry_after: float | None = None
        try:
            conn.request("POST", self._path, body=body, headers=self.headers)
            resp = conn.getresponse()
            status = resp.status
            text = resp.read(4096)
            retry_after = _retry_after(resp.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:
            status, text = 0, str(exc).encode()
        finally:
            conn.close()
        if 200 <= status < 300:
            return _OK, None, ""
        detail = text[:500].decode("utf-8", "replace")
        detail = f"{status}: {detail}" if status else detail
        if status == 429 or status >= 500 or status == 0:
            return _RETRY, retry_after, detail
        return _REJECTED, None, detail


class BatchExporter:
    """The queue, worker, delivery policy, flush, shutdown and counters of every exporter.

    Subclasses say how one batch is delivered (:meth:`_attempt`), may run periodic work before
    each delivery round (:meth:`_tick`: the registry snapshot) and may react to a dropped batch
    (:meth:`_drop`: audit events). Items go in with :meth:`_append` (one item: the span hot
    path, a few hundred ns) or :meth:`_enqueue` (a list). Not for direct use.

    Args:
        interval_s: seconds between delivery rounds (and ``_tick`` calls).
        max_queue: items held in memory at most; beyond, the oldest batch is dropped.
        batch_size: items per delivery.
        timeout_s: time limit of one delivery.
        max_backoff_s: cap of the retry delay (``Retry-After`` included).
        registry: where the counters are created.
    """

    #: Where deliveries go, for logs and ``/health/telemetry``.
    endpoint: str = ""
    #: The counters are ``tsengine_instrument_{stats_prefix}_{key}_total``.
    stats_prefix: ClassVar[str] = "export"
    stats_docs: ClassVar[Mapping[str, str]] = {
        "sent": "Rows accepted by the export target (server, collector or embedded engine).",
        "dropped": "Rows dropped from the full export queue (oldest batch first).",
        "rejected": "Rows in batches the target refused for good (HTTP 4xx other than 429; not retried).",
        "retries": "Failed deliveries that will be retried (5xx, 429, connection errors, overload).",
    }
    #: The ``component`` label of ``tsengine_instrument_errors_total`` for internal failures.
    component: ClassVar[str] = "exporter"
    #: What a queued item is, in log lines.
    unit: ClassVar[str] = "rows"
    thread_name: ClassVar[str] = "tsengine-instrument-export"

    def __init__(
        self,
        *,
        interval_s: float = 5.0,
        max_queue: int = 10_000,
        batch_size: int = 1000,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0 or max_backoff_s <= 0:
            raise ValueError("cannot configure exporter: interval_s, timeout_s and max_backoff_s must be > 0")
        if batch_size < 1 or max_queue < 1:
            raise ValueError("cannot configure exporter: batch_size and max_queue must be >= 1")
        self.interval_s = interval_s
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats = _Stats(self.stats_prefix, self.stats_docs)
        self._registry: CollectorRegistry | None = None
        if registry is not None:
            self.bind_registry(registry)

        self._lock = threading.Lock()  # the queue
        self._send_lock = threading.Lock()  # one delivery at a time (worker or flush)
        self._cond = threading.Condition(threading.Lock())  # worker wake-ups
        self._queue: deque[_Batch] = deque()
        self._queued_rows = 0
        self._failures = 0
        self._retry_at = 0.0
        self._logged_rejection = False
        self._thread: threading.Thread | None = None
        self._wake = False  # wake(): tick and deliver now
        self._kick = False  # a batch filled: deliver now
        self._stopping = False
        self._shut_down = False

    def bind_registry(self, registry: CollectorRegistry) -> None:
        """Mirror the counters into ``registry`` (the first registry bound wins)."""
        if self._registry is None:
            self._registry = registry
            self.stats.bind(registry)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon worker. Idempotent; a no-op after shutdown."""
        with self._cond:
            if self._thread is not None or self._shut_down:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    @property
    def queued_rows(self) -> int:
        """Items queued now (rows, data points or spans)."""
        return self._queued_rows

    def wake(self) -> None:
        """Ask the worker to tick and deliver now, skipping a pending backoff (returns at once)."""
        with self._cond:
            self._retry_at = 0.0
            self._wake = True
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Deliver everything queued, on this thread; True if it all was accepted within ``timeout_s``.

        Retryable failures are retried (with backoff) until the deadline; a refused batch is
        dropped and makes the answer False. Blocks.
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
                    time.sleep(delay)  # the caller asked to wait; no state to poll
                continue
            all_ok = all_ok and outcome == _OK

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the worker, run the last :meth:`_final` work, flush within ``timeout_s``. Idempotent."""
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
        self._final()
        try:
            self.flush(max(0.0, deadline - time.monotonic()))
        finally:
            with self._send_lock:
                self._close()

    # -- what subclasses provide -------------------------------------------------------------------

    def _attempt(self, batch: _Batch, timeout_s: float) -> Attempt:
        """Deliver ``batch`` once: ``(outcome, retry_after_s or None, detail for the log)``.

        ``outcome`` is ``"ok"``, ``"retry"`` (the batch stays queued) or ``"rejected"`` (final).
        An exception counts as rejected and is logged with its traceback.
        """
        raise NotImplementedError

    def _tick(self) -> None:
        """Periodic work of the worker before a delivery round (default: nothing)."""

    def _final(self) -> None:
        """Work of ``shutdown`` between stopping the worker and the last flush (default: nothing)."""

    def _close(self) -> None:
        """Release what deliveries hold, after the last flush of ``shutdown`` (default: nothing)."""

    # -- queue -------------------------------------------------------------------------------------

    def _append(self, item: Any) -> None:
        """Queue one item: the hot path (a finished span). Never blocks on I/O, never raises."""
        dropped = None
        with self._lock:
            q = self._queue
            tail = q[-1] if q else None
            if tail is None or tail.sealed or len(tail.rows) >= self.batch_size:
                tail = _Batch()
                q.append(tail)
            rows = tail.rows
            rows.append(item)
            self._queued_rows += 1
            if self._queued_rows > self.max_queue:  # one item over: the oldest batch goes
                dropped = self._pop_oldest()
            full = len(rows) >= self.batch_size
        if dropped is not None:
            self._drop(dropped)
        if full and self._thread is not None:
            with self._cond:
                self._kick = True
                self._cond.notify_all()

    def _enqueue(self, rows: list[Any]) -> None:
        """Queue several items (a snapshot); the oldest batches go while the queue is over its bound."""
        if not rows:
            return
        dropped: list[_Batch] = []
        with self._lock:
            q = self._queue
            for row in rows:
                tail = q[-1] if q else None
                if tail is None or tail.sealed or len(tail.rows) >= self.batch_size:
                    tail = _Batch()
                    q.append(tail)
                tail.rows.append(row)
                self._queued_rows += 1
                while self._queued_rows > self.max_queue and q:
                    dropped.append(self._pop_oldest())
        for batch in dropped:
            self._drop(batch)

    def _pop_oldest(self) -> _Batch:
        """Remove the oldest batch not being delivered right now (caller holds ``_lock``).

        The one in flight stays, so that each item ends up counted once — sent, rejected or
        dropped — unless it is the only batch (a ``batch_size`` above ``max_queue``).
        """
        q = self._queue
        if q[0].sending and len(q) > 1:
            old = q[1]
            del q[1]
        else:
            old = q.popleft()
        self._queued_rows -= len(old.rows)
        return old

    def _drop(self, batch: _Batch) -> None:
        """A batch left the full queue undelivered: count it."""
        self.stats.inc("dropped", len(batch.rows))

    def _take(self) -> _Batch | None:
        with self._lock:
            if not self._queue:
                return None
            batch = self._queue[0]
            batch.sealed = batch.sending = True
            return batch

    def _done(self, batch: _Batch) -> None:
        with self._lock:
            if self._queue and self._queue[0] is batch:  # else dropped meanwhile (already counted)
                self._queue.popleft()
                self._queued_rows -= len(batch.rows)

    # -- delivering --------------------------------------------------------------------------------

    def _send(self, batch: _Batch, timeout_s: float) -> str:
        """One delivery of ``batch``; updates the queue and counters; returns the outcome."""
        try:
            outcome, retry_after, detail = self._attempt(batch, timeout_s)
        except Exception:
            self._internal_error("deliver")
            outcome, retry_after, detail = _REJECTED, None, "internal error (logged above)"
        finally:
            batch.sending = False  # waiting for a retry, it is the oldest again
        if outcome == _OK:
            self._done(batch)
            self.stats.inc("sent", len(batch.rows))
            self._failures = 0
            self._retry_at = 0.0
            return _OK
        if outcome == _RETRY:
            self._failures += 1
            self.stats.inc("retries")
            delay = min(self.max_backoff_s, 0.5 * 2 ** min(self._failures - 1, 16))
            delay = random.uniform(delay / 2, delay)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff_s))
            self._retry_at = time.monotonic() + delay
            with self._cond:  # a failure seen by flush() on another thread: the worker retries too
                self._cond.notify_all()
            log.debug("export to %s failed (%s), retrying in %.2f s", self.endpoint, detail, delay)
            return _RETRY
        self._done(batch)
        self.stats.inc("rejected", len(batch.rows))
        level = logging.DEBUG if self._logged_rejection else logging.WARNING
        self._logged_rejection = True
        log.log(
            level,
            "export to %s refused with %s, dropping %d %s (not retried)",
            self.endpoint,
            detail,
            len(batch.rows),
            self.unit,
        )
        return _REJECTED

    # -- worker ------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + self.interval_s
        while True:
            with self._cond:
                now = time.monotonic()
                due = next_tick if self._retry_at <= now else min(next_tick, self._retry_at)
                if not self._stopping and not self._wake and not self._kick:
                    self._cond.wait(max(0.0, due - now))
                woken, self._wake, self._kick = self._wake, False, False
                if self._stopping:
                    return
            try:
                now = time.monotonic()
                if woken or now >= next_tick:
                    self._tick()
                    next_tick = now + self.interval_s
                if time.monotonic() >= self._retry_at:
                    self._drain()
            except Exception:  # the worker must survive anything
                self._internal_error(self.component)

    def _drain(self) -> None:
        while not self._stopping:
            with self._send_lock:
                batch = self._take()
                if batch is None:
                    return
                if self._send(batch, self.timeout_s) == _RETRY:
                    return

    def _internal_error(self, where: str) -> None:
        log.exception("tsengine %s failed in %s", self.component.replace("_", " "), where)
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.self_metrics.errors.labels(self.component).inc()


class QueuedExporter(BatchExporter):
    """The :class:`~tsengine.instrument.Exporter` protocol on :class:`BatchExporter`: metrics,
    events and data points.

    Subclasses say how one batch is delivered (:meth:`_attempt`) and may reshape what is queued
    (``export_*``). Not for direct use: see :class:`HttpExporter`,
    :class:`~tsengine.instrument.OtlpMetricsExporter` and
    :class:`~tsengine.instrument.EmbeddedExporter`.

    Args:
        service: the ``service`` tag on every row (default: the attached config's service name).
        events_table: table of event rows.
        **kwargs: the queue and worker settings of :class:`BatchExporter` (``interval_s``,
            ``max_queue``, ``batch_size``, ``timeout_s``, ``max_backoff_s``, ``registry``).
    """

    #: Whether ``attach`` subscribes to the tracker's events.
    exports_events: bool = True

    def __init__(
        self,
        *,
        service: str | None = None,
        events_table: str = "events",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.events_table = events_table
        self._collect: Callable[[], list[MetricFamily]] | None = None
        self._time_ns: Callable[[], int] = time.time_ns
        self._subscription: Subscription | None = None
        self._spill: Callable[[list[Event]], None] | None = None

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self, telemetry: Telemetry) -> None:
        """Take snapshots of ``telemetry``'s registry and receive its events (starts no thread)."""
        self.bind_registry(telemetry.registry)
        self._collect = telemetry.registry.collect
        self._time_ns = telemetry.clock.time_ns
        if self.service is None:
            self.service = telemetry.config.service_name
        self._spill = telemetry.events._spill
        if self._subscription is None and self.exports_events:
            self._subscription = telemetry.events.subscribe(lambda ev: self.export_events((ev,)))

    def detach(self) -> None:
        """Stop receiving events (the queue is kept)."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            with contextlib.suppress(Exception):
                sub.close()

    # -- the Exporter protocol (never block, never raise) ------------------------------------------

    def export_metrics(self, families: Sequence[MetricFamily], *, time_ns: int) -> None:
        try:
            service = self.service
            rows = []
            for fam in families:
                for s in fam.samples:
                    value = float(s.value)
                    if not math.isfinite(value):
                        continue
                    tags = dict(s.labels)
                    if service:
                        tags.setdefault("service", service)
                    rows.append({"table": s.name, "time": time_ns, "tags": tags, "fields": {"value": value}})
            self._enqueue(rows)
        except Exception:
            self._internal_error("export_metrics")

    def export_data_points(self, points: Sequence[DataPoint]) -> None:
        try:
            rows = []
            for p in points:
                if not math.isfinite(p.value):
                    continue
                tags = dict(p.labels)
                if self.service:
                    tags.setdefault("service", self.service)
                rows.append({"table": p.name, "time": p.time_ns, "tags": tags, "fields": {"value": p.value}})
            self._enqueue(rows)
        except Exception:
            self._internal_error("export_data_points")

    def export_events(self, events: Sequence[Event]) -> None:
        try:
            self._enqueue(list(events))
        except Exception:
            self._internal_error("export_events")

    def export_now(self) -> int:
        """Enqueue a snapshot of the attached registry now; the number of rows queued in all."""
        collect = self._collect
        if collect is not None:
            try:
                families = collect()
            except Exception:
                self._internal_error("collect")
            else:
                self.export_metrics(families, time_ns=self._time_ns())
        return self._queued_rows

    # -- BatchExporter hooks -----------------------------------------------------------------------

    def _tick(self) -> None:
        self.export_now()

    def _final(self) -> None:
        """Shutdown: no more events, and a last snapshot for the final flush."""
        self.detach()
        self.export_now()

    def _drop(self, batch: _Batch) -> None:
        super()._drop(batch)
        audit = [r for r in batch.rows if type(r) is Event and r.category is EventCategory.AUDIT]
        if not audit:
            return
        spill = self._spill
        if spill is not None:
            # The tracker's spill file (or, without one, an ERROR log line and audit_events_lost).
            try:
                spill(audit)
                return
            except Exception:
                self._internal_error("audit_spill")
        for ev in audit:
            log.error("audit event dropped from the full export queue: %s", _dumps(ev.to_dict()))
        if self._registry is not None:
            with contextlib.suppress(Exception):
                self._registry.self_metrics.audit_lost.inc(len(audit))

    # -- rows --------------------------------------------------------------------------------------

    def _rows(self, batch: _Batch) -> list[dict[str, Any]]:
        """The batch as import rows (events converted), cached on the batch for retries."""
        if batch.dict_rows is None:
            batch.dict_rows = [self._event_row(r) if type(r) is Event else r for r in batch.rows]
        return batch.dict_rows

    def _event_row(self, ev: Event) -> dict[str, Any]:
        tags = {"category": ev.category.value, "severity": str(ev.severity), "name": ev.name}
        if self.service:
            tags["service"] = self.service
        fields: dict[str, Any] = {
            "id": ev.id,
            "message": ev.message,
            "attributes": json.dumps(dict(ev.attributes), default=str),
        }
        for key in ("user_id", "session_id", "correlation_id", "trace_id", "span_id"):
            value = getattr(ev, key)
            if value is not None:
                fields[key] = str(value)
        return {"table": self.events_table, "time": ev.time_ns, "tags": tags, "fields": fields}


class HttpExporter(QueuedExporter):
    """Batched background push to ``{endpoint}/api/v1/import``. See the module docstring.

    Args:
        endpoint: the server's base URL, ``http://host:port`` (``https`` works too).
        token: sent as ``Authorization: Bearer``; needs the ``write`` scope (can be changed later
            by assigning ``exporter.token``).
        db: the target database.
        **kwargs: the queue and worker settings of :class:`QueuedExporter` (``interval_s``,
            ``max_queue``, ``batch_size``, ``timeout_s``, ``service``, ``events_table``,
            ``max_backoff_s``, ``registry``).
    """

    content_type = "application/x-ndjson"

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        db: str = "default",
        **kwargs: Any,
    ) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"cannot use exporter endpoint {endpoint!r}: expected http(s)://host[:port]")
        super().__init__(**kwargs)
        self.endpoint = endpoint.rstrip("/")
        url = parsed._replace(path=parsed.path.rstrip("/"), query="", fragment="").geturl()
        self._target = HttpTarget(url + self._api_path(db), content_type=self.content_type)
        self.token = token
        self.db = db

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, token: str | None) -> None:
        self._token = token
        headers = self._target.headers
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            headers.pop("Authorization", None)

    def _api_path(self, db: str) -> str:
        return "/api/v1/import?" + urllib.parse.urlencode({"db": db})

    def _encode(self, batch: _Batch) -> bytes:
        if batch.body is None:
            lines = [_dumps(row) for row in self._rows(batch)]
            batch.body = ("\n".join(lines) + "\n").encode()
        return batch.body

    def _attempt(self, batch: _Batch, timeout_s: float) -> Attempt:
        return self._target.post(self._encode(batch), timeout_s)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
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
