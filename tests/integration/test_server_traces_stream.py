"""The live span stream: subscribers get stored spans; a client that stops reading is cut off.

``GET /api/v1/traces/stream`` is server-sent events over a real connection to a real server.
The slow client is a raw socket with a small receive buffer that reads the stream's first line
and then nothing: spans keep arriving (ingestion never waits for it), its bounded buffer fills,
and the server drops the connection — polled with a deadline, no sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.keys import METRICS_KEY, TRACE_HUB_KEY
from tests.integration.conftest import read_sse, stuck_stream_client
from tests.integration.test_server_traces import PROTOBUF, SPANS, TRACE_1, crafted_request, post

DEADLINE_S = 30.0


async def test_subscriber_gets_stored_spans_filtered(make_client: Any) -> None:
    client = await make_client()
    errors_of_c = await client.get("/api/v1/traces/stream?service=C&error=true")
    everything = await client.get("/api/v1/traces/stream")
    for resp in (errors_of_c, everything):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert await resp.content.readline() == b": subscribed\n"
    assert client.app[TRACE_HUB_KEY].subscribers == 2

    assert (await post(client, crafted_request().SerializeToString(), PROTOBUF)).status == 200
    (c_span,) = await read_sse(errors_of_c, "span", 1)
    assert c_span["trace_id"] == TRACE_1
    assert (c_span["service"], c_span["status"], c_span["span_id"]) == ("C", "error", "c000000000000001")
    assert c_span["events"][0]["attributes"]["exception.type"] == "Timeout"
    assert c_span["attributes"] == {"peer": "C-1"}
    all_spans = await read_sse(everything, "span", len(SPANS))
    assert [e["span_id"] for e in all_spans] == [s[1] for s in SPANS_BY_SERVICE]

    # A rejected request publishes nothing; the next stored span is the next event.
    assert (await post(client, b"\xff", PROTOBUF)).status == 400
    assert (await post(client, crafted_request(SPANS[:1]).SerializeToString(), PROTOBUF)).status == 200
    (next_span,) = await read_sse(everything, "span", 1)
    assert next_span["span_id"] == SPANS[0][1]
    everything.close()
    errors_of_c.close()


#: The crafted request groups spans by service (one resource each), in first-seen order.
SPANS_BY_SERVICE = sorted(SPANS, key=lambda s: "ABC".index(s[3]))


async def test_a_client_that_does_not_read_is_disconnected(make_client: Any) -> None:
    client = await make_client()
    hub = client.app[TRACE_HUB_KEY]
    hub.buffer_size = 64
    async with stuck_stream_client(client.port, "/api/v1/traces/stream") as read_to_end:
        # From here on the client reads nothing. Ingestion goes on regardless.
        body = crafted_request().SerializeToString()
        deadline = time.monotonic() + DEADLINE_S
        posts = 0
        while hub.subscribers:
            assert time.monotonic() < deadline, f"the stuck client still subscribed after {posts} posts"
            resp = await post(client, body, PROTOBUF)
            assert resp.status == 200
            posts += 1
        assert hub.dropped_total == 1
        assert client.app[METRICS_KEY].span_stream_dropped.get() == 1
        # The server closed the connection: reading reaches its end (after what was buffered).
        await read_to_end()
    # The engine stored every span of every post.
    rows = await (await client.post("/api/v1/sql", json={"sql": "SELECT count(*) FROM spans"})).json()
    assert rows["rows"] == [[posts * len(SPANS)]]


async def test_shutdown_ends_open_streams(make_client: Any) -> None:
    client = await make_client()
    resp = await client.get("/api/v1/traces/stream")
    assert await resp.content.readline() == b": subscribed\n"
    await client.app.shutdown()  # what the runner does first on SIGTERM
    rest = await asyncio.wait_for(resp.content.read(), DEADLINE_S)
    assert rest in (b"", b"\n")  # the stream ended, nothing else was sent
    assert client.app[TRACE_HUB_KEY].subscribers == 0
    again = await client.get("/api/v1/traces/stream")
    assert again.status == 429
