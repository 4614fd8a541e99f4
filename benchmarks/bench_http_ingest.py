"""HTTP ingestion: tsengine against VictoriaMetrics on the same pre-rendered bodies (issue 3).

What comes in: nothing (``run(quick)``); the TSBS devops cpu-only day (``int`` values, as TSBS
writes them; 100 hosts x 1 day = 864,000 rows = 8.64 M samples; ``quick``: 10 hosts x 1 hour).
What goes out: a dict of figures per target — samples/s (wall), server CPU µs per sample (psutil
user+system of the server process over the send window), peak server RSS (sampled every 50 ms),
the HTTP statuses seen, and whether the server holds every sample afterwards — plus the ratios
the issue sets goals on. Who calls it: ``python -m benchmarks.run --only http``, or
``python -m benchmarks.bench_http_ingest [--quick] [--profile lp|arrow|remote_write]``.

The same client (a pool of 4 threads, one keep-alive ``http.client`` connection each) sends the
same bodies, rendered before any clock starts, to real servers on 127.0.0.1 in one run:

* ``lp`` — Influx line protocol, 10,000 lines a body, ``POST /write`` to tsengine and to
  VictoriaMetrics (started by :mod:`benchmarks.victoriametrics`);
* ``arrow`` — tsengine ``POST /api/v1/import?table=cpu`` Arrow IPC stream, tags as dictionary
  columns, 100,000 rows a body;
* ``remote_write`` — tsengine ``POST /api/v1/write``: every series (``cpu_usage_user{hostname=..,
  ...}`` and so on: 1,000 series for 100 hosts) with 10 samples each per request.

Each target runs ``repeats`` times (3; ``quick``: 1), interleaved so that load on the shared machine
falls on all of them alike; each figure is the run with the median samples/s, every run's figures
kept alongside. tsengine runs as ``python -m tsengine.cli serve`` in a child process with a fresh
data directory under ``benchmarks/.work/`` per protocol and run; each server is stopped
(SIGTERM, the processes this module started only) and its directory removed at the end.

``--profile`` runs the tsengine server in this process instead (the app in an event-loop thread
under cProfile, each ingest worker call under its own cProfile) for one protocol and prints
where the server's time goes; the client threads share the process, so it is for orientation.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import io
import os
import pstats
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks import _timing, tsbs
from benchmarks._process import ProcessMeter, ServerProcess, free_port, post_all, poster, wait_until
from benchmarks.victoriametrics import VictoriaMetrics, find_binary

__all__ = [
    "TsengineServer",
    "arrow_bodies",
    "line_protocol_bodies",
    "remote_write_series",
    "run",
]

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = Path(__file__).resolve().parent / ".work"
MODE: tsbs.Mode = "int"
CONNECTIONS = 4
LP_LINES = 10_000
ARROW_ROWS = 100_000
RW_SAMPLES_PER_SERIES = 10
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 300.0
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
FULL = {"hosts": 100, "duration_s": 86_400}
QUICK = {"hosts": 10, "duration_s": 3_600}
GOAL_LP_RATIO = 1.0
GOAL_ARROW_RATIO = 3.0
FULL_REPEATS = 3


# --- bodies (pure; tested) ----------------------------------------------------------------------


def generate(hosts: int, duration_s: int, rows_per_batch: int) -> Iterator[tsbs.Batch]:
    """The TSBS day in batches of whole ticks of about ``rows_per_batch`` rows."""
    return tsbs.generate(MODE, hosts=hosts, duration_s=duration_s, batch_rows=rows_per_batch)


def line_protocol_bodies(batches: Iterable[tsbs.Batch]) -> list[bytes]:
    """One line-protocol body per batch (``\\n``-terminated lines, nanosecond timestamps)."""
    return [tsbs.to_line_protocol(b) for b in batches]


def arrow_record_batch(batch: tsbs.Batch) -> pa.RecordBatch:
    """A batch as an Arrow record batch: ``time`` int64 ns, tags dictionary<string>, fields."""
    columns: dict[str, pa.Array] = {"time": pa.array(batch.time, pa.int64())}
    for name, values in batch.tags.items():
        columns[name] = pc.dictionary_encode(values)
    for name, values in batch.fields.items():
        columns[name] = pa.array(values)
    return pa.RecordBatch.from_pydict(columns)


def arrow_bodies(batches: Iterable[tsbs.Batch]) -> list[bytes]:
    """One Arrow IPC stream (one record batch) per batch."""
    out = []
    for batch in batches:
        record = arrow_record_batch(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, record.schema) as writer:
            writer.write_batch(record)
        out.append(sink.getvalue().to_pybytes())
    return out


def remote_write_series(
    batch: tsbs.Batch, *, hosts: int, samples_per_series: int
) -> Iterator[list[tuple[dict[str, str], list[tuple[int, float]]]]]:
    """The rows of ``batch`` as remote-write requests of ``samples_per_series`` ticks each.

    Every request holds every series — ``cpu_<field>`` with the host's ten tags as labels — with
    one sample per tick; ``batch`` must hold whole ticks of ``hosts`` rows (time, then host order,
    as :func:`benchmarks.tsbs.generate` yields them).
    """
    if batch.num_rows % hosts:
        raise ValueError(f"cannot split {batch.num_rows} rows into ticks of {hosts} hosts")
    ticks = batch.num_rows // hosts
    tags = {name: values.to_pylist()[:hosts] for name, values in batch.tags.items()}
    labels = [{name: tags[name][h] for name in tags} for h in range(hosts)]
    times_ms = (batch.time[::hosts] // 1_000_000).tolist()
    for first in range(0, ticks, samples_per_series):
        last = min(first + samples_per_series, ticks)
        request = []
        for field, values in batch.fields.items():
            grid = np.asarray(values, dtype=np.float64).reshape(ticks, hosts)[first:last]
            for h in range(hosts):
                points = list(zip(times_ms[first:last], grid[:, h].tolist(), strict=True))
                request.append(({"__name__": f"{tsbs.MEASUREMENT}_{field}", **labels[h]}, points))
        yield request


def remote_write_bodies(
    batches: Iterable[tsbs.Batch], *, hosts: int, samples_per_series: int = RW_SAMPLES_PER_SERIES
) -> list[bytes]:
    """Snappy remote-write bodies (``build_write_request``) of :func:`remote_write_series`."""
    from tsengine.protocols.prom_remote import build_write_request

    return [
        build_write_request(series)
        for batch in batches
        for series in remote_write_series(batch, hosts=hosts, samples_per_series=samples_per_series)
    ]


# --- the tsengine server -------------------------------------------------------------------------


class TsengineServer(ServerProcess):
    """``python -m tsengine.cli serve`` on 127.0.0.1 in a child process (see :class:`ServerProcess`).

    ``request`` is thread-safe (one keep-alive connection per thread). :meth:`start` empties
    ``data_dir`` first.
    """

    name = "tsengine"
    start_timeout_s = START_TIMEOUT_S
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, data_dir: Path) -> None:
        super().__init__(log_path=data_dir.with_suffix(".log"), cwd=ROOT)
        self.data_dir = data_dir

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tsengine.cli",
            "serve",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--data={self.data_dir}",
            "--log-level=WARNING",
        ]

    def ready(self) -> bool:
        """``/health`` answers 200."""
        try:
            return self.request("GET", "/health")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def start(self, *, timeout_s: float | None = None) -> None:
        """Start the server on a fresh data directory and wait for ``/health`` to answer 200.

        Raises:
            RuntimeError: the process exited or did not answer within ``timeout_s``.
        """
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        super().start(timeout_s=timeout_s)

    def sql(self, query: str) -> list[list[Any]]:
        """Rows of ``POST /api/v1/sql``.

        Raises:
            RuntimeError: the answer is not 200.
        """
        status, text = self.request("POST", "/api/v1/sql", query.encode(), {"Content-Type": "text/plain"})
        if status != 200:
            raise RuntimeError(f"cannot run {query!r} on tsengine: HTTP {status}: {text[:300]!r}")
        return list(orjson.loads(text)["rows"])


# --- measuring -----------------------------------------------------------------------------------


def _thread_cpu(proc: psutil.Process) -> dict[int, float]:
    try:
        return {t.id: t.user_time + t.system_time for t in proc.threads()}
    except psutil.Error:
        return {}


def drive(pid: int, send: Callable[[bytes], int], bodies: Sequence[bytes], samples: int) -> dict[str, Any]:
    """POST every body over CONNECTIONS threads; the server's figures over the send window."""
    threads0 = _thread_cpu(psutil.Process(pid))
    with ProcessMeter(pid) as server:
        t0 = time.perf_counter()
        statuses = post_all(send, bodies, CONNECTIONS)
        wall_s = time.perf_counter() - t0
    threads1 = _thread_cpu(psutil.Process(pid))
    # The main thread (tid == pid) runs the event loop for tsengine; the rest are workers.
    per_thread = {tid: t - threads0.get(tid, 0.0) for tid, t in threads1.items()}
    main_s = per_thread.pop(pid, 0.0)
    busy = sorted((round(v, 2) for v in per_thread.values() if v > 0.05), reverse=True)
    return {
        "requests": len(bodies),
        "body_mib": sum(map(len, bodies)) / 2**20,
        "samples": samples,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "all_204": set(statuses) == {204},
        "wall_s": wall_s,
        "samples_per_s": samples / wall_s,
        "server_cpu_s": server.cpu_s,
        # Kernel time (page faults on fresh memory, socket reads, WAL writes) apart from user time.
        "server_system_s": server.system_s,
        "server_cpu_us_per_sample": server.cpu_s / samples * 1e6,
        "server_cpu_cores": server.cpu_s / wall_s,
        "main_thread_cpu_s": main_s,
        "other_threads_cpu_s": busy,
        "rss_peak_mib": server.rss_peak / 2**20,
    }


