"""The lifecycle benchmark's data: how many rows, which hosts and times, and the same rows every run.

The passes themselves (rollups, archive, query) are exercised by
``python -m benchmarks.bench_lifecycle --quick``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_lifecycle as bench
from tsengine.model.batch import TableBatch

HOUR_NS = bench.NS_PER_HOUR


def test_one_row_per_host_every_interval_over_the_hours_before_the_end() -> None:
    data = bench.generate(3, 2, end_ns=10 * HOUR_NS)
    ticks = 2 * 3600 // bench.INTERVAL_S
    assert data.rows == 3 * ticks == 2160
    assert data.time.dtype == np.int64
    assert data.time[0] == 8 * HOUR_NS
    assert data.time[-1] == 10 * HOUR_NS - bench.INTERVAL_S * 1_000_000_000  # the end is exclusive
    assert np.all(np.diff(data.time) >= 0)
    # Time, then host order: a tick's rows share a timestamp and name every host once.
    assert data.host[:4] == ["h0", "h1", "h2", "h0"]
    assert data.time[0] == data.time[2] != data.time[3]
    assert np.unique(data.time).size == ticks
    # 360 rows per host and hour: each hour file will hold 1,080 rows.
    assert np.array_equal(np.bincount(data.time // HOUR_NS - 8), [3 * 360, 3 * 360])


def test_field_values_are_in_range_and_seeded() -> None:
    data = bench.generate(2, 1)
    assert data.usage.min() >= 0 and data.usage.max() < 100
    assert np.array_equal(data.usage, np.round(data.usage, 2))
    assert data.req.dtype == np.int64 and data.req.min() >= 0 and data.req.max() < 1000
    again = bench.generate(2, 1)
    assert np.array_equal(again.usage, data.usage) and np.array_equal(again.req, data.req)
    assert not np.array_equal(bench.generate(2, 1, seed=1).usage, data.usage)


def test_the_query_host_exists_at_full_and_quick_size() -> None:
    for size in (bench.FULL, bench.QUICK):
        assert size["hosts"] > bench.QUERY_HOST_INDEX
        assert size["hours"] % 2 == 0  # retention is half the span: whole hour files expire


def test_the_rows_build_a_valid_engine_batch() -> None:
    data = bench.generate(2, 1)
    batch = TableBatch.build(
        bench.TABLE, data.time, tags={"host": data.host}, fields={"usage": data.usage, "req": data.req}
    )
    assert batch.num_rows == data.rows


@pytest.mark.parametrize(("hosts", "hours"), [(0, 1), (1, 0)])
def test_empty_sizes_are_refused(hosts: int, hours: int) -> None:
    with pytest.raises(ValueError, match=f"cannot generate {hosts} hosts x {hours} hours"):
        bench.generate(hosts, hours)
