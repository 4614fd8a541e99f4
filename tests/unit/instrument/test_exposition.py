"""Text formats checked by prometheus_client's parsers and by promtool; JSON export."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from tsengine.instrument import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_OPENMETRICS,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
    generate_openmetrics,
    to_json,
)
from tsengine.instrument._exposition import choose_format, format_float

from .strategies import help_texts, label_values


@pytest.fixture
def populated(registry: CollectorRegistry) -> CollectorRegistry:
    c = Counter("http_requests_total", "Requests served.", ["method", "route"], registry=registry)
    c.labels("GET", "/items/{id}").inc(3)
    c.labels("POST", '/odd "path"\\with\nnewline').inc()
    g = Gauge("queue_depth", 'Depth with "quotes" and \\ backslash\nand a newline.', registry=registry)
    g.set(-2.5)
    h = Histogram("latency_seconds", "Latency.", ["route"], registry=registry, buckets=[0.1, 1])
    h.labels("/a").observe(0.05)
    h.labels("/a").observe(3)
    Gauge("weird_values", "Special floats.", ["k"], registry=registry).labels("inf").set(math.inf)
    Summary("payload_bytes", "Payload sizes.", registry=registry).observe(512)
    Info("build", "Build information.", registry=registry).info({"version": "1.2.3", "commit": "abc"})
    Enum("task_state", "Task state.", ["task"], registry=registry, states=["idle", "busy"]).labels("t").state(
        "busy"
    )
    return registry


def promtool() -> str | None:
    path = shutil.which("promtool")
    if path is None and os.environ.get("CI"):
        pytest.fail("promtool is required in CI (Debian package 'prometheus')")
    return path


def test_text_parses_back_to_the_same_values(populated: CollectorRegistry) -> None:
    text = generate_latest(populated.collect()).decode()
    fams = {f.name: f for f in parse_text(text)}
    req = fams["http_requests"]
    assert req.type == "counter"
    got = {(s.labels["method"], s.labels["route"]): s.value for s in req.samples}
    assert got == {("GET", "/items/{id}"): 3.0, ("POST", '/odd "path"\\with\nnewline'): 1.0}
    assert fams["queue_depth"].documentation == 'Depth with "quotes" and \\ backslash\nand a newline.'
    assert fams["queue_depth"].samples[0].value == -2.5
    lat = {(s.name, s.labels.get("le")): s.value for s in fams["latency_seconds"].samples}
    assert lat[("latency_seconds_bucket", "0.1")] == 1.0
    assert lat[("latency_seconds_bucket", "+Inf")] == 2.0
    assert lat[("latency_seconds_count", None)] == 2.0
    assert fams["weird_values"].samples[0].value == math.inf
    assert fams["build_info"].type == "gauge"  # 0.0.4 has no info or stateset type
    assert fams["build_info"].samples[0].labels == {"commit": "abc", "version": "1.2.3"}
    assert {s.labels["task_state"]: s.value for s in fams["task_state"].samples} == {"idle": 0.0, "busy": 1.0}
    assert fams["payload_bytes"].type == "summary"
    assert {s.name: s.value for s in fams["payload_bytes"].samples} == {
        "payload_bytes_count": 1.0,
        "payload_bytes_sum": 512.0,
    }


def test_openmetrics_parses(populated: CollectorRegistry) -> None:
    text = generate_openmetrics(populated.collect()).decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in parse_openmetrics(text)}
    assert fams["http_requests"].type == "counter"
    assert fams["latency_seconds"].type == "histogram"
    assert fams["build"].type == "info" and fams["task_state"].type == "stateset"
    assert {s.value for s in fams["http_requests"].samples} == {3.0, 1.0}


def test_promtool_accepts_the_text_format(populated: CollectorRegistry) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus); required when CI is set")
    # Add the SDK's own metrics too: they are exposed on every /metrics.
    populated.self_metrics.errors.labels("asgi").inc()
    text = generate_latest(populated.collect())
    out = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert out.stdout.decode().strip() == "" and out.stderr.decode().strip() == "", "lint findings"


def test_renderers_take_a_registry_like_prometheus_client(populated: CollectorRegistry) -> None:
    assert generate_latest(populated) == generate_latest(populated.collect())
    assert generate_openmetrics(populated) == generate_openmetrics(populated.collect())
    assert to_json(populated)["metrics"] == to_json(populated.collect())["metrics"]


def test_format_float_matches_go() -> None:
    assert format_float(math.inf) == "+Inf"
    assert format_float(-math.inf) == "-Inf"
    assert format_float(math.nan) == "NaN"
    assert format_float(1) == "1.0"
    assert format_float(0.1) == "0.1"
    assert format_float(1234567.0) == "1.234567e+06"


@given(st.floats(allow_nan=False) | st.integers(-(2**60), 2**60))
def test_format_float_matches_prometheus_client(v: float) -> None:
    assert format_float(v) == floatToGoString(v)


def test_content_negotiation() -> None:
    assert choose_format(None) == (CONTENT_TYPE_LATEST, False)
    assert choose_format("text/plain") == (CONTENT_TYPE_LATEST, False)
    assert choose_format("application/openmetrics-text; version=1.0.0,text/plain;q=0.5") == (
        CONTENT_TYPE_OPENMETRICS,
        True,
    )


def test_json_export(populated: CollectorRegistry) -> None:
    doc = to_json(populated.collect(), time_ns=123)
    text = json.dumps(doc, allow_nan=False)  # non-finite values must have become strings
    back = json.loads(text)
    assert back["time_ns"] == 123
    by_name = {m["name"]: m for m in back["metrics"]}
    assert by_name["http_requests"]["type"] == "counter"
    assert by_name["weird_values"]["samples"][0]["value"] == "+Inf"
    assert by_name["latency_seconds"]["type"] == "histogram"
    assert (by_name["build"]["type"], by_name["task_state"]["type"]) == ("info", "stateset")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(value=label_values, doc=help_texts)
def test_escaping_round_trips_through_both_parsers(value: str, doc: str) -> None:
    reg = CollectorRegistry()
    Counter("events_total", doc, ["v"], registry=reg).labels(value).inc(2)
    text = generate_latest(reg.collect()).decode()
    (fam,) = [f for f in parse_text(text) if f.name == "events"]
    assert fam.samples[0].labels == {"v": value}
    # Byte for byte what prometheus_client writes (less its _created family).
    theirs = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("events_total", doc, ["v"], registry=theirs).labels(value).inc(2)
    expected = prometheus_client.generate_latest(theirs).decode()
    assert text == expected[: expected.index("# HELP events_created")]
    assert fam.samples[0].value == 2.0
    om = generate_openmetrics(reg.collect()).decode()
    (fam,) = [f for f in parse_openmetrics(om) if f.name == "events"]
    assert fam.samples[0].labels == {"v": value}
