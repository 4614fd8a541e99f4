"""Prometheus remote write 1.0 decoder: exact values, native histograms, errors, a real Prometheus."""

from __future__ import annotations

import contextlib
import http.server
import math
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsengine.errors import LimitExceeded, ParseError
from tsengine.model import TableBatch
from tsengine.protocols import _proto_prompb as pb
from tsengine.protocols import prom_remote
from tsengine.protocols._proto_series import MAX_ABS_MS, STALE_NAN, STALE_NAN_BITS

Row = tuple[int, dict[str, str], int]  # (time ns, tags, value bits)


def bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def from_bits(pattern: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", pattern))[0]


def rows_of(batch: TableBatch) -> list[Row]:
    tags = {name: col.to_pylist() for name, col in batch.tags.items()}
    values = batch.fields["value"].to_numpy(zero_copy_only=False)
    return [
        (
            int(batch.time[i]),
            {name: col[i] for name, col in tags.items() if col[i] is not None},
            bits(float(values[i])),
        )
        for i in range(batch.num_rows)
    ]


def by_table(batches: list[TableBatch]) -> dict[str, list[Row]]:
    assert len({b.table for b in batches}) == len(batches), "one batch per table"
    return {b.table: rows_of(b) for b in batches}


def raw_request(*series: pb.TimeSeries) -> bytes:
    return pb.WriteRequest(timeseries=list(series)).SerializeToString()


def series(labels: dict[str, str], samples: Sequence[tuple[int, float]] = (), **kw: Any) -> pb.TimeSeries:
    return pb.TimeSeries(
        labels=[pb.Label(name=k, value=v) for k, v in labels.items()],
        samples=[pb.Sample(timestamp=t, value=v) for t, v in samples],
        **kw,
    )


# --- float samples ---------------------------------------------------------------------------


def test_decodes_series_bit_for_bit_grouped_by_table() -> None:
    weird_nan = from_bits(0x7FF8_0000_DEAD_BEEF)
    body = prom_remote.build_write_request(
        [
            ({"__name__": "up", "job": "node", "instance": "a:9100"}, [(1_000, 1.0), (16_000, 0.0)]),
            ({"__name__": "temp_celsius", "room": "küche 🙂", "floor": "ü"}, [(1_000, -0.0), (2_000, 21.5)]),
            ({"__name__": "up", "job": "node", "instance": "b:9100"}, [(1_000, STALE_NAN), (0, math.inf)]),
            ({"__name__": "temp_celsius", "room": "日本"}, [(-5, weird_nan), (2**40, -math.inf)]),
        ]
    )
    tables = by_table(prom_remote.parse(body))
    assert list(tables) == ["up", "temp_celsius"]
    assert tables["up"] == [
        (1_000_000_000, {"job": "node", "instance": "a:9100"}, bits(1.0)),
        (16_000_000_000, {"job": "node", "instance": "a:9100"}, bits(0.0)),
        (1_000_000_000, {"job": "node", "instance": "b:9100"}, STALE_NAN_BITS),
        (0, {"job": "node", "instance": "b:9100"}, bits(math.inf)),
    ]
    assert tables["temp_celsius"] == [
        (1_000_000_000, {"floor": "ü", "room": "küche 🙂"}, bits(-0.0)),
        (2_000_000_000, {"floor": "ü", "room": "küche 🙂"}, bits(21.5)),
        (-5_000_000, {"room": "日本"}, 0x7FF8_0000_DEAD_BEEF),
        (2**40 * 1_000_000, {"room": "日本"}, bits(-math.inf)),
    ]


def test_batches_have_one_float_field_and_string_tags() -> None:
    body = prom_remote.build_write_request([({"__name__": "x", "a": "1"}, [(1, 2.0)])])
    (batch,) = prom_remote.parse(body, db="metrics")
    assert batch.db == "metrics"
    assert batch.field_types() == {"value": batch.field_types()["value"]}
    assert str(batch.fields["value"].type) == "double"
    assert str(batch.tags["a"].type) == "string"


def test_uncompressed_body_and_determinism() -> None:
    raw = prom_remote.build_write_request(
        [({"__name__": f"m{i % 3}", "i": str(i)}, [(i, float(i))]) for i in range(10)], compressed=False
    )
    first = by_table(prom_remote.parse(raw, compressed=False))
    assert first == by_table(prom_remote.parse(raw, compressed=False))
    assert first == by_table(prom_remote.parse(bytes(cramjam.snappy.compress_raw(raw))))


def test_empty_label_values_are_absent_tags() -> None:
    raw = raw_request(
        series({"__name__": "m", "a": "", "b": "x"}, [(1, 1.0)]), series({"__name__": "m"}, [(2, 2.0)])
    )
    assert by_table(prom_remote.parse(raw, compressed=False)) == {
        "m": [(1_000_000, {"b": "x"}, bits(1.0)), (2_000_000, {}, bits(2.0))]
    }


def test_non_canonical_sample_encodings_decode_like_protobuf() -> None:
    # Timestamp before value, a repeated value field (last wins) and an unknown field: valid
    # protobuf that no sender writes; the exact path must give what a protobuf decoder gives.
    def sample(payload: bytes) -> bytes:
        return b"\x12" + bytes([len(payload)]) + payload

    labels = pb.TimeSeries(labels=[pb.Label(name="__name__", value="m")]).SerializeToString()
    reordered = b"\x10\x05" + b"\x09" + struct.pack("<d", 1.5)
    repeated = b"\x09" + struct.pack("<d", 9.0) + b"\x09" + struct.pack("<d", 2.5) + b"\x10\x06"
    unknown = b"\x09" + struct.pack("<d", 3.5) + b"\x10\x07" + b"\x18\x01"
    ts = labels + sample(reordered) + sample(repeated) + sample(unknown)
    raw = b"\x0a" + bytes([len(ts)]) + ts
    expected = [
        (t, v)
        for s in pb.WriteRequest.FromString(raw).timeseries[0].samples
        for t, v in [(s.timestamp, s.value)]
    ]
    assert expected == [(5, 1.5), (6, 2.5), (7, 3.5)]
    assert by_table(prom_remote.parse(raw, compressed=False)) == {
        "m": [(t * 1_000_000, {}, bits(v)) for t, v in expected]
    }


def test_zero_values_and_zero_timestamps_are_kept() -> None:
    # proto3 leaves 0.0 and 0 off the wire: the columnar decoder must still line samples up.
    points = [(0, 0.0), (1, 0.0), (0, 2.0), (3, 3.0), (0, 0.0)]
    body = prom_remote.build_write_request(
        [({"__name__": "z"}, points), ({"__name__": "z", "k": "v"}, [(0, 0.0)])]
    )
    assert by_table(prom_remote.parse(body)) == {
        "z": [(t * 1_000_000, {}, bits(v)) for t, v in points] + [(0, {"k": "v"}, bits(0.0))]
    }


def test_empty_request_gives_no_batches() -> None:
    assert prom_remote.parse(prom_remote.build_write_request([])) == []
    assert prom_remote.parse(b"", compressed=False) == []


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "item", "reason"),
    [
        ({"job": "x"}, 1, "no __name__ label"),
        ({"__name__": ""}, 1, "no __name__ label"),
        ({"__name__": "1abc"}, 1, "metric names must match"),
        ({"__name__": "a-b"}, 1, "metric names must match"),
        ({"__name__": "ok", "bad-label": "x"}, 1, "label names must match"),
        ({"__name__": "ok", "1x": "x"}, 1, "label names must match"),
        ({"__name__": "ok", "time": "x"}, 1, "'time' is the time column"),
        ({"__name__": "ok", "__ts_hidden": "x"}, 1, "reserved"),
    ],
)
def test_invalid_series_name_the_series(labels: dict[str, str], item: int, reason: str) -> None:
    raw = raw_request(series({"__name__": "fine"}, [(1, 1.0)]), series(labels, [(1, 1.0)]))
    with pytest.raises(ParseError, match=reason) as err:
        prom_remote.parse(raw, compressed=False)
    assert err.value.item == item


