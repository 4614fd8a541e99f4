"""VictoriaMetrics, measured on the same data as tsengine in the same run.

What comes in: the generated batches of one value mode. What goes out: a dict of figures
(ingest samples/s, peak RSS, bytes per sample, median latency of q1-q4, and whether each query
returned the expected answer). Who calls it: :mod:`benchmarks.run`.

How: start ``victoria-metrics`` (the Debian package, 1.79) on 127.0.0.1 on a free port with a
fresh ``-storageDataPath`` under ``benchmarks/.work/``; POST the data as Influx line protocol to
``/write`` (10k-line bodies, 4 concurrent connections); sample the server's RSS with psutil;
``/internal/force_flush``, check that every sample is queryable, ``/internal/force_merge`` and
poll until the data directory stops changing; then run q1-q4 in MetricsQL over HTTP. The server
is stopped at the end — only the process this module started.

Flags and why:

* ``-retentionPeriod=100y`` — the data is from 2016; the default retention (1 month) drops it.
* ``-search.disableCache`` — no rollup-result cache, so a repeated query is recomputed rather than
  served from the cache (index, part and OS page caches still warm up, as they do for tsengine).
* ``-search.latencyOffset=0`` — no hiding of the most recent 30 s (irrelevant for 2016 data, but
  it keeps the results independent of the wall clock).

Queries also pass ``nocache=1``, which turns the same cache off per request.

Query windows: a MetricsQL rollup at time T covers ``(T - w, T]``; SQL's hour bucket is
``[h, h + 1h)``. Evaluating at ``T = h + 1h`` with ``offset 1ms`` gives ``(h - 1ms, h + 1h - 1ms]``,
which holds exactly the samples of ``[h, h + 1h)`` (timestamps are whole milliseconds here).
``keep_metric_names`` stops the rollups from dropping ``__name__``, which would otherwise merge
the ten ``cpu_usage_*`` series of a host into duplicates.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from benchmarks._process import ProcessMeter, ServerProcess, wait_until
from benchmarks.queries import NS_PER_HOUR, Q4_QUANTILE, Dataset, Expected, compare
from benchmarks.tsbs import MEASUREMENT, NS_PER_S, START_NS, Batch, to_line_protocol

__all__ = ["VictoriaMetrics", "bench", "find_binary"]

CONNECTIONS = 4
START_TIMEOUT_S = 30.0
VISIBLE_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 180.0
#: The data directory is settled when its size has not changed for this long.
SETTLE_QUIET_S = 5.0
WARMUP_RUNS, TIMED_RUNS = 1, 5


def find_binary() -> str | None:
    """Path of the ``victoria-metrics`` binary, or None when it is not installed."""
    return shutil.which("victoria-metrics") or (
        "/usr/bin/victoria-metrics" if os.access("/usr/bin/victoria-metrics", os.X_OK) else None
    )


def dir_bytes(path: Path, *, exclude: Sequence[str] = ()) -> dict[str, int]:
    """Apparent size of the files under each top-level entry of ``path`` (a ``du -b`` walk)."""
    sizes: dict[str, int] = {}
    for top in path.iterdir():
        if top.name in exclude:
            continue
        total = 0
        if top.is_file():
            total = top.stat().st_size
        for root, _dirs, files in os.walk(top):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # a part a merge removed as we walk
                    total += os.stat(os.path.join(root, name)).st_size
        sizes[top.name] = total
    return sizes


class VictoriaMetrics(ServerProcess):
    """One ``victoria-metrics`` server process on 127.0.0.1 (see :class:`ServerProcess`).

    Not thread-safe except :meth:`write` and ``request``, which use one connection per thread.
    """

    name = "VictoriaMetrics"
    http_timeout_s = 120.0
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, binary: str, data_dir: Path, *, log_path: Path | None = None) -> None:
        super().__init__(log_path=log_path or data_dir.with_suffix(".log"))
        self.binary = binary
        self.data_dir = data_dir

    def command(self, port: int) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-search.latencyOffset=0",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        """``/health`` answers OK."""
        try:
            return self.request("GET", "/health")[1].strip() == b"OK"
        except (OSError, http.client.HTTPException):
            return False

    def start(self, *, timeout_s: float | None = None) -> None:
        """Start the server on a fresh port and wait until ``/health`` answers OK.

        Raises:
            RuntimeError: the process exited or did not answer within ``timeout_s``.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().start(timeout_s=timeout_s)

    def write(self, body: bytes) -> None:
        """POST one line-protocol body to ``/write``.

        Raises:
            RuntimeError: the server did not answer 204.
        """
        status, text = self.request("POST", "/write", body)
        if status != 204:
            raise RuntimeError(f"cannot write to VictoriaMetrics: HTTP {status}: {text[:200]!r}")

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET a Prometheus-API endpoint and return its ``data``.

        Raises:
            RuntimeError: the answer is not ``status: success``.
        """
        status, text = self.request("GET", f"{path}?{urllib.parse.urlencode(params)}")
        doc = orjson.loads(text) if text else {}
        if status != 200 or doc.get("status") != "success":
            raise RuntimeError(f"cannot query VictoriaMetrics {path} {params}: HTTP {status}: {text[:300]!r}")
        return dict(doc["data"])

    def metrics(self) -> dict[str, float]:
        """The server's own ``/metrics``, name{labels} -> value."""
        out: dict[str, float] = {}
        for line in self.request("GET", "/metrics")[1].decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    continue
        return out

    def version(self) -> str:
        """``short_version`` from ``/metrics``; the Debian build leaves it empty, so then dpkg's."""
        for key in self.metrics():
            if key.startswith("vm_app_version{"):
                short = key.split('short_version="', 1)[-1].split('"', 1)[0]
                if short:
                    return short
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            )
            return f"{out.stdout.strip()} (Debian package)"
        except (OSError, subprocess.SubprocessError):
            return "unknown"


