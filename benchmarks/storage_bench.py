"""tsengine on the TSBS cpu-only data set: ingest, memory, bytes per sample, q1-q4.

What comes in: a value mode and the data-set size. What goes out: a dict of figures, the same
keys as :func:`benchmarks.victoriametrics.bench` returns, plus flush/compact times and a
bit-for-bit read-back check. Who calls it: :mod:`benchmarks.run`, which runs it as
``python -m benchmarks.storage_bench --mode M --json OUT`` in a fresh process per mode so that
one mode's memory does not pollute the next one's peak RSS.

Method:

* the batches are generated before the engine opens (10k rows = 100 timestamps x 100 hosts
  each); ingest time is the sum of the ``eng.write`` calls only, one writer thread,
  ``fsync="interval"``;
* RSS is sampled every 50 ms by a thread; ``rss_baseline_mib`` is the process with the data
  generated and tsengine imported, ``rss_peak_mib`` the highest seen during write, flush and
  compact, ``rss_growth_mib`` their difference (what the engine itself added);
* bytes per sample = ``disk_usage()`` after ``flush()`` and ``compact()`` / samples;
* read-back: ``count(*)`` equals the rows written, and every value of two hosts' series reads
  back bit-for-bit (same type, same bits) through SQL;
* q1-q4: 1 warm-up and 5 timed runs each; median. q3 is timed twice: ``eng.latest("cpu")``
  (answered from memory) and its SQL equivalent with ``arg_max``. Every answer is compared with
  the numpy ground truth of :mod:`benchmarks.queries`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pyarrow as pa

from benchmarks import tsbs
from benchmarks._process import RssSampler
from benchmarks.queries import NS_PER_HOUR, Q4_QUANTILE, Dataset, Expected, compare
from benchmarks.tsbs import FIELDS, MEASUREMENT, START_NS, Batch
from benchmarks.victoriametrics import TIMED_RUNS, WARMUP_RUNS

__all__ = ["bench", "sql_queries"]

HOUR_BASE = START_NS // NS_PER_HOUR
READBACK_HOSTS = (0, 57)


def _log(message: str) -> None:
    # stdout may carry the JSON result: progress goes to stderr.
    print(f"    tsengine: {message}", file=sys.stderr, flush=True)


def _timestamp(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def sql_queries(ds: Dataset) -> dict[str, str]:
    """q1, q2, q3 (the SQL form) and q4 as tsengine SQL.

    Hour buckets use integer division of ``epoch_ns`` (cheaper than ``time_bucket``).
    """
    hosts = ", ".join(f"'{h}'" for h in ds.q1_hosts)
    avgs = ", ".join(f"avg({f}) AS {f}" for f in FIELDS)
    lasts = ", ".join(f"arg_max({f}, time) AS {f}" for f in FIELDS)
    bucket = f"epoch_ns(time) // {NS_PER_HOUR}"
    return {
        "q1": f"SELECT hostname, {bucket} AS hour, max(usage_user) AS v FROM {MEASUREMENT} "
        f"WHERE hostname IN ({hosts}) GROUP BY ALL",
        "q2": f"SELECT hostname, {bucket} AS hour, {avgs} FROM {MEASUREMENT} "
        f"WHERE time >= TIMESTAMP '{_timestamp(ds.q2_start_ns)}' GROUP BY ALL",
        "q3_sql": f"SELECT hostname, {lasts} FROM {MEASUREMENT} GROUP BY hostname",
        "q4": f"SELECT hostname, quantile_cont(usage_user, {Q4_QUANTILE}) AS v FROM {MEASUREMENT} "
        "GROUP BY hostname",
    }


def _answer(query: str, table: pa.Table) -> dict[Any, float]:
    """Convert a result table into the shape of :class:`benchmarks.queries.Expected`."""
    cols = table.to_pydict()
    hosts = cols["hostname"]
    if query == "q1":
        return {(h, hr - HOUR_BASE): v for h, hr, v in zip(hosts, cols["hour"], cols["v"], strict=True)}
    if query == "q2":
        return {
            (h, f, hr - HOUR_BASE): v
            for f in FIELDS
            for h, hr, v in zip(hosts, cols["hour"], cols[f], strict=True)
        }
    if query == "q4":
        return dict(zip(hosts, cols["v"], strict=True))
    # q3: the last value of every (host, field) series
    return {(h, f): v for f in FIELDS for h, v in zip(hosts, cols[f], strict=True)}


def _time(fn: Callable[[], pa.Table]) -> tuple[list[float], pa.Table]:
    times = []
    result = pa.table({})
    for i in range(WARMUP_RUNS + TIMED_RUNS):
        t0 = time.perf_counter()
        result = fn()
        if i >= WARMUP_RUNS:
            times.append(time.perf_counter() - t0)
    return times, result


def _readback(eng: Any, ds: Dataset) -> dict[str, Any]:
    """Count rows and compare two hosts' whole series bit-for-bit."""
    rows = int(eng.sql(f"SELECT count(*) AS n FROM {MEASUREMENT}").column("n")[0].as_py())
    checked = 0
    problems: list[str] = []
    for h in READBACK_HOSTS:
        if h >= ds.hosts:
            continue
        cols = ", ".join(FIELDS)
        got = eng.sql(
            f"SELECT epoch_ns(time) AS t, {cols} FROM {MEASUREMENT} WHERE hostname = 'host_{h}' ORDER BY t"
        )
        sel = ds.host == h
        if not np.array_equal(got.column("t").to_numpy(), ds.time[sel]):
            problems.append(f"host_{h}: timestamps differ")
            continue
        for f in FIELDS:
            want = ds.fields[f][sel]
            have = got.column(f).to_numpy()
            if have.dtype != want.dtype:
                problems.append(f"host_{h} {f}: type {have.dtype}, written {want.dtype}")
            elif not np.array_equal(have.view(np.int64), want.view(np.int64)):
                diff = int(np.count_nonzero(have.view(np.int64) != want.view(np.int64)))
                problems.append(f"host_{h} {f}: {diff} values differ in their bits")
            checked += len(want)
    return {
        "ok": rows == len(ds.time) and not problems,
        "rows": rows,
        "rows_written": len(ds.time),
        "values_checked_bit_for_bit": checked,
        "problems": problems[:10],
    }


