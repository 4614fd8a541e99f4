"""Live streams: a bounded fan-out of stored rows to server-sent-event clients.

:class:`Hub` is the mechanism; :class:`SpanHub` serves ``GET /api/v1/traces/stream`` (spans)
and the events route builds one for ``GET /api/v1/events/stream`` (:mod:`server.routes.events`):
each hub has its own encoder (rows → SSE bytes) and its subscribers their own filter (a
:class:`StreamFilter`: a database, and a row mask). What follows says "spans"; events go the same way.

In: the span batch of each ``POST /v1/traces`` request, published by the route only after
``Engine.write_batches`` returned — so a subscriber never sees a span that was not stored.
Out: per subscriber, the server-sent-event bytes of the spans its filter (database, service,
error) selects, waiting in a bounded buffer until its handler writes them.

Bounds: at most ``max_subscribers`` at once (another one gets Overloaded, 429), and at most
``buffer_size`` spans waiting per subscriber. A subscriber whose buffer is full is dropped:
its ``on_overflow`` callback runs (the route aborts the connection) and it gets nothing more.
Publishing never waits for a subscriber, so a slow or stuck client cannot slow ingestion.

Event-loop only: publish, subscribe and the subscription's methods must run on the loop that
serves the app (no locks). Publishing costs nothing without subscribers; with some, the
batch's rows are encoded once (a few µs per span) and shared by every subscriber.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
from aiohttp import web

from tsengine.errors import Overloaded
from tsengine.model import TableBatch

__all__ = ["KEEPALIVE_S", "Hub", "SpanFilter", "SpanHub", "StreamFilter", "Subscription", "serve_stream"]

#: Seconds between keep-alive comments on an idle stream (also how a dead peer is noticed).
KEEPALIVE_S = 15.0

_JSON_FIELDS = ("attributes", "events", "links", "resource")
_STRING_FIELDS = ("trace_id", "span_id", "parent_span_id", "status_message", "scope_name")


class StreamFilter(Protocol):
    """What a subscriber wants: rows of one database, and of those the ones ``select`` keeps."""

    @property
    def db(self) -> str: ...

    def select(self, batch: TableBatch) -> np.ndarray:
        """A boolean mask over ``batch``'s rows."""
        ...


@dataclass(frozen=True)
class SpanFilter:
    """Which spans a subscriber wants: one database; optionally one service; errors only or none."""

    db: str = "default"
    service: str | None = None
    error: bool | None = None

    def select(self, batch: TableBatch) -> np.ndarray:
        mask = np.ones(batch.num_rows, dtype=bool)
        if self.service is not None:
            mask &= batch.tags["service"].to_numpy(zero_copy_only=False) == self.service
        if self.error is not None:
            failed = np.asarray(batch.tags["status"].to_numpy(zero_copy_only=False) == "error")
            mask &= failed if self.error else ~failed
        return mask


class Subscription:
    """One stream client: its filter and the encoded events waiting for its handler."""

    def __init__(self, spans_filter: StreamFilter, limit: int, on_overflow: Callable[[], None]) -> None:
        self.filter = spans_filter
        self._limit = limit
        self._pending: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._on_overflow = on_overflow
        #: Set when the subscriber fell ``limit`` spans behind and was cut off.
        self.dropped = False
        #: Set when the hub shut down (or the subscriber was dropped): the stream should end.
        self.closed = False

    def offer(self, events: list[bytes]) -> bool:
        """Queue events; False (and the subscriber dropped) if that would pass the bound."""
        if self.closed:
            return False
        if len(self._pending) + len(events) > self._limit:
            self.dropped = True
            self.close()
            self._pending.clear()
            self._on_overflow()
            return False
        self._pending.extend(events)
        self._wake.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self) -> None:
        """Until there are events to take or the subscription closed."""
        await self._wake.wait()

    def take(self) -> bytes:
        """Every waiting event, as one chunk of the event stream."""
        self._wake.clear()
        data = b"".join(self._pending)
        self._pending.clear()
        return data


