"""Hypothesis: arbitrary bodies to each ingestion endpoint never get a 500 and store all or nothing.

A real server runs in a background thread (its own event loop) for the whole module; hypothesis
drives it synchronously over HTTP. The engine is wrapped in a spy that records each
``write_batches`` call: a 2xx answer must come from exactly one successful call that wrote every
row the protocol's pure parser finds in the body; any other answer must come with no successful
call (the engine's atomicity — one call writes all or nothing — is tested in its own suite).
"""

from __future__ import annotations

import gzip
import http.client
import urllib.parse
from collections.abc import Callable
from typing import Any

import cramjam
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from server.routes import imports
from tests.integration.conftest import LiveServer, SpyEngine, otlp_error_message
from tests.strategies import lp_garbage_bodies
from tsengine.protocols import influx, otlp_metrics, prom_remote
from tsengine.protocols.prom_remote import build_write_request

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def check(live: tuple[LiveServer, SpyEngine], path: str, body: bytes, headers: dict[str, str],
          parse: Callable[[bytes], list[Any]]) -> None:  # fmt: skip
    server, spy = live
    before = len(spy.writes)
    status, answer = server.post(path, body, headers)
    event(f"HTTP {status}")
    assert status < 500, (status, answer)
    new = spy.writes[before:]
    if status in (200, 204):
        raw = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
        expected = sum(b.num_rows for b in parse(raw))
        assert new == [expected], (new, expected)
    else:
        assert status in (400, 413, 415), (status, answer)
        assert new == [], (status, answer, new)
        if path.startswith("/v1/"):  # OTLP: the server's JSON error or a google.rpc.Status
            assert otlp_error_message(answer, server.last_content_type), answer
        else:
            err = orjson.loads(answer)
            assert err["error"] and err["message"], err


def _maybe_gzip(draw: st.DrawFn, body: bytes) -> tuple[bytes, dict[str, str]]:
    if draw(st.booleans()):
        return gzip.compress(body), {"Content-Encoding": "gzip"}
    return body, {}


def _render_lp(points: list[tuple[str, str, int]]) -> bytes:
    escaped = [(m, h.replace(" ", "\\ "), v) for m, h, v in points]
    lines = (f"{m},h={h} v={v}i {i}" for i, (m, h, v) in enumerate(escaped))
    return "\n".join(lines).encode()


#: Plain valid lines, so that accepted requests are common too.
_lp_simple = st.lists(
    st.tuples(
        st.sampled_from(["cpu", "mem"]), st.sampled_from(["a", "b", "c d"]), st.integers(-(10**6), 10**6)
    ),
    min_size=1,
    max_size=6,
).map(_render_lp)


@st.composite
def lp_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(st.one_of(st.binary(max_size=200), lp_garbage_bodies(), _lp_simple))
    return _maybe_gzip(draw, body)


@FUZZ
@given(case=lp_bodies())
def test_influx_write(live, case):
    body, headers = case
    check(live, "/write", body, headers, lambda raw: influx.parse(raw, now_ns=0))


_remote_write_series = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {"__name__": st.sampled_from(["up", "rpc_seconds", "bad-name", ""])},
            optional={
                "job": st.text(max_size=4),
                "time": st.just("x"),
                "le": st.sampled_from(["0.5", "+Inf"]),
            },
        ),
        st.lists(st.tuples(st.integers(-(2**40), 2**40), st.floats()), max_size=4),
    ),
    max_size=4,
).map(build_write_request)


@FUZZ
@given(
    body=st.one_of(
        _remote_write_series,
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: bytes(cramjam.snappy.compress_raw(b))),
    )
)
def test_prometheus_remote_write(live, body):
    check(live, "/api/v1/write", body, {"Content-Encoding": "snappy"}, prom_remote.parse)


_json_ints = st.integers(-(2**63), 2**64 - 1)  # what orjson can write
json_values = st.recursive(
    st.none() | st.booleans() | _json_ints | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def otlp_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    if draw(st.booleans()):
        content_type, body = "application/x-protobuf", draw(st.binary(max_size=300))
    else:
        content_type, body = "application/json", orjson.dumps(draw(json_values))
    raw, headers = _maybe_gzip(draw, body)
    return raw, {"Content-Type": content_type, **headers}


@FUZZ
@given(case=otlp_bodies())
def test_otlp_metrics(live, case):
    body, headers = case
    check(live, "/v1/metrics", body, headers,
          lambda raw: otlp_metrics.parse(raw, content_type=headers["Content-Type"]))  # fmt: skip


_import_rows = st.fixed_dictionaries(
    {"table": st.sampled_from(["t1", "t2", "", "__ts"]),
     "time": st.integers(-(2**63), 2**63 - 1) | st.text(max_size=3)},
    optional={"tags": st.dictionaries(st.sampled_from(["h", "time", ""]), st.text(max_size=4) | _json_ints),
              "fields": st.dictionaries(st.sampled_from(["v", "w", "time"]), json_values)},
)  # fmt: skip


@st.composite
def import_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "ndjson", "arrow"]))
    if kind == "ndjson":
        rows = draw(st.lists(_import_rows | json_values, max_size=5))
        return "application/x-ndjson", b"\n".join(orjson.dumps(r) for r in rows)
    if kind == "json":
        return "application/json", orjson.dumps(draw(json_values | st.lists(_import_rows, max_size=3)))
    return imports.ARROW_STREAM, draw(st.binary(max_size=300))


@FUZZ
@given(case=import_bodies())
def test_import(live, case):
    content_type, body = case
    parse = {
        "application/json": lambda raw: imports.parse_columnar(raw, db="default"),
        "application/x-ndjson": lambda raw: imports.parse_ndjson(raw, db="default"),
        imports.ARROW_STREAM: lambda raw: imports.parse_arrow(raw, db="default", table="t", tags=[]),
    }[content_type]
    path = "/api/v1/import?table=t" if content_type == imports.ARROW_STREAM else "/api/v1/import"
    check(live, path, body, {"Content-Type": content_type}, parse)


_sql_words = st.sampled_from(
    ["SELECT", "FROM", "WHERE", "range(3)", "t1", "cpu", "*", "1", "'x'", "(", ")", ",", ";", "--", "/*",
     "read_csv('/etc/passwd')", "COPY", "ATTACH", "PRAGMA", "count(*)", "GROUP BY", "1/0", "NULL", "::INT"]
)  # fmt: skip
_sql_texts = st.one_of(st.text(max_size=40), st.lists(_sql_words, max_size=8).map(" ".join))


@FUZZ
@given(sql=_sql_texts)
def test_sql_never_500(live, sql):
    server, spy = live
    before = len(spy.writes)
    status, answer = server.post(
        "/api/v1/sql", sql.encode("utf-8", "surrogatepass"), {"Content-Type": "text/plain"}
    )
    event(f"HTTP {status}")
    assert status in (200, 400, 403), (status, answer)
    assert len(spy.writes) == before


_selector_parts = st.sampled_from(
    ["up", "{", "}", "job", "=", "!=", "=~", "!~", '"a"', "'b'", "`.*`", ",", '"("', "__name__", '".+"', " "]
)
_selectors = st.one_of(st.text(max_size=20), st.lists(_selector_parts, max_size=8).map("".join))


@FUZZ
@given(selectors=st.lists(_selectors, min_size=1, max_size=3))
def test_federate_never_500(live, selectors):
    server, _ = live
    query = "&".join("match[]=" + urllib.parse.quote(s) for s in selectors)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", f"/federate?{query}")
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    event(f"HTTP {status}")
    assert status in (200, 400), (status, body)
