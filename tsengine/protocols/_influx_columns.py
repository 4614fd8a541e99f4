"""The column path of the line-protocol parser: whole groups of lines parsed with numpy and Arrow.

:mod:`tsengine.protocols.influx` hands this module the lines it found simple (one line per entry,
no backslash, single spaces between the sections, strings only as field values) with the
positions of their spaces. :class:`ColumnParser` then

* dictionary-encodes the series keys and splits the distinct ones with Arrow kernels;
* finds the ``,`` and ``=`` of the field sections (outside strings: quote parity), groups lines
  by their sequence of field keys, checked byte for byte against the group's first line;
* turns each field of a group into an Arrow string-view column over the body — no copy — and
  casts it to its type in one call; timestamps likewise.

It never reports an error: a line or group it cannot vouch for (a value that does not cast, mixed
types, a bad name, a repeated key) is handed back, and the scanner of
:mod:`tsengine.protocols._influx_scan` parses it and words the error. Pure; one instance per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tsengine.errors import InvalidName
from tsengine.model import FieldType, validate_column, validate_table
from tsengine.protocols._influx_scan import MAX_TIME_NS, MIN_TIME_NS

__all__ = ["ColumnParser", "FastPiece"]

_QUOTE, _COMMA, _EQUALS, _MINUS = 34, 44, 61, 45
_LOWER_I, _LOWER_U, _LOWER_X = 105, 117, 120

# Inline string views hold at most 12 bytes.
_VIEW_INLINE = 12
PAD = 16  # zero bytes after the body: reading a few bytes past a value never leaves the buffer

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
MAX_TEMPLATES = 64


@dataclass
class FastPiece:
    """Rows of one measurement from one field-key group, lines ascending."""

    measurement: str
    lines: np.ndarray
    codes: np.ndarray  # series codes: indices into ColumnParser.tags' arrays
    time_ns: np.ndarray
    fields: dict[str, tuple[FieldType, pa.Array]]


class ColumnParser:
    """Column-wise parsing of simple lines of one request body.

    Attributes:
        pad: the body as uint8 with ``PAD`` zero bytes after it.
        quotes: positions of the quotes delimiting strings (set by the caller).
        pieces: the rows parsed, per group and measurement.
        n_series: number of distinct series keys (codes ``0..n_series-1``).
        tags: tag key -> value per series code (null where the series lacks the tag).
    """

    def __init__(self, body: bytes, *, multiplier: int, default_ns: int) -> None:
        self.body = body
        self.multiplier = multiplier
        self.default_ns = default_ns
        self.pad = np.zeros(len(body) + PAD, np.uint8)
        self.pad[: len(body)] = np.frombuffer(body, np.uint8)
        self.pad_buffer = pa.py_buffer(self.pad)
        self.arr = self.pad[: len(body)]
        self.quotes = np.empty(0, np.int64)
        self.pieces: list[FastPiece] = []
        self.n_series = 0
        self.tags: dict[str, pa.Array] = {}

    def views(self, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
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
            column[lengths <= k] = 0
            raw[:, 4 + k] = column
        if not inline.all():
            long = ~inline
            words[long, 2] = 0
            words[long, 3] = starts[long]
        return pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(words), self.pad_buffer])

    def outside_strings(self, positions: np.ndarray) -> np.ndarray:
        """``positions`` not inside a quoted string of a fast-path line."""
        if not len(self.quotes):
            return positions
        return positions[np.searchsorted(self.quotes, positions) % 2 == 0]

    def quotes_in(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Number of string quotes in each ``[start, end)``."""
        if not len(self.quotes):
            return np.zeros(len(start), np.int64)
        return np.searchsorted(self.quotes, end) - np.searchsorted(self.quotes, start)

    def run(
        self,
        *,
        lines: np.ndarray,
        starts: np.ndarray,
        sp1: np.ndarray,
        fields_end: np.ndarray,
        ends: np.ndarray,
        has_ts: np.ndarray,
    ) -> list[np.ndarray]:
        """Parse simple lines column-wise into ``pieces``; returns the lines left to the scanner."""
        declined: list[np.ndarray] = []
        if not len(lines):
            return declined
        # Series keys: dictionary-encode, then parse the distinct ones column-wise.
        encoded = pc.dictionary_encode(self.views(starts, (sp1 - starts).astype(np.int32)))
        codes = encoded.indices.to_numpy().astype(np.int64)
        measurement_ids, measurements = self._series_keys(encoded.dictionary.cast(pa.string()))
        bad = measurement_ids[codes] < 0
        if bad.any():
            declined.append(lines[bad])

        # Field sections: "k=v,k=v,...": their ',' and '=' must alternate, starting with '='.
        arr = self.arr
        delims = self.outside_strings(np.flatnonzero((arr == _COMMA) | (arr == _EQUALS)))
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
            for _ in range(MAX_TEMPLATES):
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

        Sets ``n_series`` and ``tags``; returns the measurement id of each key (-1 for a key
        the scanner must judge) and the measurement names by id.
        """
        n = len(keys)
        self.n_series = n
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
            self.tags[name] = tag_value.take(pa.array(index, mask=index < 0))
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
            return pc.cast(self.views(start, (end - start).astype(np.int32)), dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def _column(self, start: np.ndarray, end: np.ndarray) -> tuple[FieldType, pa.Array] | None:
        pad = self.pad
        first = pad[start]
        last = pad[end - 1]
        if (first == _QUOTE).all():
            # '"..."' with no quote inside; no escapes either, the line has no backslash.
            if not ((last == _QUOTE) & (end - start >= 2) & (self.quotes_in(start, end) == 2)).all():
                return None
            views = self.views(start + 1, (end - start - 2).astype(np.int32))
            return FieldType.STRING, views.cast(pa.string())
        if len(self.quotes) and (self.quotes_in(start, end) > 0).any():
            return None
        if _BOOL_START[first].all():
            encoded = pc.dictionary_encode(self.views(start, (end - start).astype(np.int32)))
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
            values = pc.cast(self.views(start, (end - start).astype(np.int32)), pa.float64())
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
            self.pieces.append(FastPiece(measurements[ids[0]], lines, codes, time_ns, fields))
            return
        for mid in ids.tolist():
            idx = np.flatnonzero(measurement_ids == mid)
            taken = pa.array(idx)
            sub = {k: (t, a.take(taken)) for k, (t, a) in fields.items()}
            self.pieces.append(FastPiece(measurements[mid], lines[idx], codes[idx], time_ns[idx], sub))


def _valid_name(name: str, validate: Callable[[str], str]) -> bool:
    try:
        validate(name)
    except InvalidName:
        return False
    return True
