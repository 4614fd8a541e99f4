"""Ring buffers: the live, not-yet-persisted rows of each table, as fixed-capacity numpy chunks.

A table's live rows sit in a FIFO of :class:`Chunk` objects: the newest accepts appends, the
others are frozen and waiting for the persister. A chunk has a fixed capacity chosen when it
is allocated (small for a new table, growing x4 up to ``max_chunk_rows``), so memory grows by
whole, accounted chunks and the engine can refuse a write (Overloaded) instead of growing past
its bound. Once persisted, a chunk is dropped; its memory returns to the allocator as soon as
no query snapshot still reads it (Arrow views of the arrays hold references), which is how its
slots are reused without a query ever seeing a recycled row.

Tags are stored as int32 codes into a per-table, per-column dictionary (-1 = tag absent);
every distinct tag combination gets a series id (``sid``). Per series the table keeps the
latest time seen since the engine opened, which makes duplicate detection cheap: a row whose
time is later than everything its series had cannot duplicate anything, so only rows at or
before it ("overlapping" rows) mark their hour as needing de-duplication at query time.

Thread safety: none here; the engine serialises every call under its lock. Frozen chunks are
immutable and may be read from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tsengine.model.batch import FieldType, TableBatch
from tsengine.model.schema import TableSchema
from tsengine.persist.paths import NS_PER_HOUR

__all__ = ["Chunk", "Plan", "TableBuffer"]

INT64_MIN = np.iinfo(np.int64).min
_NUMPY_OF = {
    FieldType.FLOAT: np.float64,
    FieldType.INTEGER: np.int64,
    FieldType.UNSIGNED: np.uint64,
    FieldType.BOOLEAN: np.bool_,
    FieldType.STRING: object,
}
_FILL_OF = {
    FieldType.FLOAT: 0.0,
    FieldType.INTEGER: 0,
    FieldType.UNSIGNED: 0,
    FieldType.BOOLEAN: False,
    FieldType.STRING: "",
}


def _numpy_of(arr: pa.Array, ftype: FieldType) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, valid-or-None) of an Arrow field column, zero-copy where Arrow allows it."""
    if arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False), None
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, _FILL_OF[ftype]).to_numpy(zero_copy_only=False)
    return values, valid