# --- the benchmark -----------------------------------------------------------------------------


def _seconds(ns: int) -> str:
    return f"{ns / NS_PER_S:.3f}"


def _metricsql(ds: Dataset) -> dict[str, tuple[str, dict[str, Any]]]:
    """q1-q4 as (endpoint, params) for a data set."""
    hosts = "|".join(ds.q1_hosts)
    name = f"{MEASUREMENT}_usage_user"
    all_fields = f'{{__name__=~"{MEASUREMENT}_usage_.*"}}'
    range_s = (ds.end_ns - START_NS) // NS_PER_S
    return {
        "q1": (
            "/api/v1/query_range",
            {
                "query": f'max_over_time({name}{{hostname=~"{hosts}"}}[1h] offset 1ms)',
                "start": _seconds(START_NS + NS_PER_HOUR),
                "end": _seconds(ds.end_ns),
                "step": "3600s",
                "nocache": "1",
            },
        ),
        "q2": (
            "/api/v1/query_range",
            {
                "query": f"avg_over_time({all_fields}[1h] offset 1ms) keep_metric_names",
                "start": _seconds(ds.q2_start_ns + NS_PER_HOUR),
                "end": _seconds(ds.end_ns),
                "step": "3600s",
                "nocache": "1",
            },
        ),
        "q3": (
            "/api/v1/query",
            {
                "query": f"last_over_time({all_fields}[{range_s}s] offset 1ms) keep_metric_names",
                "time": _seconds(ds.end_ns),
                "nocache": "1",
            },
        ),
        "q4": (
            "/api/v1/query",
            {
                "query": f"quantile_over_time({Q4_QUANTILE}, {name}[{range_s}s] offset 1ms)",
                "time": _seconds(ds.end_ns),
                "nocache": "1",
            },
        ),
    }


def _hour_of(ts_s: float) -> int:
    # A point at T answers the hour that ends at T.
    return (round(ts_s * 1000) * 1_000_000 - START_NS) // NS_PER_HOUR - 1


def _answer(query: str, data: dict[str, Any]) -> dict[Any, float]:
    """Convert a Prometheus-API result into the shape of :class:`benchmarks.queries.Expected`."""
    out: dict[Any, float] = {}
    prefix = f"{MEASUREMENT}_"
    for series in data["result"]:
        labels = series["metric"]
        host = labels["hostname"]
        field = labels.get("__name__", "")[len(prefix) :]
        if query == "q1":
            for ts, value in series["values"]:
                out[(host, _hour_of(ts))] = float(value)
        elif query == "q2":
            for ts, value in series["values"]:
                out[(host, field, _hour_of(ts))] = float(value)
        elif query == "q3":
            out[(host, field)] = float(series["value"][1])
        else:
            out[host] = float(series["value"][1])
    return out


