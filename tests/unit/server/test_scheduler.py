"""The background scheduler: no overlap, isolated failures, jitter, intervals, clean stop, metrics.

Time is driven, never waited for: the scheduler's clock is a ManualClock and its periodic waits
go through :class:`ManualSleep`, which the test releases; blocking task bodies wait on
``threading.Event`` gates the test opens.
"""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.scheduler import DEFAULT_INTERVALS, Scheduler, UnknownTask, interval_for, parse_duration_s
from tsengine.clock import ManualClock
from tsengine.errors import InvalidInput
from tsengine.instrument import CollectorRegistry
from tsengine.instrument._exposition import generate_latest

DEADLINE_S = 10.0


class ManualSleep:
    """An injected ``sleep``: records each requested delay and returns only when released."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._pending: list[asyncio.Future[None]] = []
        self._changed = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.delays.append(delay)
        self._pending.append(fut)
        self._changed.set()
        await fut

    async def wait_sleepers(self, n: int) -> None:
        """Wait (bounded) until ``n`` waits have been requested in all."""

        async def reached() -> None:
            while len(self.delays) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), DEADLINE_S)

    def release(self) -> None:
        """End every wait in progress."""
        pending, self._pending = self._pending, []
        for fut in pending:
            if not fut.done():
                fut.set_result(None)


async def wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, DEADLINE_S), "timed out waiting for the task body"


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(2, thread_name_prefix="test-background") as executor:
        yield executor


def make_scheduler(clock: ManualClock, pool: Any, **kwargs: Any) -> Scheduler:
    kwargs.setdefault("jitter", 0.0)
    return Scheduler(executor=pool, clock=clock, **kwargs)


class Gate:
    """A blocking task body: counts calls and concurrent calls, holds until opened."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.finished = threading.Event()
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, int]:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        try:
            assert self.open.wait(DEADLINE_S), "the test never opened the gate"
        finally:
            with self._lock:
                self.active -= 1
        self.finished.set()
        return {"calls": self.calls}


async def test_run_now_during_a_periodic_run_waits_for_it(clock: ManualClock, pool: Any) -> None:
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, sleep=sleep)
    gate = Gate()
    sched.add("job", gate, 60)
    await sched.start()
    await sleep.wait_sleepers(1)
    sleep.release()  # the periodic run starts and blocks in its thread
    await wait_thread_event(gate.entered)
    on_demand = asyncio.create_task(sched.run_now("job"))
    for _ in range(20):
        await asyncio.sleep(0)  # yield: let run_now reach the task's lock
    assert not on_demand.done()
    assert gate.calls == 1, "run_now started alongside the periodic run"
    assert sched.status()["job"]["running"] is True
    gate.open.set()
    state = await asyncio.wait_for(on_demand, DEADLINE_S)
    assert gate.calls == 2 and gate.max_active == 1
    assert state.runs == 2 and state.last_result == {"calls": 2} and state.last_error is None
    await sched.stop()


async def test_two_run_now_calls_take_turns(clock: ManualClock, pool: Any) -> None:
    sched = make_scheduler(clock, pool)
    gate = Gate()
    sched.add("job", gate, 0)
    first = asyncio.create_task(sched.run_now("job"))
    await wait_thread_event(gate.entered)
    second = asyncio.create_task(sched.run_now("job"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.calls == 1 and not second.done()
    gate.open.set()
    a, b = await asyncio.wait_for(asyncio.gather(first, second), DEADLINE_S)
    # Each caller gets the state its own run left.
    assert (a.runs, a.last_result) == (1, {"calls": 1})
    assert (b.runs, b.last_result) == (2, {"calls": 2})
    assert gate.max_active == 1


async def test_failing_task_is_recorded_retried_next_interval_and_others_keep_running(
    clock: ManualClock, pool: Any
) -> None:
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, sleep=sleep)
    attempts: list[int] = []
    good_runs: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("disk on fire")
        return "recovered"

    def good() -> int:
        good_runs.append(1)
        return len(good_runs)

    sched.add("flaky", flaky, 60)
    sched.add("good", good, 60)
    await sched.start()
    await sleep.wait_sleepers(2)  # both loops wait for their first interval
    clock.advance(60)
    sleep.release()
    await sleep.wait_sleepers(4)  # both ran and wait again
    flaky_state = sched.status()["flaky"]
    assert flaky_state["last_error"] == "RuntimeError: disk on fire"
    assert flaky_state["failures"] == 1 and flaky_state["runs"] == 1
    assert flaky_state["next_run"] == pytest.approx(clock.now_ns() / 1e9 + 60)
    assert sched.status()["good"]["last_result"] == 1 and sched.status()["good"]["last_error"] is None
    clock.advance(60)
    sleep.release()
    await sleep.wait_sleepers(6)
    flaky_state = sched.status()["flaky"]
    assert flaky_state["last_error"] is None and flaky_state["last_result"] == "recovered"
    assert flaky_state["runs"] == 2 and flaky_state["failures"] == 1
    assert len(good_runs) == 2
    await sched.stop()


async def test_jitter_stays_within_bounds_and_spreads() -> None:
    sched = Scheduler(jitter=0.2, rng=random.Random(7))
    delays = [sched.next_delay_s(100.0) for _ in range(2000)]
    assert all(80.0 <= d <= 120.0 for d in delays)
    assert min(delays) < 82.0 and max(delays) > 118.0  # both ends are reached
    assert Scheduler(jitter=0.0).next_delay_s(100.0) == 100.0
    for bad in (-0.1, 0.6):
        with pytest.raises(InvalidInput, match="jitter"):
            Scheduler(jitter=bad)


async def test_next_run_uses_the_injected_clock_and_the_jittered_wait(clock: ManualClock, pool: Any) -> None:
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, sleep=sleep, jitter=0.1, rng=random.Random(3))
    sched.add("job", lambda: None, 300)
    sched.add("on_demand", lambda: None, 0)
    await sched.start()
    await sleep.wait_sleepers(1)  # the on-demand task has no loop
    (delay,) = sleep.delays
    assert 270.0 <= delay <= 330.0
    now_s = clock.now_ns() / 1e9
    assert sched.status()["job"]["next_run"] == pytest.approx(now_s + delay)
    assert sched.status()["on_demand"]["next_run"] is None
    await sched.stop()
    assert sched.status()["job"]["next_run"] is None


