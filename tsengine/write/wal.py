"""Write-ahead log: segmented files of length- and CRC-framed records.

Data flow: the engine serialises each accepted batch (Arrow IPC), calls :meth:`Wal.append`
under its write lock (one ``write()`` to the current segment, no fsync), applies the batch to the
ring buffer, releases the lock, then calls :meth:`Wal.wait_durable` which returns when the fsync
policy is met:

* ``always``: group commit — the first waiter fsyncs everything written so far while later
  writers wait on a condition; one fsync serves every writer whose record it covers.
* ``interval``: a background thread fsyncs every ``fsync_interval_s``; a crash loses at most
  that much acknowledged data.
* ``none``: the OS decides.

Record layout (little-endian)::

    magic u32 'TSW1' | length u32 | crc32 u32 (of seq + payload) | seq u64 | payload[length]

Segments are named by the first sequence number they hold. On open, :meth:`Wal.replay`
yields every intact record in order; a torn or corrupt tail of the last segment is detected by
the CRC, truncated and logged; corruption inside an older segment skips the rest of that
segment, loudly. Segments whose records are all persisted to Parquet are removed by
:meth:`remove_before`.

Thread safety: ``append`` must be serialised by the caller (the engine's write lock);
``wait_durable`` may be called concurrently from any number of threads.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tsengine.durable import fsync_dir
from tsengine.errors import StorageError
from tsengine.observe import EngineObserver, NullObserver
from tsengine.persist.paths import WAL_DIR, parse_wal_segment, wal_segment_path

__all__ = ["Wal"]

log = logging.getLogger("tsengine.wal")

Buffer = Any  # bytes, memoryview or pyarrow.Buffer: anything with the buffer protocol
_MAGIC = 0x31575354  # b"TSW1" little-endian
_HEADER = struct.Struct("<IIIQ")
_SEQ = struct.Struct("<Q")
#: A record larger than this is treated as corruption (a torn length field), not allocated.
MAX_RECORD_BYTES = 1 << 30


def _writev_all(fd: int, parts: list[Buffer]) -> None:
    """writev until every byte is written (a short write is legal, if rare, on regular files)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


