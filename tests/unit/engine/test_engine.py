"""The embedded engine's public behaviour: write, query, schema, persistence, restart."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tsengine import Engine
from tsengine.errors import InvalidInput, InvalidName, NotFound, Overloaded, SchemaConflict
from tsengine.model import TAG_METADATA

T0 = 1_451_606_400_000_000_000  # 2016-01-01T00:00:00Z
S = 1_000_000_000


def rows(eng: Engine, sql: str, params=None) -> list[tuple]:
    t = eng.sql(sql, params)
    return list(zip(*(c.to_pylist() for c in t.columns), strict=True))


def test_write_then_query_live_and_persisted(engine: Engine) -> None:
    n = 600
    engine.write(
        "cpu",
        T0 + np.arange(n) * S,
        tags={"host": ["a", "b", "c"] * (n // 3)},
        fields={"usage": np.arange(n) * 0.25, "count": np.arange(n)},
    )
    expect = [
        ("a", 200, sum(i * 0.25 for i in range(0, n, 3))),
        ("b", 200, sum(i * 0.25 for i in range(1, n, 3))),
    ]
    q = "SELECT host, count(*), sum(usage) FROM cpu GROUP BY host ORDER BY host LIMIT 2"
    assert rows(engine, q) == expect
    engine.flush()
    assert engine.stats()["live_rows"] == 0
    assert engine.stats()["files"] >= 1
    assert rows(engine, q) == expect
    assert rows(
        engine, 'SELECT typeof(time), typeof(host), typeof(usage), typeof(count) FROM "default".cpu LIMIT 1'
    ) == [("TIMESTAMP_NS", "VARCHAR", "DOUBLE", "BIGINT")]


def test_time_is_utc_timestamp_ns(engine: Engine) -> None:
    engine.write("m", [T0 + 123], fields={"v": [1.0]})
    assert rows(engine, "SELECT epoch_ns(time), strftime(time, '%Y-%m-%d %H:%M:%S') FROM m") == [
        (T0 + 123, "2016-01-01 00:00:00")
    ]


def test_schema_grows_and_old_rows_read_null(engine: Engine) -> None:
    engine.write("m", [T0], tags={"host": ["a"]}, fields={"v": [1.0]})
    engine.flush()
    engine.write("m", [T0 + S], tags={"host": ["a"], "dc": ["x"]}, fields={"v": [2.0], "w": [5]})
    assert rows(engine, "SELECT host, dc, v, w FROM m ORDER BY time") == [
        ("a", None, 1.0, None),
        ("a", "x", 2.0, 5),
    ]
    assert [c.name for c in engine.schema("m").columns] == ["host", "v", "dc", "w"]


def test_field_type_conflict_names_table_field_and_types(engine: Engine) -> None:
    engine.write("m", [T0], fields={"v": [1.0]})
    with pytest.raises(SchemaConflict) as err:
        engine.write("m", [T0 + 1], fields={"v": [1]})
    msg = str(err.value)
    assert "'v'" in msg and "'m'" in msg and "integer" in msg and "float" in msg
    with pytest.raises(SchemaConflict):
        engine.write("m", [T0 + 1], tags={"v": ["x"]}, fields={"w": [1.0]})


def test_invalid_batches_write_nothing(engine: Engine) -> None:
    engine.write("m", [T0], fields={"v": [1.0]})
    bad = [
        dict(table="", time=[T0], fields={"v": [1.0]}),
        dict(table="m", time=[T0], fields={"time": [1.0]}),
        dict(table="m", time=[T0, T0 + 1], fields={"v": [1.0]}),
        dict(table="m", time=[None], fields={"v": [1.0]}),
        dict(table="m", time=[T0], fields={}),
        dict(table="m", time=[T0], tags={"h": [1]}, fields={"v": [1.0]}),
        dict(table="m", time=[T0], fields={"v": [1.0]}, db="no/pe"),
        dict(table="m", time=[T0], tags={"x": ["a"]}, fields={"x": [1.0]}),
        dict(table="m", time=[T0], fields={"v": [1]}),
    ]
    for kw in bad:
        table, time = kw.pop("table"), kw.pop("time")
        with pytest.raises(InvalidInput):
            engine.write(table, time, **kw)
    assert rows(engine, "SELECT count(*) FROM m") == [(1,)]
    assert engine.schema("m").fields.keys() == {"v"}


def test_multi_table_batch_is_atomic(engine: Engine) -> None:
    from tsengine.model import TableBatch

    engine.write("a", [T0], fields={"v": [1.0]})
    good = TableBatch.build("b", [T0], fields={"v": [1.0]})
    conflicting = TableBatch.build("a", [T0 + 1], fields={"v": ["text"]})
    with pytest.raises(SchemaConflict):
        engine.write_batches([good, conflicting])
    assert engine.tables() == [("default", "a")]
    assert rows(engine, "SELECT count(*) FROM a") == [(1,)]


def test_names_are_validated(engine: Engine) -> None:
    with pytest.raises(InvalidName):
        engine.write("bad\nname", [T0], fields={"v": [1.0]})
    with pytest.raises(InvalidName):
        engine.write("m", [T0], fields={"__tsrow": [1.0]})
    # Influx-style names with spaces, commas and quotes are kept as written.
    engine.write('we ird,"name"', [T0], tags={"t a g": ["x"]}, fields={"f=1": [1.0]})
    assert rows(engine, 'SELECT "t a g", "f=1" FROM "we ird,""name"""') == [("x", 1.0)]
    engine.flush()
    assert rows(engine, 'SELECT count(*) FROM "we ird,""name"""') == [(1,)]