def bench(mode: tsbs.Mode, *, hosts: int, duration_s: int, work_dir: Path) -> dict[str, Any]:
    """Measure tsengine on one value mode; see the module docstring."""
    from tsengine import Engine

    batches: list[Batch] = list(tsbs.generate(mode, hosts=hosts, duration_s=duration_s))
    ds = Dataset.from_batches(batches, hosts=hosts)
    expected = Expected.of(ds)
    samples = ds.num_samples
    _log(f"generated {len(batches)} batches, {samples:,} samples ({mode})")
    path = work_dir / f"tsengine-{mode}"
    shutil.rmtree(path, ignore_errors=True)
    me = psutil.Process()
    result: dict[str, Any] = {"available": True, "samples": samples, "path": str(path)}
    result["rss_baseline_mib"] = me.memory_info().rss / 2**20

    with RssSampler(me.pid) as rss, Engine.open(path, fsync="interval") as eng:
        write_s = 0.0
        t_start = time.perf_counter()
        for b in batches:
            t0 = time.perf_counter()
            eng.write(MEASUREMENT, b.time, tags=b.tags, fields=b.fields)
            write_s += time.perf_counter() - t0
        result["ingest_wall_s"] = time.perf_counter() - t_start
        result["ingest_s"] = write_s
        result["ingest_samples_per_s"] = samples / write_s
        result["rss_ingest_peak_mib"] = rss.peak / 2**20
        _log(f"wrote in {write_s:.2f} s ({samples / write_s / 1e6:.2f} M samples/s); flushing")

        t0 = time.perf_counter()
        eng.flush()
        result["flush_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        eng.compact()
        result["compact_s"] = time.perf_counter() - t0
        _log(f"flush {result['flush_s']:.1f} s, compact {result['compact_s']:.1f} s; querying")
        result["rss_peak_mib"] = rss.peak / 2**20
        result["rss_growth_mib"] = result["rss_peak_mib"] - result["rss_baseline_mib"]
        result["disk_bytes"] = int(eng.disk_usage())
        result["bytes_per_sample"] = result["disk_bytes"] / samples
        del batches

        result["readback"] = _readback(eng, ds)
        queries: dict[str, Any] = {}
        sql = sql_queries(ds)
        runs: dict[str, tuple[str, Callable[[], pa.Table]]] = {
            "q1": (sql["q1"], lambda: eng.sql(sql["q1"])),
            "q2": (sql["q2"], lambda: eng.sql(sql["q2"])),
            "q3": ('eng.latest("cpu")', lambda: eng.latest(MEASUREMENT)),
            "q3_sql": (sql["q3_sql"], lambda: eng.sql(sql["q3_sql"])),
            "q4": (sql["q4"], lambda: eng.sql(sql["q4"])),
        }
        for name, (text, fn) in runs.items():
            times, table = _time(fn)
            got = _answer(name.removesuffix("_sql"), table)
            queries[name] = {
                "median_ms": statistics.median(times) * 1000,
                "runs_ms": [t * 1000 for t in times],
                "query": text,
                "check": compare(name.removesuffix("_sql"), got, expected),
                "sample": {repr(k): v for k, v in list(got.items())[:3]},
            }
        result["queries"] = queries
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=tsbs.MODES, required=True)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--duration-s", type=int, default=86_400)
    parser.add_argument("--work-dir", type=Path, default=Path(__file__).parent / ".work")
    parser.add_argument("--json", type=Path, help="write the figures here (default: stdout)")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result = bench(args.mode, hosts=args.hosts, duration_s=args.duration_s, work_dir=args.work_dir)
    shutil.rmtree(args.work_dir / f"tsengine-{args.mode}", ignore_errors=True)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.json:
        args.json.write_bytes(text)
    else:
        sys.stdout.buffer.write(text + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
