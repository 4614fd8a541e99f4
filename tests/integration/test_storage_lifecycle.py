"""The storage lifecycle through the server: retention admin API (persisted across a restart),
the ``cleanup`` task, ``/api/v1/storage``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from server import ServerConfig
from tests.integration.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS, assert_error, query
from tsengine import Engine
from tsengine.clock import ManualClock

H = 3_600_000_000_000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


def _history(eng: Engine, start_ns: int, hours: int) -> int:
    t = start_ns + np.arange(hours * 4, dtype=np.int64) * (H // 4)
    eng.write("cpu", t, tags={"host": ["a"] * len(t)}, fields={"v": np.arange(len(t), dtype=np.float64)})
    eng.flush()
    return len(t)


async def test_retention_set_through_the_api_takes_effect_and_survives_a_restart(make_client, tmp_path: Path):
    clock = ManualClock()
    now = clock.now_ns() // H * H
    config = ServerConfig(port=0, tokens=TOKENS)
    eng = await asyncio.to_thread(Engine.open, tmp_path / "d", clock=clock, fsync="none")
    client = await make_client(config, engine=eng)
    total = await asyncio.to_thread(_history, eng, now - 48 * H, 48)

    resp = await client.put("/api/v1/retention/default/cpu", json={"hours": 24}, headers=READ)
    assert resp.status == 403
    resp = await client.put("/api/v1/retention/default/cpu", json={"hours": -1}, headers=ADMIN)
    await assert_error(resp, 400, "InvalidInput", "default.cpu", ">= 0")
    resp = await client.put("/api/v1/retention/default/cpu", data=b"{", headers=ADMIN)
    await assert_error(resp, 400, "InvalidInput", "not JSON")
    resp = await client.put("/api/v1/retention/default/cpu", json={"hours": 24}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"key": "default.cpu", "hours": 24.0, "override": True, "forever": False}

    resp = await client.post("/api/v1/tasks/cleanup/run", headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["last_result"]["retention"]["dropped"] == 24
    assert set(body["last_result"]) == {"downsampling", "retention", "budget", "compaction"}
    rows = await query(client, "SELECT count(*), min(epoch_ns(time)) FROM cpu", token=READ_TOKEN)
    assert rows == [[total // 2, now - 24 * H]]
    state = await (await client.get("/api/v1/storage", headers=READ)).json()
    assert state["dropped_files"] == 24 and state["archive"] is None
    exposition = await (await client.get("/metrics", headers=READ)).text()
    assert 'tsengine_storage_evicted_files_total{action="dropped",reason="retention"} 24.0' in exposition or (
        'tsengine_storage_evicted_files_total{reason="retention",action="dropped"} 24.0' in exposition
    ), [line for line in exposition.splitlines() if "storage" in line]
    await client.close()
    await asyncio.to_thread(eng.close)

    # Restart: the override is still there.
    eng = await asyncio.to_thread(Engine.open, tmp_path / "d", clock=clock, fsync="none")
    try:
        client = await make_client(config, engine=eng)
        resp = await client.get("/api/v1/retention/default/cpu", headers=READ)
        assert (await resp.json())["hours"] == 24.0
        listing = await (await client.get("/api/v1/retention", headers=READ)).json()
        assert listing["overrides"] == {"default.cpu": 24.0} and listing["tables"] == {"default.cpu": 24.0}
        resp = await client.delete("/api/v1/retention/default/cpu", headers=ADMIN)
        assert (await resp.json())["override"] is False
        resp = await client.delete("/api/v1/retention/default/cpu", headers=ADMIN)
        await assert_error(resp, 404, "NotFound", "no override")
        resp = await client.put("/api/v1/retention/bad$db", json={"hours": 1}, headers=ADMIN)
        assert resp.status == 400
        await client.close()
    finally:
        await asyncio.to_thread(eng.close)


async def test_the_server_owns_maintenance_and_config_errors_name_the_key(make_client):
    client = await make_client(ServerConfig(port=0, storage={"retention": {"default": 1}}))
    from tests.integration.conftest import engine_of

    eng = engine_of(client)
    assert eng.maintenance_external
    assert eng.retention.hours_for("default", "cpu") == 1.0
    tasks = await (await client.get("/api/v1/tasks")).json()
    assert tasks["tasks"]["cleanup"]["interval_s"] == 1800.0
    import pytest

    from server.app import create_app
    from tsengine.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"storage\.max_local_bytes"):
        create_app(eng, ServerConfig(port=0, storage={"max_local_bytes": "lots"}))


async def test_archive_configured_in_the_server_is_queryable_over_http(make_client, tmp_path: Path):
    clock = ManualClock()
    now = clock.now_ns() // H * H
    storage = {"retention": {"default.cpu": 24}, "archive": {"type": "local", "path": str(tmp_path / "arch")}}
    eng = await asyncio.to_thread(Engine.open, tmp_path / "d", clock=clock, fsync="none")
    try:
        client = await make_client(ServerConfig(port=0, tokens=TOKENS, storage=storage), engine=eng)
        total = await asyncio.to_thread(_history, eng, now - 48 * H, 48)
        body = await (await client.post("/api/v1/tasks/cleanup/run", headers=ADMIN)).json()
        assert body["last_result"]["retention"] == {"archived": 24, "dropped": 0, "bytes_freed": body[
            "last_result"]["retention"]["bytes_freed"], "held": 0}  # fmt: skip
        local = await query(client, "SELECT count(*) FROM cpu", token=READ_TOKEN)
        archived = await query(
            client, "SELECT count(*), max(epoch_ns(time)) FROM archive.cpu", token=READ_TOKEN
        )
        assert local[0][0] + archived[0][0] == total and archived[0][1] < now - 24 * H
        state = await (await client.get("/api/v1/storage", headers=READ)).json()
        assert state["archived_tables"]["default.cpu"]["files"] == 24
        assert state["archived_tables"]["default.cpu"]["rows"] == archived[0][0]
        resp = await client.post(
            "/api/v1/sql",
            json={"sql": f"SELECT * FROM read_parquet('{tmp_path}/arch/**/*.parquet')"},
            headers=READ,
        )
        assert resp.status == 403

        # The running server archives on demand what `tsengine archive --older-than` would.
        resp = await client.post("/api/v1/storage/archive?older_than=12h", headers=READ)
        assert resp.status == 403
        resp = await client.post("/api/v1/storage/archive?older_than=soon", headers=ADMIN)
        await assert_error(resp, 400, "InvalidInput", "older_than")
        resp = await client.post("/api/v1/storage/archive?older_than=12h&table=cpu", headers=ADMIN)
        body = await resp.json()
        assert resp.status == 200, body
        # Files whose rows are all over 12 h old (hour files, and the day file compaction made).
        assert body["archived"] >= 1 and body["dropped"] == 0
        archived = await query(client, "SELECT count(*) FROM archive.cpu", token=READ_TOKEN)
        local = await query(client, "SELECT count(*), min(epoch_ns(time)) FROM cpu", token=READ_TOKEN)
        assert local[0][0] + archived[0][0] == total and local[0][1] == now - 12 * H
        await client.close()
    finally:
        await asyncio.to_thread(eng.close)


async def test_archive_on_demand_without_an_archive_is_404(make_client):
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    resp = await client.post("/api/v1/storage/archive", headers=ADMIN)
    await assert_error(resp, 404, "NotFound", "no archive")


async def test_cleanup_task_compacts_small_files(make_client, tmp_path: Path):
    clock = ManualClock()
    hour = clock.now_ns() // H * H - 2 * H
    eng = await asyncio.to_thread(Engine.open, tmp_path / "c", clock=clock, fsync="none")
    try:
        client = await make_client(ServerConfig(port=0, tokens=TOKENS), engine=eng)

        def three_flushes() -> None:
            for i in range(3):  # three small files in one hour partition
                t = hour + np.arange(10, dtype=np.int64) * 1000 + i
                eng.write("cpu", t, tags={"host": ["a"] * 10}, fields={"v": np.full(10, float(i))})
                eng.flush()

        await asyncio.to_thread(three_flushes)
        before = len(list((tmp_path / "c").glob("default/cpu/**/*.parquet")))
        assert before == 3
        resp = await client.post("/api/v1/tasks/cleanup/run", headers=ADMIN)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["last_result"]["compaction"]["files_removed"] >= 2
        assert len(list((tmp_path / "c").glob("default/cpu/**/*.parquet"))) == 1
        assert await query(client, "SELECT count(*), sum(v) FROM cpu", token=READ_TOKEN) == [[30, 30.0]]
        await client.close()
    finally:
        await asyncio.to_thread(eng.close)
