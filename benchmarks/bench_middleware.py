"""Per-request cost of tsengine's middleware over real HTTP, driven by wrk, next to bare apps and
prometheus-fastapi-instrumentator.

Run: ``.venv/bin/python -m benchmarks.bench_middleware [--quick]`` (also picked up by
``python -m benchmarks.run``). ``run(quick)`` returns the figures as a dict and prints a table.

What is measured: the same trivial app (``GET /items/{item_id}`` → ``{"id": item_id}``) served

* by FastAPI under uvicorn (h11, the asyncio loop, no access log): bare, with tsengine's
  middleware (``setup_telemetry_for_app``), and with ``prometheus-fastapi-instrumentator``
  (``Instrumentator().instrument(app).expose(app)``, its defaults);
* by aiohttp (``web.run_app``, no access log): bare and with tsengine's middleware;

each in its own server subprocess (``python -m benchmarks.bench_middleware --serve KIND``),
driven by ``wrk -t1 -c16 -d{5|2}s --latency`` over loopback against ``/items/{n}`` with ``n``
cycling through 100 ids (a Lua script), so the route template matters. The telemetry config is
the default except the psutil sampler (off: it would wake every 15 s in one run and not another).

Two cores: the server is pinned to CPU 1 and wrk to CPU 0 (``sched_setaffinity``), so client
and server never compete for a core; everything else on the machine competes with both. The
variants run interleaved (bare, tsengine, instrumentator, … then again), after a 1 s warm-up
each, and the best throughput of the rounds counts, so a noisy neighbour hits every variant
alike.

Per-request overhead, two ways, in µs: ``1e6 / throughput(variant) - 1e6 / throughput(bare)``
(the server core is saturated, so this is the time the middleware adds — but other processes
on that core steal from it), and the server process's own CPU time (user + system, psutil) per
request minus the bare app's, which does not count time stolen by others and is the steadier
figure on a shared machine. Latency p50/p99 are wrk's. Each figure is the best of the rounds.
Without ``/usr/bin/wrk`` the benchmark returns ``{"skipped": "wrk not installed"}``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._process import ProcessMeter, ServerProcess
from benchmarks._timing import keep_best

__all__ = ["run"]

FASTAPI_KINDS = ("fastapi_bare", "fastapi_tsengine", "fastapi_instrumentator")
AIOHTTP_KINDS = ("aiohttp_bare", "aiohttp_tsengine")
SERVER_CPU, CLIENT_CPU = 1, 0
CONNECTIONS = 16
STARTUP_TIMEOUT_S = 30.0

_LUA = """
counter = 0
request = function()
  counter = (counter + 1) % 100
  return wrk.format("GET", "/items/" .. counter)
end
"""


# -- the servers (run in the child process) --------------------------------------------------------


def _fastapi_app(kind: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    if kind == "fastapi_tsengine":
        from tsengine.instrument import configure, setup_telemetry_for_app

        configure(environ={"SYSTEM_METRICS_ENABLED": "false"})
        setup_telemetry_for_app(app)
    elif kind == "fastapi_instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    return app


def _aiohttp_app(kind: str) -> Any:
    from aiohttp import web

    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["item_id"])})

    app = web.Application()
    app.router.add_get("/items/{item_id}", item)
    if kind == "aiohttp_tsengine":
        from tsengine.instrument import configure, setup_telemetry_for_app

        configure(environ={"SYSTEM_METRICS_ENABLED": "false"})
        setup_telemetry_for_app(app)
    return app


def serve(kind: str, port: int) -> None:
    """Serve ``kind`` on 127.0.0.1:``port`` until killed (the child process's entry point)."""
    if kind in FASTAPI_KINDS:
        import uvicorn

        uvicorn.run(
            _fastapi_app(kind),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            http="h11",
            loop="asyncio",
            ws="none",
        )
    elif kind in AIOHTTP_KINDS:
        from aiohttp import web

        web.run_app(_aiohttp_app(kind), host="127.0.0.1", port=port, print=None, access_log=None)
    else:
        raise SystemExit(f"cannot serve {kind!r}: expected one of {FASTAPI_KINDS + AIOHTTP_KINDS}")


# -- the driver --------------------------------------------------------------------------------------


def _pin(cpu: int) -> Any:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        return None  # one core: nothing to separate

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})

    return preexec


class _Server(ServerProcess):
    """``python -m benchmarks.bench_middleware --serve KIND PORT``, pinned to SERVER_CPU; ready
    when the port accepts a connection."""

    start_timeout_s = STARTUP_TIMEOUT_S
    stop_timeout_s = 10.0
    ready_interval_s = 0.05  # polling a port that is not open yet: no event to wait on

    def __init__(self, kind: str, log_path: Path) -> None:
        super().__init__(
            log_path=log_path, cwd=Path(__file__).resolve().parent.parent, preexec_fn=_pin(SERVER_CPU)
        )
        self.kind = kind
        self.name = f"the benchmark server {kind}"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "benchmarks.bench_middleware", "--serve", self.kind, str(port)]


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 latency (µs) and the error counts of ``wrk --latency`` output."""
    out: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if m is None:
        raise ValueError(f"cannot read wrk output: no Requests/sec line in {output!r}")
    out["requests_per_s"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if m is not None:
            out[f"p{pct}_us"] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"(\d+) requests in", output)
    out["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    out["non_2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    out["socket_errors"] = float(sum(int(g) for g in m.groups())) if m else 0.0
    return out


def _wrk(wrk: str, server: _Server, duration_s: int, script: str) -> dict[str, float]:
    """One wrk run against ``server``; adds the server's CPU µs per request (user + system)."""
    cmd = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency", "-s", script]
    # No RSS sampling: a thread waking every 50 ms in this process would compete with wrk.
    with ProcessMeter(server.pid, rss=False) as meter:
        result = subprocess.run(
            [*cmd, f"http://127.0.0.1:{server.port}/items/0"],
            capture_output=True,
            text=True,
            timeout=duration_s + 30,
            preexec_fn=_pin(CLIENT_CPU),
            check=True,
        )
    figures = parse_wrk(result.stdout)
    figures["server_cpu_us_per_request"] = meter.cpu_s * 1e6 / max(figures["requests"], 1.0)
    return figures


