"""Prometheus remote read (sampled responses): a ``ReadRequest`` in, a ``ReadResponse`` out.

In: the snappy block-compressed ``prometheus.ReadRequest`` body of ``POST /api/v1/read``: one
or more queries, each a time range in milliseconds and label matchers. Out: a snappy
block-compressed ``ReadResponse`` with one ``QueryResult`` per query, holding every matching
series and its samples in the range (``SAMPLES`` response type; Prometheus asks for it by
default — streamed chunks are not offered, and the specification lets a server answer with
samples whatever the client accepts).

Series come from the tables as :mod:`server.promseries` maps them; each (table, field) that
passes the ``__name__`` matchers is read with one SQL statement through the engine's sandboxed
query path (time-range pruned), its rows filtered by the label matchers with Arrow, grouped by
series and sorted by time. Values are sent bit for bit (staleness markers included).

The message classes are built without protoc in a private descriptor pool, like
:mod:`tsengine.protocols._proto_prompb` (whose pool holds the write messages only): field numbers
from ``prometheus/prompb/remote.proto`` and ``types.proto``. Blocking (SQL, protobuf); run it off
the event loop. Errors: :class:`~tsengine.errors.ParseError` for an undecodable body,
:class:`~tsengine.errors.LimitExceeded` past ``max_samples``.
"""

from __future__ import annotations

from typing import Any

import cramjam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from server.errors import BodyTooLarge
from server.promseries import metrics_matching, rows_matching
from server.selectors import Matcher
from tsengine.errors import LimitExceeded, NotFound, ParseError
from tsengine.query.views import quote_ident

__all__ = ["ReadRequest", "ReadResponse", "answer", "decode_request", "encode_response"]

_F = descriptor_pb2.FieldDescriptorProto
_MATCHER_OPS = {0: "=", 1: "!=", 2: "=~", 3: "!~"}  # LabelMatcher.Type: EQ, NEQ, RE, NRE


def _file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tsengine/server/prompb_read.proto", package="prometheus", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, bool, str | None]]) -> None:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            fld = msg.field.add(
                name=fname,
                number=number,
                type=ftype,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                fld.type_name = type_name

    message("ReadRequest", [
        ("queries", 1, _F.TYPE_MESSAGE, True, ".prometheus.Query"),
        ("accepted_response_types", 2, _F.TYPE_INT32, True, None),
    ])  # fmt: skip
    message("Query", [
        ("start_timestamp_ms", 1, _F.TYPE_INT64, False, None),
        ("end_timestamp_ms", 2, _F.TYPE_INT64, False, None),
        ("matchers", 3, _F.TYPE_MESSAGE, True, ".prometheus.LabelMatcher"),
    ])  # fmt: skip
    message("LabelMatcher", [
        ("type", 1, _F.TYPE_INT32, False, None),
        ("name", 2, _F.TYPE_STRING, False, None),
        ("value", 3, _F.TYPE_STRING, False, None),
    ])  # fmt: skip
    message("ReadResponse", [("results", 1, _F.TYPE_MESSAGE, True, ".prometheus.QueryResult")])
    message("QueryResult", [("timeseries", 1, _F.TYPE_MESSAGE, True, ".prometheus.TimeSeries")])
    message("TimeSeries", [
        ("labels", 1, _F.TYPE_MESSAGE, True, ".prometheus.Label"),
        ("samples", 2, _F.TYPE_MESSAGE, True, ".prometheus.Sample"),
    ])  # fmt: skip
    message("Label", [("name", 1, _F.TYPE_STRING, False, None), ("value", 2, _F.TYPE_STRING, False, None)])
    message(
        "Sample", [("value", 1, _F.TYPE_DOUBLE, False, None), ("timestamp", 2, _F.TYPE_INT64, False, None)]
    )
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
ReadRequest: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("prometheus.ReadRequest"))
ReadResponse: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("prometheus.ReadResponse"))

_NS_PER_MS = 1_000_000


