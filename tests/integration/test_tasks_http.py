"""``GET /api/v1/tasks`` and ``POST /api/v1/tasks/{name}/run`` on a real server: scopes, 404, 500.

Tasks are triggered through the endpoint (never by waiting for an interval); the state each run
leaves shows in the answer, in ``/health/telemetry`` and in ``/metrics``.
"""

from __future__ import annotations

from typing import Any

import pytest

from server import ServerConfig, create_app
from server.keys import SCHEDULER_KEY
from tests.integration.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS, WRITE_TOKEN, assert_error
from tsengine.errors import InvalidInput

ANALYSIS = ("metrics_aggregation", "performance_analysis", "event_aggregation")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(make_client: Any) -> Any:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    scheduler = client.app[SCHEDULER_KEY]
    scheduler.add("hello", lambda: {"greeted": 1}, 0)

    def boom() -> None:
        raise RuntimeError("the disk is on fire")

    scheduler.add("boom", boom, 0)
    return client


async def test_list_needs_read_and_shows_the_analysis_tasks(api: Any) -> None:
    await assert_error(await api.get("/api/v1/tasks"), 401, "Unauthorized", "scope 'read'")
    resp = await api.get("/api/v1/tasks", headers=bearer(READ_TOKEN))
    body = await resp.json()
    assert resp.status == 200, body
    tasks = body["tasks"]
    assert {*ANALYSIS, "hello", "boom"} <= set(tasks)
    assert tasks["metrics_aggregation"]["interval_s"] == 300.0
    assert tasks["performance_analysis"]["interval_s"] == 600.0
    assert tasks["event_aggregation"]["interval_s"] == 900.0
    assert tasks["hello"] == {
        "interval_s": 0.0, "runs": 0, "failures": 0, "running": False, "last_start": None,
        "last_duration_s": None, "last_result": None, "last_error": None, "next_run": None,
    }  # fmt: skip


async def test_run_needs_the_admin_scope(api: Any) -> None:
    await assert_error(await api.post("/api/v1/tasks/hello/run"), 401, "Unauthorized", "scope 'admin'")
    for token in (READ_TOKEN, WRITE_TOKEN):
        resp = await api.post("/api/v1/tasks/hello/run", headers=bearer(token))
        await assert_error(resp, 403, "Forbidden", "lacks scope 'admin'")
    assert api.app[SCHEDULER_KEY].status()["hello"]["runs"] == 0


async def test_run_answers_with_the_result_and_the_clock_time(api: Any, clock: Any) -> None:
    clock.advance(42)
    resp = await api.post("/api/v1/tasks/hello/run", headers=bearer(ADMIN_TOKEN))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["task"] == "hello" and body["last_result"] == {"greeted": 1} and body["runs"] == 1
    assert body["last_start"] == pytest.approx(clock.now_ns() / 1e9)
    assert body["last_error"] is None and body["last_duration_s"] >= 0


async def test_unknown_task_is_404_naming_the_known_ones(api: Any) -> None:
    resp = await api.post("/api/v1/tasks/nope/run", headers=bearer(ADMIN_TOKEN))
    await assert_error(resp, 404, "UnknownTask", "cannot run task 'nope'", "metrics_aggregation")


async def test_failing_task_is_500_with_the_error_and_recorded_everywhere(api: Any) -> None:
    resp = await api.post("/api/v1/tasks/boom/run", headers=bearer(ADMIN_TOKEN))
    body = await resp.json()
    assert resp.status == 500, body
    assert body["error"] == "TaskFailed"
    assert body["message"] == "cannot run task boom: RuntimeError: the disk is on fire"
    assert body["last_error"] == "RuntimeError: the disk is on fire" and body["failures"] == 1
    # The other tasks are unaffected.
    ok = await api.post("/api/v1/tasks/hello/run", headers=bearer(ADMIN_TOKEN))
    assert ok.status == 200
    telemetry = await (await api.get("/health/telemetry")).json()
    assert telemetry["tasks"]["boom"]["last_error"] == "RuntimeError: the disk is on fire"
    assert telemetry["tasks"]["hello"]["runs"] == 1
    metrics = await (await api.get("/metrics")).text()
    assert 'tsengine_task_runs_total{task="boom",result="error"} 1.0' in metrics
    assert 'tsengine_task_runs_total{task="hello",result="ok"} 1.0' in metrics
    assert 'tsengine_task_last_run_failed{task="boom"} 1.0' in metrics


async def test_intervals_come_from_the_config(make_client: Any) -> None:
    config = ServerConfig(port=0, tasks={"intervals": {"metrics_aggregation": "2m", "event_aggregation": 0}})
    client = await make_client(config)
    tasks = (await (await client.get("/api/v1/tasks")).json())["tasks"]
    assert tasks["metrics_aggregation"]["interval_s"] == 120.0
    assert tasks["event_aggregation"]["interval_s"] == 0.0
    assert tasks["event_aggregation"]["next_run"] is None  # on demand only
    assert tasks["metrics_aggregation"]["next_run"] is not None


@pytest.mark.parametrize(
    ("tasks", "needle"),
    [
        ({"intervals": {"metrics_aggregation": "soon"}}, "tasks.intervals.metrics_aggregation='soon'"),
        (
            {"performance_analysis": {"degradation_factor": 0.5}},
            "tasks.performance_analysis.degradation_factor",
        ),
        (
            {"event_aggregation": {"auth_treshold": 5}},
            "tasks.event_aggregation.auth_treshold: unknown setting",
        ),
        ({"metrics_aggregation": {"window": "-5m"}}, "tasks.metrics_aggregation.window"),
    ],
)
async def test_bad_task_config_fails_app_creation_naming_the_key(
    engines: Any, tasks: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        create_app(engines(), ServerConfig(port=0, tasks=tasks))
    assert needle in str(info.value)
