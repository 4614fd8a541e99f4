"""OTLP traces decoder: requests built with the opentelemetry-proto messages → rows of ``spans``.

Properties: a request of arbitrary valid spans decodes to exactly its fields (protobuf and
OTLP/JSON alike); arbitrary bytes either decode or raise ParseError, never anything else; a
request mixing valid spans and spans with bad ids, times or enums stores exactly the valid ones
and rejects each bad one alone, with its path and reason, in either encoding.
Examples: the partial-success rules (which spans are rejected, and why) and the response body.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tsengine.errors import ParseError
from tsengine.protocols import otlp_traces

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000_000_000_000


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the specification writes it: camelCase, ids in hex (not base64)."""
    doc = json_format.MessageToDict(request)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for obj in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return orjson.dumps(doc)


def rows(result: otlp_traces.SpanBatch) -> list[dict[str, Any]]:
    """The decoded rows as dicts (tags and fields by name, ``time`` as int ns)."""
    batch = result.batch
    if batch is None:
        return []
    cols = {"time": batch.time.tolist()}
    cols.update({k: v.to_pylist() for k, v in batch.tags.items()})
    cols.update({k: v.to_pylist() for k, v in batch.fields.items()})
    return [{k: cols[k][i] for k in cols} for i in range(batch.num_rows)]


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    out = common_pb2.KeyValue(key=key)
    _set_any(out.value, value)
    return out


