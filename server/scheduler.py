"""The server's one background scheduler: named periodic tasks on the event loop.

Who calls it: the app factory builds one (``app[SCHEDULER_KEY]``) and starts/stops it from its
``cleanup_ctx``; feature modules register their tasks with :meth:`Scheduler.add`;
``POST /api/v1/tasks/{name}/run`` (and so ``tsengine task run NAME``) calls
:meth:`Scheduler.run_now`; ``/health/telemetry`` and ``GET /api/v1/tasks`` read
:meth:`Scheduler.status`.

A task is a plain callable that returns a JSON-able result (a dict of counts, usually). It runs
on the executor the app gives (the ``background`` pool) unless it is a coroutine function (then
on the loop, so it must not block), so blocking engine work never stalls request handling.
Rules, in the order an operator relies on them:

- **Never overlaps itself.** Each task has a lock; a periodic run and ``run_now`` take turns: a
  ``run_now`` that arrives during a periodic run waits for it, then runs.
- **Isolated failures.** An exception is logged with its traceback, recorded as the task's
  ``last_error`` and counted in ``tsengine_task_runs_total{result="error"}``; the task runs again
  at its next interval and the other tasks never notice.
- **Jitter.** Each wait is ``interval * (1 ± jitter)`` (default ±10%) so that tasks with equal
  intervals, or many servers, do not fire in lock step. The first run is one (jittered)
  interval after start unless the task asks for ``run_at_start``.
- **Clean stop.** :meth:`Scheduler.stop` cancels the waits and then waits for every run in
  progress (periodic or on demand) to finish: a run is its own asyncio task, shielded from the
  cancellation of whoever awaits it, so its thread is never abandoned while the app tears the
  engine down.

Times (``last_start``, ``next_run``) are epoch seconds from the injected clock (the engine's,
so tests drive it with :class:`tsengine.clock.ManualClock`); waits go through the injected
``sleep`` (``asyncio.sleep``; tests pass one they release by hand). Durations are measured.

State per task is in :meth:`Scheduler.status` and as metrics in the server's registry:
``tsengine_task_runs_total{task,result}``, ``tsengine_task_duration_seconds{task}``,
``tsengine_task_last_success_timestamp_seconds{task}``,
``tsengine_task_last_start_timestamp_seconds{task}``,
``tsengine_task_last_duration_seconds{task}``, ``tsengine_task_last_run_failed{task}`` (1 when
the last run raised) and ``tsengine_task_next_run_timestamp_seconds{task}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import orjson

from tsengine.clock import Clock, SystemClock
from tsengine.errors import InvalidInput, NotFound
from tsengine.instrument import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DEFAULT_INTERVALS", "Scheduler", "TaskState", "UnknownTask", "interval_for", "parse_duration_s"]

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
        InvalidInput: ``tasks.intervals`` is not a mapping, names a task the server does not
            know, or a value is not a finite non-negative duration; the message names the key.
    """
    intervals = tasks_config.get("intervals", {}) or {}
    if not isinstance(intervals, Mapping):
        raise InvalidInput("cannot read config tasks.intervals: must be a mapping of task name to seconds")
    unknown = sorted(str(k) for k in intervals if k not in DEFAULT_INTERVALS)
    if unknown:
        raise InvalidInput(
            f"cannot read config tasks.intervals.{unknown[0]}: unknown task "
            f"(known: {sorted(DEFAULT_INTERVALS)})"
        )
    raw = intervals.get(name, DEFAULT_INTERVALS.get(name, 0.0))
    seconds = parse_duration_s(raw)
    if seconds is None or seconds < 0:
        raise InvalidInput(
            f"cannot read config tasks.intervals.{name}={raw!r}: must be seconds or a duration like '5m'"
        )
    return seconds


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(raw: Any) -> float | None:
    """Seconds of ``raw``: a number (seconds) or ``"<number><ms|s|m|h|d>"``; None if it is neither
    or is not finite."""
    if isinstance(raw, bool):
        return None
    value: float | None = None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        scale = 1.0
        for unit in ("ms", "s", "m", "h", "d"):  # "ms" before "s" and "m"
            if text.endswith(unit):
                text, scale = text[: -len(unit)], _UNITS[unit]
                break
        try:
            value = float(text) * scale
        except ValueError:
            return None
    if value is None or not math.isfinite(value):
        return None
    return value


_DURATION_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class UnknownTask(NotFound):
    """No task of that name is registered (HTTP 404)."""


