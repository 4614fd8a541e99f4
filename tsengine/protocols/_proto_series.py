"""Shared pieces of the metric decoders: row assembly, histogram bounds, the staleness marker.

:mod:`tsengine.protocols.prom_remote` and :mod:`tsengine.protocols.otlp_metrics` both turn
series of samples into one :class:`~tsengine.model.TableBatch` per metric table with a single
field ``value``; this module holds what they have in common so both produce the same shapes
(``le`` and ``quantile`` strings, ``_bucket``/``_sum``/``_count`` tables, float64 counts).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from tsengine.errors import InvalidInput, ParseError
from tsengine.model import TableBatch

__all__ = [
    "MAX_ABS_MS",
    "STALE_NAN",
    "STALE_NAN_BITS",
    "TableRows",
    "bucket_rows",
    "exponential_upper_bounds",
    "format_bound",
    "is_stale",
]

#: Prometheus' staleness marker: a NaN with this exact bit pattern (value.StaleNaN).
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]

#: Largest absolute millisecond timestamp whose nanosecond value fits in int64 (year 2262).
MAX_ABS_MS = (2**63 - 1) // 1_000_000


_STALE_BYTES = struct.pack("<Q", STALE_NAN_BITS)


def is_stale(value: float) -> bool:
    """True if ``value`` is the staleness marker (bit-exact, not any NaN)."""
    return struct.pack("<d", value) == _STALE_BYTES


def format_bound(value: float) -> str:
    """Format an ``le`` or ``quantile`` value as Prometheus' OTLP translator does.

    Shortest round-trip digits without an exponent (Go's ``FormatFloat(v, 'f', -1, 64)``), and
    ``+Inf``/``-Inf``/``NaN`` as Prometheus writes them.
    """
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return np.format_float_positional(value, trim="-")


def exponential_upper_bounds(scale: int, upper_index: np.ndarray) -> np.ndarray:
    """Upper bounds ``base ** upper_index`` with ``base = 2 ** 2 ** -scale``.

    Computed as ``2 ** (r / 2**scale) * 2 ** q`` (``upper_index = q * 2**scale + r``) so powers
    of two are exact at every scale, like Prometheus' bucket bound tables.
    """
    idx = upper_index.astype(np.int64)
    if scale <= 0:
        return np.ldexp(1.0, (idx << -scale).astype(np.int32))
    per_octave = 1 << scale
    q, r = np.divmod(idx, per_octave)
    return np.ldexp(np.exp2(r / per_octave), q.astype(np.int32))


def bucket_rows(
    *,
    negative_upper: np.ndarray,
    negative_counts: np.ndarray,
    zero_upper: float | None,
    zero_count: float,
    positive_upper: np.ndarray,
    positive_counts: np.ndarray,
    total: float,
) -> tuple[list[str], np.ndarray]:
    """Cumulative ``(le, count)`` rows of a sparse histogram, lowest bound first, ``+Inf`` last.

    ``negative_upper[i]`` is the (negative) upper bound of ``negative_counts[i]``; the negative
    buckets may come in any order and are sorted here. ``zero_upper`` None skips the zero bucket.
    """
    neg_order = np.argsort(negative_upper, kind="stable")
    pos_order = np.argsort(positive_upper, kind="stable")
    uppers = [negative_upper[neg_order]]
    counts = [negative_counts[neg_order]]
    if zero_upper is not None:
        uppers.append(np.array([zero_upper]))
        counts.append(np.array([zero_count], dtype=np.float64))
    uppers.append(positive_upper[pos_order])
    counts.append(positive_counts[pos_order])
    bounds = np.concatenate(uppers)
    cumulative = np.cumsum(np.concatenate(counts).astype(np.float64))
    les = [format_bound(b) for b in bounds.tolist()]
    les.append("+Inf")
    return les, np.append(cumulative, float(total))


class TableRows:
    """Rows of one table collected from columnar chunks and single rows, in arrival order.

    Not thread-safe; one instance lives for one ``parse`` call.
    """

    def __init__(self, table: str, item: str | int | None) -> None:
        self.table = table
        self.item = item  # first item that wrote to the table, named in errors
        self._chunks: list[tuple[np.ndarray, np.ndarray, dict[str, pa.Array]]] = []
        self._times: list[int] = []
        self._values: list[float | int] = []
        self._tags: list[Mapping[str, str]] = []

    def append(self, time_ns: int, value: float | int, tags: Mapping[str, str]) -> None:
        self._times.append(time_ns)
        self._values.append(value)
        self._tags.append(tags)

    def extend(self, time_ns: np.ndarray, values: np.ndarray, tags: dict[str, pa.Array]) -> None:
        self._flush()
        self._chunks.append((time_ns, values, tags))

    def _flush(self) -> None:
        if not self._times:
            return
        names: dict[str, None] = {}
        for row in self._tags:
            names.update(dict.fromkeys(row))
        tags = {name: pa.array([row.get(name) for row in self._tags], pa.string()) for name in names}
        if all(type(v) is int for v in self._values):
            values = np.array(self._values, dtype=np.int64)
        else:
            values = np.array(self._values, dtype=np.float64)
        self._chunks.append((np.array(self._times, dtype=np.int64), values, tags))
        self._times, self._values, self._tags = [], [], []

    def build(self, db: str) -> TableBatch:
        """Concatenate the chunks into one batch; a tag missing from a chunk is null there.

        Raises:
            ParseError: the table or a tag name is not storable (names ``self.item``).
        """
        self._flush()
        if len(self._chunks) == 1:
            time_ns, value, tag_cols = self._chunks[0]
        else:
            names: dict[str, None] = {}
            for _, _, tags in self._chunks:
                names.update(dict.fromkeys(tags))
            tag_cols = {
                name: pa.concat_arrays(
                    [tags.get(name, pa.nulls(len(t), pa.string())) for t, _, tags in self._chunks]
                )
                for name in names
            }
            values: Sequence[np.ndarray] = [v for _, v, _ in self._chunks]
            if any(v.dtype != values[0].dtype for v in values):
                values = [v.astype(np.float64) for v in values]  # int and float points: float wins
            time_ns = np.concatenate([t for t, _, _ in self._chunks])
            value = np.concatenate(values)
        try:
            return TableBatch.build(self.table, time_ns, tags=tag_cols, fields={"value": value}, db=db)
        except InvalidInput as exc:
            raise ParseError(f"cannot store metric {self.table!r}: {exc.reason}", item=self.item) from exc
