"""Archival to a real S3-compatible server on loopback (moto in server mode): round trip
through ``archive.<table>`` and a crash at every step of a move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from tests.integration.conftest import free_port
from tests.unit.lifecycle.test_archive import Crash, all_rows, open_engine, write_history
from tsengine.clock import ManualClock
from tsengine.lifecycle import ArchiveStore, Lifecycle, StorageConfig
from tsengine.lifecycle.archive import STEPS


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def _store(endpoint: str, bucket: str) -> ArchiveStore:
    return ArchiveStore.from_config(
        {"type": "s3", "bucket": bucket, "prefix": "tsengine/archive", "endpoint": endpoint, "scheme": "http",
         "access_key": "testing", "secret_key": "testing"}
    )  # fmt: skip


def test_s3_archive_round_trip(tmp_path: Path, s3_endpoint: str) -> None:
    clock = ManualClock()
    store = _store(s3_endpoint, "roundtrip")
    with open_engine(tmp_path / "data", clock) as eng:
        expected = write_history(eng)
        life = Lifecycle(eng, StorageConfig(), archive=store)
        moved = life.run()["retention"]["archived"]
        assert moved > 0
        archived = all_rows(eng, "archive.cpu")
        assert archived and sorted(all_rows(eng, "cpu") + archived) == expected
        keys = store.list_objects("default/cpu")
        assert "default/cpu/_archive.json" in keys and len(keys) == moved + 1
    with open_engine(tmp_path / "data", clock) as eng:
        Lifecycle(eng, StorageConfig(), archive=_store(s3_endpoint, "roundtrip"))
        assert sorted(all_rows(eng, "cpu") + all_rows(eng, "archive.cpu")) == expected


@pytest.mark.parametrize("step", STEPS)
def test_s3_crash_at_any_step_loses_and_duplicates_nothing(
    tmp_path: Path, s3_endpoint: str, step: str
) -> None:
    clock = ManualClock()
    bucket = f"crash-{step}"
    calls: list[str] = []

    def hook(name: str) -> None:
        calls.append(name)
        if name == step and calls.count(step) == 2:
            raise Crash(step)

    with open_engine(tmp_path / "data", clock) as eng:
        expected = write_history(eng)
        with pytest.raises(Crash):
            Lifecycle(eng, StorageConfig(), archive=_store(s3_endpoint, bucket), hook=hook).run()
    with open_engine(tmp_path / "data", clock) as eng:
        store = _store(s3_endpoint, bucket)
        life = Lifecycle(eng, StorageConfig(), archive=store)
        assert sorted(all_rows(eng, "cpu") + all_rows(eng, "archive.cpu")) == expected
        life.run()
        assert sorted(all_rows(eng, "cpu") + all_rows(eng, "archive.cpu")) == expected
        recorded = set(life.archiver.manifest("default", "cpu").files)
        assert {k.removeprefix("default/cpu/") for k in store.list_objects("default/cpu")} == recorded | {
            "_archive.json"
        }