def test_databases_are_schemas(engine: Engine) -> None:
    engine.write("m", [T0], fields={"v": [1.0]}, db="other")
    engine.write("m", [T0], fields={"v": [2.0]})
    assert rows(engine, "SELECT v FROM other.m") == [(1.0,)]
    assert rows(engine, "SELECT v FROM m") == [(2.0,)]
    assert rows(engine, 'SELECT o.v + d.v FROM other.m o JOIN "default".m d USING (time)') == [(3.0,)]


def test_write_arrow_marks_tags(engine: Engine) -> None:
    data = pa.table(
        {
            "time": pa.array([T0, T0 + S], pa.timestamp("ns")),
            "host": pa.array(["a", "b"]).dictionary_encode(),
            "region": pa.array(["eu", "us"]),
            "note": pa.array(["x", "y"]),
            "v": [1.5, 2.5],
        }
    )
    data = data.cast(data.schema.set(2, pa.field("region", pa.string(), metadata=TAG_METADATA)))
    engine.write_arrow("m", data)
    sch = engine.schema("m")
    assert sch.tags == ["host", "region"]
    assert set(sch.fields) == {"note", "v"}
    engine.write_arrow("m2", data.drop_columns(["host"]), tags=["note"])
    assert engine.schema("m2").tags == ["region", "note"]


def test_write_rows(engine: Engine) -> None:
    engine.write_rows(
        "events",
        [
            {"time": T0, "user": "u1", "amount": 10.0, "ok": True},
            {"time": T0 + S, "user": "u2", "ok": False, "msg": "declined"},
        ],
        tags=["user"],
    )
    assert rows(engine, "SELECT user, amount, ok, msg FROM events ORDER BY time") == [
        ("u1", 10.0, True, None),
        ("u2", None, False, "declined"),
    ]


def test_field_types_round_trip(engine: Engine) -> None:
    vals = {
        "f": [1.5, -0.0, math.inf],
        "i": [-(2**63), 0, 2**63 - 1],
        "u": pa.array([0, 1, 2**64 - 1], pa.uint64()),
        "b": [True, False, True],
        "s": ["", "é", "x" * 1000],
    }
    engine.write("m", [T0, T0 + 1, T0 + 2], fields=vals)
    for phase in ("live", "persisted"):
        got = engine.sql("SELECT f, i, u, b, s FROM m ORDER BY time")
        assert got.column("i").to_pylist() == vals["i"], phase
        assert got.column("u").to_pylist() == [0, 1, 2**64 - 1], phase
        assert got.column("b").to_pylist() == vals["b"], phase
        assert got.column("s").to_pylist() == vals["s"], phase
        f = got.column("f").to_numpy()
        assert f.tobytes() == np.array(vals["f"]).tobytes(), phase
        engine.flush()


