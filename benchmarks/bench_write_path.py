"""The engine's write path in-process: rows/s for string-heavy and numeric batches, and the cost
of a query over live (not yet persisted) rows.

Run: ``.venv/bin/python -m benchmarks.bench_write_path [--quick]`` (also by ``benchmarks.run``).
Two shapes, each written through ``Engine.write_batches`` in batches of 512 rows (an OTLP
export's size) with ``fsync="none"`` and no persistence during the run:

* ``spans``: 9 string fields of 33 characters (hex ids, names) + one integer per row, two tags —
  the shape of the ``spans`` and ``events`` tables;
* ``cpu``: 10 float fields per row, one tag of 100 hosts — the TSBS cpu-only shape.

Figures: µs per row written (best of ``repeats`` fresh engines), ms for ``SELECT count(*)`` and
a ``max`` over the live rows (best of 3), µs per row for the final flush to Parquet.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

__all__ = ["run"]

BATCH = 512


def _span_batches(n_batches: int) -> list[Any]:
    from tsengine.model import TableBatch

    rng = np.random.default_rng(0)
    out = []
    for i in range(n_batches):
        t = np.int64(1_700_000_000_000_000_000) + i * BATCH + np.arange(BATCH, dtype=np.int64)
        ids = [f"{x:032x}" for x in rng.integers(0, 2**62, BATCH)]
        fields: dict[str, Any] = {f"s{k}": pa.array([h + str(k) for h in ids]) for k in range(9)}
        fields["duration_ns"] = pa.array(rng.integers(0, 10**6, BATCH))
        tags = {"service": ["checkout"] * BATCH, "name": ["GET /orders/{id}"] * BATCH}
        out.append(TableBatch.build("spans", t, tags=tags, fields=fields))
    return out


def _cpu_batches(n_batches: int) -> list[Any]:
    from tsengine.model import TableBatch

    rng = np.random.default_rng(1)
    hosts = np.array([f"host_{h}" for h in range(100)])
    out = []
    for i in range(n_batches):
        t = np.int64(1_700_000_000_000_000_000) + (i * BATCH + np.arange(BATCH, dtype=np.int64)) * 10**7
        fields = {f"usage_{k}": rng.random(BATCH) * 100 for k in range(10)}
        out.append(TableBatch.build("cpu", t, tags={"host": hosts[np.arange(BATCH) % 100]}, fields=fields))
    return out


def _measure(batches: list[Any], table: str, query_field: str, repeats: int) -> dict[str, float]:
    from tsengine import Engine

    rows = sum(b.num_rows for b in batches)
    best_write = best_query = best_flush = float("inf")
    counted = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            eng = Engine.open(d, fsync="none", max_chunk_age_s=3600, persist_check_interval_s=3600)
            try:
                t0 = time.perf_counter()
                for b in batches:
                    eng.write_batches([b])
                best_write = min(best_write, time.perf_counter() - t0)
                for _q in range(3):
                    t0 = time.perf_counter()
                    answer = eng.sql(f'SELECT count(*), max("{query_field}") FROM {table}')
                    best_query = min(best_query, time.perf_counter() - t0)
                t0 = time.perf_counter()
                eng.flush()
                best_flush = min(best_flush, time.perf_counter() - t0)
                counted = answer.column(0)[0].as_py()
            finally:
                eng.close()
    return {
        "rows": rows,
        "live_rows_counted": counted,
        "write_us_per_row": round(best_write / rows * 1e6, 3),
        "rows_per_s": round(rows / best_write),
        "live_query_ms": round(best_query * 1e3, 2),
        "flush_us_per_row": round(best_flush / rows * 1e6, 3),
    }


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    n = 20 if quick else 200
    repeats = repeats or (1 if quick else 3)
    result: dict[str, Any] = {
        "batch_rows": BATCH,
        "repeats": repeats,
        "quick": quick,
        "spans": _measure(_span_batches(n), "spans", "s0", repeats),
        "cpu": _measure(_cpu_batches(n), "cpu", "usage_0", repeats),
    }
    for shape in ("spans", "cpu"):
        r = result[shape]
        print(
            f"{shape:6s} {r['rows']:>8,} rows: {r['write_us_per_row']:.2f} µs/row written "
            f"({r['rows_per_s']:,}/s), live query {r['live_query_ms']:.1f} ms, "
            f"flush {r['flush_us_per_row']:.2f} µs/row"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = run(args.quick)
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
