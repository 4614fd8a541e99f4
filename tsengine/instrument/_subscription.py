"""Delivery of new events: callback subscriptions and bounded async streams.

A :class:`Subscription` calls its callback on the tracking thread. An :class:`EventStream`
belongs to one event loop: events tracked on that loop's thread go straight into its bounded
queue, others arrive through ``call_soon_threadsafe``; a full queue drops its oldest event and
counts it in ``tsengine_instrument_events_subscriber_dropped_total``, so a slow consumer never
blocks ``track``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from tsengine.instrument._event import Event, EventFilter

if TYPE_CHECKING:
    import asyncio

    from tsengine.instrument._events import EventTracker

__all__ = ["EventStream", "Subscription"]


class Subscription:
    """A live callback subscription; ``close()`` (or leaving ``with``) ends it."""

    def __init__(self, tracker: EventTracker, flt: EventFilter, callback: Callable[[Event], None]) -> None:
        self._tracker = tracker
        self.filter = flt
        self.callback = callback

    def close(self) -> None:
        self._tracker._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream:
    """Async iterator over new events matching a filter; bounded, drops its oldest when full.

    Create it inside a running event loop (``tracker.stream(...)``); use it as
    ``async with tracker.stream() as events: async for ev in events: ...``.
    """

    def __init__(self, tracker: EventTracker, flt: EventFilter, maxsize: int) -> None:
        import asyncio  # here, not at module level: the SDK's import stays free of asyncio

        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._tracker = tracker
        #: Events this stream lost because its queue was full.
        self.dropped = 0
        self._sub = tracker._subscribe(flt, self._offer)

    def _offer(self, ev: Event) -> None:
        if threading.get_ident() == self._loop_thread:
            self._put(ev)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put, ev)

    def _put(self, ev: Event) -> None:
        q = self._queue
        if q.full():
            q.get_nowait()
            self.dropped += 1
            self._tracker._registry.self_metrics.subscriber_dropped.inc()
        q.put_nowait(ev)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        self._sub.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