def test_nan_and_staleness_marker_kept_bit_exact(engine: Engine) -> None:
    stale = np.array([0x7FF0000000000002], dtype=np.int64).view(np.float64)
    v = np.concatenate([stale, [np.nan, 1.25]])
    engine.write("m", [T0, T0 + 1, T0 + 2], fields={"v": v})
    engine.flush()
    got = engine.sql("SELECT v FROM m ORDER BY time").column("v").to_numpy()
    assert got.view(np.int64).tolist() == v.view(np.int64).tolist()


def test_duplicates_last_write_wins_live_flushed_and_compacted(engine: Engine) -> None:
    engine.write("m", [T0, T0 + S], tags={"h": ["a", "a"]}, fields={"v": [1.0, 2.0]})
    engine.flush()
    engine.write("m", [T0], tags={"h": ["a"]}, fields={"v": [10.0]})
    q = "SELECT epoch_ns(time) - $1, v FROM m ORDER BY time"
    assert rows(engine, q, [T0]) == [(0, 10.0), (S, 2.0)]
    engine.write("m", [T0, T0], tags={"h": ["a", "a"]}, fields={"v": [20.0, 30.0]})  # dup inside a batch
    assert rows(engine, q, [T0]) == [(0, 30.0), (S, 2.0)]
    engine.flush()
    assert rows(engine, q, [T0]) == [(0, 30.0), (S, 2.0)]
    assert engine.compact() >= 2
    assert rows(engine, q, [T0]) == [(0, 30.0), (S, 2.0)]
    assert engine.stats()["files"] == 1


def test_duplicate_points_merge_field_by_field(engine: Engine) -> None:
    # Telegraf-style: two lines for the same series and time, each with some of the fields.
    engine.write("m", [T0], tags={"h": ["a"]}, fields={"v": [1.0], "w": [1]})
    q = "SELECT v, w, s FROM m"
    for step in ("live", "flushed", "compacted"):
        engine.write("m", [T0], tags={"h": ["a"]}, fields={"v": [2.0], "s": ["x"]})
        assert rows(engine, q) == [(2.0, 1, "x")], step
        engine.flush() if step == "live" else engine.compact()
    assert rows(engine, q) == [(2.0, 1, "x")]
    assert engine.latest("m").select(["v", "w", "s"]).to_pylist() == [{"v": 2.0, "w": 1, "s": "x"}]


def test_out_of_order_samples_are_accepted(engine: Engine) -> None:
    times = T0 + np.array([5, 1, 3, 2, 4]) * S
    engine.write("m", times, tags={"h": ["a"] * 5}, fields={"v": [5.0, 1.0, 3.0, 2.0, 4.0]})
    engine.flush()
    engine.write("m", [T0], tags={"h": ["a"]}, fields={"v": [0.0]})  # late, before everything
    assert rows(engine, "SELECT v FROM m ORDER BY time") == [(0.0,), (1.0,), (2.0,), (3.0,), (4.0,), (5.0,)]


def test_partitions_follow_the_hive_layout(engine: Engine, data_dir: Path) -> None:
    engine.write("cpu", [T0, T0 + 3600 * S + 1], tags={"h": ["a", "b"]}, fields={"v": [1.0, 2.0]})
    engine.flush()
    files = sorted(
        p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.parquet") if p.name != "_empty.parquet"
    )
    assert len(files) == 2
    assert files[0].startswith("default/cpu/date=2016-01-01/hour=00/n0-")
    assert files[1].startswith("default/cpu/date=2016-01-01/hour=01/n0-")
    md = pq.read_metadata(data_dir / files[0])
    assert md.row_group(0).column(0).compression == "ZSTD"


def test_float_columns_scaled_losslessly(engine: Engine, data_dir: Path) -> None:
    rng = np.random.default_rng(3)
    dec2 = np.round(rng.uniform(0, 100, 5000), 2)
    full = rng.uniform(0, 100, 5000)
    engine.write("m", T0 + np.arange(5000) * S, fields={"dec2": dec2, "full": full})
    engine.flush()
    got = engine.sql('SELECT dec2, "full" FROM m ORDER BY time')
    assert got.column("dec2").to_numpy().tobytes() == dec2.tobytes()
    assert got.column("full").to_numpy().tobytes() == full.tobytes()
    f = next(p for p in data_dir.rglob("n0-*.parquet"))
    schema = pq.read_schema(f)
    assert pa.types.is_decimal(schema.field("dec2").type)
    assert schema.field("full").type == pa.float64()


