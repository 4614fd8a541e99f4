"""Where OTLP trace bodies are decoded: in the ingest worker, or in child processes.

Decoding spans is pure Python work on protobuf objects (a few µs per span, see
:mod:`tsengine.protocols.otlp_traces`) and holds the GIL; in the server process it competes
with everything else — HTTP, the engine write, the persister. With ``processes > 0`` it runs
in a pool of that many child processes instead, so span ingestion uses more than one core: the
ingest worker sends the body, waits for the decoded :class:`~tsengine.protocols.otlp_traces.SpanBatch`
(Arrow columns, pickled as buffers) without holding the GIL, and writes it as usual.

Bounds: the pool is only fed by ingest workers holding one of ``max_concurrent_writes`` write
slots, so at most that many bodies are queued or in decoding. The pool starts on first use
(spawned processes, ~1 s) and :meth:`SpanDecoder.close` (the app's cleanup) stops it. If a
child dies, the pool is dropped, that body is decoded in the calling thread, and the next
call starts a new pool. ``processes=0`` decodes in the calling thread.

Thread-safe: :meth:`decode` is called from the ingest workers (it blocks); :meth:`close` from
the cleanup, off the event loop.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tsengine.protocols import otlp_traces

__all__ = ["SpanDecoder", "default_processes"]

log = logging.getLogger("tsengine.server")


def default_processes() -> int:
    """Two decoding processes when the machine has more than one core, else none.

    Two even on two cores: while one process decodes, the other's result is on its way back
    (pickled) and the next body on its way in, so decoding overlaps with the server process's
    own work. Measured with ``benchmarks/bench_span_ingest.py`` on two cores: 111 k spans/s
    with two, 97 to 110 k with one, 85 k decoding in the server process (8 connections). The pool
    starts a process only when no idle one can take a body.
    """
    return 2 if (os.cpu_count() or 1) > 1 else 0


class SpanDecoder:
    """Decodes ``POST /v1/traces`` bodies (see the module docstring).

    Args:
        processes: child processes to decode in; 0 decodes in the calling thread.
    """

    def __init__(self, *, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError(f"BUG: processes must be >= 0, got {processes}")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def decode(
        self, body: bytes, *, content_type: str, db: str, max_tag_bytes: int | None
    ) -> otlp_traces.SpanBatch:
        """The decoded body; raises ParseError as :func:`otlp_traces.parse` does. Blocks."""
        parse = functools.partial(
            otlp_traces.parse, body, content_type=content_type, db=db, max_tag_bytes=max_tag_bytes
        )
        pool = self._get_pool()
        if pool is None:
            return parse()
        try:
            return pool.submit(parse).result()
        except BrokenProcessPool:
            log.warning("a span decoding process died; decoding here and restarting the pool")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return parse()

    def _get_pool(self) -> ProcessPoolExecutor | None:
        if not self.processes:
            return None
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                # spawn, not fork: the server process runs threads (DuckDB, the persister).
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
                )
            return self._pool

    def close(self) -> None:
        """Stop the child processes (waits for them). Later calls decode in the caller's thread."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
