"""The span decoder: the same result in a child process as in the caller, and survival of a dead child.

Real child processes (spawned by the decoder itself); the test kills only the child it made
the decoder start, found as a pool worker among this process's children that appeared after
the first decode.
"""

from __future__ import annotations

import time

import psutil
import pytest

from server.tracing.decoder import SpanDecoder
from tests.integration.test_server_traces import SPANS, crafted_request
from tsengine.errors import ParseError
from tsengine.protocols import otlp_traces

PROTOBUF = "application/x-protobuf"
BODY = crafted_request().SerializeToString()


def rows(result: otlp_traces.SpanBatch) -> list[list[object]]:
    assert result.batch is not None
    return [col.to_pylist() for col in (*result.batch.tags.values(), *result.batch.fields.values())]


def workers(exclude: set[int]) -> list[psutil.Process]:
    """Decoding processes (spawned pool workers) among this process's children, not in ``exclude``."""
    found = []
    for p in psutil.Process().children():
        try:
            if p.pid not in exclude and "spawn_main" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:  # exited while we looked: not a live worker
            continue
    return found


def decode(decoder: SpanDecoder, body: bytes = BODY) -> otlp_traces.SpanBatch:
    return decoder.decode(body, content_type=PROTOBUF, db="d", max_tag_bytes=256)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie); a process reaped while we look is gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: set[int], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"processes {pids} still alive"
        time.sleep(0.05)  # polling another process's exit: nothing to wait on


def test_child_and_inline_decoding_agree_and_a_dead_child_is_replaced() -> None:
    inline = decode(SpanDecoder(processes=0))
    before = {p.pid for p in psutil.Process().children()}
    decoder = SpanDecoder(processes=1)
    try:
        first = decode(decoder)
        assert rows(first) == rows(inline) and first.batch is not None and first.batch.db == "d"
        assert first.accepted == len(SPANS)
        with pytest.raises(ParseError, match="not an ExportTraceServiceRequest"):
            decode(decoder, b"\xff\xff")  # the child's ParseError reaches the caller as itself
        (child,) = workers(before)
        child.kill()  # the decoding process this test made the decoder start
        wait_gone({child.pid})
        assert rows(decode(decoder)) == rows(inline)  # decoded here while the pool is replaced
        assert rows(decode(decoder)) == rows(inline)  # by a new child
        started = {p.pid for p in workers(before)}
        assert started and child.pid not in started
    finally:
        decoder.close()
    wait_gone(started)
    assert rows(decode(decoder)) == rows(inline)  # after close: in the caller