class Hub:
    """Fan-out of stored rows to subscribers (see the module docstring).

    Args:
        encode: a batch's rows → one SSE event each (called once per batch with subscribers).
        what: the rows' name in error messages ("spans", "events").
    """

    def __init__(
        self,
        encode: Callable[[TableBatch], list[bytes]],
        *,
        what: str,
        max_subscribers: int = 64,
        buffer_size: int = 4096,
    ) -> None:
        self.encode = encode
        self.what = what
        self.max_subscribers = max_subscribers
        #: Events waiting per subscriber at most.
        self.buffer_size = buffer_size
        self._subs: set[Subscription] = set()
        self._closed = False
        #: Subscribers dropped for falling behind, since start.
        self.dropped_total = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, spans_filter: StreamFilter, on_overflow: Callable[[], None]) -> Subscription:
        """A new subscription; Overloaded when ``max_subscribers`` are already connected."""
        if self._closed:
            raise Overloaded(f"cannot stream {self.what}: the server is shutting down", retry_after_s=5.0)
        if len(self._subs) >= self.max_subscribers:
            raise Overloaded(
                f"cannot stream {self.what}: {self.max_subscribers} stream clients are connected already",
                retry_after_s=10.0,
            )
        sub = Subscription(spans_filter, self.buffer_size, on_overflow)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, batch: TableBatch) -> None:
        """Offer the spans of a stored batch to every subscriber whose filter selects them."""
        subs = [s for s in self._subs if s.filter.db == batch.db]
        if not subs:
            return
        events = self.encode(batch)
        for sub in subs:
            mask = sub.filter.select(batch)
            chosen = [events[i] for i in np.flatnonzero(mask)]
            if chosen and not sub.offer(chosen):
                self._subs.discard(sub)
                if sub.dropped:
                    self.dropped_total += 1

    def close(self) -> None:
        """End every stream (app shutdown); later subscriptions are refused."""
        self._closed = True
        for sub in self._subs:
            sub.close()
        self._subs.clear()


class SpanHub(Hub):
    """The hub of ``GET /api/v1/traces/stream``: span rows, one ``event: span`` each."""

    def __init__(self, *, max_subscribers: int = 64, buffer_spans: int = 4096) -> None:
        super().__init__(
            encode_events, what="spans", max_subscribers=max_subscribers, buffer_size=buffer_spans
        )


def encode_events(batch: TableBatch) -> list[bytes]:
    """One ``event: span`` server-sent event per row, its data the span as one JSON line."""
    cols: dict[str, list[object]] = {name: batch.tags[name].to_pylist() for name in batch.tags}
    for name in (*_STRING_FIELDS, *_JSON_FIELDS, "end_ns", "duration_ns"):
        arr = batch.fields.get(name)
        cols[name] = arr.to_pylist() if arr is not None else [None] * batch.num_rows
    for name in _JSON_FIELDS:
        cols[name] = [orjson.Fragment(v) if v is not None else None for v in cols[name]]  # type: ignore[arg-type]
    cols["start_ns"] = pa.array(batch.time).to_pylist()
    names = list(cols)
    out = []
    for i in range(batch.num_rows):
        doc = {name: cols[name][i] for name in names}
        out.append(b"event: span\ndata: " + orjson.dumps(doc) + b"\n\n")
    return out


async def serve_stream(
    request: web.Request,
    hub: Hub,
    stream_filter: StreamFilter,
    *,
    clients: Any,
    dropped: Any,
    keepalive_s: float = KEEPALIVE_S,
) -> web.StreamResponse:
    """Answer ``request`` with the server-sent events of ``hub`` that ``stream_filter`` selects.

    A ``: subscribed`` comment first, then the subscriber's data as it is published, and a
    ``: keepalive`` comment after ``keepalive_s`` idle seconds. A subscriber that falls a whole
    buffer behind is cut off (the connection is aborted, ``dropped`` counted); ``clients`` (a
    gauge) counts the open streams. Returns when the client goes away or the hub closes.
    """
    transport = request.transport

    def cut_off() -> None:  # the client fell a whole buffer behind: drop the connection now
        dropped.inc()
        if transport is not None:
            transport.abort()

    sub = hub.subscribe(stream_filter, cut_off)
    clients.inc()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        await response.write(b": subscribed\n\n")
        while not sub.closed:
            try:
                await asyncio.wait_for(sub.wait(), keepalive_s)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            data = sub.take()
            if data and not sub.dropped:
                await response.write(data)
    except ConnectionError:  # the client went away, or was cut off
        pass
    finally:
        hub.unsubscribe(sub)
        clients.dec()
    if sub.dropped:
        raise asyncio.CancelledError  # the connection is gone: nothing more to send
    return response
