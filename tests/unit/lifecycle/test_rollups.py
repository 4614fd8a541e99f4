"""Downsampling: rollups equal aggregates computed in Python, incrementally, late rows within
the lateness re-computed, and raw data held back from retention until rolled up."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.lifecycle import Lifecycle, Resolution, StorageConfig

S = 1_000_000_000
M = 60 * S
H = 3600 * S
START = 1_700_000_000_000_000_000 // H * H
CONFIG = StorageConfig(
    resolutions=(Resolution("1m", 60, retention_hours=48), Resolution("1h", 3600)), lateness_s=600
)


def expected_rollup(points: list[tuple[int, str, float | None, int]], every_ns: int, end_ns: int) -> dict:
    """(host, bucket) -> {field: (min, max, sum, count, last)} over closed buckets, in Python."""
    latest: dict[tuple[str, int], tuple[float | None, int]] = {}
    for t, host, v, n in points:  # later writes of the same (series, time) win, field by field
        old = latest.get((host, t))
        latest[(host, t)] = (v if v is not None else (old[0] if old else None), n)
    groups: dict[tuple[str, int], list[tuple[int, float | None, int]]] = defaultdict(list)
    for (host, t), (v, n) in latest.items():
        if t // every_ns * every_ns + every_ns <= end_ns:
            groups[(host, t // every_ns * every_ns)].append((t, v, n))
    out = {}
    for key, rows in groups.items():
        rows.sort()
        vs = [(t, v) for t, v, _ in rows if v is not None]
        ns = [n for _, _, n in rows]
        out[key] = {
            "v": (min(v for _, v in vs), max(v for _, v in vs), sum(v for _, v in vs), len(vs), vs[-1][1])
            if vs
            else (None, None, None, 0, None),
            "n": (min(ns), max(ns), sum(ns), len(ns), rows[-1][2]),
        }
    return out


def actual_rollup(eng: Engine, table: str) -> dict:
    cols = ", ".join(f"{f}_{s}" for f in ("v", "n") for s in ("min", "max", "sum", "count", "last"))
    out = {}
    for r in eng.sql(f"SELECT host, epoch_ns(time) AS b, {cols} FROM {table}").to_pylist():
        out[(r["host"], r["b"])] = {f: tuple(r[f"{f}_{s}"] for s in ("min", "max", "sum", "count", "last"))
                                    for f in ("v", "n")}  # fmt: skip
    return out


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, fields in expected.items():
        for f, (lo, hi, total, count, last) in fields.items():
            a = actual[key][f]
            assert (a[0], a[1], a[3], a[4]) == (lo, hi, count, last), (key, f, a)
            assert (a[2] is None and total is None) or math.isclose(a[2], total, rel_tol=1e-12, abs_tol=1e-9)


points_strategy = st.lists(
    st.tuples(
        st.integers(0, 3 * 3600 - 1),  # seconds after START
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(-(10**9), 10**9),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=points_strategy, late=points_strategy)
def test_rollups_equal_python_aggregates(tmp_path_factory, points, late) -> None:
    clock = ManualClock(START + 2 * H)
    path = tmp_path_factory.mktemp("data")
    with Engine.open(path, clock=clock, fsync="none") as eng:
        life = Lifecycle(eng, CONFIG)
        early = [(START + s * S, h, v, n) for s, h, v, n in points if START + s * S < clock.now_ns()]
        if early:
            write(eng, early)
        life.run()
        # Late rows within the lateness (the last 10 minutes before "now") and newer rows.
        clock.advance(3600)
        recent = [(clock.now_ns() - 3600 * S - 600 * S + s % 1800 * S, h, v, n) for s, h, v, n in late]
        write(eng, recent)
        life.run()
        now = clock.now_ns()
        all_points = early + recent
        assert_same(actual_rollup(eng, "cpu_1m"), expected_rollup(all_points, M, now))
        assert_same(actual_rollup(eng, "cpu_1h"), expected_rollup(all_points, H, now))


def write(eng: Engine, points: list[tuple[int, str, float | None, int]]) -> None:
    eng.write(
        "cpu",
        np.array([p[0] for p in points], dtype=np.int64),
        tags={"host": [p[1] for p in points]},
        fields={"v": pa.array([p[2] for p in points], pa.float64()), "n": [p[3] for p in points]},
    )


def test_raw_data_is_held_until_rolled_up_then_ranges_read_the_finest_kept(tmp_path: Path) -> None:
    clock = ManualClock(START)
    with Engine.open(tmp_path / "d", clock=clock, fsync="none", retention_hours={"default.cpu": 24}) as eng:
        life = Lifecycle(eng, CONFIG)
        t = START - 30 * H + np.arange(30 * 60, dtype=np.int64) * M  # one row a minute for 30 h
        eng.write(
            "cpu", t, tags={"host": ["a"] * len(t)}, fields={"v": np.ones(len(t)), "n": np.arange(len(t))}
        )
        eng.flush()
        # Before any rollup, retention holds raw data back.
        held = life.apply_retention()
        assert held["held"] > 0 and held["dropped"] == 0
        result = life.run()
        assert result["downsampling"]["rollup_rows"] > 0
        assert result["retention"]["dropped"] == 6 and result["retention"]["held"] == 0
        eng.flush()
        # The range helper: raw for the last 24 h, 1-minute rollups before (kept 48 h).
        got = life.query_range("cpu", START - 30 * H, START)
        assert got.num_rows == 30 * 60
        assert got.column("v_count").to_pylist() == [1] * (30 * 60)
        assert got.column("n_last").to_pylist() == list(range(30 * 60))
        assert set(got.column_names) >= {"host", "time", "v_min", "v_max", "v_sum", "v_count", "v_last"}


def test_the_auto_view_reads_each_range_once_from_the_finest_level(tmp_path: Path) -> None:
    clock = ManualClock(START)
    retention = {"default.cpu": 24, "default.cpu_1m": 26}
    with Engine.open(tmp_path / "d", clock=clock, fsync="none", retention_hours=retention) as eng:
        life = Lifecycle(eng, CONFIG)
        t = START - 30 * H + np.arange(30 * 60, dtype=np.int64) * M
        eng.write(
            "cpu", t, tags={"host": ["a"] * len(t)}, fields={"v": np.ones(len(t)), "n": np.arange(len(t))}
        )
        life.run()
        clock.advance(30)  # boundaries no longer on a bucket edge: they are rounded up
        life.refresh_views()
        got = eng.sql(
            "SELECT count(*) AS rows, sum(v_count) AS c, sum(n_sum) AS s FROM cpu_auto"
        ).to_pylist()[0]
        assert got["c"] == 30 * 60 and got["s"] == sum(range(30 * 60))
        levels = eng.sql(
            "SELECT v_count, count(*) AS k FROM cpu_auto GROUP BY v_count ORDER BY v_count"
        ).to_pylist()
        # Raw rows for the last 24 h (the boundary rounded up to the minute), minutes back to
        # 26 h (rounded up to the hour: 25 h), hour buckets before that.
        assert levels == [{"v_count": 1, "k": (24 * 60 - 1) + 61}, {"v_count": 60, "k": 5}]
        assert got["rows"] == 24 * 60 - 1 + 61 + 5