def test_latest_from_memory_and_after_restart(data_dir: Path, clock) -> None:
    with Engine.open(data_dir, clock=clock) as eng:
        eng.write("m", [T0, T0 + S, T0], tags={"h": ["a", "a", "b"]}, fields={"v": [1.0, 2.0, 3.0]})
        eng.write("m", [T0 - S], tags={"h": ["a"]}, fields={"v": [9.0]})  # late: not the latest
        eng.write("m", [T0 + 2 * S], tags={"h": ["b"]}, fields={"w": [7]})
        lat = eng.latest("m").sort_by("h").to_pylist()
        assert [(r["h"], r["v"], r["w"]) for r in lat] == [("a", 2.0, None), ("b", 3.0, 7)]
        assert eng.latest("m", where={"h": "b"}).num_rows == 1
        with pytest.raises(NotFound):
            eng.latest("nope")
    with Engine.open(data_dir, clock=clock) as eng:
        lat = eng.latest("m").sort_by("h").to_pylist()
        assert [(r["h"], r["v"], r["w"]) for r in lat] == [("a", 2.0, None), ("b", 3.0, 7)]
        times = eng.latest("m").sort_by("h").column("time").cast(pa.int64()).to_pylist()
        assert times == [T0 + S, T0 + 2 * S]  # a series' time is its newest sample of any field


def test_reopen_replays_unpersisted_wal(data_dir: Path, clock) -> None:
    eng = Engine.open(data_dir, clock=clock, fsync="always")
    eng.write("m", [T0], tags={"h": ["a"]}, fields={"v": [1.0]})
    eng.flush()
    eng.write("m", [T0 + S], tags={"h": ["a"]}, fields={"v": [2.0]})
    # Simulate a crash: stop without flushing.
    eng._stop.set()
    eng._persist_wake.set()
    eng._persister.join()
    eng.wal.close()
    eng.query.close()
    os.close(eng._lock_fd)  # what the kernel does for a killed process
    with Engine.open(data_dir, clock=clock) as eng2:
        assert rows(eng2, "SELECT v FROM m ORDER BY time") == [(1.0,), (2.0,)]


def test_chunks_age_into_parquet(engine: Engine, clock) -> None:
    engine.write("m", [T0], fields={"v": [1.0]})
    clock.advance(engine.settings.max_chunk_age_s + 1)
    engine._freeze_aged()
    engine._persist_frozen()
    assert engine.stats()["live_rows"] == 0
    assert rows(engine, "SELECT v FROM m") == [(1.0,)]


def test_memory_bound_raises_overloaded(data_dir: Path, clock) -> None:
    with Engine.open(
        data_dir, clock=clock, max_buffer_bytes=200_000, min_chunk_rows=1024, max_chunk_rows=1024
    ) as eng:
        eng.write("m", T0 + np.arange(1024), fields={"v": np.ones(1024)})
        with pytest.raises(Overloaded) as err:
            for i in range(1, 200):
                eng.write("m", T0 + i * 4096 + np.arange(1024), fields={"v": np.ones(1024)})
        assert err.value.retry_after_s > 0
        eng.flush()
        eng.write("m", [T0 - 1], fields={"v": [1.0]})  # room again after persisting


def test_retention_drops_expired_partitions(data_dir: Path, clock) -> None:
    with Engine.open(data_dir, clock=clock, retention_hours={"default.old": 1}) as eng:
        eng.write("old", [T0, T0 + 5 * 3600 * S], fields={"v": [1.0, 2.0]})
        eng.write("keep", [T0], fields={"v": [1.0]})
        eng.flush()
        assert eng.apply_retention(now_ns=T0 + 6 * 3600 * S) == 1
        assert rows(eng, "SELECT v FROM old") == [(2.0,)]
        assert rows(eng, "SELECT v FROM keep") == [(1.0,)]


def test_settings_are_validated(data_dir: Path) -> None:
    with pytest.raises(InvalidInput):
        Engine.open(data_dir, fsync="sometimes")
    with pytest.raises(InvalidInput):
        Engine.open(data_dir, no_such_setting=1)


