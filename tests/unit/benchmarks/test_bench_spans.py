"""The span benchmark's bodies: what an SDK's BatchSpanProcessor sends, and all of it valid."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks import bench_span_ingest
from tsengine.protocols import otlp_traces


def test_bodies_hold_512_valid_spans_each() -> None:
    bodies = bench_span_ingest.render_bodies(1024)
    assert len(bodies) == 2
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(spans) == bench_span_ingest.SPANS_PER_REQUEST
        assert all(len(s.attributes) == 6 for s in spans)
        result = otlp_traces.parse(body, content_type="application/x-protobuf")
        assert (result.accepted, result.rejected) == (512, 0)
        assert result.batch is not None
        assert set(result.batch.tags["service"].to_pylist()) == {"frontend", "cart", "payment", "postgres"}
    assert bench_span_ingest.render_bodies(1024) == bodies  # seeded: the same bytes every run