async def test_run_at_start_runs_without_waiting_an_interval(clock: ManualClock, pool: Any) -> None:
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, sleep=sleep)
    sched.add("job", lambda: "ran", 600, run_at_start=True)
    await sched.start()
    await sleep.wait_sleepers(1)
    assert sleep.delays == [0.0]
    sleep.release()
    await sleep.wait_sleepers(2)
    assert sleep.delays[1] == 600.0
    assert sched.status()["job"]["last_result"] == "ran"
    await sched.stop()


async def test_stop_waits_for_a_run_in_progress(clock: ManualClock, pool: Any) -> None:
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, sleep=sleep)
    gate = Gate()
    sched.add("job", gate, 60)
    await sched.start()
    await sleep.wait_sleepers(1)
    sleep.release()
    await wait_thread_event(gate.entered)
    stopping = asyncio.create_task(sched.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done(), "stop returned while the task's thread was still running"
    gate.open.set()
    await asyncio.wait_for(stopping, DEADLINE_S)
    assert gate.finished.is_set()
    assert sched.status()["job"]["runs"] == 1 and sched.status()["job"]["running"] is False


async def test_stop_waits_for_a_run_now_whose_caller_went_away(clock: ManualClock, pool: Any) -> None:
    sched = make_scheduler(clock, pool)
    gate = Gate()
    sched.add("job", gate, 0)
    caller = asyncio.create_task(sched.run_now("job"))
    await wait_thread_event(gate.entered)
    caller.cancel()  # e.g. the HTTP client disconnected
    with pytest.raises(asyncio.CancelledError):
        await caller
    stopping = asyncio.create_task(sched.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()
    gate.open.set()
    await asyncio.wait_for(stopping, DEADLINE_S)
    assert sched.status()["job"]["runs"] == 1 and sched.status()["job"]["last_result"] == {"calls": 1}


async def test_sync_tasks_run_on_the_executor_coroutines_on_the_loop(clock: ManualClock, pool: Any) -> None:
    sched = make_scheduler(clock, pool)
    loop_thread = threading.current_thread().name
    sched.add("sync", lambda: threading.current_thread().name, 0)

    async def on_loop() -> str:
        return threading.current_thread().name

    sched.add("async", on_loop, 0)
    assert (await sched.run_now("sync")).last_result.startswith("test-background")
    assert (await sched.run_now("async")).last_result == loop_thread


async def test_results_are_made_json_safe(clock: ManualClock, pool: Any) -> None:
    sched = make_scheduler(clock, pool)
    sched.add("job", lambda: {"tables": {"a": 1}, 3: clock, "nan": float("nan")}, 0)
    state = await sched.run_now("job")
    assert state.last_result["tables"] == {"a": 1}
    assert state.last_result["nan"] is None
    assert state.last_result["3"].startswith("<tsengine.clock.ManualClock")


async def test_unknown_and_duplicate_tasks_are_refused(clock: ManualClock, pool: Any) -> None:
    sched = make_scheduler(clock, pool)
    sched.add("job", lambda: None, 0)
    with pytest.raises(UnknownTask, match="'nope'") as info:
        await sched.run_now("nope")
    assert info.value.http_status == 404 and "job" in str(info.value)
    with pytest.raises(InvalidInput, match="exists"):
        sched.add("job", lambda: None, 0)
    with pytest.raises(InvalidInput, match="not finite"):
        sched.add("other", lambda: None, float("inf"))


async def test_metrics_are_exported(clock: ManualClock, pool: Any) -> None:
    registry = CollectorRegistry()
    sched = make_scheduler(clock, pool, registry=registry)
    sched.add("ok_task", lambda: 1, 0)

    def boom() -> None:
        raise ValueError("bad")

    sched.add("bad_task", boom, 0)
    text = generate_latest(registry).decode()
    # Children exist before the first run.
    assert 'tsengine_task_runs_total{task="ok_task",result="error"} 0.0' in text
    await sched.run_now("ok_task")
    await sched.run_now("ok_task")
    await sched.run_now("bad_task")
    text = generate_latest(registry).decode()
    now_s = clock.now_ns() / 1e9
    assert 'tsengine_task_runs_total{task="ok_task",result="ok"} 2.0' in text
    assert 'tsengine_task_runs_total{task="bad_task",result="error"} 1.0' in text
    assert 'tsengine_task_duration_seconds_count{task="ok_task"} 2.0' in text
    assert 'tsengine_task_last_run_failed{task="bad_task"} 1.0' in text
    assert 'tsengine_task_last_run_failed{task="ok_task"} 0.0' in text
    assert _gauge(text, "tsengine_task_last_success_timestamp_seconds", "ok_task") == pytest.approx(now_s)
    assert _gauge(text, "tsengine_task_last_start_timestamp_seconds", "bad_task") == pytest.approx(now_s)
    assert 'tsengine_task_last_success_timestamp_seconds{task="bad_task"}' not in text


async def test_next_run_is_exported_while_started(clock: ManualClock, pool: Any) -> None:
    registry = CollectorRegistry()
    sleep = ManualSleep()
    sched = make_scheduler(clock, pool, registry=registry, sleep=sleep)
    sched.add("job", lambda: None, 120)
    await sched.start()
    await sleep.wait_sleepers(1)
    text = generate_latest(registry).decode()
    assert _gauge(text, "tsengine_task_next_run_timestamp_seconds", "job") == pytest.approx(
        clock.now_ns() / 1e9 + 120
    )
    await sched.stop()
    assert "tsengine_task_next_run_timestamp_seconds{" not in generate_latest(registry).decode()


def _gauge(text: str, name: str, task: str) -> float:
    prefix = f'{name}{{task="{task}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{prefix!r} not in the exposition")


# -- intervals from config ------------------------------------------------------------------------


def test_interval_defaults_and_config_values() -> None:
    assert {name: interval_for({}, name) for name in DEFAULT_INTERVALS} == {
        "alert_evaluation": 60.0,
        "metrics_aggregation": 300.0,
        "performance_analysis": 600.0,
        "event_aggregation": 900.0,
        "cleanup": 1800.0,
    }
    config = {"intervals": {"metrics_aggregation": "7m", "cleanup": 90, "event_aggregation": "1.5h"}}
    assert interval_for(config, "metrics_aggregation") == 420.0  # not the default 300
    assert interval_for(config, "cleanup") == 90.0
    assert interval_for(config, "event_aggregation") == 5400.0
    assert interval_for({"intervals": {"alert_evaluation": "250ms"}}, "alert_evaluation") == 0.25
    assert interval_for({"intervals": {"alert_evaluation": 0}}, "alert_evaluation") == 0.0
    assert interval_for({"intervals": None}, "cleanup") == 1800.0


@pytest.mark.parametrize("raw", ["5 minutes", "-1m", -3, "nan", "inf", True, None, "", [5]])
def test_bad_interval_names_the_key(raw: Any) -> None:
    with pytest.raises(InvalidInput, match=r"tasks\.intervals\.cleanup="):
        interval_for({"intervals": {"cleanup": raw}}, "cleanup")


def test_unknown_task_in_intervals_and_bad_shape_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"tasks\.intervals\.metric_aggregation: unknown task"):
        interval_for({"intervals": {"metric_aggregation": "5m"}}, "cleanup")
    with pytest.raises(InvalidInput, match=r"tasks\.intervals: must be a mapping"):
        interval_for({"intervals": ["5m"]}, "cleanup")


_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from(sorted(_SCALE)),
)
def test_duration_round_trip(value: float, unit: str) -> None:
    assert parse_duration_s(f"{value!r}{unit}") == pytest.approx(value * _SCALE[unit])


@given(st.text(max_size=12))
def test_duration_parser_never_raises(text: str) -> None:
    parsed = parse_duration_s(text)
    assert parsed is None or isinstance(parsed, float)
