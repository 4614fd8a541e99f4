"""Append-only tables: rows with the same tags and time all survive every stage.

A span table gets many rows with the same (service, name, kind) and start time (JS SDKs have
millisecond clocks); the engine's duplicate rule would merge them. ``declare_table(...,
append_only=True)`` turns the rule off for a table: live rows, flush, hour and day compaction,
WAL replay, reopen and crash reconciliation all keep every row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.errors import InvalidInput
from tsengine.persist.paths import MANIFEST, table_dir

T0 = 1_451_606_400_000_000_000  # 2016-01-01T00:00:00Z
DAY_NS = 86_400 * 1_000_000_000


def _write_twins(eng: Engine, ids: list[str], time_ns: int = T0, table: str = "spans") -> None:
    """Rows that share every tag and the time; only the field ``span_id`` tells them apart."""
    eng.write(
        table,
        np.full(len(ids), time_ns, dtype=np.int64),
        tags={"service": ["a"] * len(ids), "name": ["GET /"] * len(ids)},
        fields={"span_id": ids, "duration_ns": np.arange(len(ids), dtype=np.int64)},
    )


def _ids(eng: Engine, table: str = "spans") -> list[str]:
    return sorted(eng.sql(f"SELECT span_id FROM {table}").column("span_id").to_pylist())


def test_same_tags_and_time_survive_write_flush_compact_reopen(data_dir: Path, clock: ManualClock) -> None:
    eng = Engine.open(data_dir, clock=clock, fsync="none")
    try:
        eng.declare_table("spans", append_only=True)
        _write_twins(eng, ["s1", "s2"])
        assert _ids(eng) == ["s1", "s2"]  # live rows
        eng.flush()
        _write_twins(eng, ["s3"])  # a late row for the same series and time: no dirty hour
        assert _ids(eng) == ["s1", "s2", "s3"]
        eng.flush()
        assert _ids(eng) == ["s1", "s2", "s3"]
        clock.advance(3 * DAY_NS / 1e9)  # the day is closed: compaction writes a day file
        assert eng.compact() == 2
        assert _ids(eng) == ["s1", "s2", "s3"]
        _write_twins(eng, ["s4", "s5"])
    finally:
        eng.close()
    eng = Engine.open(data_dir, clock=clock, fsync="none")
    try:
        assert eng.schema("spans").append_only
        assert _ids(eng) == ["s1", "s2", "s3", "s4", "s5"]
        eng.compact()
        assert _ids(eng) == ["s1", "s2", "s3", "s4", "s5"]
        manifest = json.loads((table_dir(data_dir, "default", "spans") / MANIFEST).read_bytes())
        assert manifest["append_only"] is True
        assert not any(f["dirty"] for f in manifest["files"])
    finally:
        eng.close()


def test_ordinary_table_still_deduplicates(engine: Engine) -> None:
    _write_twins(engine, ["s1", "s2"], table="calls")
    assert _ids(engine, "calls") == ["s2"]
    engine.flush()
    assert _ids(engine, "calls") == ["s2"]


def test_tables_named_in_append_only_tables_are_created_append_only(data_dir: Path) -> None:
    with Engine.open(data_dir, fsync="none") as eng:  # default: spans, events, alerts_history
        for table in ("spans", "events", "alerts_history"):
            _write_twins(eng, ["s1", "s2"], table=table)
            assert eng.schema(table).append_only and _ids(eng, table) == ["s1", "s2"]
        _write_twins(eng, ["s1", "s2"], table="calls")
        assert not eng.schema("calls").append_only
    with Engine.open(data_dir / "other", fsync="none", append_only_tables=("calls",)) as eng:
        _write_twins(eng, ["s1", "s2"], table="events")
        _write_twins(eng, ["s1", "s2"], table="calls")
        assert (_ids(eng, "events"), _ids(eng, "calls")) == (["s2"], ["s1", "s2"])


def test_append_only_tables_setting_from_env() -> None:
    from tsengine.settings import Settings

    assert Settings.from_env({"TSENGINE_APPEND_ONLY_TABLES": "spans, logs"}).append_only_tables == (
        "spans",
        "logs",
    )
    with pytest.raises(InvalidInput, match="append_only_tables"):
        Settings(append_only_tables="spans")


def test_wal_replay_keeps_every_row(data_dir: Path, clock: ManualClock, tmp_path: Path) -> None:
    eng = Engine.open(data_dir, clock=clock, fsync="always")
    try:
        eng.declare_table("spans", append_only=True)
        _write_twins(eng, ["s1", "s2", "s3"])
        # A copy of the directory taken now is what a crash leaves: rows only in the WAL.
        crashed = tmp_path / "crashed"
        shutil.copytree(data_dir, crashed, ignore=shutil.ignore_patterns("_lock"))
    finally:
        eng.close()
    eng = Engine.open(crashed, clock=clock, fsync="none")
    try:
        assert _ids(eng) == ["s1", "s2", "s3"]
        eng.flush()
        assert _ids(eng) == ["s1", "s2", "s3"]
    finally:
        eng.close()


def test_unlisted_file_after_a_crash_is_not_adopted(data_dir: Path, clock: ManualClock) -> None:
    eng = Engine.open(data_dir, clock=clock, fsync="none")
    try:
        eng.declare_table("spans", append_only=True)
        _write_twins(eng, ["s1", "s2"])
        eng.flush()
    finally:
        eng.close()
    # A file renamed into place whose manifest write never happened (its rows are elsewhere).
    (listed,) = table_dir(data_dir, "default", "spans").rglob("*.parquet")
    stray = listed.with_name("n0-00000000000000000099.parquet")
    shutil.copy(listed, stray)
    eng = Engine.open(data_dir, clock=clock, fsync="none")
    try:
        assert _ids(eng) == ["s1", "s2"]
        assert not stray.exists()
    finally:
        eng.close()


def test_declare_checks_an_existing_table(engine: Engine) -> None:
    engine.declare_table("spans", append_only=True)
    engine.declare_table("spans", append_only=True)  # idempotent
    _write_twins(engine, ["s1"])
    assert engine.schema("spans").append_only  # a write keeps the property
    with pytest.raises(InvalidInput, match="append_only"):
        engine.declare_table("spans", append_only=False)
    engine.write("cpu", [T0], fields={"v": [1.0]})
    with pytest.raises(InvalidInput, match="append_only=False"):
        engine.declare_table("cpu", append_only=True)
