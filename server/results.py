"""Query results as HTTP answers: JSON, CSV or an Arrow IPC stream, from one Arrow table.

Used by ``POST /api/v1/sql`` (and ``tsengine sql`` for its text table). JSON is
``{"columns": [{"name", "type"}], "rows": [[...]], "truncated": bool}`` with Arrow's type names;
top-level timestamps become RFC 3339 text with nanoseconds (``2023-11-14T22:13:20.000000001Z``),
timestamps nested in lists or structs are cut to microseconds (Python has no nanoseconds), NaN
and infinities are ``null``, decimals numbers, binary base64. CSV holds lists, structs, maps and
intervals as JSON text. Pure functions; CPU-bound for large results (call them off the loop).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["ARROW_STREAM", "encode", "encode_json", "timestamps_as_text"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)


def _without_ns(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with every nested nanosecond type made microseconds (Python has no nanoseconds)."""
    if pa.types.is_timestamp(dtype) and dtype.unit == "ns":
        return pa.timestamp("us", dtype.tz)
    if pa.types.is_duration(dtype) and dtype.unit == "ns":
        return pa.duration("us")
    if pa.types.is_time64(dtype) and dtype.unit == "ns":
        return pa.time64("us")
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(_without_ns(dtype.value_type)))
    if pa.types.is_large_list(dtype):
        return pa.large_list(dtype.value_field.with_type(_without_ns(dtype.value_type)))
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(dtype.value_field.with_type(_without_ns(dtype.value_type)), dtype.list_size)
    if pa.types.is_struct(dtype):
        return pa.struct(
            [dtype.field(i).with_type(_without_ns(dtype.field(i).type)) for i in range(dtype.num_fields)]
        )
    if pa.types.is_map(dtype):
        return pa.map_(_without_ns(dtype.key_type), _without_ns(dtype.item_type))
    return dtype


def timestamps_as_text(table: pa.Table) -> pa.Table:
    """Top-level timestamps as RFC 3339 text (nanoseconds kept); nested ones cut to microseconds."""
    cols = []
    for col in table.columns:
        if not pa.types.is_timestamp(col.type) and _without_ns(col.type) != col.type:
            cols.append(col.cast(_without_ns(col.type), safe=False))
        elif pa.types.is_timestamp(col.type):
            # Arrow prints "2023-11-14 22:13:20.123456789"; RFC 3339 wants a T and a zone.
            text = pc.cast(col.cast(pa.timestamp(col.type.unit)), pa.string())
            text = pc.binary_join_element_wise(
                pc.replace_substring(text, " ", "T", max_replacements=1), "Z", ""
            )
            cols.append(text)
        else:
            cols.append(col)
    return pa.table(cols, names=table.column_names)


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns CSV cannot hold (lists, structs, maps, intervals) as JSON text, one value per cell."""
    table = timestamps_as_text(table)
    cols = []
    for col in table.columns:
        if pa.types.is_nested(col.type) or pa.types.is_interval(col.type):
            texts = [
                None if v is None else orjson.dumps(v, default=_json_default).decode()
                for v in col.to_pylist()
            ]
            cols.append(pa.array(texts, pa.string()))
        else:
            cols.append(col)
    return pa.table(cols, names=table.column_names)


def encode_json(table: pa.Table, truncated: bool) -> bytes:
    """The JSON answer for an Arrow result (types are Arrow's names, e.g. ``timestamp[ns]``)."""
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    pylist = timestamps_as_text(table).to_pydict()
    rows = [list(r) for r in zip(*pylist.values(), strict=True)] if pylist else []
    return orjson.dumps(
        {"columns": columns, "rows": rows, "truncated": truncated},
        default=_json_default,
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def encode(table: pa.Table, truncated: bool, accept: str) -> tuple[bytes, str]:
    """The answer body and its content type for an ``Accept`` header."""
    if ARROW_STREAM in accept:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes(), ARROW_STREAM
    if "text/csv" in accept:
        out = io.BytesIO()
        pacsv.write_csv(_csv_ready(table), out)
        return out.getvalue(), "text/csv"
    return encode_json(table, truncated), "application/json"
