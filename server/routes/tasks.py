"""Background tasks: ``GET /api/v1/tasks`` (read) and ``POST /api/v1/tasks/{name}/run`` (admin).

Who calls it: operators, ``tsengine task list`` and ``tsengine task run NAME``. The list shows
every task the scheduler knows (:mod:`server.scheduler`) with its interval, last start, duration,
result, error and next run. ``run`` starts the task now — after a run already in progress, never
alongside it — waits for it and answers with the state that run left: 200 with its result, or
500 with ``error: "TaskFailed"`` and the task's error in ``message`` (the failure is recorded
like a scheduled one). An unknown name is a 404 listing the known ones.
"""

from __future__ import annotations

from aiohttp import web

from server.auth import requires
from server.keys import SCHEDULER_KEY
from server.routes import json_response

__all__ = ["ROUTES"]


@requires("read")
async def list_tasks(request: web.Request) -> web.StreamResponse:
    return json_response({"tasks": request.app[SCHEDULER_KEY].status()})


@requires("admin")
async def run_task(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    state = await request.app[SCHEDULER_KEY].run_now(name)
    body = {"task": name, **state.to_dict()}
    if state.last_error is not None:
        body = {"error": "TaskFailed", "message": f"cannot run task {name}: {state.last_error}", **body}
        return json_response(body, status=500)
    return json_response(body)


ROUTES = [web.get("/api/v1/tasks", list_tasks), web.post("/api/v1/tasks/{name}/run", run_task)]