def _set_any(target: common_pb2.AnyValue, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for v in value:
            _set_any(target.array_value.values.add(), v)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        for k, v in value.items():
            target.kvlist_value.values.append(kv(k, v))


def expected_json(value: Any) -> Any:
    """What an attribute value reads as in the stored JSON."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [expected_json(v) for v in value]
    if isinstance(value, dict):
        return {k: expected_json(v) for k, v in value.items()}
    return value


# --- strategies ------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.sampled_from([math.inf, -math.inf]),
    st.binary(max_size=8),
)
_any_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_attrs = st.dictionaries(st.text(max_size=8), _any_value, max_size=4)
_nonzero = st.binary(min_size=1).filter(any)


@st.composite
def _span(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(1, 2**62))
    return {
        "trace_id": draw(st.binary(min_size=16, max_size=16).filter(any)),
        "span_id": draw(st.binary(min_size=8, max_size=8).filter(any)),
        "parent": draw(st.none() | st.binary(min_size=8, max_size=8).filter(any)),
        "name": draw(_text),
        "kind": draw(st.integers(0, 5)),
        "code": draw(st.integers(0, 2)),
        "message": draw(_text),
        "start": start,
        "end": start + draw(st.integers(0, 2**62)),
        "attributes": draw(_attrs),
        "events": draw(st.lists(st.tuples(st.integers(0, 2**63 - 1), _text, _attrs), max_size=2)),
        "links": draw(
            st.lists(
                st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), _attrs),
                max_size=2,
            )
        ),
    }


_resource = st.tuples(
    st.none() | _text, _attrs, st.lists(st.tuples(_text, st.lists(_span(), max_size=3)), max_size=2)
)


def build(resources: list[tuple[str | None, dict[str, Any], list[tuple[str, list[dict[str, Any]]]]]]) -> Any:
    request = ExportTraceServiceRequest()
    for service, given_attrs, scopes in resources:
        rs = request.resource_spans.add()
        attrs = {k: v for k, v in given_attrs.items() if k != "service.name"}
        if service is not None:
            attrs["service.name"] = service
        rs.resource.attributes.extend(kv(k, v) for k, v in attrs.items())
        for scope_name, spans in scopes:
            ss = rs.scope_spans.add()
            ss.scope.name = scope_name
            for s in spans:
                span = ss.spans.add(
                    trace_id=s["trace_id"],
                    span_id=s["span_id"],
                    parent_span_id=s["parent"] or b"",
                    name=s["name"],
                    kind=s["kind"],
                    start_time_unix_nano=s["start"],
                    end_time_unix_nano=s["end"],
                )
                span.status.code = s["code"]
                span.status.message = s["message"]
                span.attributes.extend(kv(k, v) for k, v in s["attributes"].items())
                for t, name, a in s["events"]:
                    span.events.add(time_unix_nano=t, name=name).attributes.extend(
                        kv(k, v) for k, v in a.items()
                    )
                for tid, sid, a in s["links"]:
                    span.links.add(trace_id=tid, span_id=sid).attributes.extend(
                        kv(k, v) for k, v in a.items()
                    )
    return request


def expected_rows(resources: list[Any]) -> list[dict[str, Any]]:
    out = []
    for service, given_attrs, scopes in resources:
        attrs = {k: v for k, v in given_attrs.items() if k != "service.name"}
        if service is not None:
            attrs["service.name"] = service
        for scope_name, spans in scopes:
            for s in spans:
                out.append(
                    {
                        "time": s["start"],
                        "service": service or "unknown_service",
                        "name": s["name"],
                        "kind": otlp_traces.KINDS[s["kind"]],
                        "status": otlp_traces.STATUSES[s["code"]],
                        "trace_id": s["trace_id"].hex(),
                        "span_id": s["span_id"].hex(),
                        "parent_span_id": s["parent"].hex() if s["parent"] else None,
                        "status_message": s["message"] or None,
                        "attributes": expected_json(s["attributes"]),
                        "events": [
                            {"time_ns": t, "name": n, "attributes": expected_json(a)}
                            for t, n, a in s["events"]
                        ]
                        or None,
                        "links": [
                            {"trace_id": t.hex(), "span_id": i.hex(), "attributes": expected_json(a)}
                            for t, i, a in s["links"]
                        ]
                        or None,
                        "resource": expected_json(attrs),
                        "scope_name": scope_name or None,
                        "end_ns": s["end"],
                        "duration_ns": s["end"] - s["start"],
                    }
                )
    return out


def decoded(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("attributes", "events", "links", "resource"):
        if out[key] is not None:
            out[key] = orjson.loads(out[key])
    return out


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(st.lists(_resource, max_size=3))
def test_protobuf_and_json_round_trip(resources: list[Any]) -> None:
    request = build(resources)
    expect = expected_rows(resources)
    for body, content_type in ((request.SerializeToString(), PROTOBUF), (to_otlp_json(request), JSON)):
        result = otlp_traces.parse(body, content_type=content_type, db="obs")
        assert result.rejected == 0, result.reasons
        assert [decoded(r) for r in rows(result)] == expect
        if result.batch is not None:
            assert result.batch.db == "obs"
            assert result.batch.table == "spans"


@PROPERTY
@given(st.binary(max_size=300), st.sampled_from([PROTOBUF, JSON]))
def test_arbitrary_bytes_decode_or_raise_parse_error(body: bytes, content_type: str) -> None:
    try:
        result = otlp_traces.parse(body, content_type=content_type)
    except ParseError as err:
        assert err.reason.startswith("cannot decode OTLP traces")
    else:
        assert result.batch is None or result.batch.num_rows > 0  # no empty batch to write
        assert len(result.reasons) <= result.rejected


@PROPERTY
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=4),
        lambda x: (
            st.lists(x, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "links", "name", "kind"]
                ),
                x,
                max_size=3,
            )
        ),
    )
)
def test_arbitrary_json_documents_decode_or_raise_parse_error(doc: Any) -> None:
    with contextlib.suppress(ParseError):
        otlp_traces.parse(json.dumps(doc).encode(), content_type=JSON)


# --- examples --------------------------------------------------------------------------------


def _valid_span(**overrides: Any) -> dict[str, Any]:
    span = {
        "trace_id": b"\x01" * 16,
        "span_id": b"\x02" * 8,
        "parent": None,
        "name": "GET /",
        "kind": 2,
        "code": 0,
        "message": "",
        "start": T0,
        "end": T0 + 5,
        "attributes": {},
        "events": [],
        "links": [],
    }
    span.update(overrides)
    return span


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"trace_id": b"\x01" * 15}, "trace_id has 15 bytes, expected 16"),
        ({"trace_id": b"\x00" * 16}, "trace_id is all zeros"),
        ({"span_id": b""}, "span_id has 0 bytes, expected 8"),
        ({"parent": b"\x01" * 3}, "parent_span_id has 3 bytes"),
        ({"start": 0, "end": 0}, "start_time_unix_nano 0 is not a time"),
        ({"end": T0 - 1}, "is before the start"),
        ({"kind": 9}, "kind 9 is not a SpanKind"),
        ({"code": 7}, "status code 7 is not a StatusCode"),
        ({"name": "x" * 300}, "name 'xxx"),
    ],
)
def test_bad_spans_are_rejected_alone(overrides: dict[str, Any], reason: str) -> None:
    good = _valid_span()
    bad = _valid_span(**overrides)
    request = build([("svc", {}, [("scope", [good, bad, good])])])
    result = otlp_traces.parse(request.SerializeToString(), content_type=PROTOBUF, max_tag_bytes=256)
    assert result.accepted == 2
    assert result.rejected == 1
    assert result.reasons[0].startswith("resource_spans[0].scope_spans[0].spans[1]: ")
    assert reason in result.reasons[0]
    assert "rejected 1 span(s)" in result.error_message


def test_all_zero_parent_means_root() -> None:
    request = build([("svc", {}, [("", [_valid_span(parent=b"\x00" * 8)])])])
    (row,) = rows(otlp_traces.parse(request.SerializeToString(), content_type=PROTOBUF))
    assert row["parent_span_id"] is None


def test_response_bodies() -> None:
    request = build([("svc", {}, [("", [_valid_span(), *[_valid_span(kind=42)] * 7])])])
    result = otlp_traces.parse(request.SerializeToString(), content_type=PROTOBUF)
    assert result.rejected == 7 and len(result.reasons) == otlp_traces.MAX_REASONS
    assert result.error_message.endswith("(and 2 more)")
    response = ExportTraceServiceResponse.FromString(otlp_traces.encode_response(result, PROTOBUF))
    assert response.partial_success.rejected_spans == 7
    assert response.partial_success.error_message == result.error_message
    doc = orjson.loads(otlp_traces.encode_response(result, "application/json; charset=utf-8"))
    assert doc["partialSuccess"]["rejectedSpans"] in ("7", 7)
    ok = otlp_traces.parse(
        build([("svc", {}, [("", [_valid_span()])])]).SerializeToString(), content_type=PROTOBUF
    )
    assert otlp_traces.encode_response(ok, PROTOBUF) == b""
    assert orjson.loads(otlp_traces.encode_response(ok, JSON)) == {}


def test_undecodable_bodies_and_types() -> None:
    with pytest.raises(ParseError, match="not an ExportTraceServiceRequest"):
        otlp_traces.parse(b"\xff\xff\xff", content_type=PROTOBUF)
    with pytest.raises(ParseError, match="cannot decode OTLP traces JSON"):
        otlp_traces.parse(b"{nope", content_type=JSON)
    with pytest.raises(ParseError, match="cannot decode OTLP traces JSON"):  # a list, not an object
        otlp_traces.parse(b'{"resourceSpans":[{"scopeSpans":[{"spans":[[1]]}]}]}', content_type=JSON)
    with pytest.raises(ParseError, match="cannot decode OTLP traces JSON"):  # a number, not a string
        otlp_traces.parse(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":7}]}]}]}', content_type=JSON)
    with pytest.raises(ParseError, match="both 'resourceSpans' and 'resource_spans' are given"):
        otlp_traces.parse(b'{"resourceSpans":[],"resource_spans":[]}', content_type=JSON)
    with pytest.raises(ParseError, match="unsupported content type 'text/plain'"):
        otlp_traces.parse(b"", content_type="text/plain")
    assert otlp_traces.parse(b"", content_type=PROTOBUF).batch is None


def test_json_snake_case_and_numbers_as_strings() -> None:
    body = orjson.dumps(
        {
            "resource_spans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": "0af7651916cd43dd8448eb211c80319c",
                                    "span_id": "b7ad6b7169203331",
                                    "name": "op",
                                    "kind": 3,
                                    "start_time_unix_nano": str(T0),
                                    "end_time_unix_nano": T0 + 10,
                                    "status": {"code": 2, "message": "boom"},
                                    "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )
    (row,) = rows(otlp_traces.parse(body, content_type=JSON))
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert row["span_id"] == "b7ad6b7169203331"
    assert (row["service"], row["kind"], row["status"], row["status_message"]) == (
        "api",
        "client",
        "error",
        "boom",
    )
    assert (row["time"], row["duration_ns"]) == (T0, 10)
    assert orjson.loads(row["attributes"]) == {"n": 7}


def test_span_built_with_trace_pb2_directly() -> None:
    span = trace_pb2.Span(
        trace_id=b"\x0a" * 16, span_id=b"\x0b" * 8, name="q", start_time_unix_nano=T0, end_time_unix_nano=T0
    )
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    (row,) = rows(otlp_traces.parse(request.SerializeToString(), content_type="application/protobuf"))
    assert row["service"] == "unknown_service" and row["kind"] == "unspecified" and row["duration_ns"] == 0


# --- per-span defects, both encodings -------------------------------------------------------

#: Defects protobuf can carry: span overrides → the reason quoted.
_PROTO_DEFECTS = [
    ({"trace_id": b"\x01" * 15}, "trace_id has 15 bytes, expected 16"),
    ({"trace_id": b""}, "trace_id has 0 bytes, expected 16"),
    ({"trace_id": b"\x00" * 16}, "trace_id is all zeros"),
    ({"span_id": b"\x02" * 9}, "span_id has 9 bytes, expected 8"),
    ({"span_id": b""}, "span_id has 0 bytes, expected 8"),
    ({"parent": b"\x03" * 4}, "parent_span_id has 4 bytes"),
    ({"start": 0, "end": 5}, "start_time_unix_nano 0 is not a time"),
    ({"start": 2**63, "end": 2**63}, "is not a time between 1970 and 2262"),
    ({"start": T0, "end": T0 - 1}, "is before the start"),
]


def _add(key: str, item: dict[str, Any]) -> Any:
    def apply(span: dict[str, Any]) -> int:
        span.setdefault(key, []).append(item)
        return len(span[key]) - 1

    return apply


#: Defects only OTLP/JSON can carry: (edit of the span's JSON object, reason quoted; ``{k}`` is
#: the index the edit returns).
_JSON_DEFECTS: list[tuple[Any, str]] = [
    (lambda sp: sp.update(traceId="0af7651916cd43dd8448eb211c8031zz"), "traceId '0af7651916cd43dd84"),
    (lambda sp: sp.update(spanId="xyz"), "spanId 'xyz' is not hex"),
    (lambda sp: sp.update(parentSpanId="12345"), "parentSpanId '12345' is not hex"),
    (lambda sp: sp.update(spanId=12345), "spanId is a JSON int, not a hex string"),
    (lambda sp: sp.update(traceId=True), "traceId is a JSON bool, not a hex string"),
    (lambda sp: sp.update(traceId="abcd"), "trace_id has 2 bytes, expected 16"),
    (lambda sp: sp.update(traceId=""), "trace_id has 0 bytes, expected 16"),
    (_add("links", {"traceId": "nothex", "spanId": "0a0b"}), "links[{k}].traceId 'nothex' is not hex"),
    (_add("links", {"traceId": "01" * 16, "spanId": ["x"]}), "links[{k}].spanId is a JSON list"),
    (lambda sp: sp.update(startTimeUnixNano="soon"), "startTimeUnixNano 'soon' is not an unsigned"),
    (lambda sp: sp.update(startTimeUnixNano=-5), "startTimeUnixNano '-5' is not an unsigned"),
    (lambda sp: sp.update(endTimeUnixNano=2**64), "endTimeUnixNano '1.8446744073709552e+19' is"),
    (lambda sp: sp.update(endTimeUnixNano=1.5), "endTimeUnixNano '1.5' is not an unsigned 64-bit integer"),
    (lambda sp: sp.update(endTimeUnixNano=False), "endTimeUnixNano 'False' is not an unsigned"),
    (_add("events", {"timeUnixNano": "yesterday", "name": "e"}), "events[{k}].timeUnixNano 'yesterday'"),
    (lambda sp: sp.update(kind="SPAN_KIND_NOPE"), "kind 'SPAN_KIND_NOPE' is not a SpanKind"),
    (lambda sp: sp.update(status={"code": "STATUS_CODE_NOPE"}), "status code 'STATUS_CODE_NOPE' is not a"),
    (lambda sp: sp.update(kind=9), "kind 9 is not a SpanKind"),
]  # fmt: skip


@st.composite
def _defective_request(draw: st.DrawFn) -> tuple[str, bytes, list[dict[str, Any]], list[tuple[int, str]]]:
    """(content type, body, the valid spans, [(index, reason quoted)] of the bad ones)."""
    content_type = draw(st.sampled_from([PROTOBUF, JSON]))
    n = draw(st.integers(1, 7))
    spans: list[dict[str, Any]] = []
    json_edits: dict[int, Any] = {}
    bad: list[tuple[int, str]] = []
    for i in range(n):
        span = draw(_span())
        choice = draw(st.sampled_from(["ok", "proto", "json"] if content_type == JSON else ["ok", "proto"]))
        if choice == "proto":
            overrides, reason = draw(st.sampled_from(_PROTO_DEFECTS))
            span = {**span, **overrides}
            bad.append((i, reason))
        elif choice == "json":
            json_edits[i] = draw(st.sampled_from(_JSON_DEFECTS))
            bad.append((i, ""))
        spans.append(span)
    request = build([("svc", {}, [("scope", spans)])])
    if content_type == PROTOBUF:
        body = request.SerializeToString()
    else:
        doc = orjson.loads(to_otlp_json(request))
        json_spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for j, (i, _) in enumerate(bad):
            if i in json_edits:
                edit, reason = json_edits[i]
                bad[j] = (i, reason.format(k=edit(json_spans[i])))
        body = json.dumps(doc).encode()  # json: 2**64 is out of orjson's range
    valid = [sp for i, sp in enumerate(spans) if i not in {b for b, _ in bad}]
    return content_type, body, valid, bad


@PROPERTY
@given(_defective_request())
def test_bad_spans_are_rejected_alone_in_both_encodings(
    case: tuple[str, bytes, list[dict[str, Any]], list[tuple[int, str]]],
) -> None:
    content_type, body, valid, bad = case
    result = otlp_traces.parse(body, content_type=content_type)
    assert [decoded(r) for r in rows(result)] == expected_rows([("svc", {}, [("scope", valid)])])
    assert result.rejected == len(bad)
    assert len(result.reasons) == min(len(bad), otlp_traces.MAX_REASONS)
    for reason, (i, quoted) in zip(result.reasons, bad, strict=False):
        assert reason.startswith(f"resource_spans[0].scope_spans[0].spans[{i}]: "), (reason, i)
        assert quoted in reason, (reason, quoted)


def test_json_and_protobuf_reject_the_same_wrong_length_and_non_hex_ids_alike() -> None:
    """The review's case: a non-hex spanId and a short traceId are both per-span rejections."""
    request = build([("svc", {}, [("scope", [_valid_span(), _valid_span(), _valid_span()])])])
    doc = orjson.loads(to_otlp_json(request))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["spanId"] = "not-hex!"
    spans[2]["traceId"] = "0102"
    result = otlp_traces.parse(orjson.dumps(doc), content_type=JSON)
    assert (result.accepted, result.rejected) == (1, 2)
    assert result.reasons == (
        "resource_spans[0].scope_spans[0].spans[0]: spanId 'not-hex!' is not hex",
        "resource_spans[0].scope_spans[0].spans[2]: trace_id has 2 bytes, expected 16",
    )


def test_json_flags_follow_the_spans_own_index() -> None:
    """json_format makes a (rejected) span even of a string: the bad parent after it is still
    the one rejected — never stored as a root with its parent id dropped."""
    request = build([("svc", {}, [("scope", [_valid_span()])])])
    doc = orjson.loads(to_otlp_json(request))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["parentSpanId"] = "zz"
    spans.insert(0, "not a span")
    result = otlp_traces.parse(orjson.dumps(doc), content_type=JSON)
    assert (result.accepted, result.rejected) == (0, 2)
    assert result.reasons[1] == "resource_spans[0].scope_spans[0].spans[1]: parentSpanId 'zz' is not hex"