def test_series_cardinality_limit_refuses_new_series_only(data_dir: Path, clock) -> None:
    from tsengine.errors import LimitExceeded

    with Engine.open(data_dir, clock=clock, max_series_per_table=3) as eng:
        eng.write("m", [T0] * 3, tags={"h": ["a", "b", "c"]}, fields={"v": [1.0, 2.0, 3.0]})
        with pytest.raises(LimitExceeded) as err:
            eng.write("m", [T0 + 1, T0 + 1], tags={"h": ["a", "d"]}, fields={"v": [1.0, 2.0]})
        assert "limit of 3 series" in str(err.value)
        eng.write("m", [T0 + 2], tags={"h": ["a"]}, fields={"v": [4.0]})  # existing series still fine
        assert rows(eng, "SELECT count(*) FROM m") == [(4,)]


def test_batches_of_one_table_in_one_call_are_merged(engine: Engine) -> None:
    from tsengine.model import TableBatch

    a = TableBatch.build("m", [T0], tags={"h": ["a"]}, fields={"v": [1.0]})
    b = TableBatch.build("m", [T0 + 1], tags={"dc": ["x"]}, fields={"w": [2]})
    assert engine.write_batches([a, b]) == 2
    assert rows(engine, "SELECT h, dc, v, w FROM m ORDER BY time") == [
        ("a", None, 1.0, None),
        (None, "x", None, 2),
    ]


def test_compaction_merges_hours_then_closed_days(data_dir: Path) -> None:
    from tsengine.clock import ManualClock

    clock = ManualClock(start_ns=T0 + 2 * 3600 * S)  # 02:00 on the first day
    with Engine.open(data_dir, clock=clock) as eng:
        for k in range(3):  # three flushes into hour 00, one into hour 01
            eng.write("m", [T0 + k * S], tags={"h": ["a"]}, fields={"v": [float(k)]})
            eng.flush()
        eng.write("m", [T0 + 3600 * S], tags={"h": ["a"]}, fields={"v": [9.0]})
        eng.flush()
        assert eng.compact() == 3  # hour 00: three files into one; the day is still open
        rels = sorted(e.file.relpath() for e in eng._tables[("default", "m")].manifest.files.values())
        assert [r.rsplit("/", 1)[0] for r in rels] == ["date=2016-01-01/hour=00", "date=2016-01-01/hour=01"]
        clock.advance(24 * 3600)  # the day is over (and past the grace period)
        assert eng.compact() == 2
        (rel,) = [e.file.relpath() for e in eng._tables[("default", "m")].manifest.files.values()]
        assert rel.startswith("date=2016-01-01/n0-") and rel.endswith(".2.parquet")
        assert rows(eng, "SELECT v FROM m ORDER BY time") == [(0.0,), (1.0,), (2.0,), (9.0,)]
        # A late sample for the closed day lands in an hour file and is merged in next time.
        eng.write("m", [T0 + 5 * S], tags={"h": ["a"]}, fields={"v": [5.0]})
        eng.write("m", [T0 + 1 * S], tags={"h": ["a"]}, fields={"v": [1.5]})  # overwrites
        eng.flush()
        assert rows(eng, "SELECT v FROM m ORDER BY time") == [(0.0,), (1.5,), (2.0,), (5.0,), (9.0,)]
        assert eng.compact() == 2
        assert eng.stats()["files"] == 1
        assert rows(eng, "SELECT v FROM m ORDER BY time") == [(0.0,), (1.5,), (2.0,), (5.0,), (9.0,)]
    with Engine.open(data_dir, clock=clock) as eng:
        assert rows(eng, "SELECT v FROM m ORDER BY time") == [(0.0,), (1.5,), (2.0,), (5.0,), (9.0,)]


def test_a_data_directory_is_opened_by_one_engine_at_a_time(data_dir: Path, clock) -> None:
    from tsengine.errors import StorageError

    with Engine.open(data_dir, clock=clock), pytest.raises(StorageError, match="in use by pid"):
        Engine.open(data_dir, clock=clock)
    with Engine.open(data_dir, clock=clock):  # released at close
        pass