class Wal:
    """The engine's write-ahead log in ``<data>/_wal``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: str = "interval",
        fsync_interval_s: float = 1.0,
        segment_bytes: int = 64 << 20,
    ) -> None:
        self._dir = data_dir / WAL_DIR
        self._dir.mkdir(parents=True, exist_ok=True)
        self._data_dir = data_dir
        self._policy = fsync
        self._interval_s = fsync_interval_s
        self._segment_bytes = segment_bytes
        self._file: io.FileIO | None = None  # the current segment
        self._fd = -1
        self._size = 0
        self._next_seq = 1
        self._written_seq = 0
        self._synced_seq = 0
        self._dirty = False
        self._cond = threading.Condition()
        self._syncing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.observer: EngineObserver = NullObserver()

    # -- open -------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """(first_seq, path) of every segment, oldest first."""
        out = []
        for entry in os.scandir(self._dir):
            first = parse_wal_segment(entry.name)
            if first is not None:
                out.append((first, Path(entry.path)))
        return sorted(out)

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, payload)`` of every intact record, oldest first.

        Truncates a torn or corrupt tail of the last segment. Call once, before :meth:`start`.
        """
        segs = self.segments()
        for i, (_first, path) in enumerate(segs):
            last = i == len(segs) - 1
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                bad = self._check_record(data, pos)
                if bad:
                    if last:
                        log.warning(
                            "WAL segment %s: %s at offset %d; truncating %d trailing bytes",
                            path.name,
                            bad,
                            pos,
                            len(data) - pos,
                        )
                        with open(path, "r+b") as f:
                            f.truncate(pos)
                            os.fsync(f.fileno())
                    else:
                        log.error(
                            "WAL segment %s: %s at offset %d; skipping the rest of this segment (%d bytes)",
                            path.name,
                            bad,
                            pos,
                            len(data) - pos,
                        )
                    break
                _magic, length, _crc, seq = _HEADER.unpack_from(data, pos)
                start = pos + _HEADER.size
                yield seq, data[start : start + length]
                self._next_seq = max(self._next_seq, seq + 1)
                pos = start + length

    @staticmethod
    def _check_record(data: bytes, pos: int) -> str | None:
        if len(data) - pos < _HEADER.size:
            return "torn record header"
        magic, length, crc, seq = _HEADER.unpack_from(data, pos)
        if magic != _MAGIC:
            return "bad record magic"
        if length > MAX_RECORD_BYTES or pos + _HEADER.size + length > len(data):
            return "torn record body"
        start = pos + _HEADER.size
        if zlib.crc32(data[start : start + length], zlib.crc32(_SEQ.pack(seq))) != crc:
            return "CRC mismatch"
        return None

    def start(self, next_seq: int) -> None:
        """Open a fresh segment for appends; ``next_seq`` is above every seq seen anywhere."""
        self._next_seq = max(self._next_seq, next_seq)
        self._written_seq = self._synced_seq = self._next_seq - 1
        self._open_segment()
        if self._policy == "interval":
            self._thread = threading.Thread(target=self._sync_loop, name="tsengine-wal-sync", daemon=True)
            self._thread.start()

    def _open_segment(self) -> None:
        path = wal_segment_path(self._data_dir, self._next_seq)
        try:
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in rotate/close
        except OSError as exc:
            raise StorageError(f"cannot open WAL segment: {exc}", path=str(path)) from exc
        self._fd = self._file.fileno()
        self._size = 0
        fsync_dir(self._dir)

    # -- write ------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def append(self, payload: Sequence[Buffer]) -> int:
        """Write one record whose payload is the concatenation of ``payload``; returns its seq.

        Caller serialises calls.
        """
        if self._closed:
            raise StorageError("cannot append to the WAL: it is closed")
        seq = self._next_seq
        crc = zlib.crc32(_SEQ.pack(seq))
        length = 0
        for part in payload:
            crc = zlib.crc32(part, crc)
            length += len(memoryview(part))
        header = _HEADER.pack(_MAGIC, length, crc, seq)
        if self._size and self._size + len(header) + length > self._segment_bytes:
            self._rotate(seq)
        t0 = time.perf_counter()
        try:
            _writev_all(self._fd, [header, *payload])
        except OSError as exc:
            # The record may be partly on disk; it has no valid CRC and replay drops it. Start a
            # new segment so later records do not follow a torn one.
            self._rotate(seq)
            raise StorageError(f"cannot append to the WAL: {exc}") from exc
        self.observer.wal_append(time.perf_counter() - t0, len(header) + length)
        self._size += len(header) + length
        self._next_seq = seq + 1
        self._written_seq = seq
        self._dirty = True
        return seq

    def _rotate(self, next_seq: int) -> None:
        if self._policy != "none":
            os.fsync(self._fd)
        # Swap the file under the condition: a group-commit leader dups the descriptor under it,
        # so it never fsyncs a closed (or, worse, reused) descriptor number.
        with self._cond:
            self._synced_seq = max(self._synced_seq, self._written_seq)
            if self._file is not None:
                self._file.close()
            self._next_seq = next_seq
            self._open_segment()
            self._cond.notify_all()

    def wait_durable(self, seq: int) -> None:
        """Return when record ``seq`` meets the fsync policy (group commit under "always")."""
        if self._policy != "always":
            return
        with self._cond:
            while self._synced_seq < seq:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, fd = self._written_seq, os.dup(self._fd)
                self._cond.release()
                try:
                    t0 = time.perf_counter()
                    os.fsync(fd)
                    self.observer.wal_fsync(time.perf_counter() - t0)
                except OSError as exc:
                    raise StorageError(f"cannot fsync the WAL: {exc}") from exc
                finally:
                    os.close(fd)
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._synced_seq = max(self._synced_seq, target)

    def sync(self) -> None:
        """fsync now, whatever the policy (used at close and by flush)."""
        with self._cond:
            target, fd = self._written_seq, os.dup(self._fd) if self._fd >= 0 else -1
        if fd >= 0:
            try:
                t0 = time.perf_counter()
                os.fsync(fd)
                self.observer.wal_fsync(time.perf_counter() - t0)
            finally:
                os.close(fd)
        with self._cond:
            self._synced_seq = max(self._synced_seq, target)
            self._cond.notify_all()
        self._dirty = False

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._dirty:
                self._dirty = False
                try:
                    self.sync()
                except (OSError, ValueError):  # closed under us at shutdown
                    log.exception("WAL background fsync failed")

    # -- truncate ---------------------------------------------------------------------------

    def remove_before(self, seq: int) -> int:
        """Delete segments whose records all have sequence numbers below ``seq``.

        Caller serialises with :meth:`append`. Returns the number of segments removed.
        """
        segs = self.segments()
        removed = 0
        for (_first, path), (next_first, _) in itertools.pairwise(segs):
            if next_first <= seq:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_dir(self._dir)
        return removed

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._file is not None:
            if self._policy != "none":
                self.sync()
            self._file.close()
        self._closed = True