def _string_of(arr: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """(values as an Arrow string array, valid-or-None) of a string field column (no copy)."""
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count == 0:
        return arr, None
    return arr, arr.is_valid().to_numpy(zero_copy_only=False)


class TagDictionary:
    """Append-only string → int32 code mapping of one tag column."""

    __slots__ = ("_arrow", "index", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self._arrow: pa.Array | None = None

    def add(self, values: list[str]) -> None:
        for v in values:
            self.index[v] = len(self.values)
            self.values.append(v)
        if values:
            self._arrow = None

    def arrow(self) -> pa.Array:
        if self._arrow is None or len(self._arrow) != len(self.values):
            self._arrow = pa.array(self.values, pa.string())
        return self._arrow


#: String pieces shorter than this are merged (copied) into one; longer ones are kept as written.
_STRING_PIECE_ROWS = 4096
#: At most this many short pieces wait at the end of a string column before they are merged.
_MAX_SHORT_PIECES = 64


class FieldColumn:
    """One field of a chunk: a fixed numpy array, or for strings a list of Arrow pieces.

    Strings stay in Arrow form as written (no Python object per value): appending a write's
    column is a list append, reading them is a zero-copy chunked array. Short pieces (small
    writes) are merged so that a chunk holds few pieces; ``string_bytes`` counts the buffers
    the pieces keep alive, for the engine's memory bound.
    """

    __slots__ = ("n_valid", "pieces", "short", "string_bytes", "type", "valid", "values")

    def __init__(self, ftype: FieldType, capacity: int, rows_before: int = 0) -> None:
        self.type = ftype
        self.valid = np.zeros(capacity, dtype=np.bool_)
        self.n_valid = 0
        self.pieces: list[pa.Array] = []
        self.short = 0  # trailing pieces shorter than _STRING_PIECE_ROWS
        self.string_bytes = 0
        if ftype is FieldType.STRING:
            self.values = np.empty(0, dtype=object)  # unused: the pieces hold the values
            if rows_before:
                self.append_strings(pa.nulls(rows_before, pa.string()))
        else:
            self.values = np.empty(capacity, dtype=_NUMPY_OF[ftype])

    def append_strings(self, arr: pa.Array) -> None:
        self.pieces.append(arr)
        self.string_bytes += arr.get_total_buffer_size()
        if len(arr) >= _STRING_PIECE_ROWS:
            self.short = 0
            return
        self.short += 1
        tail = self.pieces[-self.short :]
        if self.short >= _MAX_SHORT_PIECES or sum(len(p) for p in tail) >= _STRING_PIECE_ROWS:
            merged = pa.concat_arrays(tail)
            self.string_bytes += merged.get_total_buffer_size() - sum(p.get_total_buffer_size() for p in tail)
            del self.pieces[-self.short :]
            self.pieces.append(merged)
            self.short = 0


class Chunk:
    """Fixed-capacity column arrays of one table's live rows."""

    def __init__(self, capacity: int, created_s: float) -> None:
        self.capacity = capacity
        self.n = 0
        self.time = np.empty(capacity, dtype=np.int64)
        self.sid = np.empty(capacity, dtype=np.int32)
        self.tags: dict[str, np.ndarray] = {}
        self.tag_nulls: dict[str, int] = {}
        self.fields: dict[str, FieldColumn] = {}
        self.min_seq = 0
        self.max_seq = 0
        self.min_ns = np.iinfo(np.int64).max
        self.max_ns = INT64_MIN
        self.dirty_hours: set[int] = set()
        self.created_s = created_s
        self.frozen = False
        self.nbytes = capacity * 12

    def fits(self, rows: int) -> bool:
        return not self.frozen and self.n + rows <= self.capacity

    def _tag(self, name: str) -> np.ndarray:
        arr = self.tags.get(name)
        if arr is None:
            arr = self.tags[name] = np.full(self.capacity, -1, dtype=np.int32)
            self.tag_nulls[name] = self.n
            self.nbytes += 4 * self.capacity
        return arr

    def _field(self, name: str, ftype: FieldType) -> FieldColumn:
        col = self.fields.get(name)
        if col is None:
            col = self.fields[name] = FieldColumn(ftype, self.capacity, rows_before=self.n)
            item = 0 if ftype is FieldType.STRING else col.values.itemsize
            self.nbytes += (item + 1) * self.capacity + col.string_bytes
        return col

    def append(self, plan: Plan, seq: int) -> None:
        lo, hi = self.n, self.n + plan.n
        self.time[lo:hi] = plan.time
        self.sid[lo:hi] = plan.sid
        for name, codes in plan.tag_codes.items():
            self._tag(name)[lo:hi] = codes
            self.tag_nulls[name] += plan.tag_null_counts[name]
        for name in self.tags.keys() - plan.tag_codes.keys():
            self.tags[name][lo:hi] = -1
            self.tag_nulls[name] += plan.n
        for name, (ftype, values, valid) in plan.fields.items():
            col = self._field(name, ftype)
            if ftype is FieldType.STRING:
                before = col.string_bytes
                col.append_strings(values)
                self.nbytes += col.string_bytes - before
            else:
                col.values[lo:hi] = values
            if valid is None:
                col.valid[lo:hi] = True
                col.n_valid += plan.n
            else:
                col.valid[lo:hi] = valid
                col.n_valid += int(valid.sum())
        for name in self.fields.keys() - plan.fields.keys():
            col = self.fields[name]
            col.valid[lo:hi] = False
            if col.type is FieldType.STRING:
                before = col.string_bytes
                col.append_strings(pa.nulls(plan.n, pa.string()))
                self.nbytes += col.string_bytes - before
        self.n = hi
        self.min_seq = self.min_seq or seq
        self.max_seq = seq
        self.min_ns = min(self.min_ns, plan.min_ns)
        self.max_ns = max(self.max_ns, plan.max_ns)
        self.dirty_hours |= plan.dirty_hours

    def to_arrow(self, dictionaries: Mapping[str, pa.Array], n: int | None = None) -> pa.Table:
        """The first ``n`` rows (default all) as an Arrow table, zero-copy where possible.

        Columns: ``time`` (timestamp[ns]), each tag (dictionary<int32, string>), each field.
        """
        n = self.n if n is None else n
        cols: dict[str, pa.Array] = {
            "time": pa.Array.from_buffers(pa.timestamp("ns"), n, [None, pa.py_buffer(self.time[:n])])
        }
        for name, codes in self.tags.items():
            c = codes[:n]
            if self.tag_nulls[name]:
                idx = pa.array(c, type=pa.int32(), mask=c < 0)
            else:
                idx = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(c)])
            # A tag null on every row so far has no dictionary yet.
            values = dictionaries.get(name)
            if values is None:
                values = pa.array([], pa.string())
            cols[name] = pa.DictionaryArray.from_arrays(idx, values)
        for name, col in self.fields.items():
            cols[name] = _field_arrow(col, n)
        return pa.table(cols)


