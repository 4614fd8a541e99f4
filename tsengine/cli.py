"""The ``tsengine`` command: ``serve`` (alias ``run``) and ``sql``.

``tsengine serve [--host H] [--port N] [--data DIR] [--config FILE]`` opens the engine, serves
the HTTP API (see docs/http-api.md) and prints where it listens with a curl line to write a
first sample and one to query it. SIGTERM or SIGINT shut it down gracefully: the listening
socket closes, in-flight requests finish (up to ``shutdown_timeout_s``), then the engine
persists its buffers to Parquet and closes the WAL. Exit status 0 after a clean shutdown,
2 for a configuration error.

``tsengine sql [--data DIR] QUERY`` opens the data directory embedded, runs one read-only
query and prints the result as a table (``--csv`` for CSV). A directory a running server has
open is refused (the engine locks it).

``tsengine rules check FILE...`` validates alert rule files (exit 1 naming the rule and field).

``tsengine task list`` and ``tsengine task run NAME`` call a running server's
``/api/v1/tasks`` endpoints (``--url``, ``--token`` or ``TSENGINE_TOKEN``; ``run`` needs the
admin scope): ``run`` waits for the task, prints its result and exits 1 if it failed, or if
the server refused or could not be reached.

Configuration: defaults < ``--config`` file < ``TSENGINE_*`` environment < flags. The
environment is read here, at the edge, and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from tsengine.errors import InvalidInput, TsengineError

__all__ = ["main"]

log = logging.getLogger("tsengine.cli")

_EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsengine", description="Time-series storage engine and telemetry backend."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "run"):
        p = sub.add_parser(name, help="serve the HTTP API" + (" (alias of serve)" if name == "run" else ""))
        p.add_argument("--host", help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default 8181; 0 picks a free one)")
        p.add_argument("--data", help="data directory (default ./data)")
        p.add_argument("--config", help="YAML or TOML configuration file")
        p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p = sub.add_parser(
        "sql", help="run one SQL query on a data directory, or on a running server (--url), and print it"
    )
    p.add_argument("--data", default="./data", help="data directory (default ./data)")
    p.add_argument("--url", help="query this running server instead (e.g. http://127.0.0.1:8181)")
    p.add_argument("--token", help="API token for --url (default $TSENGINE_TOKEN); needs the read scope")
    p.add_argument("--db", default="default", help="database of unqualified table names (default)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("query", help="the SQL statement")
    from tsengine.lifecycle import jobs  # compact, archive, backfill (docs/storage-lifecycle.md)

    jobs.add_parsers(sub)
    _task_parser(sub)
    from server.alerting import check as rules_check  # tsengine rules check FILE (docs/alerting.md)

    rules_check.add_parsers(sub)
    return parser


def _task_parser(sub: Any) -> None:
    commands = sub.add_parser("task", help="list or run the server's background tasks").add_subparsers(
        dest="task_command", required=True
    )
    for name in ("list", "run"):
        p = commands.add_parser(name, help=f"{name} the running server's background tasks")
        p.add_argument("--url", help="the server (default $TSENGINE_URL or http://127.0.0.1:8181)")
        p.add_argument("--token", help="API token (default $TSENGINE_TOKEN); run needs the admin scope")
        p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer (600)")
        if name == "run":
            p.add_argument("name", help="task name, e.g. metrics_aggregation")


def _task(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    """``tsengine task list|run``: call the running server's task endpoints (exit 1 on failure)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    base = (args.url or environ.get("TSENGINE_URL") or "http://127.0.0.1:8181").rstrip("/")
    token = args.token or environ.get("TSENGINE_TOKEN")
    run = args.task_command == "run"
    path = f"/api/v1/tasks/{urllib.parse.quote(args.name, safe='')}/run" if run else "/api/v1/tasks"
    request = urllib.request.Request(base + path, method="POST" if run else "GET", data=b"" if run else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            detail = exc.reason
        sys.stderr.write(f"tsengine: {detail} (HTTP {exc.code})\n")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"tsengine: cannot reach {base}: {getattr(exc, 'reason', exc)}\n")
        return 1
    if run:
        out.write(f"task {args.name}: ok in {body['last_duration_s']:.3f} s\n")
        out.write(json.dumps(body["last_result"], indent=2, sort_keys=True) + "\n")
        return 0
    cols = ("interval_s", "runs", "failures", "last_start", "last_duration_s", "next_run", "last_error")
    rows = [[name, *(state.get(c) for c in cols)] for name, state in body["tasks"].items()]
    out.write(format_table(["task", *cols], rows))
    return 0