def bench_tsengine(
    protocol: str, bodies: Sequence[bytes], samples: int, *, count_sql: str, expected_rows: int
) -> dict[str, Any]:
    """One protocol against a fresh tsengine server; ``count_sql`` answers (rows, samples) stored."""
    path, headers = {
        "lp": ("/write", {}),
        "arrow": ("/api/v1/import?table=cpu", {"Content-Type": ARROW_CONTENT_TYPE}),
        "remote_write": (
            "/api/v1/write",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
        ),
    }[protocol]
    server = TsengineServer(WORK_DIR / f"http-tsengine-{protocol}")
    try:
        server.start()
        result = drive(server.pid, poster(server.request, path, headers, ok=204), bodies, samples)
        t0 = time.perf_counter()
        stored_rows, stored_samples = (int(v) for v in server.sql(count_sql)[0])
        result["count_s"] = time.perf_counter() - t0
        result["stored_rows"] = stored_rows
        result["stored"] = stored_samples
        result["expected"] = samples
        result["complete"] = stored_rows == expected_rows and stored_samples == samples
        result["rss_after_mib"] = psutil.Process(server.pid).memory_info().rss / 2**20
    finally:
        result_stop = server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    result["shutdown_s"] = result_stop
    result["expected_rows"] = expected_rows
    return result


