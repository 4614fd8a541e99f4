"""The exporter seam: how collected telemetry leaves the process (implementation: ``_push``).

An :class:`Exporter` receives snapshots from the runtime and ships them — to a tsengine server
(native ``/api/v1/import`` or OTLP/HTTP) or into an embedded engine. The contract every
implementation must keep, because the runtime calls these on the application's threads:

* ``export_*`` never block and never raise: they enqueue into a bounded queue that drops its
  oldest items (counted) when full — except audit events, which are spilled, never dropped;
* a background worker pushes batches of ``batch_size``, retrying with exponential backoff and
  jitter; ``flush(timeout_s)`` pushes what is queued and reports whether it all went;
* ``shutdown(timeout_s)`` flushes and stops the worker; calling it twice is harmless.

Implementations share the queue and worker of ``_push.QueuedExporter`` (itself a
``_push.BatchExporter``): :class:`tsengine.instrument.HttpExporter` (``_push``) over the server's
native ``/api/v1/import``, :class:`tsengine.instrument.OtlpMetricsExporter`
(``_otlp_metrics_export``) over OTLP/HTTP ``/v1/metrics``,
:class:`tsengine.instrument.EmbeddedExporter` (``_embedded``) into an engine in the same process.
``configure()`` builds one from ``TELEMETRY_EXPORT`` and ``TELEMETRY_EXPORTER_*``;
:meth:`Telemetry.set_exporter` accepts any implementation. Spans do not pass through this seam:
the tracer hands them to span processors (``_tracing/exporter``), which are ``BatchExporter``
subclasses too, chosen by the same ``TELEMETRY_EXPORT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tsengine.instrument._collector import DataPoint
    from tsengine.instrument._event import Event
    from tsengine.instrument._family import MetricFamily

__all__ = ["Exporter"]


@runtime_checkable
class Exporter(Protocol):
    """Ships telemetry out of the process. See the module docstring for the contract."""

    def export_metrics(self, families: Sequence[MetricFamily], *, time_ns: int) -> None:
        """Enqueue a snapshot of the registry (never blocks, never raises)."""
        ...

    def export_data_points(self, points: Sequence[DataPoint]) -> None:
        """Enqueue recorded data points (never blocks, never raises)."""
        ...

    def export_events(self, events: Sequence[Event]) -> None:
        """Enqueue events (never blocks, never raises; audit events are never dropped)."""
        ...

    def flush(self, timeout_s: float) -> bool:
        """Push everything queued; True if it all went within ``timeout_s``."""
        ...

    def shutdown(self, timeout_s: float) -> None:
        """Flush, then stop the background worker. Idempotent."""
        ...
