"""Writing rows to Parquet partition files, and reading them back for compaction.

Input: an Arrow table of one table's rows (``time`` timestamp[ns], tags as strings or
dictionaries, fields typed). Output: one file per hour partition, each

* sorted by tag values (in schema order) then time, with duplicate (series, time) rows
  reduced to the last one written (the input order is the write order);
* zstd-compressed; tags dictionary-coded; ``time`` and integer fields DELTA_BINARY_PACKED;
* float fields stored as **scaled integers** (Parquet DECIMAL(18, d) on INT64, delta-coded)
  when every value of the column in that file is exactly ``k / 10**d`` for some d ≤
  ``max_scaled_decimals`` — checked bit for bit, so reading the value back as DOUBLE
  (DuckDB's decimal→double cast is a correctly rounded division) gives the very float that was
  written; otherwise BYTE_STREAM_SPLIT (FINDINGS: it shrinks full-precision floats a little,
  and plain+zstd beats it on few-decimal data, which the scaled path takes instead);
* written to ``<name>.tmp``, fsynced, renamed, and the directory fsynced: a crash leaves either
  no file or a whole one (stray ``.tmp`` files are removed when the engine opens).

Blocking I/O: call from the persister thread, never from the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tsengine.durable import atomic_write
from tsengine.errors import StorageError
from tsengine.model.batch import FieldType
from tsengine.model.schema import Column, TableSchema
from tsengine.persist.paths import NS_PER_HOUR

__all__ = ["WrittenFile", "read_files", "scaled_decimals", "sort_dedup_split", "write_file"]

_MAX_EXACT = float(2**53)
_TAGS_KEY = b"tsengine.tags"


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    rows: int
    min_ns: int
    max_ns: int
    bytes: int


def scaled_decimals(values: np.ndarray, max_decimals: int) -> tuple[int, np.ndarray] | None:
    """``(d, k)`` with ``k / 10**d`` bit-identical to ``values`` for the smallest d, or None."""
    if values.size == 0 or max_decimals < 0:
        return None
    if not np.isfinite(values).all() or np.abs(values).max() >= _MAX_EXACT:
        return None
    bits = values.view(np.int64)
    step = max(1, values.size // 2048)
    sample, sample_bits = values[::step], bits[::step]
    # Compare through the int64 form that is stored: -0.0 survives np.round but not the int.
    for d in range(max_decimals + 1):
        p = 10.0**d
        kf = np.round(sample * p)
        if np.abs(kf).max() >= _MAX_EXACT:
            break  # larger d only scales further out of the exact range
        k = kf.astype(np.int64)
        if not np.array_equal((k / p).view(np.int64), sample_bits):
            continue
        kf = np.round(values * p)
        if np.abs(kf).max() >= _MAX_EXACT:
            break
        k = kf.astype(np.int64)
        if np.array_equal((k / p).view(np.int64), bits):
            return d, k
    return None


def _rank_of_tag(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per-row rank of the tag value in sort order (-1 for null), as int64."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    values = col.dictionary
    order = pc.array_sort_indices(values).to_numpy()
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    idx = col.indices
    if idx.null_count:
        valid = idx.is_valid().to_numpy(zero_copy_only=False)
        out = (
            rank[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)]
            if len(rank)
            else np.zeros(len(idx), np.int64)
        )
        out[~valid] = -1
        return out
    return rank[idx.to_numpy(zero_copy_only=False)] if len(idx) else np.empty(0, np.int64)


def sort_dedup_split(
    data: pa.Table, tag_names: list[str], span_hours: int = 1, *, dedup: bool = True
) -> list[tuple[int, pa.Table]]:
    """Sort by (partition, tags, time), merge the rows of each (series, time), split.

    Rows of the same series and time merge field by field, the last-written non-null value of
    each field winning (InfluxDB's rule for duplicate points; for a single-field table it is
    plain last-write-wins). Partitions are ``span_hours`` long (1: hour files, 24: day files).
    ``data`` must be in write order. Returns ``[(first_hour_of_partition, rows), ...]``.
    ``dedup=False`` (append-only tables) sorts and splits but keeps every row.
    """
    n = data.num_rows
    if n == 0:
        return []
    time = data.column("time").combine_chunks().view(pa.int64()).to_numpy(zero_copy_only=False)
    hour = time // (NS_PER_HOUR * span_hours) * span_hours
    present_tags = [t for t in tag_names if t in data.column_names]
    ranks = [_rank_of_tag(data.column(t)) for t in present_tags]
    # lexsort: last key is primary; equal keys keep input order (stable), so within a run of
    # duplicates the rows stay in write order.
    perm = np.lexsort([time, *reversed(ranks), hour])
    t_sorted = time[perm]
    same = t_sorted[1:] == t_sorted[:-1]
    for r in ranks:
        rs = r[perm]
        same &= rs[1:] == rs[:-1]
    if dedup and same.any():
        out_sorted = _merge_runs(data, perm, same, set(present_tags))
        perm = perm[np.append(~same, True)]
    else:
        out_sorted = data.take(pa.array(perm))
    hours = hour[perm]
    bounds = np.flatnonzero(np.diff(hours)) + 1
    starts = np.insert(bounds, 0, 0)
    ends = np.append(bounds, len(hours))
    return [(int(hours[s]), out_sorted.slice(s, e - s)) for s, e in zip(starts, ends, strict=True)]


def _merge_runs(data: pa.Table, perm: np.ndarray, same: np.ndarray, tags: set[str]) -> pa.Table:
    """One row per run of equal (series, time) in ``perm`` order: last non-null per field."""
    n = len(perm)
    starts = np.flatnonzero(np.append(True, ~same))
    last = perm[np.append(starts[1:] - 1, n - 1)]
    positions = np.arange(n)
    cols = {}
    for name in data.column_names:
        col = data.column(name)
        if name == "time" or name in tags or col.null_count == 0:
            cols[name] = pc.take(col, pa.array(last))
            continue
        valid = col.is_valid().to_numpy(zero_copy_only=False)[perm]
        last_valid = np.maximum.reduceat(np.where(valid, positions, -1), starts)
        idx = pa.array(np.where(last_valid >= 0, perm[np.maximum(last_valid, 0)], 0), mask=last_valid < 0)
        cols[name] = pc.take(col, idx)
    return pa.table(cols)


def _encode(
    data: pa.Table, schema: TableSchema, max_decimals: int
) -> tuple[pa.Table, dict[str, str], list[str]]:
    """Choose each column's physical form; returns (table, column_encoding, dictionary cols)."""
    encoding: dict[str, str] = {"time": "DELTA_BINARY_PACKED"}
    dictionary: list[str] = []
    arrays, fields = [], []
    for name in data.column_names:
        col = data.column(name).combine_chunks()
        if name == "time":
            arrays.append(col)
            fields.append(pa.field("time", pa.timestamp("ns")))
            continue
        spec = schema.get(name)
        kind = spec.kind if spec is not None else ("tag" if pa.types.is_dictionary(col.type) else "field")
        if kind == "tag":
            if pa.types.is_dictionary(col.type):
                col = col.cast(pa.string())
            dictionary.append(name)
        elif pa.types.is_floating(col.type):
            filled = (
                pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False) if col.null_count else col.to_numpy()
            )
            scaled = scaled_decimals(np.ascontiguousarray(filled, dtype=np.float64), max_decimals)
            if scaled is not None:
                d, k = scaled
                validity = col.buffers()[0] if col.null_count else None
                if validity is not None and col.offset:
                    validity = pa.array(col.is_valid()).buffers()[1]
                col = pa.Array.from_buffers(
                    pa.decimal64(18, d), len(k), [validity, pa.py_buffer(k)], null_count=col.null_count
                )
                encoding[name] = "DELTA_BINARY_PACKED"
            else:
                encoding[name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_integer(col.type):
            encoding[name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(col.type):
            dictionary.append(name)
        arrays.append(col)
        fields.append(pa.field(name, col.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), encoding, dictionary


def write_file(
    path: Path,
    data: pa.Table,
    schema: TableSchema,
    *,
    row_group_rows: int,
    zstd_level: int = 3,
    max_decimals: int = 6,
) -> WrittenFile:
    """Write sorted rows of one partition atomically (tmp, fsync, rename, fsync dir)."""
    table, encoding, dictionary = _encode(data, schema, max_decimals)
    tags = [c for c in dictionary if (schema.get(c) or Column(c, "field", FieldType.STRING)).kind == "tag"]
    table = table.replace_schema_metadata({_TAGS_KEY: json.dumps(tags).encode()})
    try:
        atomic_write(
            path,
            lambda f: pq.write_table(
                table,
                f,
                row_group_size=row_group_rows,
                compression="zstd",
                compression_level=zstd_level,
                use_dictionary=dictionary,
                column_encoding={k: v for k, v in encoding.items() if k in table.column_names},
                store_decimal_as_integer=True,
                write_statistics=True,
            ),
        )
    except OSError as exc:
        raise StorageError(f"cannot write Parquet file: {exc}", path=str(path)) from exc
    time = data.column("time")
    return WrittenFile(
        path=path,
        rows=data.num_rows,
        min_ns=int(pc.min(time).cast(pa.int64()).as_py()),
        max_ns=int(pc.max(time).cast(pa.int64()).as_py()),
        bytes=path.stat().st_size,
    )


def file_columns(path: Path) -> tuple[list[Column], int, int, int]:
    """Columns (kind from the file's metadata), rows, min and max time of an existing file."""
    meta = pq.read_metadata(path)
    arrow_schema = meta.schema.to_arrow_schema()
    tags = set(json.loads((arrow_schema.metadata or {}).get(_TAGS_KEY, b"[]")))
    cols = []
    for f in arrow_schema:
        if f.name == "time":
            continue
        if f.name in tags:
            cols.append(Column(f.name, "tag", FieldType.STRING))
        else:
            cols.append(Column(f.name, "field", FieldType.of_arrow(f.type, column=f.name)))
    t = pq.read_table(path, columns=["time"]).column("time")
    tn = t.cast(pa.int64()) if len(t) else None
    lo = int(pc.min(tn).as_py()) if tn is not None else 0
    hi = int(pc.max(tn).as_py()) if tn is not None else 0
    return cols, meta.num_rows, lo, hi


def _decimal_to_float(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Scaled integers back to the exact floats (Arrow's own cast is not correctly rounded)."""
    chunks = []
    for raw in col.chunks:
        scale = raw.type.scale
        chunk = raw.cast(pa.decimal64(18, scale)) if raw.type.byte_width != 8 else raw
        data = chunk.buffers()[1]
        k = np.frombuffer(data, dtype=np.int64, count=len(chunk) + chunk.offset)[chunk.offset :]
        values = k / 10.0**scale
        mask = None if not chunk.null_count else ~chunk.is_valid().to_numpy(zero_copy_only=False)
        chunks.append(pa.array(values, pa.float64(), mask=mask))
    return pa.chunked_array(chunks, pa.float64())


def read_files(paths: list[Path], schema: TableSchema) -> pa.Table:
    """Read files (in the given order) as one table in the schema's logical types."""
    parts = []
    for p in paths:
        t = pq.read_table(p)
        cols = {"time": t.column("time").cast(pa.timestamp("ns"))}
        for c in schema.columns:
            if c.name not in t.column_names:
                continue
            col = t.column(c.name)
            if c.kind == "tag":
                if pa.types.is_dictionary(col.type):
                    col = col.cast(pa.string())
            elif pa.types.is_decimal(col.type):
                col = _decimal_to_float(col)
            elif col.type != c.type.arrow_type:
                col = col.cast(c.type.arrow_type)
            cols[c.name] = col
        parts.append(pa.table(cols))
    if not parts:
        return pa.table({"time": pa.array([], pa.timestamp("ns"))})
    return pa.concat_tables(parts, promote_options="default")