def _field_arrow(col: FieldColumn, n: int) -> pa.Array | pa.ChunkedArray:
    if col.type is FieldType.STRING:
        pieces = list(col.pieces)  # a snapshot: later appends and merges do not reach it
        if len(pieces) == 1:
            return pieces[0].slice(0, n)
        return pa.chunked_array(pieces, pa.string()).slice(0, n)
    values = col.values[:n]
    all_valid = col.n_valid == n
    if col.type is FieldType.BOOLEAN:
        return pa.array(values, type=pa.bool_(), mask=None if all_valid else ~col.valid[:n])
    atype = col.type.arrow_type
    if all_valid:
        return pa.Array.from_buffers(atype, n, [None, pa.py_buffer(values)])
    bitmap = pa.py_buffer(np.packbits(col.valid[:n], bitorder="little"))
    return pa.Array.from_buffers(
        atype, n, [bitmap, pa.py_buffer(values)], null_count=n - int(col.valid[:n].sum())
    )


@dataclass
class Plan:
    """A batch checked and encoded against a table, ready to append; nothing applied yet."""

    n: int
    time: np.ndarray
    sid: np.ndarray
    tag_codes: dict[str, np.ndarray]
    tag_null_counts: dict[str, int]
    new_tag_values: dict[str, list[str]]
    new_series: list[tuple[int, ...]]
    fields: dict[str, tuple[FieldType, Any, np.ndarray | None]]  # values: numpy, or Arrow for strings
    min_ns: int
    max_ns: int
    dirty_hours: set[int]
    series_max: tuple[np.ndarray, np.ndarray]  # (sids, max time per sid) of this batch
    latest: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # field -> (sids, rows)


