"""Storage lifecycle throughput: rollups, archiving expired hour files, a query on the archive.

What comes in: nothing (``run(quick)``). What goes out: a dict of figures — write + flush of the
raw data, one rollup pass (1 min and 1 h buckets) over every raw row, archiving every hour file
past retention to a local archive directory, one aggregate over ``archive.cpu`` for one host,
and an incremental rollup pass 10 minutes later (only the lateness window to recompute). Who
calls it: ``python -m benchmarks.run --only lifecycle``, or
``python -m benchmarks.bench_lifecycle [--quick] [--json PATH]``.

The data: a ``cpu`` table of ``hosts`` hosts (tag ``host`` = ``h0`` … ``h<n-1>``), one row per
host every 10 s over ``hours`` hours ending at a whole hour, two fields (``usage`` a float with
two decimals, ``req`` an int64): 100 hosts x 48 h = 1,728,000 rows (``quick``: 10 hosts x 6 h =
21,600 rows). The engine runs in this process (``fsync="none"``) on a fresh directory under
``benchmarks/.work/`` (removed afterwards) with an injected :class:`~tsengine.clock.ManualClock`
at the end of the data, and the table's retention at half the span, so the older half of the
hour files expires: 24 of them at full size.

Each step is timed once per pass (wall clock, ``time.perf_counter``): these are bulk passes, not
hot paths. The whole pass runs ``repeats`` times (3; ``quick``: 1) on a fresh directory; each
timing is the median of the passes, every pass's timings kept alongside.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks._timing import timed

__all__ = ["Data", "generate", "run"]

WORK_DIR = Path(__file__).resolve().parent / ".work"
NS_PER_S = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_S
#: The data ends here (a whole hour, 2023-11-14T22:00Z); the clock stands at this instant.
END_NS = 1_700_000_000_000_000_000 // NS_PER_HOUR * NS_PER_HOUR
INTERVAL_S = 10
FULL = {"hosts": 100, "hours": 48}
QUICK = {"hosts": 10, "hours": 6}
#: Late rows up to 10 min old recompute their buckets: the incremental pass redoes this window.
LATENESS_S = 600
#: Rollup levels: (name, bucket seconds).
RESOLUTIONS = (("1m", 60), ("1h", 3600))
FULL_REPEATS = 3
#: Wall-time figures: the median of the repeats each.
TIMINGS = ("write_s", "flush_s", "rollup_s", "archive_s", "archive_query_ms", "incremental_rollup_ms")
QUERY_HOST_INDEX = 7
QUERY_HOST = f"h{QUERY_HOST_INDEX}"
TABLE = "cpu"


@dataclass(frozen=True)
class Data:
    """The raw rows, in time then host order: ``time`` int64 ns, tag ``host``, fields."""

    time: np.ndarray
    host: list[str]
    usage: np.ndarray
    req: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.time)


def generate(hosts: int, hours: int, *, end_ns: int = END_NS, seed: int = 0) -> Data:
    """One row per host every INTERVAL_S over ``hours`` hours ending (exclusive) at ``end_ns``.

    Seeded: the same arguments give the same rows.

    Raises:
        ValueError: ``hosts`` or ``hours`` below 1.
    """
    if hosts < 1 or hours < 1:
        raise ValueError(f"cannot generate {hosts} hosts x {hours} hours: both must be at least 1")
    ticks = hours * 3600 // INTERVAL_S
    n = hosts * ticks
    rng = np.random.default_rng(seed)
    time = end_ns - hours * NS_PER_HOUR + (np.arange(n, dtype=np.int64) // hosts) * (INTERVAL_S * NS_PER_S)
    return Data(
        time=time,
        host=[f"h{i}" for i in range(hosts)] * ticks,
        usage=np.round(rng.random(n) * 100, 2),
        req=rng.integers(0, 1000, n),
    )


def run(quick: bool = False, *, repeats: int | None = None) -> dict[str, Any]:
    """Write, roll up, archive, query, roll up again, ``repeats`` times on a fresh directory each.

    Each timing is the median of the repeats (every repeat's kept under ``runs``); the rates are
    computed from the medians. See the module docstring.
    """
    size = QUICK if quick else FULL
    repeats = repeats or (1 if quick else FULL_REPEATS)
    hosts, hours = size["hosts"], size["hours"]
    retention_hours = hours // 2
    data = generate(hosts, hours)
    runs = [_once(data, hosts, retention_hours) for _ in range(repeats)]
    out: dict[str, Any] = {
        "size": {**size, "rows": data.rows, "interval_s": INTERVAL_S, "retention_hours": retention_hours},
        "resolutions": [r for r, _ in RESOLUTIONS],
        "repeats": repeats,
        "quick": quick,
        **runs[len(runs) // 2],  # the counts (equal in every run) and the query
    }
    for key in TIMINGS:
        out[key] = statistics.median(r[key] for r in runs)
    out["runs"] = {key: [r[key] for r in runs] for key in TIMINGS}
    out["rollup_raw_rows_per_s"] = data.rows / out["rollup_s"]
    out["archive_files_per_s"] = out["archived_files"] / out["archive_s"]
    out["archive_query_ok"] = all(r["archive_query_ok"] for r in runs)
    _print(out)
    return out


def _once(data: Data, hosts: int, retention_hours: int) -> dict[str, Any]:
    """One pass over a fresh engine directory: each step's wall time and counts."""
    from tsengine import Engine
    from tsengine.clock import ManualClock
    from tsengine.lifecycle import ArchiveStore, Lifecycle, Resolution, StorageConfig

    out: dict[str, Any] = {}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lifecycle-", dir=WORK_DIR))
    clock = ManualClock(END_NS)
    try:
        with Engine.open(
            work / "data", clock=clock, fsync="none", retention_hours={"default": retention_hours}
        ) as eng:
            fields = {"usage": data.usage, "req": data.req}
            out["write_s"], _ = timed(
                lambda: eng.write(TABLE, data.time, tags={"host": data.host}, fields=fields)
            )
            out["flush_s"], _ = timed(eng.flush)
            out["raw_files"] = len(eng.table_files("default", TABLE))
            out["raw_bytes"] = eng.disk_usage()

            config = StorageConfig(
                resolutions=tuple(Resolution(name, every_s) for name, every_s in RESOLUTIONS),
                lateness_s=LATENESS_S,
            )
            life = Lifecycle(eng, config, archive=ArchiveStore.local(work / "archive"))
            out["rollup_s"], rolled = timed(lambda: life.rollups.run(clock.now_ns()))
            out["rollup_rows"] = rolled["rollup_rows"]

            out["expired_files"] = len(eng.expired_files())
            out["archive_s"], retained = timed(life.apply_retention)
            out["archived_files"] = retained["archived"]
            out["archived_bytes"] = retained["bytes_freed"]
            out["held_files"] = retained["held"]

            query = f"SELECT count(*) AS c, avg(usage) AS a FROM archive.{TABLE} WHERE host = '{QUERY_HOST}'"
            query_s, answer = timed(lambda: eng.sql(query).to_pylist())
            cutoff_ns = END_NS - retention_hours * NS_PER_HOUR
            mine = (data.time < cutoff_ns) & (np.arange(data.rows) % hosts == QUERY_HOST_INDEX)
            out["archive_query"] = query
            out["archive_query_ms"] = query_s * 1000
            out["archive_query_rows"] = int(answer[0]["c"])
            out["archive_query_expected_rows"] = int(mine.sum())
            out["archive_query_ok"] = out["archive_query_rows"] == out[
                "archive_query_expected_rows"
            ] and bool(np.isclose(answer[0]["a"], data.usage[mine].mean()))

            incremental_s, again = timed(lambda: life.rollups.run(clock.now_ns() + LATENESS_S * NS_PER_S))
            out["incremental_rollup_ms"] = incremental_s * 1000
            out["incremental_rollup_rows"] = again["rollup_rows"]
            out["incremental_rollup_units"] = again["rollup_units"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _print(out: dict[str, Any]) -> None:
    size = out["size"]
    print(
        f"storage lifecycle: {size['hosts']} hosts x {size['hours']} h every {size['interval_s']} s = "
        f"{size['rows']:,} rows, retention {size['retention_hours']} h; median of {out['repeats']} passes"
    )
    print(
        f"  write {out['write_s']:.2f} s + flush {out['flush_s']:.2f} s: {out['raw_files']} files, "
        f"{out['raw_bytes']:,} bytes"
    )
    print(
        f"  rollups 1m + 1h: {out['rollup_s']:.2f} s, {out['rollup_rows']:,} rollup rows "
        f"({out['rollup_raw_rows_per_s']:,.0f} raw rows/s)"
    )
    print(
        f"  archive {out['archived_files']}/{out['expired_files']} expired hour files "
        f"({out['archived_bytes']:,} local bytes, {out['held_files']} held): {out['archive_s']:.2f} s, "
        f"{out['archive_files_per_s']:.1f} files/s"
    )
    print(
        f"  archive.{TABLE} one-host aggregate: {out['archive_query_ms']:.0f} ms, "
        f"{out['archive_query_rows']:,}/{out['archive_query_expected_rows']:,} rows "
        f"({'ok' if out['archive_query_ok'] else 'WRONG'})"
    )
    print(
        f"  incremental rollup pass ({LATENESS_S // 60} min later): {out['incremental_rollup_ms']:.0f} ms, "
        f"{out['incremental_rollup_rows']:,} rows in {out['incremental_rollup_units']} units"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 hosts x 6 hours")
    parser.add_argument("--repeats", type=int, help=f"passes (default {FULL_REPEATS}, --quick 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    out = run(args.quick, repeats=args.repeats)
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
