"""Info and Enum: prometheus_client's API and output, the switch, limits and every exporter.

The reference is the real prometheus_client: the same metrics built with both libraries must
render byte for byte the same text 0.0.4 and OpenMetrics, which its parsers and
``promtool check metrics`` then accept.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.openmetrics.exposition import generate_latest as pc_generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

import tsengine.instrument as ti
from tsengine.instrument import (
    CollectorRegistry,
    EmbeddedExporter,
    Enum,
    Gauge,
    HttpExporter,
    Info,
    MetricDefinitionError,
    MetricsCollector,
    MetricType,
    generate_latest,
    generate_openmetrics,
    to_json,
)
from tsengine.instrument._otlp_metrics_export import encode_request, family_points
from tsengine.instrument._values import MAX_INFO_KEYS

from .strategies import label_names, label_values

T0, T1 = 1_700_000_000 * 10**9, 1_700_000_060 * 10**9
STATES = ["starting", "running", "stopped"]


def both(build: Any) -> tuple[CollectorRegistry, Any]:
    """The same metrics built with tsengine.instrument and with prometheus_client."""
    ours, theirs = CollectorRegistry(), prometheus_client.CollectorRegistry()
    build(ti, ours)
    build(prometheus_client, theirs)
    return ours, theirs


def assert_same_output(ours: CollectorRegistry, theirs: Any) -> None:
    assert generate_latest(ours).decode() == prometheus_client.generate_latest(theirs).decode()
    assert generate_openmetrics(ours).decode() == pc_generate_openmetrics(theirs).decode()


def app_metrics(lib: Any, registry: Any) -> None:
    lib.Info("build", "Build information", registry=registry).info({"version": "1.2.3", "commit": "abc"})
    lib.Info("never_set", "Info before info() is called.", registry=registry)
    lib.Info("db", "Per shard.", ["shard"], namespace="app", registry=registry).labels("7").info(
        {"engine": "duckdb", "path": '/d "q"\\x\n'}
    )
    lib.Enum("task_state", "State", registry=registry, states=STATES).state("running")
    e = lib.Enum("worker_state", "Per worker.", ["worker", "pool"], registry=registry, states=STATES)
    e.labels("w1", "main").state("stopped")
    e.labels(worker="w2", pool="aux")  # never set: the first state is current


# -- prometheus_client's output, parsers and promtool ------------------------------------------------


def test_output_is_byte_for_byte_prometheus_clients() -> None:
    ours, theirs = both(app_metrics)
    assert_same_output(ours, theirs)
    text = generate_latest(ours).decode()
    assert '# TYPE build_info gauge\nbuild_info{commit="abc",version="1.2.3"} 1.0\n' in text
    assert 'task_state{task_state="starting"} 0.0\ntask_state{task_state="running"} 1.0\n' in text
    om = generate_openmetrics(ours).decode()
    assert "# TYPE build info\n" in om and "# TYPE task_state stateset\n" in om


def test_both_parsers_read_back_the_values() -> None:
    ours, _ = both(app_metrics)
    fams = {f.name: f for f in parse_text(generate_latest(ours).decode())}
    assert fams["build_info"].type == "gauge"
    assert [(s.labels, s.value) for s in fams["build_info"].samples] == [
        ({"commit": "abc", "version": "1.2.3"}, 1.0)
    ]
    assert fams["app_db_info"].samples[0].labels == {"shard": "7", "engine": "duckdb", "path": '/d "q"\\x\n'}
    om = {f.name: f for f in parse_openmetrics(generate_openmetrics(ours).decode())}
    assert om["build"].type == "info" and om["never_set"].samples[0].labels == {}
    assert om["worker_state"].type == "stateset"
    current = {
        (s.labels["worker"], s.labels["worker_state"]) for s in om["worker_state"].samples if s.value == 1
    }
    assert current == {("w1", "stopped"), ("w2", "starting")}


def test_promtool_accepts_the_text_format() -> None:
    tool = shutil.which("promtool")
    if tool is None:
        if __import__("os").environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package 'prometheus')")
        pytest.skip("promtool not installed (apt-get install prometheus); required when CI is set")
    ours, _ = both(app_metrics)
    out = subprocess.run(
        [tool, "check", "metrics"], input=generate_latest(ours), capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert out.stdout.decode().strip() == "" and out.stderr.decode().strip() == "", "lint findings"


def _info_dicts(reserved: frozenset[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(label_names.filter(lambda k: k not in reserved), label_values, max_size=6)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data(), label=label_values)
def test_any_info_renders_like_prometheus_client(data: st.DataObject, label: str) -> None:
    pairs = data.draw(_info_dicts(frozenset({"region"})), label="pairs")

    def build(lib: Any, registry: Any) -> None:
        lib.Info("build", "B.", registry=registry).info(pairs)
        lib.Info("host", "H.", ["region"], registry=registry).labels(label).info(pairs)

    ours, theirs = both(build)
    assert_same_output(ours, theirs)
    (fam,) = [f for f in parse_openmetrics(generate_openmetrics(ours).decode()) if f.name == "host"]
    assert fam.samples[0].labels == {**pairs, "region": label}


@settings(max_examples=100, deadline=None)
@given(
    states=st.lists(label_values, min_size=1, max_size=5, unique=True),
    label=label_values,
    pick=st.integers(min_value=0),
)
def test_any_enum_renders_like_prometheus_client(states: list[str], label: str, pick: int) -> None:
    current = states[pick % len(states)]

    def build(lib: Any, registry: Any) -> None:
        lib.Enum("phase", "P.", registry=registry, states=states).state(current)
        lib.Enum("phases", "Ps.", ["job"], registry=registry, states=states).labels(label).state(current)

    ours, theirs = both(build)
    assert_same_output(ours, theirs)
    om = {f.name: f for f in parse_openmetrics(generate_openmetrics(ours).decode())}
    assert {s.labels["phases"]: s.value for s in om["phases"].samples} == {
        s: float(s == current) for s in states
    }


# -- API and validation -----------------------------------------------------------------------------


def test_constructors_take_prometheus_clients_arguments(registry: CollectorRegistry) -> None:
    i = Info("build", "doc", (), "ns", "sub", "", registry)
    assert i.name == "ns_sub_build" and registry.get("ns_sub_build_info") is i
    e = Enum("state", "doc", ["host"], "ns", "", "", registry, states=STATES)
    assert e.name == "ns_state" and e.states == tuple(STATES) and e.labelnames == ("host",)
    e.labels("a").state("stopped")
    assert e.labels(host="a").get() == "stopped"
    i.info({"v": 1})  # values are converted with str(), as labels() does
    assert i.get() == {"v": "1"}
    gen = Info("gen", "doc", (n for n in ["shard"]), registry=registry)  # any iterable, as there
    with pytest.raises(ValueError, match="overlaps its label names"):
        gen.labels("1").info({"shard": "x"})
    unregistered = Info("free", "doc", registry=None)
    unregistered.info({"a": "b"})
    assert unregistered.collect()[0].samples[0].labels == {"a": "b"}


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ({"shard": "1"}, "key 'shard' overlaps its label names"),
        ({"ok": None}, "value of 'ok' is None"),
        ({"bad-key": "x"}, "key 'bad-key' is not a valid label name"),
        ({"__name__": "x"}, "key '__name__' is not a valid label name"),
        ({1: "x"}, "key 1 is not a valid label name"),
        (
            {f"k{i}": "v" for i in range(MAX_INFO_KEYS + 1)},
            f"{MAX_INFO_KEYS + 1} keys, at most {MAX_INFO_KEYS}",
        ),
        ([("a", "b")], "expected a mapping, got list"),
    ],
)
def test_info_refuses_bad_pairs_and_keeps_the_old_ones(
    registry: CollectorRegistry, pairs: Any, reason: str
) -> None:
    child = Info("db", "doc", ["shard"], registry=registry).labels("1")
    child.info({"engine": "duckdb"})
    with pytest.raises(ValueError, match=f"cannot set info of db: {reason}"):
        child.info(pairs)
    assert child.get() == {"engine": "duckdb"}


def test_info_values_are_cut_like_label_values(registry: CollectorRegistry) -> None:
    i = Info("build", "doc", registry=registry)
    i.info({"commit": "x" * 1000})
    assert i.get() == {"commit": "x" * 256}


def test_enum_refuses_an_unknown_state_and_keeps_the_current_one(registry: CollectorRegistry) -> None:
    e = Enum("task_state", "doc", registry=registry, states=STATES)
    e.state("running")
    for bad in ("paused", None, ["running"], 1):
        with pytest.raises(ValueError, match=r"cannot set state of task_state: .* is not one of"):
            e.state(bad)  # type: ignore[arg-type]
    assert e.get() == "running"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"states": []}, "no states provided"),
        ({}, "no states provided"),
        ({"states": ["a", "b", "a"]}, "duplicate states"),
        ({"states": "abc"}, "states must be a sequence of strings"),
        ({"states": ["a", 1]}, "states must be a sequence of strings"),
        ({"states": ["a"], "labelnames": ["task_state"]}, "its name is also one of its label names"),
        ({"states": ["a"], "unit": "seconds"}, "an enum metric cannot have a unit"),
    ],
)
def test_enum_definition_errors(registry: CollectorRegistry, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(MetricDefinitionError, match=reason):
        Enum("task_state", "doc", registry=registry, **kwargs)
    assert registry.collect() == []  # nothing half-registered


def test_enum_name_must_be_a_label_name(registry: CollectorRegistry) -> None:
    with pytest.raises(MetricDefinitionError, match="must be a valid label name"):
        Enum("job:state", "doc", registry=registry, states=["a"])
    with pytest.raises(MetricDefinitionError, match="its name is also one of its label names"):
        Enum("state", "doc", ["app_state"], namespace="app", registry=registry, states=["a"])


def test_info_definition_errors(registry: CollectorRegistry) -> None:
    with pytest.raises(MetricDefinitionError, match="an info metric cannot have a unit"):
        Info("build", "doc", unit="bytes", registry=registry)
    Gauge("build_info", "doc", registry=registry)
    with pytest.raises(MetricDefinitionError, match=r"'build_info'.*already registered"):
        Info("build", "doc", registry=registry)  # its sample would be the gauge's series


def test_labelled_parent_and_unlabelled_labels_are_programming_errors(registry: CollectorRegistry) -> None:
    i = Info("db", "doc", ["shard"], registry=registry)
    e = Enum("job", "doc", ["host"], registry=registry, states=STATES)
    with pytest.raises(ValueError, match=r"cannot set info of db: it has labels \('shard',\)"):
        i.info({"a": "b"})
    with pytest.raises(ValueError, match=r"cannot set state of job: it has labels \('host',\)"):
        e.state("running")
    with pytest.raises(ValueError, match="expected 1 values"):
        e.labels("a", "b")
    with pytest.raises(ValueError, match="cannot label build: expected 0 values"):
        Info("build", "doc", registry=registry).labels("x")


def test_record_metric_refuses_info_and_stateset(rt: ti.Telemetry) -> None:
    metrics: MetricsCollector = rt.metrics
    for kind in (MetricType.INFO, "stateset"):
        with pytest.raises(MetricDefinitionError, match="it has no single value; use Info or Enum"):
            metrics.record_metric("build", 1.0, kind)


# -- threads, switch, cardinality --------------------------------------------------------------------


def test_concurrent_updates_are_never_torn(registry: CollectorRegistry) -> None:
    # Writers replace the pairs and the state while a reader collects: every snapshot shows
    # exactly one of the written dicts (never a mix) and exactly one current state.
    info = Info("build", "doc", registry=registry)
    enum = Enum("phase", "doc", registry=registry, states=STATES)
    written = [{f"k{j}": f"{w}-{j}" for j in range(w + 1)} for w in range(4)]
    stop = threading.Event()

    def write(w: int) -> None:
        while not stop.is_set():
            info.info(written[w])
            enum.state(STATES[w % 3])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            fams = {f.name: f for f in registry.collect()}
            (sample,) = fams["build"].samples
            assert sample.labels in [{}, *written]
            assert sum(s.value for s in fams["phase"].samples) == 1.0
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_switched_off_records_nothing_and_resumes(registry: CollectorRegistry) -> None:
    info = Info("build", "doc", registry=registry)
    enum = Enum("phase", "doc", ["host"], registry=registry, states=STATES)
    bound = enum.labels("a")  # kept at import time, as applications do
    info.info({"v": "1"})
    bound.state("running")
    registry.set_enabled(False)

    info.info({"v": "2"})
    info.info({"bad-key": None})  # off: not even validated — returns at once, like an off counter
    bound.state("stopped")
    enum.labels("b").state("stopped")  # a label set first seen while off
    assert registry.collect() == []
    assert info.get() == {"v": "1"} and bound.get() == "running" and enum.labels("b").get() == "starting"

    registry.set_enabled(True)
    info.info({"v": "3"})
    enum.labels("b").state("stopped")
    assert registry.get_sample_value("build_info", {"v": "3"}) == 1.0
    assert registry.get_sample_value("phase", {"host": "b", "phase": "stopped"}) == 1.0
    assert registry.get_sample_value("phase", {"host": "a", "phase": "running"}) == 1.0


def test_telemetry_switch_reaches_info_and_enum(rt: ti.Telemetry) -> None:
    info = Info("build", "doc", registry=rt.registry)
    rt.apply(rt.config.replace(metrics_enabled=False))
    info.info({"v": "1"})
    assert info.get() == {} and not info.enabled
    rt.apply(rt.config.replace(metrics_enabled=True))
    info.info({"v": "1"})
    assert rt.registry.get_sample_value("build_info", {"v": "1"}) == 1.0


def test_cardinality_limit_applies_to_label_sets(registry: CollectorRegistry) -> None:
    enum = Enum("phase", "doc", ["host"], registry=registry, states=STATES, max_series=2)
    info = Info("db", "doc", ["shard"], registry=registry, max_series=1)
    for host in ("a", "b", "c", "d"):
        enum.labels(host).state("running")  # c and d get a detached child: never exposed
    info.labels("1").info({"x": "1"})
    info.labels("2").info({"x": "2"})
    assert enum.series_count == 2 and enum.series_dropped == 2
    assert {s.labels["host"] for s in enum.collect()[0].samples} == {"a", "b"}
    assert [s.labels for s in info.collect()[0].samples] == [{"shard": "1", "x": "1"}]
    dropped = registry.get_sample_value("tsengine_instrument_series_dropped_total", {"metric": "phase"})
    assert dropped == 2.0


# -- JSON, OTLP, native push -------------------------------------------------------------------------


def test_json_export_types_and_samples() -> None:
    ours, _ = both(app_metrics)
    doc = json.loads(json.dumps(to_json(ours, time_ns=5), allow_nan=False))
    by_name = {m["name"]: m for m in doc["metrics"]}
    assert by_name["build"]["type"] == "info"
    assert by_name["build"]["samples"] == [
        {"name": "build_info", "labels": {"commit": "abc", "version": "1.2.3"}, "value": 1.0}
    ]
    assert by_name["task_state"]["type"] == "stateset"
    assert [(s["labels"]["task_state"], s["value"]) for s in by_name["task_state"]["samples"]] == [
        ("starting", 0.0),
        ("running", 1.0),
        ("stopped", 0.0),
    ]


def test_otlp_export_sends_gauges() -> None:
    ours, _ = both(app_metrics)
    points = [p for fam in ours.collect() for p in family_points(fam, start_ns=T0, time_ns=T1)]
    request = ExportMetricsServiceRequest()
    request.ParseFromString(encode_request(points, service="shop"))
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    assert metrics["build_info"].WhichOneof("data") == "gauge"
    (dp,) = metrics["build_info"].gauge.data_points
    assert {kv.key: kv.value.string_value for kv in dp.attributes} == {"commit": "abc", "version": "1.2.3"}
    assert dp.as_double == 1.0 and dp.time_unix_nano == T1
    states = {
        (kv.value.string_value, dp.as_double)
        for dp in metrics["task_state"].gauge.data_points
        for kv in dp.attributes
    }
    assert states == {("starting", 0.0), ("running", 1.0), ("stopped", 0.0)}
    assert len(metrics["worker_state"].gauge.data_points) == 6


def _push_metrics(registry: CollectorRegistry) -> None:
    Info("build", "doc", registry=registry).info({"version": "1.2.3", "commit": "abc"})
    enum = Enum("task_state", "doc", ["worker"], registry=registry, states=STATES)
    enum.labels("w1").state("running")


BUILD_SQL = "SELECT commit, version, service, value FROM build_info"
STATE_SQL = "SELECT worker, task_state, service, value FROM task_state ORDER BY task_state"
EXPECTED_STATES = [
    ["w1", "running", "shop", 1.0],
    ["w1", "starting", "shop", 0.0],
    ["w1", "stopped", "shop", 0.0],
]


def test_embedded_exporter_writes_one_row_per_sample(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    _push_metrics(registry)
    exporter = EmbeddedExporter(
        path=tmp_path / "tsdb", interval_s=3600.0, service="shop", engine_settings={"fsync": "none"}
    )
    exporter.start()
    try:
        exporter.export_metrics(registry.collect(), time_ns=T1)
        assert exporter.flush(10.0) is True
        engine = exporter.engine
        assert engine is not None

        def rows(sql: str) -> list[list[Any]]:
            return [list(r.values()) for r in engine.sql(sql).to_pylist()]

        assert rows(BUILD_SQL) == [["abc", "1.2.3", "shop", 1.0]]
        assert rows(STATE_SQL) == EXPECTED_STATES
    finally:
        exporter.shutdown(5.0)


async def test_http_exporter_pushes_one_row_per_sample_to_a_real_server(tmp_path: Path) -> None:
    from server import ServerConfig, create_app
    from tsengine import Engine

    engine = await asyncio.to_thread(Engine.open, tmp_path / "server", fsync="none")
    server = TestServer(create_app(engine, ServerConfig(port=0)))
    client = TestClient(server)
    await client.start_server()
    registry = CollectorRegistry()
    _push_metrics(registry)
    exporter = HttpExporter(
        f"http://127.0.0.1:{server.port}", interval_s=3600.0, timeout_s=5.0, service="shop"
    )
    try:
        exporter.export_metrics(registry.collect(), time_ns=T1)
        assert await asyncio.to_thread(exporter.flush, 10.0) is True

        async def query(sql: str) -> list[list[Any]]:
            resp = await client.post("/api/v1/sql", json={"sql": sql})
            body = await resp.json()
            assert resp.status == 200, body
            return body["rows"]  # type: ignore[no-any-return]

        assert await query(BUILD_SQL) == [["abc", "1.2.3", "shop", 1.0]]
        assert await query(STATE_SQL) == EXPECTED_STATES
    finally:
        await asyncio.to_thread(exporter.shutdown, 1.0)
        await client.close()
        await asyncio.to_thread(engine.close)


def test_a_push_refuses_an_info_key_named_value_as_it_refuses_such_a_label(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Info("build", "doc", registry=registry).info({"value": "x"})
    exporter = EmbeddedExporter(path=tmp_path / "tsdb", interval_s=3600.0, engine_settings={"fsync": "none"})
    exporter.start()
    try:
        exporter.export_metrics(registry.collect(), time_ns=T1)
        assert exporter.flush(10.0) is False
        assert exporter.stats.values["rejected"] == 1
    finally:
        exporter.shutdown(5.0)