def test_label_named_value_is_rejected() -> None:
    raw = raw_request(
        series({"__name__": "ok"}, [(1, 1.0)]), series({"__name__": "ok", "value": "x"}, [(1, 1.0)])
    )
    with pytest.raises(ParseError, match="'value' is the field") as err:
        prom_remote.parse(raw, compressed=False)
    assert err.value.item == 1


def test_duplicate_label_names_are_rejected() -> None:
    dup = pb.TimeSeries(
        labels=[
            pb.Label(name="__name__", value="m"),
            pb.Label(name="a", value="1"),
            pb.Label(name="a", value="2"),
        ],
        samples=[pb.Sample(value=1.0, timestamp=1)],
    )
    with pytest.raises(ParseError, match="'a' appears twice") as err:
        prom_remote.parse(raw_request(series({"__name__": "m"}, [(1, 1.0)]), dup), compressed=False)
    assert err.value.item == 1


def test_garbage_snappy_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="cannot decompress remote write request"):
        prom_remote.parse(b"\x0fnot snappy at all, really")


def test_garbage_protobuf_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="cannot decode remote write request"):
        prom_remote.parse(bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\x0f garbage")))


def test_invalid_utf8_label_is_a_parse_error() -> None:
    label = b"\x0a\x08__name__" + b"\x12\x02\xff\xfe"
    ts = b"\x0a" + bytes([len(label)]) + label
    with pytest.raises(ParseError, match="cannot decode"):
        prom_remote.parse(b"\x0a" + bytes([len(ts)]) + ts, compressed=False)


def test_timestamp_beyond_int64_nanoseconds_is_rejected() -> None:
    raw = raw_request(
        series({"__name__": "m"}, [(1, 1.0)]), series({"__name__": "m"}, [(MAX_ABS_MS + 1, 1.0)])
    )
    with pytest.raises(ParseError, match="outside the int64 nanosecond range") as err:
        prom_remote.parse(raw, compressed=False)
    assert err.value.item == 1


def test_declared_size_over_the_limit_is_refused_before_decompressing() -> None:
    body = prom_remote.build_write_request([({"__name__": "m", "pad": "x" * 5000}, [(1, 1.0)])])
    with pytest.raises(LimitExceeded, match="more than the limit of 1000"):
        prom_remote.parse(body, max_decoded_bytes=1000)


# --- native histograms -----------------------------------------------------------------------


def test_integer_exponential_histogram_becomes_count_sum_and_le_buckets() -> None:
    hist = pb.Histogram(
        count_int=11,
        sum=12.5,
        schema=0,
        zero_threshold=0.001,
        zero_count_int=4,
        negative_spans=[pb.BucketSpan(offset=1, length=1)],
        negative_deltas=[1],
        positive_spans=[pb.BucketSpan(offset=0, length=2), pb.BucketSpan(offset=1, length=1)],
        positive_deltas=[2, 1, -2],
        timestamp=7,
    )
    raw = raw_request(series({"__name__": "lat", "job": "j"}, histograms=[hist]))
    tables = by_table(prom_remote.parse(raw, compressed=False))
    t, tags = 7_000_000, {"job": "j"}
    assert tables["lat_count"] == [(t, tags, bits(11.0))]
    assert tables["lat_sum"] == [(t, tags, bits(12.5))]
    expected = [("-1", 1), ("0.001", 5), ("1", 7), ("2", 10), ("8", 11), ("+Inf", 11)]
    assert tables["lat_bucket"] == [(t, {**tags, "le": le}, bits(float(c))) for le, c in expected]
    assert "lat" not in tables


def test_float_histogram_with_fractional_schema() -> None:
    hist = pb.Histogram(
        count_float=4.0,
        sum=3.0,
        schema=1,
        positive_spans=[pb.BucketSpan(offset=0, length=2)],
        positive_counts=[1.5, 2.5],
        timestamp=1,
    )
    tables = by_table(
        prom_remote.parse(raw_request(series({"__name__": "h"}, histograms=[hist])), compressed=False)
    )
    assert [(r[1]["le"], from_bits(r[2])) for r in tables["h_bucket"]] == [
        ("1", 1.5),
        ("1.4142135623730951", 4.0),
        ("+Inf", 4.0),
    ]


def test_custom_bucket_histogram_uses_its_bounds() -> None:
    hist = pb.Histogram(
        count_int=8,
        sum=2.0,
        schema=-53,
        custom_values=[0.1, 0.5, 1.0],
        positive_spans=[pb.BucketSpan(offset=0, length=4)],
        positive_deltas=[1, 1, 0, 1],
        timestamp=1,
    )
    tables = by_table(
        prom_remote.parse(raw_request(series({"__name__": "c"}, histograms=[hist])), compressed=False)
    )
    assert [(r[1]["le"], from_bits(r[2])) for r in tables["c_bucket"]] == [
        ("0.1", 1.0),
        ("0.5", 3.0),
        ("1", 5.0),
        ("+Inf", 8.0),
    ]


def test_stale_histogram_marks_count_sum_and_inf_bucket() -> None:
    hist = pb.Histogram(sum=STALE_NAN, count_int=0, schema=0, timestamp=3)
    tables = by_table(
        prom_remote.parse(raw_request(series({"__name__": "s"}, histograms=[hist])), compressed=False)
    )
    assert tables["s_count"] == [(3_000_000, {}, STALE_NAN_BITS)]
    assert tables["s_sum"] == [(3_000_000, {}, STALE_NAN_BITS)]
    assert tables["s_bucket"] == [(3_000_000, {"le": "+Inf"}, STALE_NAN_BITS)]


def test_histogram_and_float_series_share_a_table() -> None:
    hist = pb.Histogram(count_int=1, sum=1.0, schema=0, timestamp=2)
    raw = raw_request(
        series({"__name__": "m_count", "kind": "classic"}, [(1, 5.0)]),
        series({"__name__": "m"}, histograms=[hist]),
    )
    tables = by_table(prom_remote.parse(raw, compressed=False))
    assert tables["m_count"] == [(1_000_000, {"kind": "classic"}, bits(5.0)), (2_000_000, {}, bits(1.0))]


@pytest.mark.parametrize(
    ("hist", "reason"),
    [
        (pb.Histogram(schema=9, count_int=1), "unsupported schema 9"),
        (
            pb.Histogram(positive_spans=[pb.BucketSpan(offset=0, length=2)], positive_deltas=[1]),
            "2 positive buckets",
        ),
        (
            pb.Histogram(
                schema=-53,
                custom_values=[1.0],
                positive_spans=[pb.BucketSpan(offset=3, length=1)],
                positive_deltas=[1],
            ),
            "outside its custom bounds",
        ),
    ],
)
def test_invalid_histograms_are_rejected(hist: pb.Histogram, reason: str) -> None:
    raw = raw_request(series({"__name__": "ok"}, [(1, 1.0)]), series({"__name__": "h"}, histograms=[hist]))
    with pytest.raises(ParseError, match=reason) as err:
        prom_remote.parse(raw, compressed=False)
    assert err.value.item == 1


# --- property: encode → decode gives the same samples ----------------------------------------

_metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True).filter(
    lambda n: not n.startswith("__ts")
)
_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: n not in {"time", "value", "__name__"} and not n.startswith("__ts")
)
_values = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, STALE_NAN, math.nan, math.inf]),
    st.integers(0, 2**64 - 1).map(from_bits),
)
_samples = st.lists(st.tuples(st.integers(-MAX_ABS_MS, MAX_ABS_MS) | st.just(0), _values), max_size=6)
_series = st.tuples(_metric_names, st.dictionaries(_label_names, st.text(max_size=8), max_size=4), _samples)


