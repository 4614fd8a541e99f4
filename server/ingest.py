"""The write pipeline every ingestion route shares: body → decode → parse → limits → engine.

Each route supplies a pure ``parse(body) -> list[TableBatch]`` (a protocol decoder from
:mod:`tsengine.protocols` with its query parameters bound) and :func:`ingest` does the rest:

1. refuse with 503 once shutdown has begun; wait for one of ``max_concurrent_writes`` slots
   (503 with Retry-After after ``write_queue_timeout_s``), so bodies in memory stay bounded;
   read the body within ``max_body_bytes`` (413);
2. on a worker thread: inflate gzip/deflate within ``max_decompressed_bytes`` (413), parse
   (400 naming the line or item), check the request limits (:func:`check_limits`, 400 naming the
   limit), and call ``Engine.write_batches`` once with every batch — the engine writes all of
   them or none (429 with Retry-After when its buffers are full);
3. count the outcome in the self-metrics and answer 204 (or what the route asks for).

So a request is all-or-nothing: nothing reaches the engine before every batch has parsed and
passed the limits, and the one engine call is atomic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from aiohttp import web

from server.body import RawBody, decode_body, read_body
from server.config import ServerConfig
from server.errors import ServiceUnavailable
from server.keys import CONFIG_KEY, DRAINING_KEY, ENGINE_KEY, METRICS_KEY, WRITE_SLOTS_KEY, run_blocking
from tsengine.errors import LimitExceeded, TsengineError
from tsengine.model import TableBatch

__all__ = ["Parser", "check_limits", "ingest"]

Parser = Callable[[bytes], list[TableBatch]]


@dataclass
class _Outcome:
    rows: int = 0
    samples: int = 0


def check_limits(batches: list[TableBatch], config: ServerConfig) -> None:
    """Raise LimitExceeded if the request breaks a per-request limit of ``config``. Vectorised."""
    rows = sum(b.num_rows for b in batches)
    if rows > config.max_rows_per_request:
        raise LimitExceeded(
            f"cannot write request: {rows} rows is more than "
            f"max_rows_per_request={config.max_rows_per_request}"
        )
    for b in batches:
        for name in b.tags:
            if len(name.encode()) > config.max_label_name_bytes:
                raise LimitExceeded(
                    f"cannot write table {b.table!r}: tag name {name[:40]!r}... is longer than "
                    f"max_label_name_bytes={config.max_label_name_bytes}"
                )
        for name, col in b.tags.items():
            if not len(col) or col.null_count == len(col):
                continue
            lengths = pc.binary_length(col)
            longest = pc.max(lengths).as_py()
            if longest > config.max_label_value_bytes:
                row = pc.index(lengths, longest).as_py()
                raise LimitExceeded(
                    f"cannot write table {b.table!r}: tag {name!r} has a value of {longest} bytes in row "
                    f"{row + 1}, more than max_label_value_bytes={config.max_label_value_bytes}"
                )
        if len(b.tags) > config.max_labels_per_series:
            # Tags are the union over the request's rows; count the ones each row really has.
            per_row = np.zeros(b.num_rows, np.int64)
            for col in b.tags.values():
                per_row += np.asarray(pc.is_valid(col), dtype=np.int64)
            row = int(np.argmax(per_row))
            if per_row[row] > config.max_labels_per_series:
                raise LimitExceeded(
                    f"cannot write table {b.table!r}: row {row + 1} has {per_row[row]} tags, more than "
                    f"max_labels_per_series={config.max_labels_per_series}"
                )


def _pipeline(app: web.Application, body: RawBody, parse: Parser, outcome: _Outcome) -> None:
    config = app[CONFIG_KEY]
    batches = parse(decode_body(body, config.max_decompressed_bytes))
    outcome.samples = sum(b.num_samples for b in batches)
    check_limits(batches, config)
    outcome.rows = app[ENGINE_KEY].write_batches(batches)


async def ingest(
    request: web.Request,
    protocol: str,
    parse: Parser,
    *,
    passthrough: frozenset[str] = frozenset(),
    response: Callable[[], web.StreamResponse] | None = None,
) -> web.StreamResponse:
    """Run the write pipeline for one request.

    ``passthrough`` names the content encodings ``parse`` undoes itself (see :func:`read_body`).
    ``response`` builds the success answer (default: 204 No Content).
    """
    app = request.app
    if app[DRAINING_KEY].is_set():
        raise ServiceUnavailable("cannot write: the server is shutting down", retry_after_s=5.0)
    metrics = app[METRICS_KEY]
    config = app[CONFIG_KEY]
    outcome = _Outcome()
    slots = app[WRITE_SLOTS_KEY]
    metrics.writes_waiting.inc()
    try:
        await asyncio.wait_for(slots.acquire(), config.write_queue_timeout_s)
    except TimeoutError:
        metrics.record_ingest(protocol, accepted=False, samples=0, rows=0)
        raise ServiceUnavailable(
            f"cannot write: {config.max_concurrent_writes} writes are in progress and none finished "
            f"within {config.write_queue_timeout_s:g} s",
            retry_after_s=config.write_queue_timeout_s,
        ) from None
    finally:
        metrics.writes_waiting.dec()
    metrics.writes_in_flight.inc()
    try:
        body = await read_body(
            request,
            config.max_body_bytes,
            max_decompressed_bytes=config.max_decompressed_bytes,
            passthrough=passthrough,
        )
        await run_blocking(request, "ingest", _pipeline, app, body, parse, outcome)
    except TsengineError:
        metrics.record_ingest(protocol, accepted=False, samples=outcome.samples, rows=0)
        raise
    finally:
        metrics.writes_in_flight.dec()
        slots.release()
    metrics.record_ingest(protocol, accepted=True, samples=outcome.samples, rows=outcome.rows)
    return response() if response is not None else web.Response(status=204)
