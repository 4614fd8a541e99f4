"""OTLP/HTTP metrics: protobuf, JSON, gzip, errors, and the OpenTelemetry SDK's HTTP exporter."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from server import ServerConfig
from tests.integration.conftest import ADMIN_TOKEN, TOKENS, WRITE_TOKEN, assert_otlp_error, engine_of, query

T0 = 1_700_000_000_000_000_000


def _gauge_request(value: float = 1.5) -> dict:
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "queue.depth",
                                "gauge": {
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": str(T0),
                                            "asDouble": value,
                                            "attributes": [
                                                {"key": "queue", "value": {"stringValue": "jobs"}}
                                            ],
                                        }
                                    ]
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }


async def test_json_body(client):
    resp = await client.post(
        "/v1/metrics", data=orjson.dumps(_gauge_request()), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {}
    rows = await query(client, "SELECT service_name, queue, value, epoch_ns(time) FROM queue_depth")
    assert rows == [["api", "jobs", 1.5, T0]]


async def test_protobuf_gzip_body(client):
    from google.protobuf import json_format

    msg = json_format.Parse(orjson.dumps(_gauge_request(2.5)), ExportMetricsServiceRequest())
    resp = await client.post(
        "/v1/metrics?db=otel",
        data=gzip.compress(msg.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-protobuf"
    assert await query(client, 'SELECT value FROM "otel".queue_depth') == [[2.5]]


async def test_bad_bodies(client):
    resp = await client.post(
        "/v1/metrics", data=b"\xff\x00garbage", headers={"Content-Type": "application/x-protobuf"}
    )
    await assert_otlp_error(resp, 400, "cannot")
    resp = await client.post("/v1/metrics", data=b"{", headers={"Content-Type": "application/json"})
    await assert_otlp_error(resp, 400, "cannot")
    resp = await client.post("/v1/metrics", data=b"{}", headers={"Content-Type": "text/plain"})
    await assert_otlp_error(resp, 415, "text/plain")
    assert engine_of(client).tables() == []


@pytest.mark.peer
async def test_opentelemetry_sdk_http_exporter(make_client):
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    endpoint = str(client.make_url("/v1/metrics"))

    def record_and_export() -> None:
        # The SDK exporter is synchronous: it and its imports run in a thread, off the event loop.
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        exporter = OTLPMetricExporter(
            endpoint=endpoint,
            headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
            compression=Compression.Gzip,
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "checkout", "service.instance.id": "i-1"}),
        )
        meter = provider.get_meter("shop", "1.2")
        orders = meter.create_counter("orders", unit="1")
        orders.add(3, {"plan": "pro"})
        orders.add(2, {"plan": "pro"})
        orders.add(1, {"plan": "free"})
        inflight = meter.create_up_down_counter("inflight")
        inflight.add(5)
        inflight.add(-2)
        latency = meter.create_histogram("latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
        for v in (0.05, 0.5, 0.7, 3.0):
            latency.record(v, {"route": "/pay"})
        temperature = meter.create_gauge("temperature")
        temperature.set(21.5, {"room": "lab"})
        provider.shutdown()  # one final collection, exported once

    await asyncio.to_thread(record_and_export)

    async def rows(sql: str) -> list:
        return await query(client, sql, token=ADMIN_TOKEN)

    assert await rows(
        "SELECT plan, value, otel_temporality, otel_monotonic, service_name, service_instance_id, "
        "otel_scope_name FROM orders ORDER BY plan"
    ) == [
        ["free", 1, "cumulative", "true", "checkout", "i-1", "shop"],
        ["pro", 5, "cumulative", "true", "checkout", "i-1", "shop"],
    ]
    assert await rows("SELECT value, otel_monotonic FROM inflight") == [[3, "false"]]
    assert await rows("SELECT le, value FROM latency_bucket WHERE route = '/pay' ORDER BY value") == [
        ["0.1", 1.0],
        ["1", 3.0],
        ["+Inf", 4.0],
    ]
    assert await rows("SELECT value FROM latency_count") == [[4.0]]
    assert await rows("SELECT round(value, 6) FROM latency_sum") == [[4.25]]
    assert await rows("SELECT room, value FROM temperature") == [["lab", 21.5]]