@settings(max_examples=150, deadline=None)
@given(st.lists(_series, max_size=12))
def test_roundtrip_property(all_series: list) -> None:
    body = prom_remote.build_write_request(
        [({"__name__": metric, **labels}, samples) for metric, labels, samples in all_series]
    )
    expected: dict[str, list[Row]] = {}
    for metric, labels, samples in all_series:
        if not samples:
            expected.setdefault(metric, [])
            continue
        tags = {k: v for k, v in labels.items() if v}
        expected.setdefault(metric, []).extend((t * 1_000_000, tags, bits(v)) for t, v in samples)
    decoded = by_table(prom_remote.parse(body))
    assert decoded == {k: v for k, v in expected.items() if v}


# --- a real Prometheus -----------------------------------------------------------------------

_EXPOSITION = """\
# TYPE tsengine_peer_requests_total counter
tsengine_peer_requests_total{method="GET",path="/a"} 42
# TYPE tsengine_peer_temperature gauge
tsengine_peer_temperature{room="küche"} 21.5
"""


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = _EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Captures remote-write bodies; ``arrived`` is notified after each one."""

    bodies: list[tuple[dict[str, str], bytes]]
    arrived: threading.Condition

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.arrived:
            self.bodies.append((dict(self.headers), body))
            self.arrived.notify_all()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serve(handler: type) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _running(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the prometheus binary is missing in CI: install the Debian package 'prometheus'")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return path


@pytest.mark.peer
def test_real_prometheus_remote_write_is_decoded(prometheus_binary: str, tmp_path: Path) -> None:
    receiver: type[_Receiver] = type(
        "Receiver", (_Receiver,), {"bodies": [], "arrived": threading.Condition()}
    )
    wanted = {"tsengine_peer_requests_total", "tsengine_peer_temperature", "up"}
    found: dict[str, list[Row]] = {}
    with _serve(_Exporter) as exporter, _serve(receiver) as sink:
        target = f"127.0.0.1:{exporter.server_address[1]}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: peer
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: http://127.0.0.1:{sink.server_address[1]}/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
"""
        )
        argv = [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{_free_port()}",
        ]
        log_path = tmp_path / "prometheus.log"
        with _running(argv, log_path) as proc:
            deadline = time.monotonic() + 25
            seen = 0
            while not wanted <= found.keys() and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text(errors="replace")
                with receiver.arrived:
                    receiver.arrived.wait_for(
                        lambda seen=seen: len(receiver.bodies) > seen,
                        timeout=max(0.0, deadline - time.monotonic()),
                    )
                    new = receiver.bodies[seen:]
                seen += len(new)
                for headers, body in new:
                    assert headers.get("Content-Encoding") == "snappy"
                    for batch in prom_remote.parse(body):
                        found.setdefault(batch.table, []).extend(rows_of(batch))
    assert wanted <= found.keys(), f"got {sorted(found)} before the deadline"
    base = {"job": "peer", "instance": target}
    requests = [(tags, value) for _, tags, value in found["tsengine_peer_requests_total"]]
    assert ({**base, "method": "GET", "path": "/a"}, bits(42.0)) in requests
    temperatures = [(tags, value) for _, tags, value in found["tsengine_peer_temperature"]]
    assert ({**base, "room": "küche"}, bits(21.5)) in temperatures
    assert any(tags == base and value == bits(1.0) for _, tags, value in found["up"])
