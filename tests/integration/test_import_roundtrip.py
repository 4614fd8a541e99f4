"""Native import (``POST /api/v1/import``), property-based: rendered tables decode to the same rows.

The route hands the body to pure decoders (:func:`server.routes.imports.parse_columnar`,
:func:`~server.routes.imports.parse_ndjson`, :func:`~server.routes.imports.parse_arrow`), so the
properties call them directly, without a server: random tables (tag and field names from a safe
alphabet; float, integer, boolean and string fields with nulls; any int64 time) are rendered as
columnar JSON (one object or a list of chunks), NDJSON rows (tables interleaved) and an Arrow
IPC stream (several record batches), decoded, and compared row by row: time, tags, field values
and field types. One small test runs the three formats through the HTTP route and SQL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.routes import imports
from tests.integration.conftest import query
from tsengine.model import TAG_METADATA, FieldType, TableBatch

DEFAULT_DB = "default"
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_TYPES = (FieldType.FLOAT, FieldType.INTEGER, FieldType.BOOLEAN, FieldType.STRING)

# --- model and strategies ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImTable:
    """One table as a writer means it; a row's tags/fields map a name to a value or None (null)."""

    db: str
    name: str
    tags: tuple[str, ...]
    fields: dict[str, FieldType]
    rows: list[tuple[int, dict[str, str | None], dict[str, Any]]]


#: Table, tag and field names from a safe alphabet ('time' is the time column, '__ts' reserved).
im_names = st.text(alphabet="abcxyzAZ019_-. é", min_size=1, max_size=8).filter(
    lambda n: n != "time" and not n.startswith("__ts")
)
_int64 = st.integers(-(2**63), 2**63 - 1)
#: NaN payloads (both signs), infinities, -0.0, the smallest subnormal: as bit patterns.
_AWKWARD_BITS = (0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0001, 0x7FF0_0000_DEAD_BEEF, 0xFFF0_0000_0000_0000)
_AWKWARD_DOUBLES = [
    struct.unpack("<d", struct.pack("<Q", b))[0]
    for b in (*_AWKWARD_BITS, 0x7FF0_0000_0000_0000, 0x8000_0000_0000_0000, 1)
]
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


def im_values(ftype: FieldType, *, json: bool) -> st.SearchStrategy[Any]:
    if ftype is FieldType.FLOAT:
        # JSON has no NaN or infinities (orjson writes them as null); Arrow carries any bits.
        if json:
            return st.floats(allow_nan=False, allow_infinity=False)
        return st.floats() | st.sampled_from(_AWKWARD_DOUBLES)
    if ftype is FieldType.INTEGER:
        return _int64
    if ftype is FieldType.BOOLEAN:
        return st.booleans()
    return _text


@st.composite
def im_tables(draw: st.DrawFn, *, json: bool, db: str | None = None, name: str | None = None) -> ImTable:
    """A table with 1-6 rows; every row has a field value and every field a non-null value."""
    names = draw(st.lists(im_names, min_size=1, max_size=6, unique=True))
    n_tags = draw(st.integers(0, len(names) - 1))
    tags, field_names = tuple(names[:n_tags]), names[n_tags:]
    fields = {f: draw(st.sampled_from(_TYPES)) for f in field_names}
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        row_tags = {t: draw(st.none() | _text) for t in tags}
        row_fields = {f: draw(st.none() | im_values(ft, json=json)) for f, ft in fields.items()}
        if all(v is None for v in row_fields.values()):
            f = draw(st.sampled_from(field_names))
            row_fields[f] = draw(im_values(fields[f], json=json))
        rows.append((draw(_int64), row_tags, row_fields))
    for f, ft in fields.items():  # a column of nulls only has no type to infer from JSON
        if all(r[2][f] is None for r in rows):
            rows[draw(st.integers(0, len(rows) - 1))][2][f] = draw(im_values(ft, json=json))
    return ImTable(
        db=db or draw(st.sampled_from([DEFAULT_DB, "other"])),
        name=name or draw(im_names),
        tags=tags,
        fields=fields,
        rows=rows,
    )