class TableBuffer:
    """Everything the engine keeps in memory for one table."""

    def __init__(self, db: str, schema: TableSchema, *, persisted_max_ns: int = INT64_MIN) -> None:
        self.db = db
        self.schema = schema
        self.dicts: dict[str, TagDictionary] = {}
        self.series: dict[tuple[int, ...], int] = {}
        self.series_max_ns = np.full(64, INT64_MIN, dtype=np.int64)
        #: max time of rows persisted before this process opened the table (duplicate guard)
        self.persisted_max_ns = persisted_max_ns
        self.chunks: list[Chunk] = []
        self.latest_ns: dict[str, np.ndarray] = {}
        self.latest_val: dict[str, np.ndarray] = {}
        self.latest_loaded = False

    @property
    def table(self) -> str:
        return self.schema.table

    @property
    def num_series(self) -> int:
        return len(self.series)

    # -- planning (pure: reads state, changes nothing) ---------------------------------------

    def plan(self, batch: TableBatch, schema: TableSchema) -> Plan:
        n = batch.num_rows
        time = batch.time
        tag_codes: dict[str, np.ndarray] = {}
        null_counts: dict[str, int] = {}
        new_values: dict[str, list[str]] = {}
        for name, enc in batch.encoded_tags.items():
            d = self.dicts.get(name)
            distinct = enc.dictionary.to_pylist()
            mapping = np.empty(max(len(distinct), 1), dtype=np.int32)
            pending: list[str] = []
            base = len(d.values) if d is not None else 0
            for i, v in enumerate(distinct):
                code = d.index.get(v) if d is not None else None
                if code is None:
                    code = base + len(pending)
                    pending.append(v)
                mapping[i] = code
            idx = enc.indices
            if idx.null_count:
                valid = idx.is_valid().to_numpy(zero_copy_only=False)
                codes = mapping[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)]
                codes[~valid] = -1
                null_counts[name] = int(n - valid.sum())
            else:
                codes = mapping[idx.to_numpy(zero_copy_only=False)] if n else np.empty(0, np.int32)
                null_counts[name] = 0
            tag_codes[name] = codes
            if pending:
                new_values[name] = pending
        sid, new_series, inv, n_uniq = self._series_ids(schema.tags, tag_codes, n)
        # Sort rows by (series, time, position): gives per-series last rows and duplicates.
        order = np.lexsort((np.arange(n), time, inv))
        inv_s = inv[order]
        group_end = np.flatnonzero(np.diff(inv_s)) if n else np.empty(0, np.int64)
        last_rows = order[np.append(group_end, n - 1)] if n else order
        uniq_sids = sid[last_rows]
        batch_max = time[last_rows]
        # An append-only table keeps every row: nothing to mark for de-duplication.
        dirty_hours: set[int] = set()
        if not schema.append_only:
            batch_min = time[order[np.insert(group_end + 1, 0, 0)]] if n else time
            # Rows that may duplicate an existing row: at or before their series' latest time, or
            # before anything persisted before open, or equal to another row of this batch.
            prior = np.full(n_uniq, INT64_MIN, dtype=np.int64)
            known = uniq_sids < len(self.series_max_ns)
            prior[known] = self.series_max_ns[uniq_sids[known]]
            suspect = (batch_min <= prior) | (batch_min <= self.persisted_max_ns)
            dup_in_batch = (np.diff(inv_s) == 0) & (np.diff(time[order]) == 0) if n > 1 else np.zeros(0, bool)
            if suspect.any() or dup_in_batch.any():
                row_prior = np.maximum(prior[inv], self.persisted_max_ns)
                mask = time <= row_prior
                if dup_in_batch.any():
                    mask[order[1:][dup_in_batch]] = True
                dirty_hours = set((np.unique(time[mask]) // NS_PER_HOUR).tolist())
        fields: dict[str, tuple[FieldType, np.ndarray, np.ndarray | None]] = {}
        latest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, arr in batch.fields.items():
            ftype = schema.fields[name]
            values, valid = _string_of(arr) if ftype is FieldType.STRING else _numpy_of(arr, ftype)
            fields[name] = (ftype, values, valid)
            if valid is None:
                latest[name] = (uniq_sids, last_rows)
            else:
                sub = order[valid[order]]
                if len(sub):
                    ends = np.append(np.flatnonzero(np.diff(inv[sub])), len(sub) - 1)
                    rows = sub[ends]
                    latest[name] = (sid[rows], rows)
        return Plan(
            n=n,
            time=time,
            sid=sid,
            tag_codes=tag_codes,
            tag_null_counts=null_counts,
            new_tag_values=new_values,
            new_series=new_series,
            fields=fields,
            min_ns=int(time.min()) if n else 0,
            max_ns=int(time.max()) if n else 0,
            dirty_hours=dirty_hours,
            series_max=(uniq_sids, batch_max),
            latest=latest,
        )

    def _series_ids(
        self, tag_names: list[str], codes: dict[str, np.ndarray], n: int
    ) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, int]:
        """(sid per row, new series keys in sid order, row → unique-index, number of uniques)."""
        if not tag_names or n == 0:
            keys_rows: list[tuple[int, ...]] = [()]
            inv = np.zeros(n, dtype=np.int64)
        else:
            mat = np.full((n, len(tag_names)), -1, dtype=np.int32)
            for j, t in enumerate(tag_names):
                if t in codes:
                    mat[:, j] = codes[t]
            if mat.shape[1] == 1:
                _uniq, first, inv = np.unique(mat[:, 0], return_index=True, return_inverse=True)
            else:
                h = mat[:, 0].astype(np.uint64)
                for j in range(1, mat.shape[1]):
                    h = h * np.uint64(0x9E3779B97F4A7C15) ^ mat[:, j].astype(np.uint64)
                _, first, inv = np.unique(h, return_index=True, return_inverse=True)
                if not np.array_equal(mat, mat[first][inv]):  # hash collision: exact path
                    view = np.ascontiguousarray(mat).view(np.dtype((np.void, mat.shape[1] * 4)))
                    _, first, inv = np.unique(view.ravel(), return_index=True, return_inverse=True)
            keys_rows = [_strip(tuple(r)) for r in mat[first].tolist()]
            inv = inv.ravel()
        sid_of = np.empty(len(keys_rows), dtype=np.int32)
        new: list[tuple[int, ...]] = []
        base = len(self.series)
        for i, key in enumerate(keys_rows):
            s = self.series.get(key)
            if s is None:
                s = base + len(new)
                new.append(key)
            sid_of[i] = s
        return sid_of[inv], new, inv, len(keys_rows)

    # -- applying (after the WAL accepted the batch) ------------------------------------------

    def next_capacity(self, rows: int, min_rows: int, max_rows: int) -> int:
        last = self.chunks[-1].capacity if self.chunks else 0
        cap = min(max_rows, max(min_rows, last * 4))
        return max(cap, rows)

    def active_chunk(self) -> Chunk | None:
        if self.chunks and not self.chunks[-1].frozen:
            return self.chunks[-1]
        return None

    def apply(self, plan: Plan, chunk: Chunk, seq: int) -> None:
        for name, new_values in plan.new_tag_values.items():
            self.dicts.setdefault(name, TagDictionary()).add(new_values)
        for key in plan.new_series:
            self.series[key] = len(self.series)
        self._grow_series_arrays()
        sids, bmax = plan.series_max
        self.series_max_ns[sids] = np.maximum(self.series_max_ns[sids], bmax)
        chunk.append(plan, seq)
        for name, (sids, rows) in plan.latest.items():
            ftype, field_values, _valid = plan.fields[name]
            if ftype is FieldType.STRING:  # only the last value per series becomes a Python str
                last = field_values.take(pa.array(rows)).to_numpy(zero_copy_only=False)
            else:
                last = field_values[rows]
            self.merge_latest(name, ftype, sids, plan.time[rows], last, ties_win=True)

    def sid_of(self, key: tuple[int, ...]) -> int:
        """The series id of a tag-code key, registering a new series (outside a write plan)."""
        key = _strip(key)
        sid = self.series.get(key)
        if sid is None:
            sid = self.series[key] = len(self.series)
            self._grow_series_arrays()
        return sid

    def _grow_series_arrays(self) -> None:
        if len(self.series) > len(self.series_max_ns):
            grow = max(len(self.series), 2 * len(self.series_max_ns))
            self.series_max_ns = np.concatenate(
                [self.series_max_ns, np.full(grow - len(self.series_max_ns), INT64_MIN, np.int64)]
            )

    def merge_latest(
        self,
        name: str,
        ftype: FieldType,
        sids: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        *,
        ties_win: bool,
    ) -> None:
        """Take ``values`` as the latest of field ``name`` where their time is newer (or equal,
        with ``ties_win``: a later write of the same instant wins)."""
        size = len(self.series_max_ns)
        cur = self.latest_ns.get(name)
        if cur is None or len(cur) < size:
            old_ts, old_val = cur, self.latest_val.get(name)
            cur = np.full(size, INT64_MIN, dtype=np.int64)
            dtype = _NUMPY_OF[ftype]
            val = np.empty(size, dtype=dtype) if dtype is not object else np.full(size, None)
            if old_ts is not None and old_val is not None:
                cur[: len(old_ts)] = old_ts
                val[: len(old_val)] = old_val
            self.latest_ns[name], self.latest_val[name] = cur, val
        newer = ts >= cur[sids] if ties_win else ts > cur[sids]
        if newer.all():
            cur[sids] = ts
            self.latest_val[name][sids] = values
        elif newer.any():
            cur[sids[newer]] = ts[newer]
            self.latest_val[name][sids[newer]] = values[newer]

    def series_keys(self) -> list[tuple[int, ...]]:
        """Series keys in sid order."""
        keys: list[tuple[int, ...]] = [()] * len(self.series)
        for key, s in self.series.items():
            keys[s] = key
        return keys


def _strip(key: tuple[int, ...]) -> tuple[int, ...]:
    end = len(key)
    while end and key[end - 1] == -1:
        end -= 1
    return key[:end]
