"""Prometheus remote write 1.0: a snappy-compressed ``prometheus.WriteRequest`` → table batches.

In: the HTTP body of ``POST /api/v1/write`` (``Content-Encoding: snappy`` means the snappy
*block* format, not the framed one). Out: one :class:`~tsengine.model.TableBatch` per metric
table. Called by the server's remote-write route; pure (no I/O, no engine), thread-safe, and
CPU-bound: it blocks for about a microsecond per sample, so the caller runs it off the event loop
for large bodies.

Mapping (as `the remote write 1.0 specification
<https://prometheus.io/docs/specs/remote_write_spec/>`_ and Prometheus' data model define it):

* ``__name__`` → table; every other label → a tag of the same name; one field ``value``
  (float64); sample timestamps (ms) → ``time`` (ns).
* Values are kept bit for bit, including the staleness marker (the NaN ``0x7ff0000000000002``),
  so a query can tell "went stale" from "was NaN".
* A label with an empty value is the same as no label (Prometheus' rule) and is dropped.
* Rows are grouped by table; within a table they keep the request's series and sample order.
  Tables come in order of first appearance (float samples first, then native histograms), so
  the same body always gives the same batches.
* **Native histograms** (``TimeSeries.histograms``) are stored, not rejected, the way Prometheus
  exposes a classic histogram: ``<name>_count``, ``<name>_sum`` and ``<name>_bucket`` with tag
  ``le`` holding the cumulative count at each bucket's upper bound (negative buckets, the zero
  bucket when it holds observations, positive buckets, then ``+Inf``). Exponential schemas
  -4..8 and custom bounds (schema -53) are supported; integer and float histograms both become
  float64 values. The reset hint is not kept. A histogram whose sum is the staleness marker
  writes the marker to ``_count``, ``_sum`` and ``_bucket{le="+Inf"}``.
* Exemplars and ``metadata`` are ignored; they have no place in the table model yet.

Validation (each failure is a :class:`~tsengine.errors.ParseError` whose ``item`` is the index of
the offending series; the request is rejected whole): a body that is not snappy or not a
WriteRequest; a series without ``__name__``; a metric name outside ``[a-zA-Z_:][a-zA-Z0-9_:]*``;
a label name outside ``[a-zA-Z_][a-zA-Z0-9_]*`` or one the engine reserves (``time``, ``value``,
``__ts*``); a label name twice in one series; a timestamp beyond year 2262 (int64 ns); a native
histogram whose spans and buckets disagree or whose schema is unknown. A decoded body larger than
``max_decoded_bytes`` raises :class:`~tsengine.errors.LimitExceeded` before it is decompressed.

Decoding is vectorised: upb parses the body twice, once into the real messages (for counts and
histograms) and once into a column view (see :mod:`tsengine.protocols._proto_prompb`) that
yields all label names, all label values and every ``Sample``'s bytes as flat containers;
numpy decodes the samples (a double and a varint each), and grouping, validation and tag columns
are numpy/Arrow work. Python loops run per series and per table or tag name, never per sample.
Encodings no known sender produces (fields out of order or repeated, unknown fields in a sample,
empty label strings) take an exact per-message path instead, so the result never depends on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cramjam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError

from tsengine.errors import InvalidName, LimitExceeded, ParseError
from tsengine.model import TableBatch, validate_column, validate_table
from tsengine.protocols import _proto_prompb as pb
from tsengine.protocols._proto_series import (
    MAX_ABS_MS,
    STALE_NAN,
    TableRows,
    bucket_rows,
    exponential_upper_bounds,
    is_stale,
)

__all__ = ["DEFAULT_MAX_DECODED_BYTES", "build_write_request", "parse"]

#: Decoded size limit; Prometheus sends ~2,000 samples a request, far below this.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024

METRIC_NAME_LABEL = "__name__"
_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NS_PER_MS = 1_000_000
_FIELD = "value"
_CUSTOM_BUCKETS_SCHEMA = -53


def parse(
    body: bytes,
    *,
    db: str = "default",
    compressed: bool = True,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> list[TableBatch]:
    """Decode a remote-write body into one batch per metric table.

    Args:
        body: the request body, snappy block-compressed unless ``compressed`` is False.
        db: database the batches belong to.
        compressed: False for a raw protobuf body (tests, proxies that already decompressed).
        max_decoded_bytes: refuse bodies that decompress to more than this.

    Raises:
        ParseError: undecodable body or an invalid series (``item`` = series index).
        LimitExceeded: the decoded body would exceed ``max_decoded_bytes``.
    """
    raw = _decompress(body, max_decoded_bytes) if compressed else bytes(body)
    try:
        request = pb.WriteRequest.FromString(raw)
        columns = pb.WriteRequestColumns.FromString(raw)
    except DecodeError as exc:
        raise ParseError(f"cannot decode remote write request: not a WriteRequest ({exc})") from exc
    tables: dict[str, TableRows] = {}
    # Re-encoding is never longer than the input and only shorter when a field repeats or an
    # encoding is not minimal; at equal size no label carries two names or two values, so the
    # merged label columns line up whenever their lengths match the label count.
    canonical = request.ByteSize() == len(raw)
    series = request.timeseries
    # Per series: labels, samples, histograms (one pass; attribute access is the cost here).
    counts = np.array(
        [(len(ts.labels), len(ts.samples), len(ts.histograms)) for ts in series], dtype=np.int64
    ).reshape(-1, 3)
    _add_samples(series, counts, columns, labels_exact=canonical, tables=tables)
    _add_histograms(series, counts[:, 2], tables)
    return [rows.build(db) for rows in tables.values()]


def build_write_request(
    series: Iterable[tuple[Mapping[str, str], Iterable[tuple[int, float]]]], *, compressed: bool = True
) -> bytes:
    """Encode ``(labels, [(timestamp_ms, value), ...])`` pairs as a remote-write body.

    The counterpart of :func:`parse` for tests, benchmarks and remote write out. Labels are
    sorted by name as the specification asks; values are written bit for bit.
    """
    request = pb.WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name in sorted(labels):
            ts.labels.add(name=name, value=labels[name])
        for timestamp_ms, value in samples:
            ts.samples.add(value=value, timestamp=timestamp_ms)
    raw = request.SerializeToString()
    return bytes(cramjam.snappy.compress_raw(raw)) if compressed else raw


def _decompress(body: bytes, max_decoded_bytes: int) -> bytes:
    # The block format starts with the decoded length as a varint: check it before allocating.
    declared = 0
    for shift, byte in zip(range(0, 35, 7), body[:5], strict=False):
        declared |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    if declared > max_decoded_bytes:
        raise LimitExceeded(
            f"cannot decode remote write request: it decompresses to {declared} bytes, "
            f"more than the limit of {max_decoded_bytes}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise ParseError(f"cannot decompress remote write request: not snappy block format ({exc})") from exc


def _add_samples(
    series: Any, counts: np.ndarray, columns: Any, *, labels_exact: bool, tables: dict[str, TableRows]
) -> None:
    """Float samples of every series → rows, grouped by table, all columnar."""
    n_series = len(series)
    if not n_series:
        return
    label_counts, sample_counts = counts[:, 0], counts[:, 1]
    names, label_values = _label_columns(
        series, columns.timeseries.labels, int(label_counts.sum()), labels_exact
    )
    decoded = _decode_samples(columns.timeseries.samples)
    values, times_ms = decoded if decoded is not None else _sample_columns_slow(series, sample_counts)

    label_series = np.repeat(np.arange(n_series), label_counts)
    encoded = pc.dictionary_encode(names)
    name_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    unique_names: list[str] = encoded.dictionary.to_pylist()
    _check_label_names(unique_names, name_codes, label_series)
    _check_duplicates(name_codes, label_series, unique_names)

    present = pc.not_equal(label_values, "").to_numpy(zero_copy_only=False)
    name_code = unique_names.index(METRIC_NAME_LABEL) if METRIC_NAME_LABEL in unique_names else -1
    is_name = (name_codes == name_code) & present
    has_name = np.bincount(label_series[is_name], minlength=n_series)
    if not has_name.all():
        raise ParseError(
            f"cannot use series: it has no {METRIC_NAME_LABEL} label", item=int(np.argmin(has_name))
        )
    metric_per_series = pc.dictionary_encode(label_values.filter(pa.array(is_name)))
    table_of_series = metric_per_series.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    metrics: list[str] = metric_per_series.dictionary.to_pylist()
    _check_metric_names(metrics, table_of_series)

    sample_series = np.repeat(np.arange(n_series), sample_counts)
    bad_time = (times_ms > MAX_ABS_MS) | (times_ms < -MAX_ABS_MS)
    if bad_time.any():
        pos = int(np.argmax(bad_time))
        raise ParseError(
            f"cannot use sample timestamp {int(times_ms[pos])} ms: outside the int64 nanosecond range",
            item=int(sample_series[pos]),
        )

    # Order samples by table (stable: request order within a table); each table is then a slice
    # of the same sorted columns, and each tag a single take over all samples.
    order = np.argsort(table_of_series[sample_series], kind="stable")
    sorted_series = sample_series[order]
    bounds = np.searchsorted(table_of_series[sorted_series], np.arange(len(metrics) + 1))
    times_ns = times_ms[order] * _NS_PER_MS
    values = values[order]
    tag_rows = np.flatnonzero(present & ~is_name)
    tag_columns: dict[str, pa.Array] = {}
    for code in _in_order(name_codes[tag_rows]):
        rows = tag_rows[name_codes[tag_rows] == code]
        row_of_series = np.full(n_series, -1, dtype=np.int64)
        row_of_series[label_series[rows]] = rows
        take = row_of_series[sorted_series]
        tag_columns[unique_names[code]] = label_values.take(pa.array(take, mask=take < 0))

    first_series = np.full(len(metrics), n_series, dtype=np.int64)
    np.minimum.at(first_series, table_of_series, np.arange(n_series))
    for t, metric in enumerate(metrics):
        lo, hi = int(bounds[t]), int(bounds[t + 1])
        if lo == hi:
            continue  # series with only histograms
        rows_table = tables.setdefault(metric, TableRows(metric, item=int(first_series[t])))
        tags = {}
        for name, column in tag_columns.items():
            part = column.slice(lo, hi - lo)
            if part.null_count < hi - lo:
                tags[name] = part
        rows_table.extend(times_ns[lo:hi], values[lo:hi], tags)


def _label_columns(series: Any, merged: Any, total: int, exact: bool) -> tuple[pa.Array, pa.Array]:
    if exact and len(merged.name) == total and len(merged.value) == total:
        return pa.array(list(merged.name), pa.string()), pa.array(list(merged.value), pa.string())
    # An empty name or value is absent from the merged columns: read the messages instead.
    labels = [label for ts in series for label in ts.labels]
    return (
        pa.array([label.name for label in labels], pa.string()),
        pa.array([label.value for label in labels], pa.string()),
    )


def _decode_samples(encoded: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode ``Sample`` messages in numpy; None unless every one has the canonical layout.

    Canonical (what every known sender writes): ``0x09`` + 8-byte double when the value is not
    zero, then ``0x10`` + varint when the timestamp is not zero, nothing else. Anything else —
    fields reordered or repeated, unknown fields — goes to the exact message decoder.
    """
    n = len(encoded)
    lengths = np.fromiter(map(len, encoded), np.int64, count=n)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    ends = starts + lengths
    buf = np.frombuffer(b"".join(encoded) + bytes(_PAD), dtype=np.uint8)
    has_value = (lengths >= 9) & (buf[starts] == 0x09)
    value_bytes = np.stack([buf[starts + 1 + k] for k in range(8)], axis=1)
    values = np.where(has_value, value_bytes.view("<f8").ravel(), 0.0)
    pos = starts + 9 * has_value
    has_time = pos < ends
    if not (buf[pos[has_time]] == 0x10).all():
        return None
    pos += 1
    times = np.zeros(n, dtype=np.uint64)
    done = ~has_time
    for k in range(10):  # a varint is at most ten bytes
        byte = buf[pos + k]
        live = ~done
        times[live] |= (byte[live] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        stop = live & (byte < 0x80)
        if not (pos[stop] + k + 1 == ends[stop]).all():
            return None  # bytes after the timestamp: not canonical
        done |= stop
    if not done.all():
        return None
    # np.where also turns the value's -0.0 or NaN bits into nothing else: it copies them.
    return values, times.view(np.int64)


_PAD = 16  # lets every gather read 8 + 10 bytes past a sample without bounds checks


def _sample_columns_slow(series: Any, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = int(counts.sum())
    return (
        np.fromiter((s.value for ts in series for s in ts.samples), np.float64, count=total),
        np.fromiter((s.timestamp for ts in series for s in ts.samples), np.int64, count=total),
    )


def _in_order(codes: np.ndarray) -> list[int]:
    """Distinct codes in order of first appearance (tag columns keep the request's order)."""
    uniq, first = np.unique(codes, return_index=True)
    return uniq[np.argsort(first)].tolist()


def _first_series(mask: np.ndarray, label_series: np.ndarray) -> int:
    return int(label_series[int(np.argmax(mask))])


def _check_label_names(unique_names: list[str], codes: np.ndarray, label_series: np.ndarray) -> None:
    for code, name in enumerate(unique_names):
        if name == METRIC_NAME_LABEL:
            continue
        reason = None
        if not _LABEL_NAME_RE.match(name):
            reason = "label names must match [a-zA-Z_][a-zA-Z0-9_]*"
        elif name == _FIELD:
            reason = "'value' is the field of every metric table"
        else:
            try:
                validate_column(name)
            except InvalidName as exc:
                reason = exc.reason
        if reason is not None:
            raise ParseError(
                f"cannot use label name {name!r}: {reason}", item=_first_series(codes == code, label_series)
            )


def _check_duplicates(codes: np.ndarray, label_series: np.ndarray, unique_names: list[str]) -> None:
    n_names = len(unique_names)
    keys = np.sort(label_series * n_names + codes)
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if len(dup):
        key = int(keys[dup[0]])
        raise ParseError(
            f"cannot use series: label name {unique_names[key % n_names]!r} appears twice",
            item=key // n_names,
        )


def _check_metric_names(metrics: list[str], table_of_series: np.ndarray) -> None:
    for code, metric in enumerate(metrics):
        reason = None
        if not _METRIC_NAME_RE.match(metric):
            reason = "metric names must match [a-zA-Z_:][a-zA-Z0-9_:]*"
        else:
            try:
                validate_table(metric)
            except InvalidName as exc:
                reason = exc.reason
        if reason is not None:
            raise ParseError(
                f"cannot use metric name {metric!r}: {reason}",
                item=int(np.argmax(table_of_series == code)),
            )


# --- native histograms -----------------------------------------------------------------------


def _add_histograms(series: Any, histogram_counts: np.ndarray, tables: dict[str, TableRows]) -> None:
    for i in np.flatnonzero(histogram_counts).tolist():
        ts = series[i]
        labels = {label.name: label.value for label in ts.labels if label.value}
        metric = labels.pop(METRIC_NAME_LABEL)  # validated by _add_samples
        for hist in ts.histograms:
            _add_histogram(hist, metric, labels, i, tables)


def _rows(tables: dict[str, TableRows], table: str, item: int) -> TableRows:
    rows = tables.get(table)
    if rows is None:
        rows = tables[table] = TableRows(table, item=item)
    return rows


def _add_histogram(h: Any, metric: str, labels: dict[str, str], item: int, tables: dict) -> None:
    timestamp_ms = h.timestamp
    if not -MAX_ABS_MS <= timestamp_ms <= MAX_ABS_MS:
        raise ParseError(
            f"cannot use histogram timestamp {timestamp_ms} ms: outside the int64 nanosecond range",
            item=item,
        )
    time_ns = timestamp_ms * _NS_PER_MS
    count_rows = _rows(tables, f"{metric}_count", item)
    sum_rows = _rows(tables, f"{metric}_sum", item)
    bucket_table = _rows(tables, f"{metric}_bucket", item)
    if is_stale(h.sum):
        count_rows.append(time_ns, STALE_NAN, labels)
        sum_rows.append(time_ns, STALE_NAN, labels)
        bucket_table.append(time_ns, STALE_NAN, {**labels, "le": "+Inf"})
        return
    is_int = h.WhichOneof("count") != "count_float"
    total = float(h.count_int if is_int else h.count_float)
    zero_count = float(h.zero_count_int if is_int else h.zero_count_float)
    schema = h.schema
    positive_idx = _span_indices(h.positive_spans, item)
    negative_idx = _span_indices(h.negative_spans, item)
    positive = _bucket_counts(h, "positive", is_int, len(positive_idx), item)
    negative = _bucket_counts(h, "negative", is_int, len(negative_idx), item)
    if schema == _CUSTOM_BUCKETS_SCHEMA:
        custom = np.array(h.custom_values, dtype=np.float64)
        if len(negative_idx) or (len(positive_idx) and positive_idx.max() > len(custom)):
            raise ParseError("cannot use native histogram: bucket outside its custom bounds", item=item)
        upper = np.append(custom, np.inf)[positive_idx]
        finite = np.isfinite(upper)  # the +Inf bucket is the total, written last anyway
        positive_upper, positive = upper[finite], positive[finite]
        negative_upper, zero_upper = np.empty(0), None
    elif -4 <= schema <= 8:
        # Prometheus' bucket i holds (base**(i-1), base**i]; negative bucket i mirrors it.
        positive_upper = exponential_upper_bounds(schema, positive_idx)
        negative_upper = -exponential_upper_bounds(schema, negative_idx - 1)
        zero_upper = h.zero_threshold if zero_count else None
    else:
        raise ParseError(f"cannot use native histogram: unsupported schema {schema}", item=item)
    les, cumulative = bucket_rows(
        negative_upper=negative_upper,
        negative_counts=negative,
        zero_upper=zero_upper,
        zero_count=zero_count,
        positive_upper=positive_upper,
        positive_counts=positive,
        total=total,
    )
    count_rows.append(time_ns, total, labels)
    sum_rows.append(time_ns, h.sum, labels)
    for le, value in zip(les, cumulative.tolist(), strict=True):
        bucket_table.append(time_ns, value, {**labels, "le": le})


def _span_indices(spans: Sequence[Any], item: int) -> np.ndarray:
    """Absolute bucket indices of spans: the first offset is an index, later ones are gaps."""
    parts = []
    end = 0
    for j, span in enumerate(spans):
        start = span.offset if j == 0 else end + span.offset
        end = start + span.length
        parts.append(np.arange(start, end, dtype=np.int64))
    if not parts:
        return np.empty(0, dtype=np.int64)
    idx = np.concatenate(parts)
    if len(idx) > 1 and (np.diff(idx) <= 0).any():
        raise ParseError("cannot use native histogram: bucket spans overlap", item=item)
    return idx


def _bucket_counts(h: Any, side: str, is_int: bool, expected: int, item: int) -> np.ndarray:
    if is_int:  # integer histograms send each bucket as the delta to the previous one
        counts = np.cumsum(np.array(getattr(h, f"{side}_deltas"), dtype=np.int64)).astype(np.float64)
    else:
        counts = np.array(getattr(h, f"{side}_counts"), dtype=np.float64)
    if len(counts) != expected:
        raise ParseError(
            f"cannot use native histogram: {expected} {side} buckets in spans but {len(counts)} counts",
            item=item,
        )
    return counts
