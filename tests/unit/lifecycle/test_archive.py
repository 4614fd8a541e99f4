"""Archival to a local directory: round trip, the ``archive`` SQL schema, crash at every step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.errors import SandboxViolation
from tsengine.lifecycle import ArchiveStore, Lifecycle, StorageConfig
from tsengine.lifecycle.archive import STEPS

H = 3_600_000_000_000
T0 = 1_700_000_000_000_000_000 // H * H - 36 * H  # a day and a half before the clock


class Crash(Exception):
    pass


def write_history(eng: Engine, hours: int = 30) -> list[tuple]:
    n = hours * 6
    t = T0 + np.arange(n, dtype=np.int64) * (H // 6)
    host = ["a", "b"] * (n // 2)
    usage = np.arange(n) * 0.1 + 1 / 3  # full-precision floats and few-decimal ones
    usage[::4] = np.round(usage[::4], 2)
    eng.write("cpu", t, tags={"host": host}, fields={"usage": usage, "n": np.arange(n)})
    eng.flush()
    return sorted(zip(t.tolist(), host, usage.tolist(), range(n), strict=True))


def all_rows(eng: Engine, source: str) -> list[tuple]:
    t = eng.sql(f"SELECT epoch_ns(time) AS t, host, usage, n FROM {source} ORDER BY t")
    return [tuple(r.values()) for r in t.to_pylist()]


def open_engine(path: Path, clock: ManualClock) -> Engine:
    return Engine.open(path, clock=clock, fsync="none", retention_hours={"default": 24})


def test_expired_partitions_move_to_the_archive_and_stay_queryable(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = ArchiveStore.local(tmp_path / "archive")
    with open_engine(tmp_path / "data", clock) as eng:
        expected = write_history(eng)
        life = Lifecycle(eng, StorageConfig(), archive=store)
        result = life.run()
        moved = result["retention"]["archived"]
        assert moved > 0 and result["retention"]["dropped"] == 0
        local = all_rows(eng, "cpu")
        archived = all_rows(eng, "archive.cpu")
        # Nothing lost, nothing doubled; nothing inside the retention period moved.
        assert sorted(local + archived) == expected
        cutoff = clock.now_ns() - 24 * H
        assert all(r[0] < cutoff for r in archived)
        assert min(r[0] for r in local) < cutoff + H  # hour granularity: only whole expired hours go
        # Filters push down through the dataset.
        got = eng.sql("SELECT count(*) AS c FROM archive.cpu WHERE host = 'a' AND n >= 10").column("c")[0]
        assert got.as_py() == sum(1 for r in archived if r[1] == "a" and r[3] >= 10)
        files = list((tmp_path / "archive" / "default" / "cpu").rglob("*.parquet"))
        assert len(files) == moved
        assert (tmp_path / "archive" / "default" / "cpu" / "_archive.json").exists()
    # After a restart the archive is still there (a fresh lifecycle reads its manifest).
    with open_engine(tmp_path / "data", clock) as eng:
        Lifecycle(eng, StorageConfig(), archive=store)
        assert sorted(all_rows(eng, "cpu") + all_rows(eng, "archive.cpu")) == expected


def test_the_sandbox_still_refuses_files_with_an_archive(tmp_path: Path, clock: ManualClock) -> None:
    with open_engine(tmp_path / "data", clock) as eng:
        write_history(eng, hours=30)
        Lifecycle(eng, StorageConfig(), archive=ArchiveStore.local(tmp_path / "archive")).run()
        archive_file = next((tmp_path / "archive").rglob("*.parquet"))
        with pytest.raises(SandboxViolation):
            eng.sql(f"SELECT * FROM read_parquet('{archive_file}')")
        with pytest.raises(SandboxViolation):
            eng.sql(f"SELECT * FROM '{archive_file}'")


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_loses_and_duplicates_nothing(
    tmp_path: Path, clock: ManualClock, step: str
) -> None:
    store = ArchiveStore.local(tmp_path / "archive")
    calls = []

    def hook(name: str) -> None:
        calls.append(name)
        if name == step and calls.count(step) == 2:  # the second file's move is cut short
            raise Crash(step)

    with open_engine(tmp_path / "data", clock) as eng:
        expected = write_history(eng)
        life = Lifecycle(eng, StorageConfig(), archive=store, hook=hook)
        with pytest.raises(Crash):
            life.run()
    # "Restart": a fresh engine and lifecycle reconcile, then the next pass finishes the job.
    with open_engine(tmp_path / "data", clock) as eng:
        life = Lifecycle(eng, StorageConfig(), archive=store)
        assert sorted(all_rows(eng, "cpu") + all_rows(eng, "archive.cpu")) == expected
        life.run()
        local, archived = all_rows(eng, "cpu"), all_rows(eng, "archive.cpu")
        assert sorted(local + archived) == expected
        assert not eng.expired_files()
        objects = {p.relative_to(tmp_path / "archive/default/cpu").as_posix()
                   for p in (tmp_path / "archive").rglob("*.parquet")}  # fmt: skip
        assert objects == set(life.archiver.manifest("default", "cpu").files)
        on_disk = {
            p.relative_to(eng.path / "default/cpu").as_posix()
            for p in (eng.path / "default/cpu").rglob("*.parquet")
        }
        assert on_disk == {e.file.relpath() for e in eng.table_files("default", "cpu")}
