"""The metrics the server exposes about itself: requests, ingestion, queries, engine, streams.

The scheduler (:mod:`server.scheduler`), the storage lifecycle (:mod:`server.cleanup`) and
alerting (:mod:`server.alerting.metrics`) define their own metrics in :attr:`ServerMetrics.registry`.

In: counts and timings from the request boundary, the ingestion routes and the SQL route;
engine statistics copied in by :meth:`ServerMetrics.refresh_engine` (called off the event loop
before each scrape); process CPU, RSS and open files sampled by psutil in a background thread
(:class:`tsengine.instrument.SystemMetrics`, started and stopped by the app's ``cleanup_ctx``).
Out: ``GET /metrics`` renders :attr:`ServerMetrics.registry` as Prometheus text 0.0.4 or
OpenMetrics. Each app has its own registry, so two apps in one process (tests) never share
counts. Recording is thread-safe and never blocks beyond a short lock.
"""

from __future__ import annotations

from typing import Any

from tsengine.instrument import CollectorRegistry, Counter, Gauge, Histogram, SystemMetrics

__all__ = ["PROTOCOLS", "ServerMetrics"]

#: Ingestion protocols, as the ``protocol`` label spells them.
PROTOCOLS = ("influx", "prometheus_remote_write", "otlp", "import", "otlp_traces", "otlp_logs", "events")