def test_persister_compacts_and_applies_retention_on_its_interval(data_dir: Path) -> None:
    import time as _time

    from tsengine.clock import ManualClock

    clock = ManualClock(start_ns=T0 + 48 * 3600 * S)
    with Engine.open(
        data_dir, clock=clock, retention_hours={"default": 24}, maintenance_interval_s=60
    ) as eng:
        for day in (0, 1):
            for k in range(2):
                eng.write("m", [T0 + day * 86400 * S + k * S], fields={"v": [float(k)]})
                eng.flush()
        assert eng.stats()["files"] == 4
        clock.advance(61)
        deadline = _time.monotonic() + 30
        while eng.stats()["files"] != 1:  # day 0 expired, day 1 compacted into one file
            assert _time.monotonic() < deadline, eng.stats()
            eng._persist_wake.set()
            _time.sleep(0.01)  # poll interval, not synchronisation: the loop checks a condition
        assert rows(eng, "SELECT count(*) FROM m") == [(2,)]


def test_negative_zero_survives_scaled_storage_and_compaction(engine: Engine) -> None:
    engine.write("m", [T0, T0 + 1], fields={"f": [-0.0, 0.0]})
    engine.flush()
    engine.write("m", [T0 + 2], fields={"f": [0.5]})
    engine.flush()
    engine.compact()
    got = engine.sql("SELECT f FROM m ORDER BY time").column("f").to_numpy()
    assert got.tobytes() == np.array([-0.0, 0.0, 0.5]).tobytes()


def test_stats_report_buffer_wal_lag_and_last_persist(engine: Engine, clock) -> None:
    engine.write("m", [T0, T0 + 1], fields={"v": [1.0, 2.0]})
    engine.write("m", [T0 + 2], fields={"v": [3.0]})
    st = engine.stats()
    assert st["live_rows"] == 3 and st["wal_unpersisted_records"] == 2 and st["last_persist_ns"] == 0
    engine.flush()
    st = engine.stats()
    assert st["live_rows"] == 0 and st["wal_unpersisted_records"] == 0
    assert st["last_persist_ns"] == clock.now_ns() and st["files"] == 1 and st["persist_errors"] == 0


def test_tag_null_on_every_row_is_queryable_before_and_after_flush(engine: Engine) -> None:
    # Regression: a tag with no value yet had no dictionary and the live view raised KeyError.
    engine.write_rows("t", [{"time": 1, "a": None, "v": 1.0}], tags=["a"])
    assert engine.sql("SELECT a, v FROM t").to_pylist() == [{"a": None, "v": 1.0}]
    engine.flush()
    engine.write_rows("t", [{"time": 2, "a": "x", "v": 2.0}], tags=["a"])
    rows = engine.sql("SELECT a, v FROM t ORDER BY time").to_pylist()
    assert rows == [{"a": None, "v": 1.0}, {"a": "x", "v": 2.0}]


def test_string_fields_across_many_small_writes_absent_fields_and_late_columns(engine: Engine) -> None:
    # Strings live as Arrow pieces: short writes are merged, a column first seen mid-chunk is
    # null before it, a write without the field leaves nulls, and latest() sees the last value.
    expected: list[tuple[int, str | None, str | None]] = []
    for i in range(300):
        row: dict[str, object] = {"time": i, "host": "a", "msg": f"m{i}", "n": i}
        note = None
        if i >= 100 and i % 3:
            note = f"n{i}" * (i % 7)
            row["note"] = note
        if i % 50 == 7:
            del row["msg"]
        engine.write_rows("logs", [row], tags=["host"])
        expected.append((i, row.get("msg"), note))  # type: ignore[arg-type]
    rows = engine.sql("SELECT epoch_ns(time) AS t, msg, note FROM logs ORDER BY t").to_pylist()
    assert [(r["t"], r["msg"], r["note"]) for r in rows] == expected
    assert engine.latest("logs").column("msg").to_pylist() == ["m299"]
    engine.flush()
    rows = engine.sql("SELECT epoch_ns(time) AS t, msg, note FROM logs ORDER BY t").to_pylist()
    assert [(r["t"], r["msg"], r["note"]) for r in rows] == expected


def test_string_bytes_count_towards_the_buffer_bound(engine: Engine) -> None:
    before = engine.stats()["buffer_bytes"]
    engine.write_rows("blobs", [{"time": i, "body": "x" * 100_000} for i in range(20)])
    assert engine.stats()["buffer_bytes"] - before >= 20 * 100_000
