"""The payload of one WAL record: the batches of one write call, as Arrow IPC streams.

One write call (one HTTP request) may touch several tables; all of its batches share one
record, so replay re-applies the request whole or not at all. Layout::

    count u32 | (length u32 | Arrow IPC stream bytes) * count

Each stream carries one record batch whose schema metadata names the database, table and
tag columns; tag columns are dictionary-coded to keep the log small.
"""

from __future__ import annotations

import json
import struct

import pyarrow as pa

from tsengine.errors import StorageError
from tsengine.model.batch import TableBatch

__all__ = ["decode", "encode"]

_U32 = struct.Struct("<I")


def _encode_one(batch: TableBatch) -> pa.Buffer:
    arrays = [pa.array(batch.time, pa.int64())]
    names = ["time"]
    for name, arr in batch.encoded_tags.items():
        arrays.append(arr)
        names.append(name)
    for name, arr in batch.fields.items():
        arrays.append(arr)
        names.append(name)
    meta = {
        b"db": batch.db.encode(),
        b"table": batch.table.encode(),
        b"tags": json.dumps(list(batch.tags)).encode(),
    }
    rb = pa.RecordBatch.from_arrays(arrays, names=names).replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rb.schema) as writer:
        writer.write_batch(rb)
    return sink.getvalue()


def encode(batches: list[TableBatch]) -> list[bytes | pa.Buffer]:
    """The record as a list of buffers (the WAL writes them with one ``writev``, no copy)."""
    parts: list[bytes | pa.Buffer] = [_U32.pack(len(batches))]
    for b in batches:
        data = _encode_one(b)
        parts.append(_U32.pack(data.size))
        parts.append(data)
    return parts


def decode(payload: bytes) -> list[TableBatch]:
    try:
        (count,) = _U32.unpack_from(payload, 0)
        pos = _U32.size
        out = []
        for _ in range(count):
            (length,) = _U32.unpack_from(payload, pos)
            pos += _U32.size
            reader = pa.ipc.open_stream(pa.py_buffer(payload[pos : pos + length]))
            table = reader.read_all()
            pos += length
            meta = table.schema.metadata
            tags = json.loads(meta[b"tags"])
            out.append(
                TableBatch(
                    db=meta[b"db"].decode(),
                    table=meta[b"table"].decode(),
                    time=table.column("time").combine_chunks().to_numpy(),
                    tags={t: table.column(t).combine_chunks().cast(pa.string()) for t in tags},
                    fields={
                        n: table.column(n).combine_chunks()
                        for n in table.column_names
                        if n != "time" and n not in tags
                    },
                )
            )
        return out
    except (struct.error, pa.ArrowInvalid, KeyError, ValueError) as exc:
        raise StorageError(f"cannot decode WAL record: {exc}") from exc
