"""The columnar batch every protocol produces and the engine consumes.

A :class:`TableBatch` is rows for one table of one database, column by column:

* ``time``: int64 nanoseconds since the Unix epoch (UTC), no nulls;
* ``tags``: name → Arrow string array (nulls mean "tag absent on this row"); tags identify a
  series and are dictionary-coded by the engine;
* ``fields``: name → Arrow array of one of the :class:`FieldType` types (nulls mean "field
  absent on this row").

``TableBatch.build`` and ``TableBatch.from_arrow`` accept numpy arrays, lists or Arrow arrays,
check names, lengths and types, and never return a half-valid batch: they raise
:class:`~tsengine.errors.InvalidInput` naming the column and the reason. Batches are immutable
and cheap to pass between threads.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tsengine.errors import InvalidInput, InvalidName
from tsengine.model.names import TIME_COLUMN, validate_column, validate_db, validate_table

__all__ = ["TAG_METADATA", "FieldType", "TableBatch"]

#: Arrow field metadata marking a string column of an Arrow table as a tag.
TAG_METADATA = {b"tsengine.kind": b"tag"}


class FieldType(enum.Enum):
    """Types a field column can have; the value is the name used in errors and the catalog."""

    FLOAT = "float"
    INTEGER = "integer"
    UNSIGNED = "unsigned"
    BOOLEAN = "boolean"
    STRING = "string"

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_OF[self]

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_OF[self]

    @classmethod
    def of_arrow(cls, dtype: pa.DataType, *, column: str) -> FieldType:
        """Map an Arrow type onto a field type, widening where no value can change."""
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
        if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
            return cls.FLOAT
        if pa.types.is_unsigned_integer(dtype):
            return cls.UNSIGNED if dtype.bit_width == 64 else cls.INTEGER
        if pa.types.is_integer(dtype):
            return cls.INTEGER
        if pa.types.is_boolean(dtype):
            return cls.BOOLEAN
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return cls.STRING
        raise InvalidInput(f"cannot use column {column!r}: unsupported type {dtype}")


_ARROW_OF = {
    FieldType.FLOAT: pa.float64(),
    FieldType.INTEGER: pa.int64(),
    FieldType.UNSIGNED: pa.uint64(),
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.STRING: pa.string(),
}
_DUCKDB_OF = {
    FieldType.FLOAT: "DOUBLE",
    FieldType.INTEGER: "BIGINT",
    FieldType.UNSIGNED: "UBIGINT",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.STRING: "VARCHAR",
}


def _to_arrow(values: Any, *, column: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values
    try:
        if isinstance(values, np.ndarray):
            if values.dtype.kind in "OUS":
                return pa.array(values.tolist() if values.dtype.kind == "O" else values.astype(str))
            return pa.array(values)
        return pa.array(list(values) if not isinstance(values, list) else values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot use column {column!r}: {exc}") from exc


def _as_time_ns(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype("datetime64[ns]").view(np.int64)
    arr = _to_arrow(values, column=TIME_COLUMN)
    if arr.null_count:
        raise InvalidInput("cannot use column 'time': contains nulls")
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.timestamp("ns", arr.type.tz)).view(pa.int64())
    elif pa.types.is_integer(arr.type):
        try:
            arr = arr.cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"cannot use column 'time': {exc}") from exc
    else:
        raise InvalidInput(f"cannot use column 'time': expected int64 nanoseconds, got {arr.type}")
    return arr.to_numpy(zero_copy_only=False)


def _as_tag(values: Any, *, column: str) -> pa.Array:
    arr = _to_arrow(values, column=column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    if not pa.types.is_string(arr.type):
        raise InvalidInput(f"cannot use tag {column!r}: tag values must be strings, got {arr.type}")
    return arr


def _as_field(values: Any, *, column: str) -> pa.Array:
    arr = _to_arrow(values, column=column)
    if pa.types.is_null(arr.type):
        raise InvalidInput(f"cannot use field {column!r}: no non-null value to infer its type from")
    ftype = FieldType.of_arrow(arr.type, column=column)
    if arr.type != ftype.arrow_type:
        arr = arr.cast(ftype.arrow_type)
    return arr


@dataclass(frozen=True, eq=False)
class TableBatch:
    """Rows for one table, column by column. Build with :meth:`build` or :meth:`from_arrow`."""

    db: str
    table: str
    time: np.ndarray
    tags: Mapping[str, pa.Array] = field(default_factory=dict)
    fields: Mapping[str, pa.Array] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.time)

    @property
    def num_samples(self) -> int:
        """Number of non-null field values (what Prometheus and VictoriaMetrics call samples)."""
        return sum(len(a) - a.null_count for a in self.fields.values())

    @functools.cached_property
    def encoded_tags(self) -> dict[str, pa.DictionaryArray]:
        """Tag columns dictionary-encoded (computed once; the WAL and the buffer both use it)."""
        return {name: arr.dictionary_encode() for name, arr in self.tags.items()}

    def field_types(self) -> dict[str, FieldType]:
        return {name: FieldType.of_arrow(arr.type, column=name) for name, arr in self.fields.items()}

    @classmethod
    def build(
        cls,
        table: str,
        time: Any,
        *,
        tags: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        db: str = "default",
    ) -> TableBatch:
        """Validate and normalise columns into a batch.

        Raises:
            InvalidName: a database, table or column name is not allowed.
            InvalidInput: lengths differ, a type is unsupported, time has nulls, no fields.
        """
        validate_db(db)
        validate_table(table)
        time_ns = _as_time_ns(time)
        n = len(time_ns)
        tag_cols: dict[str, pa.Array] = {}
        field_cols: dict[str, pa.Array] = {}
        for name, values in (tags or {}).items():
            validate_column(name)
            tag_cols[name] = _as_tag(values, column=name)
        for name, values in (fields or {}).items():
            validate_column(name)
            if name in tag_cols:
                raise InvalidName(
                    f"cannot write table {table!r}: {name!r} is given both as a tag and a field",
                    name=name,
                )
            field_cols[name] = _as_field(values, column=name)
        if not field_cols:
            raise InvalidInput(f"cannot write table {table!r}: a batch needs at least one field")
        for name, arr in (*tag_cols.items(), *field_cols.items()):
            if len(arr) != n:
                raise InvalidInput(
                    f"cannot write table {table!r}: column {name!r} has {len(arr)} values but time has {n}"
                )
        return cls(db=db, table=table, time=time_ns, tags=tag_cols, fields=field_cols)

    @classmethod
    def from_arrow(
        cls,
        table: str,
        data: pa.Table | pa.RecordBatch,
        *,
        tags: Iterable[str] | None = None,
        db: str = "default",
    ) -> TableBatch:
        """Split an Arrow table into time, tags and fields.

        A column is a tag when it is named in ``tags``, has a dictionary<string> type, or carries
        the field metadata :data:`TAG_METADATA`; every other non-time column is a field.
        """
        names = data.schema.names
        if TIME_COLUMN not in names:
            raise InvalidInput(f"cannot write table {table!r}: the Arrow data has no 'time' column")
        tag_set = set(tags or ())
        unknown = tag_set - set(names)
        if unknown:
            raise InvalidInput(f"cannot write table {table!r}: tag columns {sorted(unknown)} are missing")
        tag_cols: dict[str, Any] = {}
        field_cols: dict[str, Any] = {}
        for i, name in enumerate(names):
            if name == TIME_COLUMN:
                continue
            fld = data.schema.field(i)
            col = data.column(i)
            is_tag = (
                name in tag_set
                or (pa.types.is_dictionary(fld.type) and pa.types.is_string(fld.type.value_type))
                or (fld.metadata or {}).get(b"tsengine.kind") == b"tag"
            )
            (tag_cols if is_tag else field_cols)[name] = col
        return cls.build(table, data.column(TIME_COLUMN), tags=tag_cols, fields=field_cols, db=db)

    @classmethod
    def concat(cls, batches: list[TableBatch]) -> TableBatch:
        """One batch of the rows of several batches of the same table, in order.

        A column missing from some of the batches reads null on their rows; field types must
        agree (the schema check of the engine reports a conflict before this is called).
        """
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        tag_names = list(dict.fromkeys(n for b in batches for n in b.tags))
        field_types: dict[str, pa.DataType] = {}
        for b in batches:
            for n, a in b.fields.items():
                field_types.setdefault(n, a.type)

        def column(get: Any, name: str, dtype: pa.DataType) -> pa.Array:
            parts = []
            for b in batches:
                arr = get(b).get(name)
                parts.append(arr.cast(dtype) if arr is not None else pa.nulls(b.num_rows, dtype))
            return pa.concat_arrays(parts)

        return cls(
            db=first.db,
            table=first.table,
            time=np.concatenate([b.time for b in batches]),
            tags={n: column(lambda b: b.tags, n, pa.string()) for n in tag_names},
            fields={n: column(lambda b: b.fields, n, t) for n, t in field_types.items()},
        )

    def take(self, indices: np.ndarray) -> TableBatch:
        """Rows at ``indices`` (used to split a batch by partition or drop rows)."""
        idx = pa.array(indices)
        return TableBatch(
            db=self.db,
            table=self.table,
            time=self.time[indices],
            tags={k: pc.take(v, idx) for k, v in self.tags.items()},
            fields={k: pc.take(v, idx) for k, v in self.fields.items()},
        )
