"""InfluxDB line protocol: grammar cases, the fast path against the scanner, round trips."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import LP_PRECISIONS, LpPoint, LpRequest, lp_garbage_bodies, lp_requests
from tsengine.errors import InvalidName, ParseError
from tsengine.model import FieldType, TableBatch
from tsengine.protocols import influx
from tsengine.protocols._influx_columns import MAX_TEMPLATES
from tsengine.protocols.influx import parse

# Short names for the field types: float, iNteger, unsigned, boolean, string.
F, N, U, B, S = (
    FieldType.FLOAT,
    FieldType.INTEGER,
    FieldType.UNSIGNED,
    FieldType.BOOLEAN,
    FieldType.STRING,
)
NOW_NS = 1_700_000_000_123_456_789
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Row = tuple[int, dict[str, str], dict[str, tuple[FieldType, object]]]


def tables(batches: list[TableBatch]) -> dict[str, list[Row]]:
    """Batches as plain rows: time, tags present, fields present with their type."""
    out: dict[str, list[Row]] = {}
    for batch in batches:
        assert batch.table not in out, "one batch per measurement"
        types = batch.field_types()
        tags = {k: v.to_pylist() for k, v in batch.tags.items()}
        fields = {k: v.to_pylist() for k, v in batch.fields.items()}
        for arr in batch.tags.values():
            assert arr.type == pa.string()
        rows = []
        for i, ts in enumerate(batch.time.tolist()):
            row_tags = {k: v[i] for k, v in tags.items() if v[i] is not None}
            row_fields = {k: (types[k], v[i]) for k, v in fields.items() if v[i] is not None}
            rows.append((ts, row_tags, row_fields))
        out[batch.table] = rows
    return out


def scanner_only(body: bytes, **kw: object) -> list[TableBatch]:
    args = {"db": "default", "precision": "ns", "now_ns": NOW_NS} | kw
    return influx._parse(body, fast=False, **args)  # type: ignore[arg-type]


def both(body: bytes, **kw: object) -> dict[str, list[Row]]:
    """Parse with the fast path and with the scanner alone; they must agree."""
    fast = tables(parse(body, now_ns=NOW_NS, **kw))  # type: ignore[arg-type]
    assert tables(scanner_only(body, **kw)) == fast
    return fast


def one(body: bytes, **kw: object) -> tuple[str, dict[str, str], dict[str, tuple[FieldType, object]], int]:
    result = both(body, **kw)
    assert len(result) == 1
    ((table, rows),) = result.items()
    assert len(rows) == 1
    ts, tags, fields = rows[0]
    return table, tags, fields, ts


def rejection(body: bytes, **kw: object) -> ParseError:
    with pytest.raises(ParseError) as fast:
        parse(body, now_ns=NOW_NS, **kw)  # type: ignore[arg-type]
    with pytest.raises(ParseError) as slow:
        scanner_only(body, **kw)
    assert (str(fast.value), fast.value.line) == (str(slow.value), slow.value.line)
    return fast.value


# -- accepted values: stored type and value -----------------------------------------------------

VALUES = [
    ("1", F, 1.0),
    ("-1", F, -1.0),
    ("1.5", F, 1.5),
    ("-1.5E-2", F, -0.015),
    ("1e3", F, 1000.0),
    ("1E+3", F, 1000.0),
    (".5", F, 0.5),
    ("1.", F, 1.0),
    ("007", F, 7.0),
    ("1e-400", F, 0.0),
    ("12i", N, 12),
    ("-12i", N, -12),
    ("9223372036854775807i", N, 2**63 - 1),
    ("-9223372036854775808i", N, -(2**63)),
    ("12u", U, 12),
    ("0u", U, 0),
    ("18446744073709551615u", U, 2**64 - 1),
    *[(w, B, True) for w in ("t", "T", "true", "True", "TRUE")],
    *[(w, B, False) for w in ("f", "F", "false", "False", "FALSE")],
    ('"a"', S, "a"),
    ('""', S, ""),
    (r'"a\"b"', S, 'a"b'),
    (r'"a\\b"', S, "a\\b"),
    (r'"a\b"', S, "a\\b"),  # other backslashes are kept
    (r'"a\\"', S, "a\\"),
    ('"a,b c=d"', S, "a,b c=d"),
    ('"line\nbreak"', S, "line\nbreak"),
    ('"ünï ☃"', S, "ünï ☃"),
]


@pytest.mark.parametrize(("raw", "ftype", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_field_value_type_and_value(raw: str, ftype: FieldType, value: object) -> None:
    _, _, fields, _ = one(f"m x={raw} 1".encode())
    assert fields == {"x": (ftype, value)}
    got = fields["x"][1]
    assert type(got) is type(value)
    if ftype is F:
        assert math.copysign(1, got) == math.copysign(1, value)  # type: ignore[arg-type]


# -- names and escapes ------------------------------------------------------------------------

NAMES = [
    (rb"m x=1", "m", {}, "x"),
    (rb"m\,n\ o,t=v x=1", "m,n o", {"t": "v"}, "x"),
    (rb"m\=n x=1", "m\\=n", {}, "x"),  # '=' is not escaped in measurements
    (rb"m=n x=1", "m=n", {}, "x"),
    (rb"m,t\,k\=\ =v\,\=\  x=1", "m", {"t,k= ": "v,= "}, "x"),
    (rb"m f\,\=\ k=1", "m", {}, "f,= k"),
    (rb"m,t=a\b x=1", "m", {"t": "a\\b"}, "x"),  # unknown escapes keep the backslash
    (rb"m,t=a\\,b x=1", "m", {"t": "a\\,b"}, "x"),  # as InfluxDB: ',' after '\' is escaped
    (rb"m,t=a\\\ b x=1", "m", {"t": "a\\\\ b"}, "x"),
    (rb'm,t="q" x=1', "m", {"t": '"q"'}, "x"),  # quotes mean nothing in tags
    (rb'm "k=1', "m", {}, '"k'),
    (rb"m k\"=1", "m", {}, 'k\\"'),
    ("m☃,ü=ß x=1".encode(), "m☃", {"ü": "ß"}, "x"),
    (rb"\,m x=1", ",m", {}, "x"),
    (rb"\ m x=1", " m", {}, "x"),
    (rb"m\ x=1 x=1", "m x=1", {}, "x"),
]


@pytest.mark.parametrize(("body", "table", "tags", "key"), NAMES, ids=[n[0].decode() for n in NAMES])
def test_names_are_unescaped(body: bytes, table: str, tags: dict[str, str], key: str) -> None:
    got_table, got_tags, fields, _ = one(body)
    assert (got_table, got_tags, list(fields)) == (table, tags, [key])


def test_tag_order_does_not_matter() -> None:
    result = both(b"m,b=2,a=1 x=1 1\nm,a=1,b=2 x=2 2\n")
    assert result == {
        "m": [(1, {"a": "1", "b": "2"}, {"x": (F, 1.0)}), (2, {"a": "1", "b": "2"}, {"x": (F, 2.0)})]
    }


def test_absent_tags_and_fields_are_null() -> None:
    body = b"m,host=a x=1,y=2i 1\nm y=3i 2\nm,dc=z x=4 3\n"
    batch = parse(body)[0]
    assert batch.tags["host"].to_pylist() == ["a", None, None]
    assert batch.tags["dc"].to_pylist() == [None, None, "z"]
    assert batch.fields["x"].to_pylist() == [1.0, None, 4.0]
    assert batch.fields["y"].type == pa.int64()
    assert batch.fields["y"].to_pylist() == [2, 3, None]
    assert (list(batch.tags), list(batch.fields)) == (["host", "dc"], ["x", "y"])
    both(body)


def test_one_batch_per_measurement_rows_in_line_order() -> None:
    body = b"a x=1 1\nb y=1i 2\na x=2 3\nb\\ c z=t 4\na,t=q x=3 5\n"
    result = both(body)
    assert list(result) == ["a", "b", "b c"]
    assert [r[0] for r in result["a"]] == [1, 3, 5]
    for batch in parse(body):
        assert batch.db == "default"


def test_duplicate_field_last_wins() -> None:
    assert one(b"m x=1,y=2,x=3 1")[2] == {"x": (F, 3.0), "y": (F, 2.0)}


def test_db_is_passed_and_validated() -> None:
    assert parse(b"m x=1", db="telegraf")[0].db == "telegraf"
    with pytest.raises(InvalidName):
        parse(b"m x=1", db="bad db")


# -- lines, whitespace, timestamps ----------------------------------------------------------


def test_blank_comment_crlf_and_whitespace_lines() -> None:
    body = (
        b"# a comment\r\n\r\n   \n\t# indented comment\nm x=1 1\r\n  m x=2 2\nm  x=3   3  \nm x=4 \nm x=5 5\r"
    )
    rows = both(body)["m"]
    assert [(r[0], r[2]["x"][1]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (NOW_NS, 4.0), (5, 5.0)]


def test_empty_and_comment_only_bodies() -> None:
    assert parse(b"") == []
    assert parse(b"\n\n# nothing\n") == []


@pytest.mark.parametrize(
    ("precision", "stamp", "ns"),
    [
        ("ns", "5", 5),
        ("n", "-5", -5),
        ("us", "5", 5_000),
        ("u", "5", 5_000),
        ("ms", "5", 5_000_000),
        ("s", "5", 5_000_000_000),
        ("m", "2", 120_000_000_000),
        ("h", "1", 3_600_000_000_000),
        ("ns", "9223372036854775806", 2**63 - 2),
        ("ns", "-9223372036854775806", -(2**63) + 2),
    ],
)
def test_precision_converts_to_ns(precision: str, stamp: str, ns: int) -> None:
    assert one(f"m x=1 {stamp}".encode(), precision=precision)[3] == ns


@pytest.mark.parametrize("precision", sorted(LP_PRECISIONS))
def test_missing_timestamp_is_now_truncated_to_precision(precision: str) -> None:
    multiplier = LP_PRECISIONS[precision]
    assert one(b"m x=1", precision=precision)[3] == NOW_NS - NOW_NS % multiplier


def test_now_is_read_once_when_not_given() -> None:
    batch = parse(b"m x=1\nm x=2\n")[0]
    assert batch.time[0] == batch.time[1] > 0


def test_unknown_precision() -> None:
    with pytest.raises(ParseError, match="unknown precision 'y'"):
        parse(b"m x=1", precision="y")


# -- rejections: first bad line, specific reason ----------------------------------------------

REJECTS = [
    (b"m", "missing fields"),
    (b"m ", "missing fields"),
    (b"m,t=v", "missing fields"),
    (b"m,t=v ", "missing fields"),
    (b",t=v x=1", "missing measurement"),
    (b"m,=v x=1", "missing tag key"),
    (b"m, x=1", "missing tag key"),
    (b"m,t x=1", "missing tag value for tag 't'"),
    (b"m,t= x=1", "missing tag value for tag 't'"),
    (b"m,t=a=b x=1", "invalid tag format"),
    (b"m,t=a,t=b x=1", "duplicate tag 't'"),
    (b"m x", "invalid field format"),
    (b"m x=1,y", "invalid field format"),
    (b"m =1", "missing field key"),
    (b"m x=1,", "missing field key"),
    (b"m x=1,,y=2", "missing field key"),
    (b"m x=", "missing value for field 'x'"),
    (b"m x= 1", "missing value for field 'x'"),
    (b"m x=1.2.3", "invalid field value \"1.2.3\" for field 'x'"),
    (b"m x=abc", 'invalid field value "abc"'),
    (b"m x=+1", 'invalid field value "+1"'),
    (b"m x=1-2", 'invalid field value "1-2"'),
    (b"m x=1e", 'invalid field value "1e"'),
    (b"m x=.", 'invalid field value "."'),
    (b"m x=-", 'invalid field value "-"'),
    (b"m x=0x10i", 'invalid field value "0x10i"'),
    (b"m x=0x10", 'invalid field value "0x10"'),
    (b"m x=1.5i", 'invalid field value "1.5i"'),
    (b"m x=1e3i", 'invalid field value "1e3i"'),
    (b"m x=1ii", 'invalid field value "1ii"'),
    (b"m x=i", 'invalid field value "i"'),
    (b"m x=-1u", 'invalid field value "-1u"'),
    (b"m x=NaN", 'invalid field value "NaN"'),
    (b"m x=nan", 'invalid field value "nan"'),
    (b"m x=-nan", 'invalid field value "-nan"'),
    (b"m x=inf", 'invalid field value "inf"'),
    (b"m x=-Inf", 'invalid field value "-Inf"'),
    (b"m x=tru", 'invalid boolean "tru"'),
    (b"m x=tRUE", 'invalid boolean "tRUE"'),
    (b"m x=9223372036854775808i", "integer out of range"),
    (b"m x=-9223372036854775809i", "integer out of range"),
    (b"m x=18446744073709551616u", "unsigned integer out of range"),
    (b"m x=1e400", "float out of range"),
    (b'm x="abc', "unterminated string in field 'x'"),
    (b'm x="abc\\"', "unterminated string in field 'x'"),
    (b'm x="abc"d', "unexpected character 'd' after the value of field 'x'"),
    (b"m x=1 abc", 'invalid timestamp "abc"'),
    (b"m x=1 1.5", 'invalid timestamp "1.5"'),
    (b"m x=1 --1", 'invalid timestamp "--1"'),
    (b"m x=1 0x10", 'invalid timestamp "0x10"'),
    (b"m x=1 1 2", 'unexpected text after the timestamp: "2"'),
    (b"m x=1 9223372036854775808", "invalid timestamp"),
    (b"m x=1 9223372036854775807", "timestamp 9223372036854775807 out of range"),
    (b"m x=1 -9223372036854775807", "out of range"),
    (b"m x=1,x=1i", "conflicting types for field 'x' on one line: float and integer"),
    (b"m time=1", "invalid field key name"),
    (b"m,time=a x=1", "invalid tag key name"),
    (b"__tsm x=1", "invalid measurement name"),
    (b"m\tn x=1", "control character"),
    (b"m,t=a t=1", "'t' is both a tag (line 3) and a field (line 3) of measurement 'm'"),
]


@pytest.mark.parametrize(("body", "reason"), REJECTS, ids=[r[0].decode() for r in REJECTS])
def test_rejected_with_reason_and_line(body: bytes, reason: str) -> None:
    body = b"ok x=1 1\n# comment\n" + body + b"\nok x=2 2\n"
    err = rejection(body)
    assert err.line == 3
    assert reason in err.reason
    assert str(err).startswith("cannot parse line 3: ")


def test_timestamp_overflow_depends_on_precision() -> None:
    assert one(b"m x=1 9223372036", precision="s")[3] == 9_223_372_036_000_000_000
    err = rejection(b"m x=1 9223372037", precision="s")
    assert (err.line, "out of range" in err.reason) == (1, True)
    err = rejection(b"m x=1 -9223372037", precision="s")
    assert err.line == 1


def test_type_conflict_names_both_lines() -> None:
    err = rejection(b"m x=1 1\nm y=1 2\n\nm x=1i 3\n")
    assert err.line == 4
    assert str(err) == (
        "cannot parse line 4: conflicting types for field 'x' of measurement 'm': "
        "float on line 1, integer on line 4"
    )
    # Per measurement: the same field name may differ between measurements.
    assert set(both(b"a x=1\nb x=1i\n")) == {"a", "b"}


def test_type_conflict_between_fast_and_scanned_lines() -> None:
    err = rejection(b'm x=1 1\nm x="s" 2\n')
    assert (err.line, "float on line 1, string on line 2" in err.reason) == (2, True)


def test_first_bad_line_wins() -> None:
    body = b"m x=1\nm x=1i\nm x=\nm y\n"
    assert rejection(body).line == 2
    body = b"m x=1\nm y=\nm x=1i\n"
    assert rejection(body).line == 2
    body = b'm s="a\nb" 1\nm x=1 2\nm x=bad 3\nm x="unterminated\n'
    err = rejection(body)
    assert (err.line, 'invalid field value "bad"' in err.reason) == (4, True)


def test_line_numbers_count_lines_inside_strings() -> None:
    err = rejection(b'm s="one\ntwo\nthree" 1\nm x= 2\n')
    assert err.line == 4


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(ParseError) as exc:
        parse(b"m x=1\nm,t=\xff x=1\n")
    assert exc.value.line == 2
    assert "invalid UTF-8" in exc.value.reason


def test_to_dict_carries_the_line() -> None:
    with pytest.raises(ParseError) as exc:
        parse(b"m x=1\nm\n")
    assert exc.value.to_dict() == {
        "error": "ParseError",
        "message": "cannot parse line 2: missing fields",
        "line": 2,
    }


# -- fast path at scale: many groups, series and measurements -------------------------------


def test_fast_path_groups_and_interleaving() -> None:
    lines = []
    for i in range(300):
        host = f"h{i % 7}"
        if i % 3 == 0:
            lines.append(f"cpu,host={host} user={i}i,sys={i}.5 {i}")
        elif i % 3 == 1:
            lines.append(f"cpu,host={host},dc=d{i % 2} sys={i},idle={i % 2 == 0} {i}")
        else:
            lines.append(f'mem,host={host} free={i}u,note="n{i}" {i}')
    body = "\n".join(lines).encode()
    result = both(body)
    assert [r[0] for r in result["cpu"]] == [i for i in range(300) if i % 3 != 2]
    assert result["mem"][0] == (2, {"host": "h2"}, {"free": (U, 2), "note": (S, "n2")})
    assert result["cpu"][1] == (1, {"host": "h1", "dc": "d1"}, {"sys": (F, 1.0), "idle": (B, False)})


def test_fast_path_hands_bad_columns_to_the_scanner() -> None:
    err = rejection(b"m x=t 1\nm x=true 2\nm x=yes 3\n")
    assert (err.line, 'invalid field value "yes"' in err.reason) == (3, True)
    err = rejection(b"m x=t 1\nm x=tru 2\n")
    assert (err.line, 'invalid boolean "tru"' in err.reason) == (2, True)
    err = rejection(b"m x=1i 1\nm x=99999999999999999999i 2\n")
    assert (err.line, "integer out of range" in err.reason) == (2, True)


def test_strings_without_escapes_take_the_fast_path() -> None:
    body = b'm,h=a x="a b",y="c,d=e",z="" 1\nm,h=b x="",y="=",z=" , " 2\n'
    assert both(body) == {
        "m": [
            (1, {"h": "a"}, {"x": (S, "a b"), "y": (S, "c,d=e"), "z": (S, "")}),
            (2, {"h": "b"}, {"x": (S, ""), "y": (S, "="), "z": (S, " , ")}),
        ]
    }
    # Quotes in a series key or a field key are plain characters.
    assert one(b'm,t="a" x=1')[1] == {"t": '"a"'}
    assert rejection(b'm,t="a b" x=1').line == 1
    assert rejection(b'm x="a"b"c" 1').line == 1


def test_quotes_that_are_not_strings_do_not_split_entries() -> None:
    # A quote in a field key pairs with a string's opening quote on the same line; in a tag
    # value it could open a string for the fast path only. Either way the string runs on.
    body = b'a "=0.0,b="\n" 1\na x=1 2\n'
    assert both(body)["a"][0] == (1, {}, {'"': (F, 0.0), "b": (S, "\n")})
    body = b'm,t="v x="\nm2 y=1 1\n" 5\nm z=2 6\n'
    assert both(body)["m"][0] == (5, {"t": '"v'}, {"x": (S, "\nm2 y=1 1\n")})
    assert rejection(b'm x="a"\r5 1\n').line == 1


def test_more_field_key_sets_than_templates() -> None:
    body = "\n".join(f"m k{i}=1,v=2i {i}" for i in range(2 * MAX_TEMPLATES + 3)).encode()
    rows = both(body)["m"]
    assert len(rows) == 2 * MAX_TEMPLATES + 3
    assert rows[-1] == (rows[-1][0], {}, {f"k{len(rows) - 1}": (F, 1.0), "v": (N, 2)})


def test_same_field_keys_different_order_and_measurements() -> None:
    body = b"a x=1,y=2 1\nb x=3,y=4 2\na y=5,x=6 3\nb,t=1 x=7,y=8 4\n"
    result = both(body)
    assert [r[2]["x"][1] for r in result["a"]] == [1.0, 6.0]
    assert [r[1] for r in result["b"]] == [{}, {"t": "1"}]


# -- properties ---------------------------------------------------------------------------


_BOOL_WORDS = {True: ("t", "T", "true", "True", "TRUE"), False: ("f", "F", "false", "False", "FALSE")}


def escape_measurement(name: str) -> str:
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(name: str) -> str:
    return name.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def format_value(ftype: FieldType, value: object, spelling: int) -> str:
    if ftype is F:
        return repr(value)
    if ftype is N:
        return f"{value}i"
    if ftype is U:
        return f"{value}u"
    if ftype is B:
        return _BOOL_WORDS[bool(value)][spelling % 5]
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def serialize(request: LpRequest, newline: str = "\n") -> bytes:
    """The escaping serializer every line-protocol writer implements."""
    lines = []
    for n, p in enumerate(request.points):
        key = escape_measurement(p.measurement) + "".join(
            f",{escape_key(k)}={escape_key(v)}" for k, v in p.tags.items()
        )
        fields = ",".join(f"{escape_key(k)}={format_value(t, v, n)}" for k, (t, v) in p.fields.items())
        lines.append(f"{key} {fields}" + ("" if p.time is None else f" {p.time}"))
    return newline.join(lines).encode()


def expected_tables(request: LpRequest, now_ns: int) -> dict[str, list[Row]]:
    multiplier = LP_PRECISIONS[request.precision]
    default = now_ns - now_ns % multiplier
    out: dict[str, list[Row]] = {}
    for p in request.points:
        ts = default if p.time is None else p.time * multiplier
        out.setdefault(p.measurement, []).append((ts, dict(p.tags), dict(p.fields)))
    return out


def reference_parse(body: bytes, multiplier: int, default_ns: int) -> dict[str, list[Row]]:
    """A plain character-at-a-time parser of valid line protocol, independent of the module."""
    text = body.decode()
    n = len(text)
    out: dict[str, list[Row]] = {}

    def name(i: int, stops: str) -> tuple[str, int]:
        chars = []
        while i < n and text[i] != "\n":
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] in stops:
                chars.append(text[i + 1])
                i += 2
            elif c in stops:
                break
            else:
                chars.append(c)
                i += 1
        return "".join(chars), i

    def typed(raw: str) -> tuple[FieldType, object]:
        for flag, words in _BOOL_WORDS.items():
            if raw in words:
                return B, flag
        if raw.endswith("i"):
            return N, int(raw[:-1])
        if raw.endswith("u"):
            return U, int(raw[:-1])
        return F, float(raw)

    i = 0
    while i < n:
        end = text.find("\n", i)
        if not text[i : (n if end < 0 else end)].strip() or text[i] == "#":
            i = n if end < 0 else end + 1
            continue
        measurement, i = name(i, ", ")
        tags = {}
        while text[i] == ",":
            key, i = name(i + 1, ",= ")
            tags[key], i = name(i + 1, ",= ")
        while text[i] == " ":
            i += 1
        fields: dict[str, tuple[FieldType, object]] = {}
        while True:
            key, i = name(i, ",= ")
            i += 1  # '='
            if text[i] == '"':
                chars, i = [], i + 1
                while text[i] != '"':
                    if text[i] == "\\" and text[i + 1] in '\\"':
                        i += 1
                    chars.append(text[i])
                    i += 1
                fields[key] = (S, "".join(chars))
                i += 1
            else:
                j = i
                while j < n and text[j] not in ", \n":
                    j += 1
                fields[key], i = typed(text[i:j]), j
            if i < n and text[i] == ",":
                i += 1
                continue
            break
        j = text.find("\n", i)
        j = n if j < 0 else j
        stamp = text[i:j].strip()
        ts = default_ns if not stamp else int(stamp) * multiplier
        out.setdefault(measurement, []).append((ts, tags, fields))
        i = j + 1
    return out


@PROPERTY
@given(lp_requests())
def test_round_trip_through_serializer(request: LpRequest) -> None:
    body = serialize(request)
    multiplier = LP_PRECISIONS[request.precision]
    expected = expected_tables(request, NOW_NS)
    assert reference_parse(body, multiplier, NOW_NS - NOW_NS % multiplier) == expected
    assert both(body, precision=request.precision) == expected


@PROPERTY
@given(lp_requests(max_points=6), st.integers(2, 40), st.sampled_from(["\n", "\r\n"]))
def test_fast_path_matches_scanner_on_repeated_shapes(request: LpRequest, repeat: int, newline: str) -> None:
    points = [
        LpPoint(p.measurement, p.tags, p.fields, None if p.time is None else p.time - (k % 2) * sign(p.time))
        for k in range(repeat)
        for p in request.points
    ]
    body = serialize(LpRequest(request.precision, points), newline)
    expected = expected_tables(LpRequest(request.precision, points), NOW_NS)
    assert both(body, precision=request.precision) == expected


def sign(x: int) -> int:
    return 1 if x > 0 else -1


def outcome(call: Callable[[], list[TableBatch]]) -> object:
    try:
        return tables(call())
    except ParseError as exc:
        return (str(exc), exc.line)


@PROPERTY
@given(st.one_of(lp_garbage_bodies(), st.binary(max_size=80)))
def test_garbage_raises_only_parse_error_and_paths_agree(body: bytes) -> None:
    fast = outcome(lambda: parse(body, now_ns=NOW_NS))
    assert fast == outcome(lambda: scanner_only(body))
    if isinstance(fast, tuple):
        reason, line = fast
        assert line is not None and re.match(rf"cannot parse line {line}: ", reason)


# -- a real peer: the official client's serializer --------------------------------------------


@pytest.mark.peer
def test_influxdb_client_points_round_trip() -> None:
    from influxdb_client import Point as ClientPoint

    points = [
        ClientPoint("cpu load")
        .tag("host name", "a,b=c")
        .tag("dc", "eu")
        .field("user", 1.5)
        .field("count", 3)
        .field("ok", True)
        .field("note", 'say "hi"\\ \nbye')
        .time(1_700_000_000_000_000_000),
        ClientPoint("cpu load").tag("host name", "x").field("user", 2.0).field("count", -4).time(5),
        ClientPoint("m=eq").field("f,k", 1e16).field("g=k", 0.1).time(7),
    ]
    body = "\n".join(p.to_line_protocol() for p in points).encode()
    assert both(body) == {
        "cpu load": [
            (
                1_700_000_000_000_000_000,
                {"dc": "eu", "host name": "a,b=c"},
                {"count": (N, 3), "note": (S, 'say "hi"\\ \nbye'), "ok": (B, True), "user": (F, 1.5)},
            ),
            (5, {"host name": "x"}, {"count": (N, -4), "user": (F, 2.0)}),
        ],
        "m=eq": [(7, {}, {"f,k": (F, 1e16), "g=k": (F, 0.1)})],
    }
