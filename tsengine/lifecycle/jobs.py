"""Long storage jobs of the CLI: ``tsengine compact``, ``tsengine archive``, ``tsengine backfill``.

Each opens the data directory embedded (taking its flock: a directory a running server holds is
refused with a clear error — use ``POST /api/v1/tasks/cleanup/run`` on the server instead),
works in **units** (a table to compact, a file to archive, a batch of lines/rows to import),
shows a progress bar on stderr (only when stderr is a terminal, or with ``--progress``, which
prints one line per update instead of redrawing), and can be interrupted safely: SIGINT sets a
flag, the current unit finishes, the engine is closed (buffers persisted) and the command exits
with status 130. A finished job prints its counts as one JSON line on stdout.

``backfill FILE`` imports historical data: Influx line protocol (``.lp``, ``.txt``, ``.line``),
NDJSON import rows (``.ndjson``, ``.jsonl``; the ``/api/v1/import`` row shape), an Arrow IPC
file or stream (``.arrow``, ``.arrows``, ``.ipc``, ``.feather``; ``--table``, ``--tags``) or
Parquet (``.parquet``; ``--table``, ``--tags``); ``--format`` overrides the extension. After
each unit is written, ``<data>/_lifecycle/backfill/<key>.json`` records how many units are done,
so an interrupted backfill resumes where it stopped when run again (``--restart`` ignores it);
re-importing a unit is harmless anyway (rows of the same series and time merge), except in an
append-only table (``spans``, ``events``...), which keeps both copies. A unit that does not
parse stops the job with the line (or batch) named; earlier units stay written.

Called by :mod:`tsengine.cli`; the parsers are the server's own (:mod:`tsengine.protocols.influx`,
``server.routes.imports``), imported lazily.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from tsengine.durable import atomic_write
from tsengine.errors import InvalidInput, ParseError, StorageError
from tsengine.lifecycle.policies import LIFECYCLE_DIR
from tsengine.model.batch import TableBatch

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "add_parsers", "run"]

COMMANDS = ("compact", "archive", "backfill")
EXIT_INTERRUPTED = 130
_FORMATS = {
    **dict.fromkeys((".lp", ".txt", ".line"), "lp"),
    **dict.fromkeys((".ndjson", ".jsonl"), "ndjson"),
    **dict.fromkeys((".arrow", ".arrows", ".ipc", ".feather"), "arrow"),
    ".parquet": "parquet",
}


def add_parsers(sub: Any) -> None:
    """Add the three subcommands to the CLI's subparsers."""
    for name, text in (
        ("compact", "merge small partition files (blocking; refused while a server holds the directory)"),
        ("archive", "move expired (or --older-than) partitions to the configured archive"),
        ("backfill", "import a file of historical data (line protocol, NDJSON, Arrow IPC, Parquet)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--data", default="./data", help="data directory (default ./data)")
        p.add_argument("--config", help="config file (its engine and storage sections apply)")
        p.add_argument(
            "--progress", action="store_true", help="show progress even when stderr is not a terminal"
        )
        if name == "compact":
            p.add_argument("--db", help="only this database")
            p.add_argument("--table", help="only this table")
        elif name == "archive":
            p.add_argument("--db", help="only this database")
            p.add_argument("--table", help="only this table")
            p.add_argument(
                "--older-than",
                type=float,
                metavar="HOURS",
                help="archive files whose rows are all older than this (default: expired ones)",
            )
        else:
            p.add_argument("file", help="the file to import")
            p.add_argument("--format", choices=sorted(set(_FORMATS.values())), help="default: by extension")
            p.add_argument("--db", default="default", help="database (default 'default')")
            p.add_argument("--table", help="table (Arrow and Parquet files)")
            p.add_argument(
                "--tags", default="", help="tag columns, comma-separated (Arrow and Parquet files)"
            )
            p.add_argument("--precision", default="ns", help="line protocol timestamp unit (default ns)")
            p.add_argument("--batch", type=int, default=10_000, help="lines or rows per unit (default 10000)")
            p.add_argument("--restart", action="store_true", help="ignore a checkpoint of an earlier run")


class Progress:
    """A plain-text progress bar on ``out`` (a terminal: redrawn in place; forced: one line each)."""

    def __init__(self, out: TextIO, *, enabled: bool, redraw: bool) -> None:
        self._out = out
        self.enabled = enabled
        self._redraw = redraw
        self._last = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._redraw and now - self._last < 0.1 and done != total:
            return
        self._last = now
        if total:
            width = 30
            filled = min(width, width * done // total)
            text = f"{step} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {100 * done // total}%"
        else:
            text = f"{step} {done}"
        self._out.write(("\r" + text) if self._redraw else text + "\n")
        self._out.flush()

    def end(self) -> None:
        if self.enabled and self._redraw:
            self._out.write("\n")
            self._out.flush()


def run(args: argparse.Namespace, *, open_engine: Callable[[], Any], storage: Mapping[str, Any],
        out: TextIO, err: TextIO = sys.stderr) -> int:  # fmt: skip
    """Run one job; returns the exit status (0, or 130 when interrupted)."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    progress = Progress(err, enabled=args.progress or err.isatty(), redraw=err.isatty())
    try:
        try:
            engine = open_engine()
        except StorageError as exc:
            if "in use" in str(exc):
                raise StorageError(
                    f"{exc.reason}. A running server holds it: use its admin API instead "
                    "(POST /api/v1/tasks/cleanup/run)"
                ) from exc
            raise
        try:
            engine.maintenance_external = True  # this job is the only one compacting
            job = {"compact": _compact, "archive": _archive, "backfill": _backfill}[args.command]
            result = job(engine, args, storage, stop, progress)
        finally:
            progress.end()
            engine.close()
    finally:
        signal.signal(signal.SIGINT, previous)
    result["interrupted"] = stop.is_set()
    out.write(json.dumps(result, sort_keys=True) + "\n")
    out.flush()
    return EXIT_INTERRUPTED if stop.is_set() else 0


def _compact(engine: Any, args: argparse.Namespace, storage: Mapping[str, Any], stop: threading.Event,
             progress: Progress) -> dict[str, Any]:  # fmt: skip
    tables = [(d, t) for d, t in engine.tables() if (args.db in (None, d)) and (args.table in (None, t))]
    removed = done = 0
    for db, table in tables:
        if stop.is_set():
            break
        removed += engine.compact(db=db, table=table)
        done += 1
        progress("compact", done, len(tables))
    return {"tables": done, "files_removed": removed}


def _archive(engine: Any, args: argparse.Namespace, storage: Mapping[str, Any], stop: threading.Event,
             progress: Progress) -> dict[str, Any]:  # fmt: skip
    from tsengine.lifecycle.cleanup import Lifecycle
    from tsengine.lifecycle.config import StorageConfig

    life = Lifecycle(engine, StorageConfig.from_mapping(storage, source="config storage"))
    older = None if args.older_than is None else engine.clock.now_ns() - int(args.older_than * 3600e9)
    return life.archive_now(db=args.db, table=args.table, older_than_ns=older, stop=stop, progress=progress)


# -- backfill ---------------------------------------------------------------------------------


def _units(
    path: Path, fmt: str, args: argparse.Namespace
) -> tuple[int, Iterator[Callable[[], list[TableBatch]]]]:
    """(total units or 0 if unknown, iterator of unit parsers)."""
    batch = max(1, args.batch)
    tags = [t for t in args.tags.split(",") if t]
    if fmt in ("lp", "ndjson"):
        size = path.stat().st_size

        def text_units() -> Iterator[Callable[[], list[TableBatch]]]:
            from tsengine.protocols import influx

            with open(path, "rb") as f:
                first_line = 1
                while True:
                    lines = [line for _, line in zip(range(batch), f, strict=False)]
                    if not lines:
                        return
                    body, offset = b"".join(lines), first_line
                    first_line += len(lines)

                    def parse(body: bytes = body, offset: int = offset) -> list[TableBatch]:
                        try:
                            if fmt == "lp":
                                return influx.parse(body, db=args.db, precision=args.precision)
                            from server.routes.imports import parse_ndjson

                            return parse_ndjson(body, db=args.db)
                        except ParseError as exc:
                            if exc.line is not None:
                                reason = str(exc).split(": ", 1)[-1]
                                raise ParseError(
                                    f"{path.name}: {reason}", line=offset + exc.line - 1
                                ) from exc
                            raise ParseError(f"{path.name} (lines {offset}..): {exc}") from exc

                    yield parse

        return (size + batch * 64 - 1) // (batch * 64) if size else 0, text_units()
    if not args.table:
        raise InvalidInput(f"cannot backfill {path.name}: --table is required for {fmt} files")
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        total = -(-pf.metadata.num_rows // batch)
        batches: Iterator[pa.RecordBatch] = pf.iter_batches(batch_size=batch)
    else:
        source = pa.memory_map(str(path))
        try:
            reader: Any = pa.ipc.open_file(source)
            total = reader.num_record_batches
            batches = (reader.get_batch(i) for i in range(total))
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            total, batches = 0, iter(reader)

    def arrow_units() -> Iterator[Callable[[], list[TableBatch]]]:
        for i, rb in enumerate(batches):
            yield functools.partial(_from_arrow, rb, args.table, tags, args.db, name=path.name, i=i)

    return total, arrow_units()


def _from_arrow(
    rb: pa.RecordBatch, table: str, tags: list[str], db: str, *, name: str, i: int
) -> list[TableBatch]:
    try:
        return [TableBatch.from_arrow(table, rb, tags=tags, db=db)] if rb.num_rows else []
    except (InvalidInput, pa.ArrowException) as exc:
        raise ParseError(f"cannot backfill {name}: {exc}", item=f"batch {i}") from exc


def _write_all(data: bytes, f: BinaryIO) -> None:
    f.write(data)


def _checkpoint_path(engine: Any, path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return engine.path / LIFECYCLE_DIR / "backfill" / f"{key}.json"


def _backfill(engine: Any, args: argparse.Namespace, storage: Mapping[str, Any], stop: threading.Event,
              progress: Progress) -> dict[str, Any]:  # fmt: skip
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInput(f"cannot backfill {args.file}: no such file")
    fmt = args.format or _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"cannot backfill {path.name}: unknown extension, give --format")
    checkpoint = _checkpoint_path(engine, path)
    skip = rows = 0
    if checkpoint.exists() and not args.restart:
        state = json.loads(checkpoint.read_bytes())
        skip, rows = int(state["units_done"]), int(state["rows"])
    total, units = _units(path, fmt, args)
    done = 0
    for parse in units:
        if stop.is_set():
            break
        if done < skip:
            done += 1
            continue
        rows += engine.write_batches(parse())
        done += 1
        doc = json.dumps({"file": str(path.resolve()), "units_done": done, "rows": rows}).encode()
        atomic_write(checkpoint, functools.partial(_write_all, doc))
        progress("backfill", done, max(total, done))
    finished = not stop.is_set()
    if finished:
        checkpoint.unlink(missing_ok=True)
    return {"file": str(path), "format": fmt, "units": done, "resumed_at_unit": skip, "rows": rows,
            "complete": finished}  # fmt: skip