# Request latency: 0.5 ms (a health check) to 30 s (a large query).
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class ServerMetrics:
    """The server's own metrics in their own registry.

    Args:
        process_sample_interval_s: seconds between psutil samples.
        data_dir: the mount whose disk usage the system collector reports.
    """

    def __init__(self, *, process_sample_interval_s: float = 5.0, data_dir: str = "/") -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "tsengine_http_requests", "HTTP requests answered, by route, method and status code.",
            ("route", "method", "code"), registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "tsengine_http_request_duration_seconds", "Time from request start to response, by route.",
            ("route",), registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.ingest_requests = Counter(
            "tsengine_ingest_requests", "Ingestion requests by protocol and outcome (accepted/rejected).",
            ("protocol", "outcome"), registry=r,
        )  # fmt: skip
        self.ingest_samples = Counter(
            "tsengine_ingest_samples", "Samples (non-null field values) by protocol and outcome; rejected "
            "counts only what parsed before the request was refused.",
            ("protocol", "outcome"), registry=r,
        )  # fmt: skip
        self.ingest_rows = Counter(
            "tsengine_ingest_rows", "Rows written, by protocol.", ("protocol",), registry=r
        )
        self.writes_in_flight = Gauge(
            "tsengine_writes_in_flight", "Write requests admitted and not yet answered.", registry=r
        )
        self.writes_waiting = Gauge(
            "tsengine_writes_waiting",
            "Write requests waiting for one of max_concurrent_writes slots.",
            registry=r,
        )
        self.query_latency = Histogram(
            "tsengine_query_duration_seconds", "Time a SQL query took, including result encoding.",
            registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.queries = Counter("tsengine_queries", "SQL queries by outcome.", ("outcome",), registry=r)
        self.wal_append_seconds = Histogram(
            "tsengine_wal_append_duration_seconds", "Time one WAL record took to write (no fsync).",
            registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.wal_bytes = Counter("tsengine_wal_written_bytes", "Bytes written to the WAL.", registry=r)
        self.wal_fsync_seconds = Histogram(
            "tsengine_wal_fsync_duration_seconds", "Time one fsync of the WAL took.",
            registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.persist_seconds = Histogram(
            "tsengine_persist_duration_seconds", "Time one buffer chunk took to become Parquet files.",
            registry=r, buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.persisted_files = Counter(
            "tsengine_parquet_files_written", "Parquet files written by flushes.", registry=r
        )
        self.buffer_bytes = Gauge("tsengine_buffer_bytes", "Bytes held by the write buffers.", registry=r)
        self.buffer_max_bytes = Gauge(
            "tsengine_buffer_max_bytes", "Bound of the write buffers (Overloaded past it).", registry=r
        )
        self.buffer_fill = Gauge("tsengine_buffer_fill_ratio", "buffer_bytes / buffer_max_bytes.", registry=r)
        self.live_rows = Gauge(
            "tsengine_buffer_rows", "Rows in the write buffers, not yet in Parquet.", registry=r
        )
        self.files = Gauge(
            "tsengine_parquet_files", "Parquet partition files listed in the manifests.", registry=r
        )
        self.disk_bytes = Gauge("tsengine_parquet_bytes", "Bytes of the Parquet partition files.", registry=r)
        self.tables = Gauge("tsengine_tables", "Tables, over all databases.", registry=r)
        self.wal_last_seq = Gauge(
            "tsengine_wal_last_sequence", "Sequence number of the last WAL record.", registry=r
        )
        self.wal_unpersisted = Gauge(
            "tsengine_wal_unpersisted_records",
            "WAL records not yet persisted to Parquet (what a restart would replay).",
            registry=r,
        )
        self.last_persist = Gauge(
            "tsengine_last_persist_timestamp_seconds", "When a buffer chunk was last persisted.", registry=r
        )
        self.persist_errors = Gauge(
            "tsengine_persist_errors", "Background persist rounds that failed (retried).", registry=r
        )
        self.spans = Counter(
            "tsengine_spans", "OTLP spans received, by outcome (accepted: stored; rejected: "
            "answered in partial_success).", ("outcome",), registry=r,
        )  # fmt: skip
        self.span_stream_clients = Gauge(
            "tsengine_span_stream_clients", "Clients connected to the live span stream.", registry=r
        )
        self.span_stream_dropped = Counter(
            "tsengine_span_stream_dropped_clients",
            "Span stream clients disconnected for falling a whole buffer behind.",
            registry=r,
        )
        self.event_stream_clients = Gauge(
            "tsengine_event_stream_clients", "Clients connected to the live event stream.", registry=r
        )
        self.event_stream_dropped = Counter(
            "tsengine_event_stream_dropped_clients",
            "Event stream clients disconnected for falling a whole buffer behind.",
            registry=r,
        )
        for outcome in ("accepted", "rejected"):
            self.spans.labels(outcome)
        # Every protocol's series exist from the start at 0, so rate() works from the first scrape.
        for protocol in PROTOCOLS:
            self.ingest_rows.labels(protocol)
            for outcome in ("accepted", "rejected"):
                self.ingest_requests.labels(protocol, outcome)
                self.ingest_samples.labels(protocol, outcome)
        for outcome in ("ok", "error"):
            self.queries.labels(outcome)
        self.process = SystemMetrics(registry=r, interval_s=process_sample_interval_s, disk_paths=(data_dir,))

    def record_ingest(self, protocol: str, *, accepted: bool, samples: int, rows: int) -> None:
        outcome = "accepted" if accepted else "rejected"
        self.ingest_requests.labels(protocol, outcome).inc()
        if samples:
            self.ingest_samples.labels(protocol, outcome).inc(samples)
        if accepted and rows:
            self.ingest_rows.labels(protocol).inc(rows)

    # -- tsengine.observe.EngineObserver: the engine calls these on its own threads ------------

    def wal_append(self, seconds: float, nbytes: int) -> None:
        self.wal_append_seconds.observe(seconds)
        self.wal_bytes.inc(nbytes)

    def wal_fsync(self, seconds: float) -> None:
        self.wal_fsync_seconds.observe(seconds)

    def persisted(self, seconds: float, rows: int, files: int) -> None:
        self.persist_seconds.observe(seconds)
        self.persisted_files.inc(files)

    def refresh_engine(self, stats: dict[str, Any], disk_bytes: int) -> None:
        """Copy ``Engine.stats()`` and its disk usage into the gauges (called before a scrape)."""
        self.buffer_bytes.set(stats["buffer_bytes"])
        self.buffer_max_bytes.set(stats["max_buffer_bytes"])
        self.buffer_fill.set(stats["buffer_bytes"] / max(stats["max_buffer_bytes"], 1))
        self.live_rows.set(stats["live_rows"])
        self.files.set(stats["files"])
        self.tables.set(stats["tables"])
        self.wal_last_seq.set(stats["wal_last_seq"])
        self.wal_unpersisted.set(stats["wal_unpersisted_records"])
        self.last_persist.set(stats["last_persist_ns"] / 1e9)
        self.persist_errors.set(stats["persist_errors"])
        self.disk_bytes.set(disk_bytes)
