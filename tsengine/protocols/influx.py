"""InfluxDB line protocol → one :class:`~tsengine.model.TableBatch` per measurement.

Called by the HTTP write handlers (``/write``, ``/api/v2/write``) with the decompressed body; the
result goes to the write layer unchanged. Pure: no I/O, no shared state; safe to call from any
thread, and it blocks for the time it takes (about a third of a second per 1 M samples).

Data flow of :func:`parse`:

1. numpy finds the line ends, the spaces and every ``"`` and ``\\`` in the body.
2. Lines with a ``"`` or ``\\`` (quoted strings, escapes; a string may run over several lines)
   are parsed entry by entry by :mod:`._influx_scan`, the grammar's reference scanner.
3. All other lines take the fast path: each line is cut into series key, fields and timestamp at
   its spaces; series keys are dictionary-encoded and only the distinct ones are parsed; lines are
   grouped by the sequence of their field keys (checked byte for byte against the group's first
   line) and each field of a group becomes one Arrow string-view column over the body, cast to
   its type in one call. Whatever the fast path cannot vouch for — odd whitespace, a value that
   does not cast, mixed types — it hands back to the scanner, so both paths agree by construction
   and every error reason comes from the scanner.
4. Rows are merged per measurement in line order; a field with two types in one request, or a
   name used both as tag and field, is an error naming both lines.

InfluxDB 1.x stores the good lines of a request with bad ones; tsengine refuses the whole request:
the first bad line raises :class:`~tsengine.errors.ParseError` with its 1-based ``line``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tsengine.errors import InvalidInput, InvalidName, ParseError
from tsengine.model import FieldType, TableBatch, validate_column, validate_db, validate_table
from tsengine.protocols._influx_scan import (
    MAX_TIME_NS,
    MIN_TIME_NS,
    PRECISION_NS,
    Entry,
    LineError,
    scan_entry,
    to_time_ns,
)

__all__ = ["PRECISION_NS", "parse"]

_NL, _CR, _SPACE, _TAB, _HASH, _QUOTE, _BACKSLASH = 10, 13, 32, 9, 35, 34, 92
_COMMA, _EQUALS, _MINUS = 44, 61, 45
_LOWER_I, _LOWER_U, _LOWER_X = 105, 117, 120

# Inline string views hold at most 12 bytes; row l keeps the first l of them.
_VIEW_INLINE = 12
_PAD = 16  # zero bytes after the body so 12-byte windows never run past it

_BOOL_START = np.zeros(256, bool)
_BOOL_START[list(b"tTfF")] = True
_NUMBER_START = np.zeros(256, bool)
_NUMBER_START[list(b"-0123456789.")] = True
_TIME_START = np.zeros(256, bool)
_TIME_START[list(b"-0123456789")] = True
_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
_BOOLEANS |= {"f": False, "F": False, "false": False, "False": False, "FALSE": False}

# Distinct field-key sequences tried per field count before the rest goes to the scanner; real
# writers (Telegraf, client libraries, TSBS) send a handful per request.
_MAX_TEMPLATES = 64


def parse(
    body: bytes, *, db: str = "default", precision: str = "ns", now_ns: int | None = None
) -> list[TableBatch]:
    """Parse a line-protocol request body into one batch per measurement, in order of appearance.

    Args:
        body: the request body, already decompressed.
        db: database the batches are for (validated).
        precision: unit of the timestamps: ``ns``/``n``, ``us``/``u``, ``ms``, ``s``, ``m``, ``h``.
        now_ns: server time in nanoseconds for lines without a timestamp (truncated to
            ``precision``, as InfluxDB does); read once from the clock when None.

    Raises:
        ParseError: the precision is unknown, or a line does not parse (``line`` is 1-based).
        InvalidName: ``db`` is not a valid database name.
    """
    return _parse(body, db=db, precision=precision, now_ns=now_ns, fast=True)


def _parse(body: bytes, *, db: str, precision: str, now_ns: int | None, fast: bool) -> list[TableBatch]:
    """:func:`parse`; ``fast=False`` sends every entry through the scanner (for tests)."""
    multiplier = PRECISION_NS.get(precision)
    if multiplier is None:
        raise ParseError(
            f"cannot parse line protocol: unknown precision {precision!r} "
            f"(expected one of {', '.join(PRECISION_NS)})"
        )
    validate_db(db)
    if now_ns is None:
        now_ns = time.time_ns()
    body = bytes(body)
    if not body:
        return []
    if len(body) >= 2**31 - _PAD:
        raise ParseError("cannot parse line protocol: body larger than 2 GiB")
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = body.count(b"\n", 0, exc.start) + 1
            column = exc.start - body.rfind(b"\n", 0, exc.start)
            raise ParseError(f"invalid UTF-8 at column {column}", line=line) from None
    return _Request(body, db, multiplier, now_ns - now_ns % multiplier, fast=fast).parse()


@dataclass
class _Piece:
    """Rows of one measurement: line indices (ascending), series codes, times and typed fields."""

    lines: np.ndarray
    codes: np.ndarray
    time_ns: np.ndarray
    fields: dict[str, tuple[FieldType, pa.Array]]
    first_line: dict[str, int] = field(default_factory=dict)  # per field, where it first appears


class _Request:
    """State of one :func:`parse` call."""

    def __init__(self, body: bytes, db: str, multiplier: int, default_ns: int, *, fast: bool = True) -> None:
        self.body = body
        self.fast = fast  # False: every entry through the scanner (tests compare the two paths)
        self.db = db
        self.multiplier = multiplier
        self.default_ns = default_ns
        self.pad = np.zeros(len(body) + _PAD, np.uint8)
        self.pad[: len(body)] = np.frombuffer(body, np.uint8)
        self.pad_buffer = pa.py_buffer(self.pad)
        self.arr = self.pad[: len(body)]
        # Series codes: 0..n_fast-1 are the fast path's distinct series keys, their tags held
        # column-wise (key -> values by code, null where absent); the scanner's follow.
        self.n_fast = 0
        self.fast_tags: dict[str, pa.Array] = {}
        self.series: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.series_code: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.pieces: dict[str, list[_Piece]] = {}
        self.entries: list[tuple[int, Entry]] = []
        self.errors: list[tuple[int, str]] = []  # (0-based line, reason)
        self.limit = 0  # lines at or after the first scanner error need no work

    # -- driver -----------------------------------------------------------------------------

    def parse(self) -> list[TableBatch]:
        arr = self.arr
        nl = np.flatnonzero(arr == _NL)
        starts = np.concatenate(([0], nl + 1))
        ends = np.concatenate((nl, [len(arr)]))
        if starts[-1] == len(arr):
            starts, ends = starts[:-1], ends[:-1]
        nlines = len(starts)
        self.starts = starts
        self.limit = nlines
        nonempty = ends > starts
        ends = ends - (nonempty & (self.pad[np.maximum(ends - 1, 0)] == _CR))

        # Lines with a backslash, or an odd number of quotes (a string running on), are the
        # scanner's. Quotes of the other lines delimit strings without escapes or newlines.
        dirty = np.zeros(nlines, bool)
        consumed = np.zeros(nlines, bool)
        self.quotes = np.empty(0, np.int64)
        if b'"' in self.body or b"\\" in self.body:
            special = np.flatnonzero((arr == _QUOTE) | (arr == _BACKSLASH))
            special_line = np.searchsorted(starts, special, "right") - 1
            is_quote = self.pad[special] == _QUOTE
            dirty[special_line[~is_quote]] = True
            dirty |= np.bincount(special_line[is_quote], minlength=nlines) % 2 == 1
            self._scan_dirty(np.flatnonzero(dirty), consumed)
            quote_line = special_line[is_quote]
            self.quotes = special[is_quote][~(dirty | consumed)[quote_line]]

        first = self.pad[starts]
        skip = (ends == starts) | (first == _HASH)
        simple = ~(skip | dirty | consumed | (first == _SPACE) | (first == _TAB))
        simple[self.limit :] = False
        spaces = self._outside_strings(np.flatnonzero(arr == _SPACE))
        space_line = np.searchsorted(starts, spaces, "right") - 1
        count = np.bincount(space_line, minlength=nlines)
        first_space = np.searchsorted(space_line, np.arange(nlines))
        simple &= (count == 1) | (count == 2)
        if not self.fast:
            simple[:] = False
        fast = np.flatnonzero(simple)
        declined: list[np.ndarray] = [np.flatnonzero(~(skip | consumed | simple))]
        if len(fast):
            fs = first_space[fast]
            sp1 = spaces[fs]
            has_ts = count[fast] == 2
            sp2 = np.where(has_ts, spaces[np.minimum(fs + 1, len(spaces) - 1)], ends[fast])
            ok = (sp1 > starts[fast]) & (sp2 > sp1 + 1) & (~has_ts | (ends[fast] > sp2 + 1))
            # Quotes in a series key are plain characters: the scanner's business.
            ok &= self._quotes_in(starts[fast], sp1) == 0
            declined.append(fast[~ok])
            fast = fast[ok]
            declined.extend(
                self._fast(
                    lines=fast,
                    starts=starts[fast],
                    sp1=sp1[ok],
                    fields_end=sp2[ok],
                    ends=ends[fast],
                    has_ts=has_ts[ok],
                )
            )
        self._scan_lines(np.sort(np.concatenate(declined)))
        self._collect_entries()
        batches = self._merge()
        if self.errors:
            line, reason = min(self.errors)
            raise ParseError(reason, line=line + 1)
        return batches

    # -- scanner paths ----------------------------------------------------------------------

    def _fail(self, line: int, reason: str) -> None:
        self.errors.append((line, reason))
        self.limit = min(self.limit, line)

    def _scan_dirty(self, dirty_lines: np.ndarray, consumed: np.ndarray) -> None:
        """Parse entries starting on lines with quotes or backslashes; they may span lines."""
        for line in dirty_lines.tolist():
            if consumed[line]:
                continue
            try:
                entry, end = scan_entry(self.body, int(self.starts[line]))
            except LineError as exc:
                self._fail(line, exc.reason)
                return
            last = int(np.searchsorted(self.starts, end, "left")) - 1
            consumed[line : last + 1] = True
            if entry is not None:
                self.entries.append((line, entry))

    def _scan_lines(self, lines: np.ndarray) -> None:
        """Parse single-line entries the fast path declined, stopping at the first error."""
        for line in lines.tolist():
            if line >= self.limit:
                return
            try:
                entry, _ = scan_entry(self.body, int(self.starts[line]))
            except LineError as exc:
                self._fail(line, exc.reason)
                return
            if entry is not None:
                self.entries.append((line, entry))

    def _code(self, measurement: str, tags: tuple[tuple[str, str], ...]) -> int:
        key = (measurement, tuple(sorted(tags)))
        code = self.series_code.get(key)
        if code is None:
            code = self.series_code[key] = self.n_fast + len(self.series)
            self.series.append(key)
        return code

    def _collect_entries(self) -> None:
        """Turn scanned entries into one piece per measurement, in line order."""
        self.entries.sort(key=lambda item: item[0])
        rows: dict[str, list[tuple[int, Entry]]] = {}
        for line, entry in self.entries:
            if line >= self.limit:
                break
            rows.setdefault(entry.measurement, []).append((line, entry))
        for measurement, items in rows.items():
            n = len(items)
            lines = np.fromiter((line for line, _ in items), np.int64, n)
            codes = np.fromiter((self._code(measurement, e.tags) for _, e in items), np.int64, n)
            times = np.empty(n, np.int64)
            values: dict[str, list[object]] = {}
            types: dict[str, FieldType] = {}
            first_line: dict[str, int] = {}
            for i, (line, entry) in enumerate(items):
                try:
                    times[i] = (
                        self.default_ns if entry.time is None else to_time_ns(entry.time, self.multiplier)
                    )
                except LineError as exc:
                    self._fail(line, exc.reason)
                    times[i] = 0
                for key, (ftype, value) in entry.fields.items():
                    known = types.get(key)
                    if known is None:
                        types[key], first_line[key] = ftype, line
                        values[key] = [None] * n
                    elif known is not ftype:
                        self._fail(line, _conflict(measurement, key, (known, first_line[key]), (ftype, line)))
                        continue
                    values[key][i] = value
            fields = {k: (types[k], pa.array(v, types[k].arrow_type)) for k, v in values.items()}
            self.pieces.setdefault(measurement, []).append(_Piece(lines, codes, times, fields, first_line))

    # -- fast path --------------------------------------------------------------------------

    def _views(self, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
        """A string-view array of ``body[start:start+length]`` slices, without copying them.

        A view is 16 bytes: the length, then either the string itself (up to 12 bytes, zero
        padded) or its first 4 bytes, buffer index 0 and its offset in the body.
        """
        n = len(starts)
        words = np.zeros((n, 4), np.int32)
        raw = words.view(np.uint8)
        words[:, 0] = lengths
        longest = int(lengths.max()) if n else 0
        inline = lengths <= _VIEW_INLINE
        all_long = not inline.any()
        # Byte columns one at a time: a gather per column is far cheaper than gathering rows.
        for k in range(min(longest, 4 if all_long else _VIEW_INLINE)):
            column = self.pad[starts + k]
            if k:
                column[lengths <= k] = 0
            raw[:, 4 + k] = column
        if not inline.all():
            long = ~inline
            words[long, 2] = 0
            words[long, 3] = starts[long]
        return pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(words), self.pad_buffer])

    def _outside_strings(self, positions: np.ndarray) -> np.ndarray:
        """``positions`` not inside a quoted string of a fast-path line."""
        if not len(self.quotes):
            return positions
        return positions[np.searchsorted(self.quotes, positions) % 2 == 0]

    def _quotes_in(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Number of string quotes in each ``[start, end)``."""
        if not len(self.quotes):
            return np.zeros(len(start), np.int64)
        return np.searchsorted(self.quotes, end) - np.searchsorted(self.quotes, start)

    def _fast(
        self,
        *,
        lines: np.ndarray,
        starts: np.ndarray,
        sp1: np.ndarray,
        fields_end: np.ndarray,
        ends: np.ndarray,
        has_ts: np.ndarray,
    ) -> list[np.ndarray]:
        """Parse simple lines column-wise; returns the lines left to the scanner."""
        declined: list[np.ndarray] = []
        if not len(lines):
            return declined
        # Series keys: dictionary-encode, then parse the distinct ones column-wise.
        encoded = pc.dictionary_encode(self._views(starts, (sp1 - starts).astype(np.int32)))
        codes = encoded.indices.to_numpy().astype(np.int64)
        measurement_ids, measurements = self._series_keys(encoded.dictionary.cast(pa.string()))
        bad = measurement_ids[codes] < 0
        if bad.any():
            declined.append(lines[bad])

        # Field sections: "k=v,k=v,...": their ',' and '=' must alternate, starting with '='.
        arr = self.arr
        delims = self._outside_strings(np.flatnonzero((arr == _COMMA) | (arr == _EQUALS)))
        first = np.searchsorted(delims, sp1)
        count = np.searchsorted(delims, fields_end) - first
        usable = ~bad & (count % 2 == 1)
        declined.append(lines[~bad & ~usable])
        for n_delims in np.unique(count[usable]).tolist():
            rows = np.flatnonzero(usable & (count == n_delims))
            pos = delims[first[rows][:, None] + np.arange(n_delims)]
            chars = self.pad[pos]
            key_start = np.concatenate(((sp1[rows] + 1)[:, None], pos[:, 1::2] + 1), axis=1)
            key_end = pos[:, 0::2]
            value_start = key_end + 1
            value_end = np.concatenate((pos[:, 1::2], fields_end[rows][:, None]), axis=1)
            ok = (
                (chars[:, 0::2] == _EQUALS).all(axis=1)
                & (chars[:, 1::2] == _COMMA).all(axis=1)
                & (key_end > key_start).all(axis=1)
                & (value_end > value_start).all(axis=1)
            )
            declined.append(lines[rows[~ok]])
            remaining = np.flatnonzero(ok)
            for _ in range(_MAX_TEMPLATES):
                if not len(remaining):
                    break
                keys = self._template(key_start[remaining[0]], key_end[remaining[0]])
                if keys is None:
                    declined.append(lines[rows[remaining[:1]]])
                    remaining = remaining[1:]
                    continue
                match = self._match(keys, key_start[remaining], key_end[remaining])
                group = remaining[match]
                remaining = remaining[~match]
                g = rows[group]
                out = self._group(
                    keys,
                    value_start=value_start[group],
                    value_end=value_end[group],
                    ts_start=fields_end[g] + 1,
                    ts_end=ends[g],
                    has_ts=has_ts[g],
                )
                if out is None:
                    declined.append(lines[g])
                    continue
                time_ns, fields = out
                self._add_fast_pieces(
                    lines=lines[g],
                    codes=codes[g],
                    time_ns=time_ns,
                    fields=fields,
                    measurement_ids=measurement_ids[codes[g]],
                    measurements=measurements,
                )
            declined.append(lines[rows[remaining]])
        return declined

    def _series_keys(self, keys: pa.Array) -> tuple[np.ndarray, list[str]]:
        """Parse distinct series keys without escapes: ``measurement(,tag=value)*``.

        Sets ``n_fast`` and ``fast_tags``; returns the measurement id of each key (-1 for a key
        the scanner must judge) and the measurement names by id.
        """
        n = len(keys)
        self.n_fast = n
        parts = pc.split_pattern(keys, ",")
        n_tags = pc.list_value_length(parts).to_numpy() - 1
        measurement = pc.list_element(parts, 0)
        good = pc.utf8_length(measurement).to_numpy() > 0
        parent = np.repeat(np.arange(n), n_tags)
        pairs = pc.split_pattern(pc.list_flatten(pc.list_slice(parts, 1)), "=")
        two = pc.list_value_length(pairs).to_numpy() == 2
        good[parent[~two]] = False  # "k", "k=v=w", "" (a trailing comma)
        pairs = pairs.filter(pa.array(two))
        parent = parent[two]
        tag_key = pc.list_element(pairs, 0)
        tag_value = pc.list_element(pairs, 1)
        empty = (pc.utf8_length(tag_key).to_numpy() == 0) | (pc.utf8_length(tag_value).to_numpy() == 0)
        good[parent[empty]] = False
        key_codes = pc.dictionary_encode(tag_key)
        key_id = key_codes.indices.to_numpy().astype(np.int64)
        key_names = key_codes.dictionary.to_pylist()
        # A tag key twice in one series key: the scanner reports it.
        pair_id = parent * max(len(key_names), 1) + key_id
        unique_pairs, counts = np.unique(pair_id, return_counts=True)
        good[unique_pairs[counts > 1] // max(len(key_names), 1)] = False
        for k, name in enumerate(key_names):
            if not _valid_name(name, validate_column):
                good[parent[key_id == k]] = False
        meas_codes = pc.dictionary_encode(measurement)
        measurement_ids = meas_codes.indices.to_numpy().astype(np.int64)
        measurements = meas_codes.dictionary.to_pylist()
        for m, name in enumerate(measurements):
            if not _valid_name(name, validate_table):
                good[measurement_ids == m] = False
        measurement_ids[~good] = -1
        keep = good[parent]
        for k, name in enumerate(key_names):
            rows = np.flatnonzero((key_id == k) & keep)
            index = np.full(n, -1, np.int64)
            index[parent[rows]] = rows
            self.fast_tags[name] = tag_value.take(pa.array(index, mask=index < 0))
        return measurement_ids, measurements

    def _template(self, key_start: np.ndarray, key_end: np.ndarray) -> list[bytes] | None:
        keys = [self.body[s:e] for s, e in zip(key_start.tolist(), key_end.tolist(), strict=True)]
        if len(set(keys)) != len(keys):
            return None  # a repeated field key: the scanner applies "last one wins"
        if any(b'"' in key for key in keys):
            return None  # a quote in a field key is a plain character, not a string
        try:
            for key in keys:
                validate_column(key.decode())
        except InvalidName:
            return None
        return keys

    def _match(self, keys: list[bytes], key_start: np.ndarray, key_end: np.ndarray) -> np.ndarray:
        """Rows whose field keys are byte for byte ``keys``."""
        lengths = np.array([len(k) for k in keys])
        match = ((key_end - key_start) == lengths).all(axis=1)
        rows = np.flatnonzero(match)
        differs = np.zeros(len(rows), bool)
        index = np.empty(len(rows), np.int64)
        got = np.empty(len(rows), np.uint8)
        unequal = np.empty(len(rows), bool)
        for j, key in enumerate(keys):
            column = np.ascontiguousarray(key_start[rows, j])
            for k, byte in enumerate(key):
                np.add(column, k, out=index)
                np.take(self.pad, index, out=got)
                np.not_equal(got, byte, out=unequal)
                np.logical_or(differs, unequal, out=differs)
        match[rows] = ~differs
        return match

    def _group(
        self,
        keys: list[bytes],
        *,
        value_start: np.ndarray,
        value_end: np.ndarray,
        ts_start: np.ndarray,
        ts_end: np.ndarray,
        has_ts: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, tuple[FieldType, pa.Array]]] | None:
        """Typed columns of one field-key group, or None to hand the group to the scanner."""
        fields: dict[str, tuple[FieldType, pa.Array]] = {}
        for j, key in enumerate(keys):
            column = self._column(value_start[:, j], value_end[:, j])
            if column is None:
                return None
            fields[key.decode()] = column
        time_ns = np.full(len(has_ts), self.default_ns, np.int64)
        if has_ts.any():
            idx = np.flatnonzero(has_ts)
            stamps = self._integers(ts_start[idx], ts_end[idx], pa.int64(), _TIME_START)
            if stamps is None:
                return None
            raw = stamps.to_numpy()
            lo = -(-MIN_TIME_NS // self.multiplier)
            hi = MAX_TIME_NS // self.multiplier
            if ((raw < lo) | (raw > hi)).any():
                return None
            time_ns[idx] = raw * self.multiplier
        return time_ns, fields

    def _integers(
        self, start: np.ndarray, end: np.ndarray, dtype: pa.DataType, allowed_first: np.ndarray
    ) -> pa.Array | None:
        first = self.pad[start]
        if not allowed_first[first].all():
            return None
        # Arrow also reads "0x1f"; line protocol has no hexadecimal.
        hexa = (self.pad[start + 1] | 0x20) == _LOWER_X
        hexa |= (first == _MINUS) & ((self.pad[start + 2] | 0x20) == _LOWER_X)
        if hexa.any():
            return None
        try:
            return pc.cast(self._views(start, (end - start).astype(np.int32)), dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def _column(self, start: np.ndarray, end: np.ndarray) -> tuple[FieldType, pa.Array] | None:
        pad = self.pad
        first = pad[start]
        last = pad[end - 1]
        if (first == _QUOTE).all():
            # '"..."' with no quote inside; no escapes either, the line has no backslash.
            if not ((last == _QUOTE) & (end - start >= 2) & (self._quotes_in(start, end) == 2)).all():
                return None
            views = self._views(start + 1, (end - start - 2).astype(np.int32))
            return FieldType.STRING, views.cast(pa.string())
        if len(self.quotes) and (self._quotes_in(start, end) > 0).any():
            return None
        if _BOOL_START[first].all():
            encoded = pc.dictionary_encode(self._views(start, (end - start).astype(np.int32)))
            try:
                words = [_BOOLEANS[w] for w in encoded.dictionary.to_pylist()]
            except KeyError:
                return None
            return FieldType.BOOLEAN, pa.array(words, pa.bool_()).take(encoded.indices)
        if not _NUMBER_START[first].all():
            return None
        if (last == _LOWER_I).all():
            values = self._integers(start, end - 1, pa.int64(), _NUMBER_START)
            return None if values is None else (FieldType.INTEGER, values)
        if (last == _LOWER_U).all():
            values = self._integers(start, end - 1, pa.uint64(), _NUMBER_START)
            return None if values is None else (FieldType.UNSIGNED, values)
        if ((last == _LOWER_I) | (last == _LOWER_U)).any():
            return None  # mixed types in one column: the scanner names the lines
        try:
            values = pc.cast(self._views(start, (end - start).astype(np.int32)), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if not np.isfinite(values.to_numpy()).all():
            return None  # "-inf", "-nan" or out of range: refused like InfluxDB
        return FieldType.FLOAT, values

    def _add_fast_pieces(
        self,
        *,
        lines: np.ndarray,
        codes: np.ndarray,
        time_ns: np.ndarray,
        fields: dict[str, tuple[FieldType, pa.Array]],
        measurement_ids: np.ndarray,
        measurements: list[str],
    ) -> None:
        ids = np.unique(measurement_ids)
        if len(ids) == 1:
            first = {k: int(lines[0]) for k in fields}
            self.pieces.setdefault(measurements[ids[0]], []).append(
                _Piece(lines, codes, time_ns, fields, first)
            )
            return
        for mid in ids.tolist():
            name = measurements[mid]
            idx = np.flatnonzero(measurement_ids == mid)
            taken = pa.array(idx)
            sub = {k: (t, a.take(taken)) for k, (t, a) in fields.items()}
            first = {k: int(lines[idx[0]]) for k in fields}
            self.pieces.setdefault(name, []).append(_Piece(lines[idx], codes[idx], time_ns[idx], sub, first))

    # -- merge ------------------------------------------------------------------------------

    def _merge(self) -> list[TableBatch]:
        """One batch per measurement in order of first line; records type and name conflicts."""
        order = sorted(self.pieces, key=lambda m: min(int(p.lines[0]) for p in self.pieces[m]))
        batches: list[TableBatch] = []
        for measurement in order:
            pieces = self.pieces[measurement]
            types = self._field_types(measurement, pieces)
            if types is None or self.errors:
                continue
            batch = self._batch(measurement, pieces, types)
            if batch is not None:
                batches.append(batch)
        return batches

    def _field_types(self, measurement: str, pieces: list[_Piece]) -> dict[str, FieldType] | None:
        seen: dict[str, dict[FieldType, int]] = {}
        for piece in pieces:
            for key, (ftype, _) in piece.fields.items():
                by_type = seen.setdefault(key, {})
                line = piece.first_line[key]
                by_type[ftype] = min(by_type.get(ftype, line), line)
        types: dict[str, FieldType] = {}
        clean = True
        for key, by_type in seen.items():
            ranked = sorted(by_type.items(), key=lambda item: item[1])
            types[key] = ranked[0][0]
            if len(ranked) > 1:
                (t0, l0), (t1, l1) = ranked[0], ranked[1]
                self._fail(l1, _conflict(measurement, key, (t0, l0), (t1, l1)))
                clean = False
        return types if clean else None

    def _batch(
        self, measurement: str, pieces: list[_Piece], types: dict[str, FieldType]
    ) -> TableBatch | None:
        lines = _concat_np([p.lines for p in pieces])
        codes = _concat_np([p.codes for p in pieces])
        time_ns = _concat_np([p.time_ns for p in pieces])
        order: pa.Array | None = None
        if len(pieces) > 1 and (np.diff(lines) < 0).any():
            perm = np.argsort(lines, kind="stable")
            lines, codes, time_ns = lines[perm], codes[perm], time_ns[perm]
            order = pa.array(perm)
        fields: dict[str, pa.Array] = {}
        for key, ftype in types.items():
            parts = [
                p.fields[key][1] if key in p.fields else pa.nulls(len(p.lines), ftype.arrow_type)
                for p in pieces
            ]
            column = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
            fields[key] = column if order is None else column.take(order)
        tags = self._tags(codes)
        clash = tags.keys() & fields.keys()
        if clash:
            key = min(clash)
            tag_line = int(lines[tags[key].is_valid().to_numpy(zero_copy_only=False)].min())
            field_line = min(p.first_line[key] for p in pieces if key in p.fields)
            self._fail(
                max(tag_line, field_line),
                f"{key!r} is both a tag (line {tag_line + 1}) and a field (line {field_line + 1}) "
                f"of measurement {measurement!r}",
            )
            return None
        try:
            return TableBatch.build(measurement, time_ns, tags=tags, fields=fields, db=self.db)
        except InvalidInput as exc:
            self._fail(int(lines[0]), exc.reason)
            return None

    def _tags(self, codes: np.ndarray) -> dict[str, pa.Array]:
        """Tag columns for rows with series ``codes``: the fast path's, then the scanner's."""
        used = np.unique(codes)
        fast_used = used[used < self.n_fast]
        slow = [dict(self.series[c - self.n_fast][1]) for c in used[len(fast_used) :].tolist()]
        parts: dict[str, pa.Array] = {}
        if len(fast_used):
            index = pa.array(fast_used)
            for key, values in self.fast_tags.items():
                part = values.take(index)
                if part.null_count < len(part):
                    parts[key] = part
        keys = dict.fromkeys(parts)
        for tags in slow:
            keys.update(dict.fromkeys(tags))
        position = pa.array(np.searchsorted(used, codes))
        columns: dict[str, pa.Array] = {}
        for key in keys:
            column = parts.get(key, pa.nulls(len(fast_used), pa.string()))
            if slow:
                column = pa.concat_arrays([column, pa.array([t.get(key) for t in slow], pa.string())])
            columns[key] = column.take(position)
        return columns


def _valid_name(name: str, validate: Callable[[str], str]) -> bool:
    try:
        validate(name)
    except InvalidName:
        return False
    return True


def _concat_np(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _conflict(measurement: str, key: str, first: tuple[FieldType, int], other: tuple[FieldType, int]) -> str:
    (t0, l0), (t1, l1) = first, other
    return (
        f"conflicting types for field {key!r} of measurement {measurement!r}: "
        f"{t0.value} on line {l0 + 1}, {t1.value} on line {l1 + 1}"
    )