@dataclass
class TaskState:
    """What one task did last and when it runs next (epoch seconds of the scheduler's clock)."""

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
        executor: where synchronous task callables run (the app's ``background`` pool); ``None``
            uses the loop's default executor.
        registry: where the task metrics are registered (the server's own registry).
        jitter: fraction of the interval added or removed at random from each wait (0 to 0.5).
        clock: the clock stamped on ``last_start``/``next_run`` (the engine's; injectable).
        sleep: how the periodic loops wait (``asyncio.sleep``; tests inject one they control).
        rng: the source of jitter (seedable for tests).
    """

    def __init__(
        self,
        *,
        executor: Executor | None = None,
        registry: CollectorRegistry | None = None,
        jitter: float = 0.1,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= jitter <= 0.5:
            raise InvalidInput(f"cannot use scheduler jitter={jitter!r}: must be 0..0.5")
        #: Where synchronous task callables run; the app sets it once its pools exist.
        self.executor = executor
        self._jitter = jitter
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: dict[str, _Task] = {}
        self._inflight: set[asyncio.Task[TaskState]] = set()
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
        self._last_start = Gauge(
            "tsengine_task_last_start_timestamp_seconds", "When each task last started.",
            ("task",), registry=r,
        )  # fmt: skip
        self._last_duration = Gauge(
            "tsengine_task_last_duration_seconds", "How long each task's last run took.",
            ("task",), registry=r,
        )  # fmt: skip
        self._last_failed = Gauge(
            "tsengine_task_last_run_failed", "1 when the task's last run raised, else 0.",
            ("task",), registry=r,
        )  # fmt: skip
        self._next_run = Gauge(
            "tsengine_task_next_run_timestamp_seconds",
            "When each periodic task runs next (absent for on-demand tasks).",
            ("task",), registry=r,
        )  # fmt: skip

    def add(
        self, name: str, func: Callable[[], Any], interval_s: float, *, run_at_start: bool = False
    ) -> None:
        """Register ``func`` to run every ``interval_s`` seconds (before or after :meth:`start`).

        ``interval_s <= 0`` registers the task without a period: it runs only on demand.
        """
        if name in self._tasks:
            raise InvalidInput(f"cannot add task {name!r}: a task of that name exists")
        if not math.isfinite(interval_s):
            raise InvalidInput(f"cannot add task {name!r}: interval {interval_s!r} is not finite")
        task = _Task(
            func=func, state=TaskState(name=name, interval_s=float(interval_s)), run_at_start=run_at_start
        )
        self._tasks[name] = task
        # Children exist from the start, so rate() and absent() work before the first run.
        self._runs.labels(name, "ok")
        self._runs.labels(name, "error")
        self._last_failed.labels(name).set(0)
        if self._started:
            self._spawn(task)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: t.state.to_dict() for name, t in sorted(self._tasks.items())}

    def next_delay_s(self, interval_s: float) -> float:
        """One jittered wait: ``interval_s * (1 + u)``, ``u`` uniform in ``[-jitter, +jitter]``."""
        return interval_s * (1.0 + self._rng.uniform(-self._jitter, self._jitter))

    async def start(self) -> None:
        self._started = True
        for task in self._tasks.values():
            self._spawn(task)

    async def stop(self) -> None:
        """Cancel the periodic loops, then wait for every run in progress to finish."""
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
            self._next_run.remove(t.state.name)
        while self._inflight:  # runs started by the loops or by run_now (their own tasks)
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def run_now(self, name: str) -> TaskState:
        """Run ``name`` once now (after a run in progress, never alongside it).

        Returns a copy of the task's state as this run left it. Cancelling the caller does not
        cancel the run (:meth:`stop` waits for it).

        Raises:
            UnknownTask: no task of that name.
        """
        task = self._tasks.get(name)
        if task is None:
            raise UnknownTask(f"cannot run task {name!r}: unknown task (known: {self.names()})")
        return await self._launch(task)

    def _spawn(self, task: _Task) -> None:
        if task.loop_task is None and task.state.interval_s > 0:
            task.loop_task = asyncio.get_running_loop().create_task(
                self._loop(task), name=f"tsengine-task-{task.state.name}"
            )

    async def _loop(self, task: _Task) -> None:
        first = True
        while True:
            delay = 0.0 if first and task.run_at_start else self.next_delay_s(task.state.interval_s)
            first = False
            task.state.next_run = self._now_s() + delay
            self._next_run.labels(task.state.name).set(task.state.next_run)
            await self._sleep(delay)
            await self._launch(task)

    async def _launch(self, task: _Task) -> TaskState:
        run = asyncio.get_running_loop().create_task(self._run(task), name=f"tsengine-run-{task.state.name}")
        self._inflight.add(run)
        run.add_done_callback(self._inflight.discard)
        return await asyncio.shield(run)

    def _now_s(self) -> float:
        return self._clock.now_ns() / 1e9

    async def _run(self, task: _Task) -> TaskState:
        state = task.state
        name = state.name
        async with task.lock:
            state.running = True
            state.last_start = self._now_s()
            self._last_start.labels(name).set(state.last_start)
            t0 = time.perf_counter()
            try:
                if inspect.iscoroutinefunction(task.func):
                    result = await task.func()
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self.executor, task.func)
                result = _jsonable(result)
            except Exception as exc:  # the task boundary: a failing task must never stop the others
                log.exception("background task %s failed", name)
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                self._runs.labels(name, "error").inc()
                self._last_failed.labels(name).set(1)
            else:
                state.last_result = result
                state.last_error = None
                self._runs.labels(name, "ok").inc()
                self._last_failed.labels(name).set(0)
                self._last_success.labels(name).set(self._now_s())
            finally:
                elapsed = time.perf_counter() - t0
                state.running = False
                state.runs += 1
                state.last_duration_s = round(elapsed, 6)
                self._duration.labels(name).observe(elapsed)
                self._last_duration.labels(name).set(elapsed)
            return dataclasses.replace(state)


def _jsonable(result: Any) -> Any:
    """``result`` as JSON types (what /health/telemetry and the API serialise); str() of the rest."""
    return orjson.loads(orjson.dumps(result, default=str, option=orjson.OPT_NON_STR_KEYS))
