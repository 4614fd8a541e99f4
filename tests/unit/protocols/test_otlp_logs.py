"""OTLP logs → ``events`` rows: mapping, rejections, round trips, and bodies that never crash.

Also the JSON event parser the ``POST /api/v1/events`` route uses (its private helper,
:mod:`tsengine.protocols._events`): validation names the item and field, all or nothing.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tsengine.errors import ParseError
from tsengine.instrument import EventCategory, EventSeverity
from tsengine.protocols import otlp_logs
from tsengine.protocols._events import parse_json

PB = otlp_logs.CONTENT_TYPE_PROTOBUF
JSON = otlp_logs.CONTENT_TYPE_JSON
NOW = 1_800_000_000_000_000_000
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


def kv(key: str, value: Any) -> KeyValue:
    v = AnyValue()
    if isinstance(value, str):
        v.string_value = value
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    else:
        v.double_value = value
    return KeyValue(key=key, value=v)


def request(records: list[LogRecord], *, service: str | None = "shop", scope: str = "shop.orders") -> Any:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    if service is not None:
        rl.resource.attributes.append(kv("service.name", service))
    rl.resource.attributes.append(kv("host.name", "h1"))
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    sl.log_records.extend(records)
    return req


def rows(result: otlp_logs.LogBatch) -> list[dict[str, Any]]:
    assert result.batch is not None
    b = result.batch
    cols = {name: b.tags[name].to_pylist() for name in b.tags}
    cols.update({name: b.fields[name].to_pylist() for name in b.fields})
    cols["time"] = b.time.tolist()
    return [{k: v[i] for k, v in cols.items()} for i in range(b.num_rows)]


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: next(counter)


def test_a_log_record_becomes_an_sdk_shaped_event_row() -> None:
    rec = LogRecord(
        time_unix_nano=1_700_000_000_123_456_789,
        severity_number=17,  # ERROR
        severity_text="ERROR",
        trace_id=TRACE,
        span_id=SPAN,
        body=AnyValue(string_value="payment declined"),
    )
    rec.attributes.extend(
        [
            kv("event.category", "payment"),
            kv("event.name", "declined"),
            kv("amount", 12.5),
            kv("enduser.id", "u1"),
        ]
    )
    plain = LogRecord(observed_time_unix_nano=1_700_000_000_000_000_001, severity_text="Warning")
    plain.body.kvlist_value.values.append(kv("k", 1))
    result = otlp_logs.parse(
        request([rec, plain]).SerializeToString(), content_type=PB, now_ns=NOW, new_id=ids()
    )
    assert (result.accepted, result.rejected) == (2, 0)
    assert result.batch is not None and result.batch.table == "events"
    first, second = rows(result)
    assert first == {
        "time": 1_700_000_000_123_456_789,
        "service": "shop",
        "category": "payment",
        "severity": "error",
        "name": "declined",
        "id": 1,
        "message": "payment declined",
        "attributes": '{"amount":12.5,"enduser.id":"u1"}',
        "user_id": "u1",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "resource": '{"service.name":"shop","host.name":"h1"}',
    }
    assert (second["time"], second["category"], second["severity"]) == (
        1_700_000_000_000_000_001,
        "log",
        "warning",
    )
    assert second["name"] == "shop.orders"  # no event name: the scope's
    assert second["message"] == '{"k":1}'
    assert (second["trace_id"], second["user_id"]) == (None, None)
    # Both stored values are SDK values.
    assert EventCategory(first["category"]) and EventSeverity[first["severity"].upper()]


def test_records_without_time_take_the_clock_and_unnamed_everything_has_defaults() -> None:
    result = otlp_logs.parse(
        request([LogRecord()], service=None, scope="").SerializeToString(), content_type=PB, now_ns=NOW
    )
    (row,) = rows(result)
    assert (row["time"], row["service"], row["name"], row["severity"], row["message"]) == (
        NOW,
        "unknown_service",
        "log",
        "info",
        "",
    )


@pytest.mark.parametrize(
    ("number", "text", "expected"),
    [
        (1, "", "debug"),
        (5, "", "debug"),
        (9, "", "info"),
        (12, "", "info"),
        (13, "", "warning"),
        (17, "", "error"),
        (21, "", "critical"),
        (24, "", "critical"),
        (0, "WARN", "warning"),
        (0, "fatal", "critical"),
        (0, "INFO2", "info"),
        (0, "whatever", "info"),
        (25, "", None),
    ],
)
def test_severity_mapping(number: int, text: str, expected: str | None) -> None:
    assert otlp_logs.severity_of(number, text) == expected


def test_bad_records_are_rejected_alone_with_their_path_and_reason() -> None:
    good = LogRecord(time_unix_nano=5, body=AnyValue(string_value="ok"))
    bad_trace = LogRecord(time_unix_nano=5, trace_id=b"\x01" * 5)
    bad_category = LogRecord(time_unix_nano=5)
    bad_category.attributes.append(kv("event.category", "nope"))
    bad_severity = LogRecord(time_unix_nano=5, severity_number=99)
    body = request([bad_trace, good, bad_category, bad_severity]).SerializeToString()
    result = otlp_logs.parse(body, content_type=PB, now_ns=NOW)
    assert (result.accepted, result.rejected) == (1, 3)
    assert (
        result.reasons[0]
        == "resource_logs[0].scope_logs[0].log_records[0]: trace_id has 5 bytes, expected 16 or none"
    )
    assert "log_records[2]: event.category 'nope' is not one of" in result.reasons[1]
    assert "log_records[3]: severity_number 99" in result.reasons[2]
    response = ExportLogsServiceResponse.FromString(otlp_logs.encode_response(result, PB))
    assert response.partial_success.rejected_log_records == 3
    assert response.partial_success.error_message.startswith("rejected 3 log record(s): ")
    as_json = orjson.loads(otlp_logs.encode_response(result, JSON))
    assert as_json["partialSuccess"]["rejectedLogRecords"] == "3"
    assert otlp_logs.encode_response(otlp_logs.parse(b"", content_type=PB, now_ns=NOW), PB) == b""


def test_a_name_longer_than_the_tag_limit_is_rejected() -> None:
    rec = LogRecord(time_unix_nano=5, event_name="x" * 300)
    result = otlp_logs.parse(
        request([rec]).SerializeToString(), content_type=PB, now_ns=NOW, max_tag_bytes=256
    )
    assert result.rejected == 1 and "longer than 256 bytes" in result.reasons[0]


def test_otlp_json_with_hex_ids() -> None:
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "api.http"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 13,
                                "body": {"stringValue": "slow upstream"},
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "eventName": "upstream.slow",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (row,) = rows(otlp_logs.parse(orjson.dumps(doc), content_type=JSON, now_ns=NOW))
    assert (row["service"], row["name"], row["severity"]) == ("api", "upstream.slow", "warning")
    assert (row["trace_id"], row["span_id"]) == (TRACE.hex(), SPAN.hex())
    with pytest.raises(ParseError, match="traceId 'zz' is not hex"):
        doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] = "zz"
        otlp_logs.parse(orjson.dumps(doc), content_type=JSON, now_ns=NOW)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\xff\xff", PB), (b"{", JSON), (b'{"resourceLogs": 3}', JSON), (b"{}", "text/plain")],
)
def test_undecodable_bodies_are_parse_errors(body: bytes, content_type: str) -> None:
    with pytest.raises(ParseError, match="cannot decode OTLP logs"):
        otlp_logs.parse(body, content_type=content_type, now_ns=NOW)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_records = st.lists(
    st.tuples(
        st.integers(1, 2**63 - 1),  # time
        st.integers(0, 24),  # severity number
        _text,  # body
        st.dictionaries(st.text("abcdef.", min_size=1, max_size=8), _text, max_size=3),  # attributes
        st.sampled_from(sorted(c.value for c in EventCategory)),
        st.text("abc_.", min_size=1, max_size=10),  # event name
        st.booleans(),  # with trace context
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records, st.text("abc-", min_size=1, max_size=8))
def test_round_trip_protobuf_and_json(records: list[Any], service: str) -> None:
    recs = []
    for time_ns, number, body, attributes, category, name, traced in records:
        rec = LogRecord(time_unix_nano=time_ns, severity_number=number, body=AnyValue(string_value=body))
        if traced:
            rec.trace_id, rec.span_id = TRACE, SPAN
        rec.attributes.extend([kv(k, v) for k, v in attributes.items() if not k.startswith("event.")])
        rec.attributes.extend([kv("event.category", category), kv("event.name", name)])
        recs.append(rec)
    req = request(recs, service=service)
    result = otlp_logs.parse(req.SerializeToString(), content_type=PB, now_ns=NOW, new_id=ids())
    assert result.rejected == 0
    if not records:
        assert result.batch is None
        return
    got = rows(result)
    for row, (time_ns, number, body, attributes, category, name, traced) in zip(got, records, strict=True):
        assert (row["time"], row["service"], row["category"], row["name"], row["message"]) == (
            time_ns,
            service,
            category,
            name,
            body,
        )
        assert row["severity"] == (otlp_logs.severity_of(number, "") if number else "info")
        assert orjson.loads(row["attributes"]) == {
            k: v for k, v in attributes.items() if not k.startswith("event.")
        }
        assert row.get("trace_id") == (TRACE.hex() if traced else None)
    # The OTLP/JSON encoding of the same request (hex ids, as exporters write them) decodes alike.
    doc = json_format.MessageToDict(req)
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec_doc in sl["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in rec_doc:
                        rec_doc[key] = (TRACE if key == "traceId" else SPAN).hex()
    again = otlp_logs.parse(orjson.dumps(doc), content_type=JSON, now_ns=NOW, new_id=ids())
    assert rows(again) == got


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([PB, JSON]))
def test_arbitrary_bytes_decode_or_raise_parse_error(body: bytes, content_type: str) -> None:
    try:
        result = otlp_logs.parse(body, content_type=content_type, now_ns=NOW)
    except ParseError:
        return
    assert result.batch is None or result.batch.num_rows > 0  # no empty batch to write
    assert len(result.reasons) <= result.rejected


# -- the JSON events of POST /api/v1/events --------------------------------------------------------


def event(**extra: Any) -> dict[str, Any]:
    return {"service": "shop", "category": "business", "severity": "info", "name": "order.placed", **extra}


def test_json_events_object_array_and_ndjson() -> None:
    one = parse_json(orjson.dumps(event()), content_type=JSON, db="d", now_ns=NOW, new_id=ids())
    assert one is not None and one.num_rows == 1 and one.db == "d"
    assert one.time.tolist() == [NOW] and one.fields["id"].to_pylist() == [1]
    assert set(one.fields) == {"id", "message", "attributes"}  # context ids only when set
    many = parse_json(
        orjson.dumps([event(time=5, attributes={"a": [1]}), event(user_id="u", time="2026-11-27T10:00:00Z")]),
        content_type=JSON,
        db="default",
        now_ns=NOW,
    )
    assert many is not None
    assert many.time.tolist() == [5, 1_795_773_600_000_000_000]
    assert many.fields["user_id"].to_pylist() == [None, "u"]
    assert many.fields["attributes"].to_pylist() == ['{"a":[1]}', "{}"]
    nd = b"\n".join(orjson.dumps(event(message=str(i))) for i in range(3)) + b"\n"
    batch = parse_json(nd, content_type="application/x-ndjson", db="default", now_ns=NOW)
    assert batch is not None and batch.fields["message"].to_pylist() == ["0", "1", "2"]
    assert parse_json(b"[]", content_type=JSON, db="default", now_ns=NOW) is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (event(category="nope"), "cannot parse item 1: field 'category': 'nope' is not one of"),
        (event(severity="loud"), "cannot parse item 1: field 'severity': 'loud' is not one of"),
        ({"service": "s", "category": "system", "severity": "info"}, "item 1: field 'name': expected"),
        (event(attributes=[1]), "item 1: field 'attributes': expected a JSON object"),
        (event(time=-1), "item 1: field 'time': -1 is not a time"),
        (event(time="yesterday"), "item 1: field 'time': 'yesterday' is not an RFC 3339"),
        (event(user_id=3), "item 1: field 'user_id': expected"),
        (event(id="x"), "item 1: field 'id': expected an integer"),
        (event(colour="red"), "item 1: unknown fields ['colour']"),
        ("text", "item 1: expected a JSON object"),
    ],
)
def test_json_event_errors_name_the_item_and_field(item: Any, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_json(orjson.dumps([event(), item]), content_type=JSON, db="default", now_ns=NOW)