def _settle(vm: VictoriaMetrics, *, timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Wait until no merge runs and the data directory size has not changed for SETTLE_QUIET_S."""
    last: list[Any] = [None, time.monotonic()]

    def quiet() -> bool:
        size = sum(dir_bytes(vm.data_dir, exclude=("cache", "snapshots")).values())
        merges = sum(
            v for k, v in vm.metrics().items() if k.startswith(("vm_active_merges", "vm_active_force_merges"))
        )
        now = time.monotonic()
        if size != last[0] or merges:
            last[0], last[1] = size, now
            return False
        return now - last[1] >= SETTLE_QUIET_S

    return wait_until(
        f"merges to finish and the data directory to stay unchanged for {SETTLE_QUIET_S:.0f} s",
        quiet,
        timeout_s=timeout_s,
    )


def _time_query(vm: VictoriaMetrics, path: str, params: dict[str, Any]) -> tuple[list[float], bytes]:
    """Wall-clock seconds of 1 warm-up + TIMED_RUNS requests (until the body is read)."""
    target = f"{path}?{urllib.parse.urlencode(params)}"
    times = []
    body = b""
    for i in range(WARMUP_RUNS + TIMED_RUNS):
        t0 = time.perf_counter()
        status, body = vm.request("GET", target)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"cannot run query {params['query']!r}: HTTP {status}: {body[:300]!r}")
        if i >= WARMUP_RUNS:
            times.append(elapsed)
    return times, body


@contextmanager
def _server(binary: str, work_dir: Path, mode: str) -> Iterator[VictoriaMetrics]:
    data_dir = work_dir / f"vm-{mode}"
    shutil.rmtree(data_dir, ignore_errors=True)
    vm = VictoriaMetrics(binary, data_dir)
    with vm:
        yield vm
    shutil.rmtree(data_dir, ignore_errors=True)


def bench(
    mode: str, batches: list[Batch], ds: Dataset, expected: Expected, *, work_dir: Path
) -> dict[str, Any]:
    """Measure VictoriaMetrics on one value mode; see the module docstring.

    Returns a dict with ``available: False`` and a ``reason`` when the binary is missing.
    """
    binary = find_binary()
    if binary is None:
        return {
            "available": False,
            "reason": "VictoriaMetrics not available (apt-get install victoria-metrics)",
        }
    bodies = [to_line_protocol(b) for b in batches]
    samples = sum(b.num_samples for b in batches)
    result: dict[str, Any] = {"available": True, "samples": samples}
    with _server(binary, work_dir, mode) as vm:
        result["version"] = vm.version()
        with ProcessMeter(vm.pid) as server:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CONNECTIONS) as pool:
                list(pool.map(vm.write, bodies))
            ingest_s = time.perf_counter() - t0
        result["ingest_s"] = ingest_s
        result["ingest_samples_per_s"] = samples / ingest_s
        # The client (line-protocol bodies, HTTP) shares the 2 cores: report the server's own cost.
        result["server_cpu_us_per_sample"] = server.cpu_s / samples * 1e6
        result["rss_peak_mib"] = server.rss_peak / 2**20
        del bodies

        count_query = {
            "query": f'sum(count_over_time({{__name__=~"{MEASUREMENT}_usage_.*"}}'
            f"[{(ds.end_ns - START_NS) // NS_PER_S}s] offset 1ms))",
            "time": _seconds(ds.end_ns),
            "nocache": "1",
        }

        def all_visible() -> bool:
            vm.request("GET", "/internal/force_flush")
            found = vm.api("/api/v1/query", **count_query)["result"]
            return bool(found) and int(float(found[0]["value"][1])) == samples

        wait_until(f"all {samples:,} samples to be queryable", all_visible, timeout_s=VISIBLE_TIMEOUT_S)
        vm.request("GET", "/internal/force_merge?partition_prefix=2016")
        _settle(vm)
        sizes = dir_bytes(vm.data_dir, exclude=("cache", "snapshots"))
        result["disk_bytes"] = sum(sizes.values())
        result["disk_breakdown"] = sizes
        result["bytes_per_sample"] = result["disk_bytes"] / samples

        queries: dict[str, Any] = {}
        for name, (path, params) in _metricsql(ds).items():
            times, body = _time_query(vm, path, params)
            doc = orjson.loads(body)
            got = _answer(name, doc["data"])
            # VictoriaMetrics stores floats as decimal mantissa + exponent: allow a 1e-9 error.
            check = compare(name, got, expected)
            queries[name] = {
                "median_ms": statistics.median(times) * 1000,
                "runs_ms": [t * 1000 for t in times],
                "query": params["query"],
                "check": check,
                "sample": {repr(k): v for k, v in list(got.items())[:3]},
            }
        result["queries"] = queries
        # q3 returns raw samples: how many of them read back bit-for-bit as written.
        q3 = queries["q3"]["check"]
        result["readback_exact"] = f"{q3['exact']}/{q3['expected_size']} last values bit-for-bit"
    return result
