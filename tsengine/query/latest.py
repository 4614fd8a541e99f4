"""Latest-value access: the last sample of every series, from memory.

The ring buffer keeps, per series and field, the time and value of the latest sample written
since the engine opened (updated on every write, vectorised). Samples persisted before the
engine opened are read once per table, on first use, from the Parquet files (one grouped
``arg_max`` scan) and merged by time. After that, :func:`build` never touches the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from tsengine.model.batch import FieldType
from tsengine.model.schema import TableSchema
from tsengine.query.views import list_literal, quote_ident
from tsengine.write.buffer import INT64_MIN, TableBuffer, TagDictionary, _numpy_of

__all__ = ["build", "merge", "persisted_sql"]


def persisted_sql(schema: TableSchema, files: list[str]) -> str | None:
    """One grouped scan giving, per series and field, the latest time and value in ``files``."""
    if not files or not schema.fields:
        return None
    tags = [quote_ident(t) for t in schema.tags]
    aggs = []
    for name, ftype in schema.fields.items():
        q = quote_ident(name)
        cast = f"CAST({q} AS DOUBLE)" if ftype is FieldType.FLOAT else q
        aggs.append(f"max(time) FILTER (WHERE {q} IS NOT NULL) AS {quote_ident('__t_' + name)}")
        aggs.append(f"arg_max({cast}, time) FILTER (WHERE {q} IS NOT NULL) AS {q}")
    group = f" GROUP BY {', '.join(tags)}" if tags else ""
    source = f"read_parquet({list_literal(files)}, union_by_name=true)"
    return f"SELECT {', '.join([*tags, *aggs])} FROM {source}{group}"


def merge(buf: TableBuffer, result: pa.Table) -> None:
    """Fold persisted latest values into the buffer; samples written since open win ties."""
    n = result.num_rows
    codes = []
    for t in buf.schema.tags:
        d = buf.dicts.setdefault(t, TagDictionary())
        col = result.column(t).to_pylist() if t in result.column_names else [None] * n
        d.add(sorted({v for v in col if v is not None and v not in d.index}))
        codes.append([-1 if v is None else d.index[v] for v in col])
    sids = np.array([buf.sid_of(tuple(c[i] for c in codes)) for i in range(n)], dtype=np.int64)
    for name, ftype in buf.schema.fields.items():
        if name not in result.column_names:
            continue
        ts_col = result.column("__t_" + name).combine_chunks()
        valid = ts_col.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        ts = ts_col.cast(pa.timestamp("ns")).view(pa.int64()).fill_null(INT64_MIN).to_numpy()
        vals, _ = _numpy_of(result.column(name).combine_chunks().cast(ftype.arrow_type), ftype)
        buf.merge_latest(name, ftype, sids[valid], ts[valid], vals[valid], ties_win=False)


def build(buf: TableBuffer, where: Mapping[str, Any] | None) -> pa.Table:
    """Arrow table of the latest values, one row per series (filtered by tag values)."""
    keys = buf.series_keys()
    tag_names = buf.schema.tags
    fields = buf.schema.fields
    n = len(keys)
    if n == 0:
        return pa.table({"time": pa.array([], pa.timestamp("ns"))})
    code_cols = np.full((n, len(tag_names)), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        code_cols[i, : len(key)] = key
    mask = np.ones(n, dtype=bool)
    for tag, wanted in (where or {}).items():
        if tag not in tag_names:
            mask[:] = False
            continue
        d = buf.dicts.get(tag)
        values = [wanted] if isinstance(wanted, str) else list(wanted)
        wanted_codes = [d.index[v] for v in values if d is not None and v in d.index]
        mask &= np.isin(code_cols[:, tag_names.index(tag)], wanted_codes)
    any_ts = np.full(n, INT64_MIN, dtype=np.int64)
    for name in fields:
        ts = buf.latest_ns.get(name)
        if ts is not None:
            m = min(n, len(ts))
            any_ts[:m] = np.maximum(any_ts[:m], ts[:m])
    mask &= any_ts > INT64_MIN
    idx = np.flatnonzero(mask)
    cols: dict[str, pa.Array] = {}
    for j, tag in enumerate(tag_names):
        d = buf.dicts.get(tag)
        codes = code_cols[idx, j]
        values = d.arrow() if d is not None else pa.array([], pa.string())
        cols[tag] = pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32), mask=codes < 0), values
        ).cast(pa.string())
    cols["time"] = pa.array(any_ts[idx], pa.int64()).cast(pa.timestamp("ns"))
    for name, ftype in fields.items():
        ts = buf.latest_ns.get(name)
        vals = buf.latest_val.get(name)
        if ts is None or vals is None:
            cols[name] = pa.nulls(len(idx), ftype.arrow_type)
            continue
        sub = idx[idx < len(ts)]
        present = np.zeros(len(idx), dtype=bool)
        present[: len(sub)] = ts[sub] > INT64_MIN
        out = np.empty(len(idx), dtype=vals.dtype) if vals.dtype != object else np.full(len(idx), None)
        out[: len(sub)] = vals[sub]
        if vals.dtype == object:
            out[~present] = None
            cols[name] = pa.array(out, ftype.arrow_type, mask=~present)
        else:
            cols[name] = pa.array(out, ftype.arrow_type, mask=~present)
    return pa.table(cols)