def decode_request(body: bytes, *, max_decoded_bytes: int) -> Any:
    """The ``ReadRequest`` in a snappy block body (413 past ``max_decoded_bytes``)."""
    try:
        declared = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as exc:
        raise ParseError(f"cannot decompress remote read request: not snappy block format ({exc})") from exc
    if declared > max_decoded_bytes:
        raise BodyTooLarge(
            f"cannot decode remote read request: it decompresses to {declared} bytes, more than the "
            f"limit of {max_decoded_bytes}"
        )
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
        return ReadRequest.FromString(raw)
    except cramjam.DecompressionError as exc:
        raise ParseError(f"cannot decompress remote read request: not snappy block format ({exc})") from exc
    except DecodeError as exc:
        raise ParseError(f"cannot decode remote read request: not a ReadRequest ({exc})") from exc


def encode_response(response: Any) -> bytes:
    return bytes(cramjam.snappy.compress_raw(response.SerializeToString()))


def _matchers(query: Any, index: int) -> tuple[Matcher, ...]:
    out = []
    for m in query.matchers:
        op = _MATCHER_OPS.get(m.type)
        if op is None:
            raise ParseError(
                f"cannot use matcher {m.name!r}: unknown type {m.type}", item=f"queries[{index}]"
            )
        out.append(Matcher(m.name, op, m.value))
    if not out:
        raise ParseError("cannot run remote read query: it has no matchers", item=f"queries[{index}]")
    return tuple(out)


def answer(engine: Any, db: str, request: Any, *, max_samples: int) -> Any:
    """Run every query of ``request``; returns a ``ReadResponse`` (blocking)."""
    response = ReadResponse()
    budget = max_samples
    for index, query in enumerate(request.queries):
        result = response.results.add()
        matchers = _matchers(query, index)
        for src in metrics_matching(engine, db, matchers):
            tags = [quote_ident(t) for t in src.labels.values()]
            sql = (
                f"SELECT {', '.join([*tags, ''])}epoch_ns(time) AS __t, {quote_ident(src.field)} AS __v "
                f"FROM {quote_ident(src.db)}.{quote_ident(src.table)} "
                f"WHERE time >= make_timestamp_ns($1) AND time <= make_timestamp_ns($2) "
                f"AND {quote_ident(src.field)} IS NOT NULL"
            )
            try:
                data = engine.sql(
                    sql, [query.start_timestamp_ms * _NS_PER_MS, query.end_timestamp_ms * _NS_PER_MS]
                )
            except NotFound:
                continue
            data = data.filter(pa.array(rows_matching(data, src.labels, matchers)))
            budget -= data.num_rows
            if budget < 0:
                raise LimitExceeded(
                    f"cannot answer remote read: more than max_read_samples={max_samples} samples match; "
                    "narrow the time range or the matchers"
                )
            _add_series(result, src.name, list(src.labels), data)
    return response


def _add_series(result: Any, name: str, labels: list[str], data: pa.Table) -> None:
    if data.num_rows == 0:
        return
    tag_cols = [pc.fill_null(data.column(i), "") for i in range(len(labels))]
    keys = [c.to_pylist() for c in tag_cols]
    times_ms = (data.column("__t").to_numpy() // _NS_PER_MS).tolist()
    values = np.asarray(pc.cast(data.column("__v"), pa.float64())).tolist()
    series: dict[tuple[str, ...], list[int]] = {}
    for i, key in enumerate(zip(*keys, strict=True) if keys else [()] * data.num_rows):
        series.setdefault(key, []).append(i)
    for key, rows in series.items():
        ts = result.timeseries.add()
        pairs = sorted([("__name__", name), *((lbl, v) for lbl, v in zip(labels, key, strict=True) if v)])
        for lbl, v in pairs:
            ts.labels.add(name=lbl, value=v)
        for i in sorted(rows, key=times_ms.__getitem__):
            ts.samples.add(value=values[i], timestamp=times_ms[i])
