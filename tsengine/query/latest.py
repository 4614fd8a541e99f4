"""Latest-value access: the last sample of every series, from memory.

The ring buffer keeps, per series and field, the time and value of the latest sample written
since the engine opened (updated on every write, vectorised). Samples persisted before the
engine opened are read once per table, on first use, from the Parquet files (one grouped
``arg_max`` scan) and merged by time. After that, :func:`build` never touches the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from tsengine.query.views import list_literal, quote_ident
from tsengine.write.buffer import INT64_MIN, TableBuffer, TagDictionary, _numpy_of

if TYPE_CHECKING:
    from tsengine.engine import Engine, TableState

__all__ = ["build", "load_persisted"]


def load_persisted(engine: Engine, st: TableState) -> None:
    """Merge the latest values of the persisted files into the buffer (once per table)."""
    with engine._lock:
        schema = st.schema
        files = [str(e.file.path(engine.path, st.db, schema.table)) for e in st.manifest.files.values()]
        engine._readers += 1
    try:
        result = None
        if files and schema.fields:
            tags = [quote_ident(t) for t in schema.tags]
            aggs = []
            for name in schema.fields:
                q = quote_ident(name)
                cast = f"CAST({q} AS DOUBLE)" if schema.fields[name].value == "float" else q
                aggs.append(f"max(time) FILTER (WHERE {q} IS NOT NULL) AS {quote_ident('__t_' + name)}")
                aggs.append(f"arg_max({cast}, time) FILTER (WHERE {q} IS NOT NULL) AS {q}")
            cols = ", ".join([*tags, *aggs])
            group = f" GROUP BY {', '.join(tags)}" if tags else ""
            sql = f"SELECT {cols} FROM read_parquet({list_literal(files)}, union_by_name=true){group}"
            result = engine.query.internal(sql)
    finally:
        engine.release([])
    with engine._lock:
        if st.buffer.latest_loaded:
            return
        if result is not None and result.num_rows:
            _merge(st.buffer, result)
        st.buffer.latest_loaded = True


def _merge(buf: TableBuffer, result: pa.Table) -> None:
    """Fold persisted latest values into the buffer; newer in-memory samples win."""
    tag_names = buf.schema.tags
    n = result.num_rows
    codes = []
    for t in tag_names:
        d = buf.dicts.setdefault(t, TagDictionary())
        col = result.column(t).to_pylist() if t in result.column_names else [None] * n
        new = sorted({v for v in col if v is not None and v not in d.index})
        d.add(new)
        codes.append([-1 if v is None else d.index[v] for v in col])
    sids = np.empty(n, dtype=np.int64)
    for i in range(n):
        key = tuple(c[i] for c in codes)
        end = len(key)
        while end and key[end - 1] == -1:
            end -= 1
        key = key[:end]
        s = buf.series.get(key)
        if s is None:
            s = buf.series[key] = len(buf.series)
        sids[i] = s
    size = max(len(buf.series), len(buf.series_max_ns))
    if size > len(buf.series_max_ns):
        buf.series_max_ns = np.concatenate(
            [buf.series_max_ns, np.full(size - len(buf.series_max_ns), INT64_MIN, np.int64)]
        )
    for name, ftype in buf.schema.fields.items():
        if name not in result.column_names:
            continue
        ts_col = result.column("__t_" + name).combine_chunks()
        valid = ts_col.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        ts = ts_col.cast(pa.timestamp("ns")).view(pa.int64()).fill_null(INT64_MIN).to_numpy()
        vals, _ = _numpy_of(result.column(name).combine_chunks().cast(ftype.arrow_type), ftype)
        cur_ts = buf.latest_ns.get(name)
        if cur_ts is None or len(cur_ts) < size:
            old_ts, old_val = cur_ts, buf.latest_val.get(name)
            cur_ts = np.full(size, INT64_MIN, dtype=np.int64)
            dtype = vals.dtype if ftype.value != "string" else object
            cur_val = np.empty(size, dtype=dtype) if dtype is not object else np.full(size, None)
            if old_ts is not None and old_val is not None:
                cur_ts[: len(old_ts)] = old_ts
                cur_val[: len(old_val)] = old_val
            buf.latest_ns[name], buf.latest_val[name] = cur_ts, cur_val
        take = valid & (ts > cur_ts[sids])
        buf.latest_ns[name][sids[take]] = ts[take]
        buf.latest_val[name][sids[take]] = vals[take]


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
