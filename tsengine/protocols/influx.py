"""InfluxDB line protocol → one :class:`~tsengine.model.TableBatch` per measurement.

Called by the HTTP write handlers (``/write``, ``/api/v2/write``) with the decompressed body; the
result goes to the write layer unchanged. Pure: no I/O, no shared state; safe to call from any
thread, and it blocks for the time it takes (about a quarter of a second of one core per
million samples).

Data flow of :func:`parse`:

1. numpy finds the line ends, the spaces and every ``"`` and ``\\`` in the body.
2. Lines with a backslash (escapes), or with quotes that are not plainly ``="..."`` string values
   (a string may run over several lines), are parsed entry by entry by :mod:`._influx_scan`,
   the grammar's reference scanner.
3. All other lines take the column path of :mod:`._influx_columns`: quote parity masks the
   delimiters inside strings; series keys are dictionary-encoded and the distinct ones split
   with Arrow kernels; lines are grouped by their sequence of field keys and each field of a
   group becomes one Arrow string-view column over the body, cast to its type in one call.
   Whatever that path cannot vouch for (odd whitespace, a value that does not cast, mixed types,
   a bad name) it hands back to the scanner, so both paths agree by construction and every
   error reason comes from the scanner.
4. Rows are merged per measurement in line order; a field with two types in one request, or a
   name used both as tag and field, is an error naming both lines.

InfluxDB 1.x stores the good lines of a request with bad ones; tsengine refuses the whole request:
the first bad line raises :class:`~tsengine.errors.ParseError` with its 1-based ``line``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tsengine.errors import InvalidInput, ParseError
from tsengine.model import FieldType, TableBatch, validate_db
from tsengine.protocols._influx_columns import PAD, ColumnParser
from tsengine.protocols._influx_scan import (
    PRECISION_NS,
    Entry,
    LineError,
    scan_entry,
    to_time_ns,
)

__all__ = ["PRECISION_NS", "parse"]

_NL, _CR, _SPACE, _TAB, _HASH, _QUOTE, _BACKSLASH = 10, 13, 32, 9, 35, 34, 92
_COMMA, _EQUALS = 44, 61


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
    if len(body) >= 2**31 - PAD:
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
        self.columns = ColumnParser(body, multiplier=multiplier, default_ns=default_ns)
        # Series codes: 0..columns.n_series-1 are the column path's, their tags held column-wise
        # in columns.tags; the scanner's follow, as (measurement, tags) in self.series.
        self.series: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self.series_code: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.pieces: dict[str, list[_Piece]] = {}
        self.entries: list[tuple[int, Entry]] = []
        self.errors: list[tuple[int, str]] = []  # (0-based line, reason)
        self.limit = 0  # lines at or after the first scanner error need no work

    # -- driver -----------------------------------------------------------------------------

    def parse(self) -> list[TableBatch]:
        pad = self.columns.pad
        arr = self.columns.arr
        nl = np.flatnonzero(arr == _NL)
        starts = np.concatenate(([0], nl + 1))
        ends = np.concatenate((nl, [len(arr)]))
        if starts[-1] == len(arr):
            starts, ends = starts[:-1], ends[:-1]
        nlines = len(starts)
        self.starts = starts
        self.limit = nlines
        nonempty = ends > starts
        ends = ends - (nonempty & (pad[np.maximum(ends - 1, 0)] == _CR))

        # The scanner takes every line with a backslash, and every line whose quotes are not
        # plainly pairs of '="' ... '"' followed by ',', ' ' or the line end, all after the series
        # key: only such quotes delimit the same strings for the scanner (no escapes, no newline).
        dirty = np.zeros(nlines, bool)
        consumed = np.zeros(nlines, bool)
        spaces = np.flatnonzero(arr == _SPACE)
        if b'"' in self.body or b"\\" in self.body:
            special = np.flatnonzero((arr == _QUOTE) | (arr == _BACKSLASH))
            special_line = np.searchsorted(starts, special, "right") - 1
            is_quote = pad[special] == _QUOTE
            dirty[special_line[~is_quote]] = True
            quotes, quote_line = special[is_quote], special_line[is_quote]
            dirty |= np.bincount(quote_line, minlength=nlines) % 2 == 1
            even = ~dirty[quote_line]
            opening, closing = quotes[even][0::2], quotes[even][1::2]
            line = quote_line[even][0::2]
            first_space = np.searchsorted(spaces, starts[line])
            key_end = np.append(spaces, len(arr))[first_space]  # no space: no series key end
            after = pad[closing + 1]
            plain = (
                (pad[opening - 1] == _EQUALS)
                & (opening > key_end)
                & (key_end > starts[line])
                & ((after == _COMMA) | (after == _SPACE) | (closing + 1 >= ends[line]))
            )
            dirty[line[~plain]] = True
            self._scan_dirty(np.flatnonzero(dirty), consumed)
            self.columns.quotes = quotes[~(dirty | consumed)[quote_line]]

        first = pad[starts]
        skip = (ends == starts) | (first == _HASH)
        simple = ~(skip | dirty | consumed | (first == _SPACE) | (first == _TAB))
        simple[self.limit :] = False
        spaces = self.columns.outside_strings(spaces)
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
            ok &= self.columns.quotes_in(starts[fast], sp1) == 0
            declined.append(fast[~ok])
            fast = fast[ok]
            declined.extend(
                self.columns.run(
                    lines=fast,
                    starts=starts[fast],
                    sp1=sp1[ok],
                    fields_end=sp2[ok],
                    ends=ends[fast],
                    has_ts=has_ts[ok],
                )
            )
        for piece in self.columns.pieces:
            first_use = {k: int(piece.lines[0]) for k in piece.fields}
            self.pieces.setdefault(piece.measurement, []).append(
                _Piece(piece.lines, piece.codes, piece.time_ns, piece.fields, first_use)
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
            code = self.series_code[key] = self.columns.n_series + len(self.series)
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
        where: dict[str, tuple[int, int]] = {}  # (line, position in the line) of the first use
        for piece in pieces:
            for position, (key, (ftype, _)) in enumerate(piece.fields.items()):
                by_type = seen.setdefault(key, {})
                line = piece.first_line[key]
                by_type[ftype] = min(by_type.get(ftype, line), line)
                where[key] = min(where.get(key, (line, position)), (line, position))
        types: dict[str, FieldType] = {}
        clean = True
        # Columns in the order the request first names them.
        for key, by_type in sorted(seen.items(), key=lambda item: where[item[0]]):
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
        fast_used = used[used < self.columns.n_series]
        slow = [dict(self.series[c - self.columns.n_series][1]) for c in used[len(fast_used) :].tolist()]
        parts: dict[str, pa.Array] = {}
        if len(fast_used):
            index = pa.array(fast_used)
            for key, values in self.columns.tags.items():
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


def _concat_np(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _conflict(measurement: str, key: str, first: tuple[FieldType, int], other: tuple[FieldType, int]) -> str:
    (t0, l0), (t1, l1) = first, other
    return (
        f"conflicting types for field {key!r} of measurement {measurement!r}: "
        f"{t0.value} on line {l0 + 1}, {t1.value} on line {l1 + 1}"
    )
