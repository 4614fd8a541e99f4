"""System and process metrics from psutil, sampled in a background thread.

The sampler thread calls psutil every ``interval_s`` and writes gauges and counters into the
registry; it also keeps the latest reading as a plain dict (:meth:`SystemMetrics.snapshot`),
which is all the request path ever touches — the performance monitor attaches it to slow
requests without calling psutil. ``start()`` / ``stop()`` own the thread: nothing starts at
import or construction, ``stop()`` joins it, and both are idempotent.

Exposed (all gauges unless ``_total``): ``system_cpu_percent``, ``system_memory_bytes{state}``,
``system_memory_percent``, ``system_disk_usage_bytes{path,state}``, ``system_disk_percent{path}``,
``system_disk_io_bytes_total{direction}``, ``system_network_io_bytes_total{direction}``,
``process_resident_memory_bytes``, ``process_cpu_percent``, ``process_cpu_seconds_total``,
``process_threads``, ``process_open_fds``, ``process_open_files``,
``telemetry_system_sample_duration_seconds``.

A psutil call that fails (permissions, a vanished mount) is logged once and counted in
``tsengine_instrument_errors_total{component="system_metrics"}``; the other readings go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from tsengine.instrument._clock import SYSTEM_CLOCK, Clock
from tsengine.instrument._metrics import Counter, Gauge, get_or_create
from tsengine.instrument._registry import REGISTRY, CollectorRegistry

__all__ = ["SystemMetrics"]

log = logging.getLogger("tsengine.instrument")


class SystemMetrics:
    """psutil sampler. See the module docstring.

    Args:
        registry: where the metrics go.
        interval_s: seconds between samples.
        disk_paths: mount points whose usage is reported.
        psutil_module: the psutil API (tests may pass a fake with the same interface).
        clock: time source for the snapshot's timestamp and the sample duration.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        interval_s: float = 15.0,
        disk_paths: Sequence[str] = ("/",),
        psutil_module: ModuleType | Any = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._psutil = psutil_module  # imported on the first sample, not at construction
        self._process: Any = None
        self._registry = registry
        self._clock = clock
        self.interval_s = interval_s
        self.disk_paths = tuple(disk_paths)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._failed: set[str] = set()
        #: Completed samples, and the error of the last failed reading (for /health/telemetry).
        self.samples = 0
        self.last_error: str | None = None
        #: Seconds the last sample took: the sampler's own overhead.
        self.last_duration_s: float | None = None
        self._metrics_created = False

    def _create_metrics(self) -> None:
        r = self._registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return get_or_create(Gauge, name, doc, labels, r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return get_or_create(Counter, name, doc, labels, r)

        self.cpu = gauge("system_cpu_percent", "System-wide CPU utilisation, percent.")
        self.mem = gauge("system_memory_bytes", "System memory by state.", ("state",))
        self.mem_pct = gauge("system_memory_percent", "System memory in use, percent.")
        self.disk = gauge(
            "system_disk_usage_bytes", "Disk usage by mount point and state.", ("path", "state")
        )
        self.disk_pct = gauge("system_disk_percent", "Disk usage by mount point, percent.", ("path",))
        self.disk_io = counter("system_disk_io_bytes_total", "Disk bytes read and written.", ("direction",))
        self.net_io = counter(
            "system_network_io_bytes_total", "Network bytes sent and received.", ("direction",)
        )
        self.rss = gauge("process_resident_memory_bytes", "Resident set size of this process.")
        self.proc_cpu = gauge(
            "process_cpu_percent", "CPU used by this process since the last sample, percent."
        )
        self.proc_cpu_s = counter("process_cpu_seconds_total", "User and system CPU time of this process.")
        self.threads = gauge("process_threads", "Threads of this process.")
        self.fds = gauge("process_open_fds", "Open file descriptors of this process.")
        self.files = gauge("process_open_files", "Regular files open in this process.")
        self.duration = gauge("telemetry_system_sample_duration_seconds", "Time the last psutil sample took.")
        self._metrics_created = True

    # -- sampling --------------------------------------------------------------------------------

    def collect_once(self) -> dict[str, Any]:
        """Take one sample now (blocking, a few ms), update the metrics, return the snapshot."""
        if not self._metrics_created:
            self._create_metrics()
        if self._psutil is None:
            import psutil

            self._psutil = psutil
        ps = self._psutil
        start = self._clock.monotonic()
        snap: dict[str, Any] = {"time_ns": self._clock.time_ns()}
        if self._process is None:
            self._process = ps.Process()
        proc = self._process

        def read(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as exc:  # psutil raises many types; one failed reading must not stop the rest
                self.last_error = f"cannot read {what}: {exc!r}"
                self._registry.self_metrics.errors.labels("system_metrics").inc()
                if what not in self._failed:
                    self._failed.add(what)
                    log.warning("system metrics: cannot read %s: %r", what, exc)

        def cpu() -> None:
            snap["cpu_percent"] = v = float(ps.cpu_percent(interval=None))
            self.cpu.set(v)

        def memory() -> None:
            vm = ps.virtual_memory()
            for state in ("total", "available", "used"):
                self.mem.labels(state).set(getattr(vm, state))
            snap["memory_percent"] = float(vm.percent)
            self.mem_pct.set(vm.percent)

        def disks() -> None:
            for path in self.disk_paths:
                du = ps.disk_usage(path)
                for state in ("total", "used", "free"):
                    self.disk.labels(path, state).set(getattr(du, state))
                self.disk_pct.labels(path).set(du.percent)

        def disk_io() -> None:
            io = ps.disk_io_counters()
            if io is not None:  # None on machines without disks psutil can see
                self.disk_io.labels("read")._set_total(io.read_bytes)
                self.disk_io.labels("write")._set_total(io.write_bytes)

        def net_io() -> None:
            io = ps.net_io_counters()
            self.net_io.labels("sent")._set_total(io.bytes_sent)
            self.net_io.labels("received")._set_total(io.bytes_recv)

        def process() -> None:
            with proc.oneshot():
                snap["process_rss_bytes"] = rss = proc.memory_info().rss
                self.rss.set(rss)
                snap["process_cpu_percent"] = pct = float(proc.cpu_percent(interval=None))
                self.proc_cpu.set(pct)
                times = proc.cpu_times()
                self.proc_cpu_s._set_total(times.user + times.system)
                snap["process_threads"] = n = proc.num_threads()
                self.threads.set(n)
            if hasattr(proc, "num_fds"):  # POSIX only
                self.fds.set(proc.num_fds())
            self.files.set(len(proc.open_files()))

        read("cpu", cpu)
        read("memory", memory)
        read("disk usage", disks)
        read("disk io", disk_io)
        read("network io", net_io)
        read("process", process)
        self.last_duration_s = self._clock.monotonic() - start
        self.duration.set(self.last_duration_s)
        with self._lock:
            self._snapshot = snap
            self.samples += 1
        return snap

    def snapshot(self) -> dict[str, Any]:
        """The latest reading (``cpu_percent``, ``memory_percent``, ``process_rss_bytes``…); no psutil."""
        return self._snapshot

    # -- the thread --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling in a daemon thread (no-op if running). The first sample is taken at once."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tsengine-system-metrics", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and join the thread (no-op if not running)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.error("system metrics thread did not stop within %.1f s", timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect_once()
            except Exception:  # task boundary: log and keep sampling
                self._registry.self_metrics.errors.labels("system_metrics").inc()
                log.exception("system metrics sample failed")
            self._stop.wait(self.interval_s)
