"""``POST /v1/logs`` on a real server, fed by the real OpenTelemetry SDK's OTLP/HTTP log exporter.

The SDK (``LoggerProvider`` + ``BatchLogRecordProcessor`` + ``OTLPLogExporter``, gzip) runs its
export thread against the server on 127.0.0.1; ``force_flush`` runs off the event loop. The
records land as rows of ``events`` in the SDK's shape, readable through ``GET /api/v1/events``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import warnings
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from server import ServerConfig
from tests.integration.conftest import READ_TOKEN, TOKENS, WRITE_TOKEN, poll

PB = "application/x-protobuf"


async def events(client: Any, **headers: str) -> list[dict[str, Any]]:
    # The SDK stamps records with the real time; the engine's clock is a ManualClock: a wide window.
    resp = await client.get("/api/v1/events?start=0&end=2200-01-01T00:00:00Z", headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["events"]


@pytest.mark.peer
async def test_opentelemetry_sdk_logs_become_events(make_client: Any) -> None:
    client = await make_client()
    url = str(client.make_url("/v1/logs"))
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False)
    exporter = OTLPLogExporter(endpoint=url, compression=Compression.Gzip, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50))
    tracer = TracerProvider().get_tracer("t")
    try:
        logger = provider.get_logger("checkout.payments")
        with tracer.start_as_current_span("pay") as span:
            logger.emit(
                severity_number=_severity("ERROR"),
                severity_text="ERROR",
                body="card declined",
                attributes={"event.category": "payment", "amount": 42.5, "enduser.id": "u-1"},
                event_name="payment.declined",
            )
            trace_id = format(span.get_span_context().trace_id, "032x")
        logger.emit(severity_number=_severity("INFO"), body={"step": "done", "n": 3})
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        await asyncio.to_thread(provider.shutdown)

    got = await poll(lambda: _events_when(client, 2), timeout_s=30, what="two events from the SDK")
    plain, declined = got
    assert (declined["service"], declined["category"], declined["severity"], declined["name"]) == (
        "checkout",
        "payment",
        "error",
        "payment.declined",
    )
    assert declined["message"] == "card declined"
    assert declined["attributes"] == {"amount": 42.5, "enduser.id": "u-1"}
    assert (declined["user_id"], declined["trace_id"]) == ("u-1", trace_id)
    assert len(declined["span_id"]) == 16
    assert (plain["category"], plain["severity"], plain["name"]) == ("log", "info", "checkout.payments")
    assert orjson.loads(plain["message"]) == {"step": "done", "n": 3}
    metrics = await (await client.get("/metrics")).text()
    assert 'tsengine_ingest_requests_total{protocol="otlp_logs",outcome="accepted"} 1' in metrics


async def _events_when(client: Any, count: int) -> list[dict[str, Any]] | None:
    got = await events(client)
    return got if len(got) >= count else None


def _severity(name: str) -> Any:
    from opentelemetry._logs import SeverityNumber

    return SeverityNumber[name]


@pytest.mark.peer
async def test_python_logging_through_the_sdk_handler(make_client: Any) -> None:
    from opentelemetry.sdk._logs import LoggingHandler

    client = await make_client()
    provider = LoggerProvider(resource=Resource.create({"service.name": "worker"}), shutdown_on_exit=False)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=str(client.make_url("/v1/logs"))), schedule_delay_millis=50
        )
    )
    log = logging.getLogger("tsengine.test.otel")
    log.propagate = False
    with warnings.catch_warnings():
        # Deprecated in opentelemetry-sdk 1.39+ in favour of opentelemetry-instrumentation-logging
        # (not installed here); it is still what most applications use to bridge `logging`.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    log.addHandler(handler)
    try:
        log.warning("disk %s is %d%% full", "/data", 91)
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        log.removeHandler(handler)
        await asyncio.to_thread(provider.shutdown)
    (row,) = await poll(lambda: _events_when(client, 1), timeout_s=30, what="the logged warning")
    assert (row["service"], row["severity"], row["message"]) == (
        "worker",
        "warning",
        "disk /data is 91% full",
    )
    assert row["name"] == "tsengine.test.otel"  # the scope: the Python logger's name


async def test_json_partial_success_and_scopes(make_client: Any) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1700000000000000000", "body": {"stringValue": "ok"}},
                            {"timeUnixNano": "1700000000000000001", "traceId": "abcd"},
                        ]
                    }
                ]
            }
        ]
    }
    write = {"Authorization": f"Bearer {WRITE_TOKEN}", "Content-Type": "application/json"}
    read = {"Authorization": f"Bearer {READ_TOKEN}", "Content-Type": "application/json"}
    assert (await client.post("/v1/logs", data=orjson.dumps(doc), headers=read)).status == 403
    resp = await client.post("/v1/logs", data=orjson.dumps(doc), headers=write)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "trace_id has 2 bytes" in body["partialSuccess"]["errorMessage"]
    (row,) = await events(client, Authorization=f"Bearer {READ_TOKEN}")
    assert (row["message"], row["service"]) == ("ok", "unknown_service")


async def test_bad_bodies_are_400_or_partial_never_500(make_client: Any) -> None:
    client = await make_client()
    rng = random.Random(7)
    bodies = [b"\xff", b"{", b"[]", b'{"resourceLogs": "x"}'] + [
        rng.randbytes(rng.randrange(1, 200)) for _ in range(60)
    ]
    for i, body in enumerate(bodies):
        ctype = PB if i % 2 else "application/json"
        resp = await client.post("/v1/logs", data=body, headers={"Content-Type": ctype})
        assert resp.status in (200, 400), (body, resp.status, await resp.text())
        if resp.status == 200 and ctype == PB:
            ExportLogsServiceResponse.FromString(await resp.read())
    assert (await client.post("/v1/logs", data=b"{}", headers={"Content-Type": "text/plain"})).status == 415