@st.composite
def im_requests(draw: st.DrawFn) -> list[ImTable]:
    """1-3 tables of distinct (db, name) for the JSON formats."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from([DEFAULT_DB, "other"]), im_names), min_size=1, max_size=3, unique=True
        )
    )
    return [draw(im_tables(json=True, db=db, name=name)) for db, name in keys]


# --- comparison --------------------------------------------------------------------------------

Row = tuple[int, dict[str, str], dict[str, tuple[FieldType, Any]]]


def _key(ftype: FieldType, value: Any) -> tuple[FieldType, Any]:
    if ftype is FieldType.FLOAT:
        assert type(value) is float, value
        return ftype, struct.unpack("<Q", struct.pack("<d", value))[0]  # bit for bit
    expected_type = {FieldType.INTEGER: int, FieldType.BOOLEAN: bool, FieldType.STRING: str}[ftype]
    assert type(value) is expected_type, (ftype, value)
    return ftype, value


def expected_rows(table: ImTable) -> list[Row]:
    return [
        (
            t,
            {k: v for k, v in tags.items() if v is not None},
            {k: _key(table.fields[k], v) for k, v in fields.items() if v is not None},
        )
        for t, tags, fields in table.rows
    ]


def actual_rows(batches: list[TableBatch]) -> dict[tuple[str, str], list[Row]]:
    """Rows of the batches by (db, table), batches of one table concatenated in order."""
    out: dict[tuple[str, str], list[Row]] = {}
    for batch in batches:
        assert batch.time.dtype == "int64"
        for name, col in batch.tags.items():
            assert col.type == pa.string(), name
        types = batch.field_types()
        tags = {name: col.to_pylist() for name, col in batch.tags.items()}
        fields = {name: col.to_pylist() for name, col in batch.fields.items()}
        rows = out.setdefault((batch.db, batch.table), [])
        for i in range(batch.num_rows):
            rows.append(
                (
                    int(batch.time[i]),
                    {k: col[i] for k, col in tags.items() if col[i] is not None},
                    {k: _key(types[k], col[i]) for k, col in fields.items() if col[i] is not None},
                )
            )
    return out


def assert_same(tables: list[ImTable], batches: list[TableBatch]) -> None:
    actual = actual_rows(batches)
    assert set(actual) == {(t.db, t.name) for t in tables}
    for table in tables:
        expected = expected_rows(table)
        got = actual[table.db, table.name]
        assert len(got) == len(expected)
        for i, (e, a) in enumerate(zip(expected, got, strict=True)):
            assert a == e, f"{table.db}.{table.name} row {i}"
    for batch in batches:  # a field column keeps its type even where it is all null
        table = next(t for t in tables if (t.db, t.name) == (batch.db, batch.table))
        assert set(batch.tags) <= set(table.tags)
        assert batch.field_types() == {f: table.fields[f] for f in batch.fields}


# --- renderings --------------------------------------------------------------------------------


def _db_key(draw: st.DrawFn, db: str) -> dict[str, str]:
    return {"db": db} if db != DEFAULT_DB or draw(st.booleans()) else {}


def render_columnar(draw: st.DrawFn, tables: list[ImTable]) -> bytes:
    """Each table cut into 1-3 chunks, one object each; columns null in a whole chunk left out."""
    objects = []
    for table in tables:
        cuts = sorted(
            draw(st.lists(st.integers(1, len(table.rows) - 1), max_size=2)) if len(table.rows) > 1 else []
        )
        for lo, hi in zip([0, *cuts], [*cuts, len(table.rows)], strict=True):
            rows = table.rows[lo:hi]
            if lo == hi:
                continue
            obj: dict[str, Any] = {
                "table": table.name,
                **_db_key(draw, table.db),
                "time": [r[0] for r in rows],
            }
            tags = {t: [r[1][t] for r in rows] for t in table.tags}
            fields = {f: [r[2][f] for r in rows] for f in table.fields}
            obj["tags"] = {
                t: v for t, v in tags.items() if any(x is not None for x in v) or draw(st.booleans())
            }
            obj["fields"] = {f: v for f, v in fields.items() if any(x is not None for x in v)}
            if not obj["tags"] and draw(st.booleans()):
                del obj["tags"]
            objects.append(obj)
    if len(objects) == 1 and draw(st.booleans()):
        return orjson.dumps(objects[0])
    return orjson.dumps(objects)


def render_ndjson(draw: st.DrawFn, tables: list[ImTable]) -> bytes:
    """One line per row, tables interleaved at random (each keeps its row order); nulls are
    written as null or left out; blank lines and CRLF line ends here and there."""
    pending = [list(t.rows) for t in tables]
    lines = []
    while any(pending):
        i = draw(st.sampled_from([i for i, rows in enumerate(pending) if rows]))
        table = tables[i]
        t, tags, fields = pending[i].pop(0)
        obj: dict[str, Any] = {"table": table.name, **_db_key(draw, table.db), "time": t}
        row_tags = {k: v for k, v in tags.items() if v is not None or draw(st.booleans())}
        if row_tags or draw(st.booleans()):
            obj["tags"] = row_tags
        obj["fields"] = {k: v for k, v in fields.items() if v is not None or draw(st.booleans())}
        lines.append(orjson.dumps(obj) + draw(st.sampled_from([b"", b"\r"])))
        if draw(st.integers(0, 5)) == 0:
            lines.append(b"")
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


def render_arrow(draw: st.DrawFn, table: ImTable) -> tuple[bytes, list[str]]:
    """An IPC stream of 1-3 record batches; each tag column is named in ``?tags=``, dictionary
    coded or marked with TAG_METADATA; returns the body and the ``tags`` query list."""
    n = len(table.rows)
    time_type = draw(st.sampled_from([pa.int64(), pa.timestamp("ns"), pa.timestamp("ns", "UTC")]))
    arrays = [pa.array([r[0] for r in table.rows], pa.int64()).view(time_type)]
    schema_fields = [pa.field("time", time_type)]
    query_tags = []
    for t in table.tags:
        values = pa.array([r[1][t] for r in table.rows], pa.string())
        how = draw(st.sampled_from(["query", "dictionary", "metadata"]))
        if how == "query":
            query_tags.append(t)
            schema_fields.append(pa.field(t, pa.string()))
        elif how == "dictionary":
            values = values.dictionary_encode()
            schema_fields.append(pa.field(t, values.type))
        else:
            schema_fields.append(pa.field(t, pa.string(), metadata=TAG_METADATA))
        arrays.append(values)
    for f, ftype in table.fields.items():
        arrow_type = ftype.arrow_type
        if ftype is FieldType.STRING and draw(st.booleans()):
            arrow_type = pa.large_string()
        arrays.append(pa.array([r[2][f] for r in table.rows], arrow_type))
        schema_fields.append(pa.field(f, arrow_type))
    schema = pa.schema(schema_fields)
    data = pa.RecordBatch.from_arrays(arrays, schema=schema)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=2)))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            writer.write_batch(data.slice(lo, hi - lo))  # empty batches included
    return sink.getvalue().to_pybytes(), query_tags


# --- properties --------------------------------------------------------------------------------


@PROPERTY
@given(tables=im_requests(), data=st.data())
def test_columnar_json_round_trips(tables: list[ImTable], data: st.DataObject) -> None:
    body = render_columnar(data.draw, tables)
    assert_same(tables, imports.parse_columnar(body, db=DEFAULT_DB))


@PROPERTY
@given(tables=im_requests(), data=st.data())
def test_ndjson_round_trips(tables: list[ImTable], data: st.DataObject) -> None:
    body = render_ndjson(data.draw, tables)
    batches = imports.parse_ndjson(body, db=DEFAULT_DB)
    assert len(batches) == len(tables), "one batch per table"
    assert_same(tables, batches)


@PROPERTY
@given(table=im_tables(json=False), data=st.data())
def test_arrow_stream_round_trips(table: ImTable, data: st.DataObject) -> None:
    body, query_tags = render_arrow(data.draw, table)
    batches = imports.parse_arrow(body, db=table.db, table=table.name, tags=query_tags)
    assert len(batches) == 1
    assert list(batches[0].tags) == list(table.tags)
    assert list(batches[0].fields) == list(table.fields)
    assert_same([table], batches)


# --- through the route -------------------------------------------------------------------------


async def test_the_route_stores_what_the_decoders_return(client: Any) -> None:
    """The three formats through ``POST /api/v1/import`` and back with SQL (a fixed example)."""
    cpu = ImTable(
        db=DEFAULT_DB,
        name="cpu",
        tags=("host", "dc"),
        fields={
            "usage": FieldType.FLOAT,
            "n": FieldType.INTEGER,
            "ok": FieldType.BOOLEAN,
            "s": FieldType.STRING,
        },
        rows=[
            (1, {"host": "a", "dc": None}, {"usage": 0.1, "n": -(2**63), "ok": None, "s": "é\n"}),
            (2, {"host": None, "dc": "x"}, {"usage": None, "n": 2**63 - 1, "ok": True, "s": None}),
            (3, {"host": "b", "dc": "y"}, {"usage": -0.0, "n": None, "ok": False, "s": ""}),
        ],
    )
    columnar = {
        "table": "cpu_json",
        "time": [r[0] for r in cpu.rows],
        "tags": {t: [r[1][t] for r in cpu.rows] for t in cpu.tags},
        "fields": {f: [r[2][f] for r in cpu.rows] for f in cpu.fields},
    }
    ndjson = b"\n".join(
        orjson.dumps({"table": "cpu_ndjson", "time": t, "tags": tags, "fields": fields})
        for t, tags, fields in cpu.rows
    )
    arrow = pa.table(
        {
            "time": pa.array([r[0] for r in cpu.rows], pa.timestamp("ns")),
            **{t: pa.array([r[1][t] for r in cpu.rows], pa.string()) for t in cpu.tags},
            **{f: pa.array([r[2][f] for r in cpu.rows], ft.arrow_type) for f, ft in cpu.fields.items()},
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    posts = [
        ("cpu_json", "application/json", orjson.dumps(columnar), ""),
        ("cpu_ndjson", "application/x-ndjson", ndjson, ""),
        ("cpu_arrow", imports.ARROW_STREAM, sink.getvalue().to_pybytes(), "?table=cpu_arrow&tags=host,dc"),
    ]
    expected = [[t, tags["host"], tags["dc"], *fields.values()] for t, tags, fields in cpu.rows]
    for name, content_type, body, params in posts:
        resp = await client.post(f"/api/v1/import{params}", data=body, headers={"Content-Type": content_type})
        assert resp.status == 204, await resp.text()
        rows = await query(
            client, f'SELECT epoch_ns(time), host, dc, usage, n, ok, s FROM "{name}" ORDER BY time'
        )
        assert rows == expected, name
