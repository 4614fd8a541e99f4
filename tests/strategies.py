"""Hypothesis strategies shared by the test suite, one section per subject.

Add a section for your subject below the others; keep each section's names prefixed so that
sections do not collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from tsengine.errors import InvalidName
from tsengine.model import FieldType, validate_column, validate_table

# =============================================================================================
# InfluxDB line protocol (tests/unit/protocols/test_influx.py)
# =============================================================================================


@dataclass(frozen=True)
class LpPoint:
    """A point as a writer means it: unescaped names, typed values, time in the request precision."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, tuple[FieldType, object]]
    time: int | None = None


@dataclass(frozen=True)
class LpRequest:
    precision: str
    points: list[LpPoint] = field(default_factory=list)


LP_PRECISIONS = {"ns": 1, "n": 1, "us": 10**3, "u": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
LP_PRECISIONS["h"] = 3600 * 10**9
_LP_MIN_NS, _LP_MAX_NS = -(2**63) + 2, 2**63 - 2

# No control characters (names refuse them; a raw newline cannot be escaped in a name).
_lp_char = st.characters(blacklist_categories=("Cs", "Cc"))
_lp_plain_text = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
#: Text rich in the characters line protocol escapes, plus anything printable.
_lp_tricky_text = st.text(
    alphabet=st.one_of(st.sampled_from(list(',= "\\#')), _lp_char), min_size=1, max_size=10
)


def _lp_valid(kind: str, name: str) -> bool:
    # A trailing backslash would escape the delimiter after the name: no writer can send it.
    if name.endswith("\\"):
        return False
    try:
        validate_table(name) if kind == "table" else validate_column(name)
    except InvalidName:
        return False
    return True


#: Tag keys, tag values and field keys.
lp_keys = st.one_of(_lp_plain_text, _lp_tricky_text).filter(lambda n: _lp_valid("column", n))
#: Measurement names; one starting with '#' would read as a comment line.
lp_measurements = st.one_of(_lp_plain_text, _lp_tricky_text).filter(
    lambda n: _lp_valid("table", n) and not n.startswith("#")
)
lp_tag_values = st.one_of(_lp_plain_text, _lp_tricky_text).filter(lambda v: not v.endswith("\\"))

LP_VALUES: dict[FieldType, st.SearchStrategy[object]] = {
    FieldType.FLOAT: st.floats(allow_nan=False, allow_infinity=False),
    FieldType.INTEGER: st.integers(-(2**63), 2**63 - 1),
    FieldType.UNSIGNED: st.integers(0, 2**64 - 1),
    FieldType.BOOLEAN: st.booleans(),
    # Anything, newlines, quotes and backslashes included.
    FieldType.STRING: st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
}


@st.composite
def lp_requests(draw: st.DrawFn, max_points: int = 12) -> LpRequest:
    """Points of 1 to 3 measurements, each with a fixed field-type schema (no type conflicts)."""
    precision = draw(st.sampled_from(sorted(LP_PRECISIONS)))
    multiplier = LP_PRECISIONS[precision]
    stamps = st.none() | st.integers(-(_LP_MIN_NS // -multiplier), _LP_MAX_NS // multiplier)
    measurements = draw(st.lists(lp_measurements, min_size=1, max_size=3, unique=True))
    schemas = []
    for _ in measurements:
        names = draw(st.lists(lp_keys, min_size=1, max_size=7, unique=True))
        n_tags = draw(st.integers(0, len(names) - 1))
        tag_keys, field_keys = names[:n_tags], names[n_tags:]
        types = {k: draw(st.sampled_from(list(FieldType))) for k in field_keys}
        schemas.append((tag_keys, types))
    points = []
    for _ in range(draw(st.integers(1, max_points))):
        i = draw(st.integers(0, len(measurements) - 1))
        tag_keys, types = schemas[i]
        tags = {k: draw(lp_tag_values) for k in tag_keys if draw(st.booleans())}
        chosen = draw(st.lists(st.sampled_from(sorted(types)), min_size=1, unique=True))
        fields = {k: (types[k], draw(LP_VALUES[types[k]])) for k in chosen}
        points.append(LpPoint(measurements[i], tags, fields, draw(stamps)))
    return LpRequest(precision, points)


#: Field values as they appear on the wire, valid and not.
lp_raw_values = st.one_of(
    st.sampled_from(
        [
            *("1", "-1.5e3", "1i", "1u", "t", "FALSE", "1.2.3", "tru", "0x1i", "-inf", "", "1e999"),
            *('"s"', '"', '"a b"', '"c,d=e"', '"x"y"', '"q"q', 'a"', '""', '"\\"', '"2 3"i'),
            *('"x\ny"', '"open', 'close"', '" x="', '"\r\n"'),
        ]
    ),
    st.text(alphabet='0123456789.-+eEiutTfF"\\ ,=', max_size=6),
)


@st.composite
def lp_garbage_bodies(draw: st.DrawFn) -> bytes:
    """Mostly-valid line-protocol bodies with damage: random bytes, cut lines, odd values."""
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            lines.append(draw(st.binary(max_size=30)))
        else:
            meas = draw(
                st.sampled_from(
                    ["m", "cpu", "m\\ x", "m,t=a", "m,t=b,u=c", ",", "", 'm,t="q"', 'm,t="a b"', 'm,t="v']
                )
            )
            fields = ",".join(
                f"{k}={v}"
                for k, v in draw(
                    st.lists(
                        st.tuples(st.sampled_from(["x", "y", "z\\=", "time", "", 'k"', '"']), lp_raw_values)
                    )
                )
            )
            stamp = draw(st.sampled_from(["", " 1", " -5", " 9223372036854775807", " x", "  7  "]))
            line = f"{meas} {fields}{stamp}".encode()
            if kind == 3 and line:
                cut = draw(st.integers(0, len(line)))
                line = line[:cut] + draw(st.binary(max_size=3)) + line[cut:]
            lines.append(line)
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    return sep.join(lines)
