"""The server's one background scheduler: named periodic tasks on the event loop.

A task is a plain callable that returns a JSON-able result (a dict of counts, usually). It runs
on the app's ``control`` pool unless it is a coroutine function (then on the loop), so blocking
engine work never stalls request handling. Rules, in the order an operator relies on them:

- **Never overlaps itself.** Each task has a lock; a periodic run and ``run_now`` (the
  ``POST /api/v1/tasks/{name}/run`` endpoint, ``tsengine task run NAME``) take turns.
- **Isolated failures.** An exception is logged with its traceback, recorded as the task's
  ``last_error`` and counted in ``tsengine_task_runs_total{result="error"}``; the task runs again
  at its next interval and the other tasks never notice.
- **Jitter.** Each wait is ``interval * (1 ± jitter)`` (default ±10%) so that tasks with equal
  intervals, or many servers, do not fire in lock step. The first run is one (jittered)
  interval after start unless the task asks for ``run_at_start``.

State per task (last start, duration, result, error, next run, run and failure counts) is in
:meth:`Scheduler.status` (shown by ``/health/telemetry``) and as metrics in the server's registry:
``tsengine_task_runs_total{task,result}``, ``tsengine_task_duration_seconds{task}``,
``tsengine_task_last_success_timestamp_seconds{task}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from tsengine.errors import InvalidInput, NotFound
from tsengine.instrument import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DEFAULT_INTERVALS", "Scheduler", "TaskState", "UnknownTask", "interval_for"]

log = logging.getLogger(__name__)

#: Default interval in seconds of each task the server knows, by the name used in the API,
#: the CLI and the health output. ``cleanup`` is retention, archival and compaction.
DEFAULT_INTERVALS: Mapping[str, float] = {
    "alert_evaluation": 60.0,
    "metrics_aggregation": 300.0,
    "performance_analysis": 600.0,
    "event_aggregation": 900.0,
    "cleanup": 1800.0,
}



def interval_for(tasks_config: Mapping[str, Any], name: str) -> float:
    """Seconds between runs of task ``name``: ``tasks.intervals.<name>`` from the server's config
    file (a number of seconds or a duration such as ``"5m"``), else :data:`DEFAULT_INTERVALS`.
    0 means "only on demand".

    Raises:
        InvalidInput: the configured value is not a non-negative duration.
    """
    intervals = tasks_config.get("intervals", {}) or {}
    if not isinstance(intervals, Mapping):
        raise InvalidInput("cannot read config tasks.intervals: must be a mapping of task name to seconds")
    raw = intervals.get(name, DEFAULT_INTERVALS.get(name, 0.0))
    seconds = _duration_s(raw)
    if seconds is None or seconds < 0:
        raise InvalidInput(
            f"cannot read config tasks.intervals.{name}={raw!r}: must be seconds or a duration like '5m'"
        )
    return seconds


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration_s(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip()
        for unit in ("ms", "s", "m", "h", "d"):
            if text.endswith(unit):
                try:
                    return float(text[: -len(unit)]) * _UNITS[unit]
                except ValueError:
                    return None
        try:
            return float(text)
        except ValueError:
            return None
    return None


_DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class UnknownTask(NotFound):
    """No task of that name is registered (HTTP 404)."""


@dataclass
class TaskState:
    """What one task did last and when it runs next (wall-clock epoch seconds)."""

    name: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    running: bool = False
    last_start: float | None = None
    last_duration_s: float | None = None
    last_result: Any = None
    last_error: str | None = None
    next_run: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "runs": self.runs,
            "failures": self.failures,
            "running": self.running,
            "last_start": self.last_start,
            "last_duration_s": self.last_duration_s,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "next_run": self.next_run,
        }


@dataclass
class _Task:
    func: Callable[[], Any]
    state: TaskState
    run_at_start: bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loop_task: asyncio.Task[None] | None = None


class Scheduler:
    """Periodic named tasks; see the module docstring for the rules.

    Args:
        executor: where synchronous task callables run (the app's ``control`` pool); ``None``
            uses the loop's default executor.
        registry: where the task metrics are registered (the server's own registry).
        jitter: fraction of the interval added or removed at random from each wait (0 to 0.5).
        wall_clock: the clock stamped on ``last_start``/``next_run`` (injectable for tests).
    """

    def __init__(
        self,
        *,
        executor: Executor | None = None,
        registry: CollectorRegistry | None = None,
        jitter: float = 0.1,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= jitter <= 0.5:
            raise InvalidInput(f"cannot use scheduler jitter={jitter!r}: must be 0..0.5")
        self._executor = executor
        self._jitter = jitter
        self._wall = wall_clock
        self._tasks: dict[str, _Task] = {}
        self._started = False
        r = registry or CollectorRegistry()
        self._runs = Counter(
            "tsengine_task_runs", "Background task runs by task and result (ok/error).",
            ("task", "result"), registry=r,
        )  # fmt: skip
        self._duration = Histogram(
            "tsengine_task_duration_seconds", "Time one background task run took.",
            ("task",), registry=r, buckets=_DURATION_BUCKETS,
        )  # fmt: skip
        self._last_success = Gauge(
            "tsengine_task_last_success_timestamp_seconds", "When each task last finished without error.",
            ("task",), registry=r,
        )  # fmt: skip

    @property
    def executor(self) -> Executor | None:
        return self._executor

    @executor.setter
    def executor(self, value: Executor | None) -> None:
        self._executor = value

    def add(
        self, name: str, func: Callable[[], Any], interval_s: float, *, run_at_start: bool = False
    ) -> None:
        """Register ``func`` to run every ``interval_s`` seconds (before or after :meth:`start`).

        ``interval_s <= 0`` registers the task without a period: it runs only on demand.
        """
        if name in self._tasks:
            raise InvalidInput(f"cannot add task {name!r}: a task of that name exists")
        task = _Task(
            func=func, state=TaskState(name=name, interval_s=float(interval_s)), run_at_start=run_at_start
        )
        self._tasks[name] = task
        if self._started:
            self._spawn(task)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: t.state.to_dict() for name, t in sorted(self._tasks.items())}

    async def start(self) -> None:
        self._started = True
        for task in self._tasks.values():
            self._spawn(task)

    async def stop(self) -> None:
        """Cancel the periodic loops and wait for a run in progress to finish."""
        self._started = False
        loops = [t.loop_task for t in self._tasks.values() if t.loop_task is not None]
        for lt in loops:
            lt.cancel()
        for lt in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await lt
        for t in self._tasks.values():
            t.loop_task = None
            t.state.next_run = None
            async with t.lock:  # a run_now still in progress
                pass

    async def run_now(self, name: str) -> TaskState:
        """Run ``name`` once now (after a run in progress, never alongside it); return its state."""
        task = self._tasks.get(name)
        if task is None:
            raise UnknownTask(f"cannot run task {name!r}: unknown task (known: {self.names()})")
        await self._run(task)
        return task.state

    def _spawn(self, task: _Task) -> None:
        if task.loop_task is None and task.state.interval_s > 0:
            task.loop_task = asyncio.get_running_loop().create_task(
                self._loop(task), name=f"tsengine-task-{task.state.name}"
            )

    def _delay(self, interval: float) -> float:
        return interval * (1.0 + random.uniform(-self._jitter, self._jitter))

    async def _loop(self, task: _Task) -> None:
        first = True
        while True:
            delay = 0.0 if first and task.run_at_start else self._delay(task.state.interval_s)
            first = False
            task.state.next_run = self._wall() + delay
            await asyncio.sleep(delay)
            await self._run(task)

    async def _run(self, task: _Task) -> None:
        state = task.state
        async with task.lock:
            state.running = True
            state.last_start = self._wall()
            t0 = time.perf_counter()
            try:
                if inspect.iscoroutinefunction(task.func):
                    result = await task.func()
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._executor, task.func)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing task must never stop the others
                log.exception("background task %s failed", state.name)
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                self._runs.labels(state.name, "error").inc()
            else:
                state.last_result = result
                state.last_error = None
                self._runs.labels(state.name, "ok").inc()
                self._last_success.labels(state.name).set(self._wall())
            finally:
                elapsed = time.perf_counter() - t0
                state.running = False
                state.runs += 1
                state.last_duration_s = round(elapsed, 6)
                self._duration.labels(state.name).observe(elapsed)
