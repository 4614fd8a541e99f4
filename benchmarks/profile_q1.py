"""Where the time of the storage benchmark's q1 goes (the goal it misses), part by part.

``python -m benchmarks.profile_q1 [--mode int|dec2|float]`` loads one TSBS day into a fresh
engine (flush + compact, as the benchmark does) and times q1 end to end, then each layer: the
sandbox check, the snapshot and its binding, DuckDB on the table's view, DuckDB on the day file
without the view (with DuckDB's own profile: planner, optimizer, row groups scanned), and the
same query for one host. Medians of 21 runs after a warm-up. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from benchmarks import tsbs
from benchmarks.queries import Dataset
from benchmarks.storage_bench import sql_queries


def _median_ms(fn: Callable[[], object], runs: int = 21) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> None:
    from tsengine import Engine
    from tsengine.query import sandbox

    parser = argparse.ArgumentParser(description="profile the storage benchmark's q1")
    parser.add_argument("--mode", default="int", choices=tsbs.MODES)
    args = parser.parse_args(argv)
    batches = list(tsbs.generate(args.mode))
    q1 = sql_queries(Dataset.from_batches(batches, hosts=100))["q1"]
    with tempfile.TemporaryDirectory(prefix="tsengine-q1-") as tmp:
        eng = Engine.open(Path(tmp) / "data")
        try:
            for b in batches:
                eng.write(tsbs.MEASUREMENT, b.time, tags=b.tags, fields=b.fields)
            eng.flush()
            eng.compact()
            cur = eng.query._cursor()

            def snapshot_and_bind() -> None:
                snaps = eng.snapshot({tsbs.MEASUREMENT})
                try:
                    for s in snaps:
                        eng.query._bind(cur, {}, s)
                finally:
                    eng.release(snaps)

            (day_file,) = sorted((Path(tmp) / "data").rglob("date=*/n0-*.parquet"))
            direct = q1.replace(f"FROM {tsbs.MEASUREMENT}", f"FROM '{day_file}'")
            one_host = direct.split(" WHERE ")[0] + " WHERE hostname = 'host_0' GROUP BY ALL"
            con = duckdb.connect(config={"enable_object_cache": True})
            rows = [
                ("engine.sql end to end", _median_ms(lambda: eng.sql(q1))),
                ("  sandbox parse + table names", _median_ms(lambda: sandbox.check_sql_tables(q1))),
                ("  snapshot + bind variables and Arrow", _median_ms(snapshot_and_bind)),
                ("  DuckDB on the table's view", _median_ms(lambda: cur.execute(q1).fetchall())),
                ("DuckDB on the day file, no view", _median_ms(lambda: con.execute(direct).fetchall())),
                (
                    "  ... one host (=) instead of 8 (IN)",
                    _median_ms(lambda: con.execute(one_host).fetchall()),
                ),
                ("  ... SELECT 1", _median_ms(lambda: con.execute("SELECT 1").fetchall())),
            ]
            profile = Path(tmp) / "profile.json"
            con.execute("PRAGMA enable_profiling = 'json'")
            con.execute(f"PRAGMA profiling_output = '{profile}'")
            con.execute(direct).fetchall()
            prof = json.loads(profile.read_text())
        finally:
            eng.close()
    print(f"q1 profile, mode {args.mode} (median of 21 runs)")
    for name, ms in rows:
        print(f"  {name:42s} {ms:8.2f} ms")
    q = prof["query"]
    print(
        f"  DuckDB's profile of the direct query: planner {prof['planner']['total_time'] * 1000:.2f} ms, "
        f"optimizer {prof['optimizer']['total_time'] * 1000:.2f} ms, total {q['total_time'] * 1000:.2f} ms, "
        f"row groups {q['total_row_groups_scanned']} of {q['total_row_groups_to_scan']}, "
        f"rows scanned {q['total_rows_scanned']}"
    )


if __name__ == "__main__":
    main()