def _engine_settings(engine_overrides: Mapping[str, Any], environ: Mapping[str, str], **extra: Any) -> Any:
    from tsengine.settings import Settings

    settings = Settings.from_env(environ)
    # File values apply only where the environment did not set the same key (env wins).
    from_file = {k: v for k, v in engine_overrides.items() if f"TSENGINE_{k.upper()}" not in environ}
    return settings.replace(**from_file, **extra)


def _serve(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from server.auth import check_bind
    from server.config import load_config
    from tsengine.engine import Engine

    config = load_config(args.config, environ)
    flags = {"host": args.host, "port": args.port, "data_dir": args.data}
    config = config.replace(**{k: v for k, v in flags.items() if v is not None})
    check_bind(config)
    settings = _engine_settings(config.engine, environ, query_timeout_s=config.query_timeout_s)
    engine = Engine(config.data_dir, settings)
    try:
        asyncio.run(_run_server(engine, config, out))
    finally:
        log.info("closing the engine: persisting buffers and closing the WAL")
        engine.close()
    log.info("stopped")
    return 0


async def _run_server(engine: Any, config: Any, out: TextIO) -> None:
    from aiohttp import web

    from server.app import create_app

    app = create_app(engine, config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=config.shutdown_timeout_s,
        access_log=None,
        # Bodies arrive as sent: server.body inflates them with its own bounds and checks.
        auto_decompress=False,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        _print_banner(out, host, port, engine.path, auth=config.auth_enabled)
        await stop.wait()
        log.info("shutting down: no new connections, finishing in-flight requests")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def _print_banner(out: TextIO, host: str, port: int, data: Any, *, auth: bool) -> None:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    auth_header = " -H 'Authorization: Bearer $TSENGINE_TOKEN'" if auth else ""
    out.write(
        f"tsengine listening on {url} (data in {data})\n"
        f"  write a sample: curl -i{auth_header} -XPOST '{url}/write?db=default' "
        "--data-binary 'cpu,host=a usage=0.5'\n"
        f"  query it:       curl{auth_header} -XPOST '{url}/api/v1/sql' -H 'Content-Type: text/plain' "
        "--data 'SELECT * FROM cpu'\n"
    )
    out.flush()


def _sql(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    if args.url:
        result = _remote_sql(args, environ)
    else:
        from tsengine.engine import Engine

        with Engine(args.data, _engine_settings({}, environ)) as engine:
            result = engine.sql(args.query, db=args.db)
    from server.results import encode, timestamps_as_text

    if args.csv:
        out.write(encode(result, False, "text/csv")[0].decode())
    else:
        text = timestamps_as_text(result)  # nanoseconds kept, which Python datetimes cannot hold
        out.write(format_table(text.column_names, [list(r.values()) for r in text.to_pylist()]))
    return 0


def _remote_sql(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """POST the query to ``{url}/api/v1/sql`` and read the answer as an Arrow IPC stream."""
    import json
    import urllib.error
    import urllib.request

    import pyarrow as pa

    token = args.token or environ.get("TSENGINE_TOKEN")
    request = urllib.request.Request(
        args.url.rstrip("/") + "/api/v1/sql",
        method="POST",
        data=json.dumps({"sql": args.query, "db": args.db}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/vnd.apache.arrow.stream"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            truncated = resp.headers.get("X-Tsengine-Truncated") == "true"
            table = pa.ipc.open_stream(resp.read()).read_all()
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                message = json.loads(exc.read()).get("message", exc.reason)
            except ValueError:
                message = exc.reason
        raise InvalidInput(f"cannot query {args.url}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InvalidInput(f"cannot query {args.url}: {getattr(exc, 'reason', exc)}") from None
    if truncated:
        print("tsengine: the result was truncated by the server's query_max_rows", file=sys.stderr)
    return table


def _lifecycle_job(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from server.config import load_config
    from tsengine.engine import Engine
    from tsengine.lifecycle import jobs
    from tsengine.lifecycle.policies import defaults_from_env

    config = load_config(args.config, environ)
    settings = _engine_settings(config.engine, environ)
    defaults = {**config.storage.get("retention", {}), **defaults_from_env(environ)}
    storage = {**config.storage, "retention": defaults}
    return jobs.run(args, open_engine=lambda: Engine(args.data, settings), storage=storage, out=sys.stdout)


def format_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table with a header rule and a row count."""
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(names), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    level = getattr(args, "log_level", "WARNING")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("serve", "run"):
            return _serve(args, env, sys.stdout)
        if args.command in ("compact", "archive", "backfill"):
            return _lifecycle_job(args, env)
        if args.command == "task":
            return _task(args, env, sys.stdout)
        if args.command == "rules":
            from server.alerting import check as rules_check

            return rules_check.run(args, sys.stdout)
        return _sql(args, env, sys.stdout)
    except TsengineError as exc:
        sys.stderr.write(f"tsengine: {exc}\n")
        return _EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