def bench_victoriametrics(bodies: Sequence[bytes], samples: int, end_ns: int) -> dict[str, Any]:
    binary = find_binary()
    if binary is None:
        return {
            "available": False,
            "reason": "VictoriaMetrics not available (apt-get install victoria-metrics)",
        }
    data_dir = WORK_DIR / "http-vm"
    shutil.rmtree(data_dir, ignore_errors=True)
    vm = VictoriaMetrics(binary, data_dir)
    try:
        vm.start()
        version = vm.version()
        result = drive(vm.pid, poster(vm.request, "/write", {}, ok=204), bodies, samples)
        range_s = (end_ns - tsbs.START_NS) // tsbs.NS_PER_S
        query = {
            "query": f'sum(count_over_time({{__name__=~"{tsbs.MEASUREMENT}_usage_.*"}}'
            f"[{range_s}s] offset 1ms))",
            "time": f"{end_ns / tsbs.NS_PER_S:.3f}",
            "nocache": "1",
        }
        found: list[int] = [0]

        def all_visible() -> bool:
            vm.request("GET", "/internal/force_flush")
            res = vm.api("/api/v1/query", **query)["result"]
            found[0] = int(float(res[0]["value"][1])) if res else 0
            return found[0] == samples

        with contextlib.suppress(TimeoutError):  # reported as complete=False
            wait_until(f"all {samples:,} samples in VictoriaMetrics", all_visible, timeout_s=60)
        result.update(available=True, version=version, stored=found[0], expected=samples)
        result["complete"] = found[0] == samples
    finally:
        vm.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median samples/s (the lower middle one of an even count), with every
    run's samples/s and CPU µs/sample attached, and whether all of them got only 204s and stored
    everything."""
    if not runs or runs[0].get("available") is False:
        return dict(runs[0]) if runs else {"available": False, "reason": "not run"}
    chosen = _timing.median_run(runs, "samples_per_s")
    chosen["runs_samples_per_s"] = [r["samples_per_s"] for r in runs]
    chosen["runs_cpu_us_per_sample"] = [r["server_cpu_us_per_sample"] for r in runs]
    chosen["runs_rss_peak_mib"] = [r["rss_peak_mib"] for r in runs]
    chosen["all_runs_204"] = all(r["all_204"] for r in runs)
    chosen["all_runs_complete"] = all(r["complete"] for r in runs)
    return chosen


def run(quick: bool = False, *, repeats: int | None = None) -> dict[str, Any]:
    """Every protocol against its server(s), ``repeats`` times interleaved; see the module docstring.

    Each figure is the run with the median samples/s; the per-run figures are kept alongside.
    """
    size = QUICK if quick else FULL
    repeats = repeats or (1 if quick else FULL_REPEATS)
    hosts, duration_s = size["hosts"], size["duration_s"]
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    rows = hosts * (duration_s // 10)
    samples = rows * len(tsbs.FIELDS)
    end_ns = tsbs.START_NS + duration_s * tsbs.NS_PER_S
    out: dict[str, Any] = {
        "size": {**size, "rows": rows, "samples": samples, "mode": MODE},
        "connections": CONNECTIONS,
        "repeats": repeats,
        "lines_per_body": LP_LINES,
        "rows_per_arrow_body": ARROW_ROWS,
        "remote_write_series_per_request": hosts * len(tsbs.FIELDS),
        "remote_write_samples_per_series": RW_SAMPLES_PER_SERIES,
        "cpu_count": os.cpu_count(),
    }

    t0 = time.perf_counter()
    lp = line_protocol_bodies(generate(hosts, duration_s, LP_LINES))
    arrow = arrow_bodies(generate(hosts, duration_s, ARROW_ROWS))
    rw = remote_write_bodies(generate(hosts, duration_s, LP_LINES), hosts=hosts)
    print(
        f"  rendered {len(lp)} line-protocol, {len(arrow)} Arrow and {len(rw)} remote-write bodies "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    out["load_avg_before"] = os.getloadavg()
    cpu_count = f"SELECT count(*), {' + '.join(f'count({f})' for f in tsbs.FIELDS)} FROM {tsbs.MEASUREMENT}"
    # A series per field: ten tables cpu_<field> of one column ``value``, a row per sample.
    union = " UNION ALL ".join(
        f"SELECT count(*) AS n, count(value) AS v FROM {tsbs.MEASUREMENT}_{f}" for f in tsbs.FIELDS
    )
    runs: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("victoriametrics_lp", "tsengine_lp", "tsengine_arrow", "tsengine_remote_write")
    }
    for i in range(repeats):
        print(f"  -- repeat {i + 1}/{repeats}, load average {os.getloadavg()[0]:.2f}", flush=True)
        runs["victoriametrics_lp"].append(bench_victoriametrics(lp, samples, end_ns))
        _say("VictoriaMetrics /write", runs["victoriametrics_lp"][-1])
        runs["tsengine_lp"].append(bench_tsengine("lp", lp, samples, count_sql=cpu_count, expected_rows=rows))
        _say("tsengine /write", runs["tsengine_lp"][-1])
        runs["tsengine_arrow"].append(
            bench_tsengine("arrow", arrow, samples, count_sql=cpu_count, expected_rows=rows)
        )
        _say("tsengine Arrow import", runs["tsengine_arrow"][-1])
        runs["tsengine_remote_write"].append(
            bench_tsengine(
                "remote_write",
                rw,
                samples,
                count_sql=f"SELECT sum(n), sum(v) FROM ({union})",
                expected_rows=samples,
            )
        )
        _say("tsengine remote write", runs["tsengine_remote_write"][-1])
    del lp, arrow, rw
    for key, value in runs.items():
        out[key] = median_run(value)
    out["load_avg_after"] = os.getloadavg()
    out["ratios"] = ratios(out)
    vm_runs, ts_runs = runs["victoriametrics_lp"], runs["tsengine_lp"]
    if vm_runs and vm_runs[0].get("available") is not False:
        # Each repeat's own tsengine/VM ratio: the two ran back to back under the same load.
        out["ratios"]["lp_tsengine_over_vm_per_repeat"] = [
            t["samples_per_s"] / v["samples_per_s"] for t, v in zip(ts_runs, vm_runs, strict=True)
        ]
    out["ratios"]["arrow_over_lp_per_repeat"] = [
        a["samples_per_s"] / t["samples_per_s"] for a, t in zip(runs["tsengine_arrow"], ts_runs, strict=True)
    ]
    return out


def _say(what: str, r: dict[str, Any]) -> None:
    if r.get("available") is False:
        print(f"  {what}: {r['reason']}", flush=True)
        return
    print(
        f"  {what}: {r['samples_per_s'] / 1e6:.2f} M samples/s, "
        f"{r['server_cpu_us_per_sample']:.2f} µs CPU/sample, peak RSS {r['rss_peak_mib']:.0f} MiB, "
        f"statuses {r['statuses']}, "
        f"stored {r['stored']:,}/{r['expected']:,}",
        flush=True,
    )


def ratios(out: dict[str, Any]) -> dict[str, Any]:
    """tsengine/VM on line protocol, Arrow/line protocol and remote write/line protocol, with goals."""
    ts, vm = out.get("tsengine_lp", {}), out.get("victoriametrics_lp", {})
    arrow, rw = out.get("tsengine_arrow", {}), out.get("tsengine_remote_write", {})
    r: dict[str, Any] = {}
    if ts.get("samples_per_s") and vm.get("samples_per_s"):
        r["lp_tsengine_over_vm"] = ts["samples_per_s"] / vm["samples_per_s"]
        r["lp_cpu_tsengine_over_vm"] = ts["server_cpu_us_per_sample"] / vm["server_cpu_us_per_sample"]
        r["lp_goal_met"] = r["lp_tsengine_over_vm"] >= GOAL_LP_RATIO
    if ts.get("samples_per_s") and arrow.get("samples_per_s"):
        r["arrow_over_lp"] = arrow["samples_per_s"] / ts["samples_per_s"]
        r["arrow_goal_met"] = r["arrow_over_lp"] >= GOAL_ARROW_RATIO
    if ts.get("samples_per_s") and rw.get("samples_per_s"):
        r["remote_write_over_lp"] = rw["samples_per_s"] / ts["samples_per_s"]
    if vm.get("samples_per_s") and rw.get("samples_per_s"):
        r["remote_write_over_vm_lp"] = rw["samples_per_s"] / vm["samples_per_s"]
    return r


def print_table(out: dict[str, Any]) -> None:
    size = out["size"]
    print(
        f"\nHTTP ingestion, TSBS cpu-only {size['mode']}: {size['hosts']} hosts x {size['duration_s']} s "
        f"= {size['rows']:,} rows = {size['samples']:,} samples, {out['connections']} connections; "
        f"load average before {out['load_avg_before'][0]:.2f}, after {out['load_avg_after'][0]:.2f} "
        f"({out['cpu_count']} CPUs)"
    )
    header = f"  {'target':<34}{'samples/s':>12}{'CPU µs/sample':>15}{'peak RSS':>10}{'all 204':>9}  stored"
    print(header)
    rows = [
        ("VictoriaMetrics /write (LP 10k)", out["victoriametrics_lp"]),
        ("tsengine /write (LP 10k)", out["tsengine_lp"]),
        ("tsengine Arrow import (100k)", out["tsengine_arrow"]),
        ("tsengine remote write", out["tsengine_remote_write"]),
    ]
    for name, r in rows:
        if r.get("available") is False:
            print(f"  {name:<34}{r['reason']}")
            continue
        print(
            f"  {name:<34}{r['samples_per_s'] / 1e6:>10.2f} M{r['server_cpu_us_per_sample']:>15.2f}"
            f"{r['rss_peak_mib']:>6.0f} MiB{'yes' if r['all_204'] else 'NO':>9}  "
            f"{r['stored']:,}/{r['expected']:,}"
        )
    for key, value in out["ratios"].items():
        if isinstance(value, float):
            print(f"  {key}: {value:.2f}")
        elif isinstance(value, list):
            print(f"  {key}: {', '.join(f'{v:.2f}' for v in value)}")
        else:
            print(f"  {key}: {value}")
    for name, r in rows:
        if r.get("runs_samples_per_s"):
            each = ", ".join(f"{v / 1e6:.2f}" for v in r["runs_samples_per_s"])
            print(f"  {name}: runs {each} M samples/s")


# --- profiling (in-process) ----------------------------------------------------------------------


def profile(protocol: str, *, quick: bool = False, top: int = 30, cpu: bool = True) -> str:
    """Serve in this process, send one protocol's bodies, return the cProfile report as text.

    The event-loop thread runs under one profiler; each ingest worker call
    (``server.ingest._pipeline``) under its worker thread's own profiler; the reports are merged.
    ``cpu``: time with ``time.thread_time`` (each thread's CPU: waits for the GIL, the engine lock
    or the disk do not count), else wall time.
    """
    import asyncio

    from aiohttp import web

    import server.ingest
    from server.app import create_app
    from server.config import ServerConfig
    from tsengine.engine import Engine

    size = QUICK if quick else FULL
    hosts, duration_s = size["hosts"], size["duration_s"]
    if protocol == "lp":
        bodies = line_protocol_bodies(generate(hosts, duration_s, LP_LINES))
        path, headers = "/write", {}
    elif protocol == "arrow":
        bodies = arrow_bodies(generate(hosts, duration_s, ARROW_ROWS))
        path, headers = "/api/v1/import?table=cpu", {"Content-Type": ARROW_CONTENT_TYPE}
    else:
        bodies = remote_write_bodies(generate(hosts, duration_s, LP_LINES), hosts=hosts)
        path, headers = (
            "/api/v1/write",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"},
        )

    data_dir = WORK_DIR / f"http-profile-{protocol}"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    engine = Engine(data_dir)
    config = ServerConfig(host="127.0.0.1", port=port, data_dir=str(data_dir))
    profilers: list[cProfile.Profile] = []
    local = threading.local()
    original = server.ingest._pipeline

    def profiled(*args: Any) -> None:
        prof = getattr(local, "prof", None)
        if prof is None:
            prof = local.prof = cProfile.Profile(timer) if timer else cProfile.Profile()
            profilers.append(prof)
        prof.enable()
        try:
            original(*args)
        finally:
            prof.disable()

    ready, stop = threading.Event(), threading.Event()
    timer = time.thread_time if cpu else None
    loop_prof = cProfile.Profile(timer) if timer else cProfile.Profile()
    profilers.append(loop_prof)

    async def serve() -> None:
        runner = web.AppRunner(create_app(engine, config), access_log=None, auto_decompress=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    loop_thread = threading.Thread(target=lambda: loop_prof.runcall(asyncio.run, serve()), daemon=True)
    server.ingest._pipeline = profiled  # type: ignore[assignment]
    try:
        loop_thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("cannot start the in-process server")
        local_conn = threading.local()

        def send(body: bytes) -> int:
            conn = getattr(local_conn, "conn", None)
            if conn is None:
                conn = local_conn.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status

        samples = hosts * (duration_s // 10) * len(tsbs.FIELDS)
        c0 = time.process_time()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            statuses = Counter(pool.map(send, bodies))
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
    finally:
        stop.set()
        loop_thread.join()
        server.ingest._pipeline = original  # type: ignore[assignment]
        engine.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    text = io.StringIO()
    text.write(
        f"profile of {protocol}: {len(bodies)} bodies, {samples:,} samples in {wall_s:.2f} s "
        f"({samples / wall_s / 1e6:.2f} M/s with the profiler on), process CPU {cpu_s:.2f} s, "
        f"statuses {dict(statuses)}; profiler clock: {'thread CPU time' if cpu else 'wall'}\n"
    )
    stats = pstats.Stats(profilers[0], stream=text)
    for prof in profilers[1:]:
        stats.add(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 hosts x 1 hour")
    parser.add_argument("--profile", choices=("lp", "arrow", "remote_write"), help="profile one protocol")
    parser.add_argument("--wall", action="store_true", help="profile wall time, not thread CPU time")
    parser.add_argument("--repeats", type=int, help=f"runs per target (default {FULL_REPEATS}, --quick 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile(args.profile, quick=args.quick, cpu=not args.wall))
        return 0
    out = run(args.quick, repeats=args.repeats)
    print_table(out)
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