def _measure(kinds: tuple[str, ...], wrk: str, duration_s: int, rounds: int, script: str) -> dict[str, Any]:
    logs = Path(script).parent
    servers: dict[str, _Server] = {}
    try:
        for kind in kinds:
            servers[kind] = _Server(kind, logs / f"{kind}.log")
            servers[kind].start()
        for server in servers.values():
            _wrk(wrk, server, 1, script)  # warm-up: imports, first-request paths, caches
        best: dict[str, dict[str, float]] = {}
        for _ in range(rounds):
            for kind, server in servers.items():
                res = _wrk(wrk, server, duration_s, script)
                if res["non_2xx"] or res["socket_errors"]:
                    raise RuntimeError(f"cannot benchmark {kind}: wrk saw errors: {res}")
                # Best of the rounds, each figure on its own.
                best[kind] = keep_best(
                    best.get(kind),
                    res,
                    higher=("requests_per_s",),
                    lower=("server_cpu_us_per_request", "p50_us", "p99_us"),
                )
        return best
    finally:
        for server in servers.values():
            server.stop()


def run(quick: bool = False) -> dict[str, Any]:
    """Measure, print a table, return the figures (or ``{"skipped": ...}`` without wrk)."""
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
    if wrk is None:
        print("bench_middleware skipped: wrk not installed (apt-get install -y wrk)")
        return {"skipped": "wrk not installed"}
    duration_s, rounds = (2, 1) if quick else (5, 2)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "items.lua")
        Path(script).write_text(_LUA)
        figures = {
            **_measure(FASTAPI_KINDS, wrk, duration_s, rounds, script),
            **_measure(AIOHTTP_KINDS, wrk, duration_s, rounds, script),
        }
    result: dict[str, Any] = {
        "command": f"wrk -t1 -c{CONNECTIONS} -d{duration_s}s --latency (best of {rounds})",
        "pinning": f"server CPU {SERVER_CPU}, wrk CPU {CLIENT_CPU}" if _pin(0) else "none (one core)",
        "variants": figures,
    }
    for base, kinds in (("fastapi_bare", FASTAPI_KINDS[1:]), ("aiohttp_bare", AIOHTTP_KINDS[1:])):
        bare_us = 1e6 / figures[base]["requests_per_s"]
        bare_cpu_us = figures[base]["server_cpu_us_per_request"]
        for kind in kinds:
            result[f"{kind}_overhead_us"] = 1e6 / figures[kind]["requests_per_s"] - bare_us
            result[f"{kind}_cpu_overhead_us"] = figures[kind]["server_cpu_us_per_request"] - bare_cpu_us
    for suffix in ("overhead_us", "cpu_overhead_us"):
        ours, theirs = result[f"fastapi_tsengine_{suffix}"], result[f"fastapi_instrumentator_{suffix}"]
        # A ratio of overheads only means something when the instrumentator's is measurably positive.
        result[f"tsengine_vs_instrumentator_{suffix}"] = ours / theirs if theirs > 1.0 else None
    result["quick"] = quick
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"middleware over HTTP: {result['command']}; pinning: {result['pinning']}")
    head = ("variant", "req/s", "µs/req", "overhead", "server CPU µs/req", "CPU overhead", "p50 µs", "p99 µs")
    print("{:24} {:>8} {:>7} {:>9} {:>18} {:>13} {:>7} {:>8}".format(*head))
    for kind, fig in result["variants"].items():
        overhead = result.get(f"{kind}_overhead_us")
        cpu_overhead = result.get(f"{kind}_cpu_overhead_us")
        print(
            f"{kind:24} {fig['requests_per_s']:8.0f} {1e6 / fig['requests_per_s']:7.1f} "
            + (f"{overhead:9.1f}" if overhead is not None else " " * 9)
            + f" {fig['server_cpu_us_per_request']:18.1f} "
            + (f"{cpu_overhead:13.1f}" if cpu_overhead is not None else " " * 13)
            + f" {fig.get('p50_us', math.nan):7.0f} {fig.get('p99_us', math.nan):8.0f}"
        )
    for suffix, what in (("overhead_us", "1/throughput"), ("cpu_overhead_us", "server CPU")):
        ratio = result[f"tsengine_vs_instrumentator_{suffix}"]
        text = f"{ratio:.2f}" if ratio is not None else "n/a (instrumentator's overhead within noise)"
        print(f"tsengine / instrumentator overhead ({what}): {text}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        run(quick="--quick" in sys.argv)
