"""Child process of the crash tests: writes numbered batches and reports each acknowledged one.

Run as ``python -m tests.integration.crash_writer DATA_DIR --start B [...]`` from the repository
root. It opens the engine with ``fsync="always"`` and writes batch ``B``, ``B+1``, ... each as one
:meth:`Engine.write_batches` call across every table in :data:`TABLES`; only after a call
returns does it print ``ACK <b>``. A maintenance thread calls ``flush()`` and ``compact()``
every few acknowledged batches, printing ``FLUSH-START``/``COMPACT-START`` just before the call
and ``FLUSH-END``/``COMPACT-END`` after it, so the parent can kill it inside either. With
``--count N`` it stops after N batches, prints ``IDLE`` and blocks on stdin (to be killed).

Every line is flushed at once; the parent is expected to SIGKILL this process.

The rows of a batch are a pure function of its id (:func:`batch_rows`), so the parent can tell
exactly what each batch wrote:

* every table gets ``rows_per_table(b)`` rows over :data:`HOSTS`, at times unique to the batch,
  with the fields ``batch`` (= b), ``w`` (the batch that wrote this version of the row) and
  ``v`` (a two-decimal float);
* every 5th batch also writes :data:`LATE_ROWS` rows of ``cpu`` two hours in the past (late,
  out-of-order samples that mark an already-persisted hour for de-duplication);
* batch ``b`` with ``b % 7 == 3`` re-writes the ``TABLES[b % 3]`` rows of batch ``b - 3`` (when
  that batch was written by the same process, so it is acknowledged) with ``w = b``:
  duplicates that must resolve last-write-wins.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tsengine import Engine

T0 = 1_700_000_000_000_000_000
HOUR_NS = 3_600_000_000_000
#: Each batch owns a 10 s slice of time: 360 batches per hour partition.
BATCH_NS = 10_000_000_000
ROW_NS = 10_000_000
TABLES = ("cpu", "mem", "disk io")
HOSTS = ("h0", "h1", "h2", "h3")
LATE_ROWS = 3
RESEND_LAG = 3
#: "Now" for the engine: 2023-11-15T12:00Z. The data starts at 2023-11-14T22:13Z, so its first
#: day is over (compaction merges it into a day file, late rows and all) and the second day is
#: not (compaction merges hour files), in every round and every open alike.
NOW_NS = 1_700_049_600_000_000_000


class FixedDayClock:
    """Wall clock fixed at :data:`NOW_NS`; the real monotonic clock (chunk ages)."""

    def now_ns(self) -> int:
        return NOW_NS

    def monotonic_s(self) -> float:
        return time.monotonic()


def rows_per_table(b: int) -> int:
    return 8 + b % 5


def has_late_rows(b: int) -> bool:
    return b % 5 == 0


def resends(b: int, start: int) -> bool:
    """Whether batch ``b``, written by a process that started at ``start``, re-writes ``b - 3``."""
    return b % 7 == 3 and b - RESEND_LAG >= start


def resend_table(b: int) -> str:
    return TABLES[b % len(TABLES)]


def regular_rows(b: int, w: int | None = None) -> dict[str, np.ndarray]:
    n = rows_per_table(b)
    i = np.arange(n)
    return {
        "time": T0 + b * BATCH_NS + i * ROW_NS,
        "host": np.array(HOSTS)[i % len(HOSTS)],
        "batch": np.full(n, b, dtype=np.int64),
        "w": np.full(n, b if w is None else w, dtype=np.int64),
        "v": np.round(b + i / 100, 2),
    }


def late_rows(b: int) -> dict[str, np.ndarray]:
    # An odd nanosecond offset keeps them apart from every regular row of the same host.
    i = np.arange(LATE_ROWS)
    return {
        "time": T0 + b * BATCH_NS - 2 * HOUR_NS + i * ROW_NS + 1,
        "host": np.full(LATE_ROWS, "h0"),
        "batch": np.full(LATE_ROWS, b, dtype=np.int64),
        "w": np.full(LATE_ROWS, b, dtype=np.int64),
        "v": np.round(-b - i / 100, 2),
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def batch_rows(b: int, start: int) -> dict[str, dict[str, np.ndarray]]:
    """Columns per table that batch ``b`` writes (in write order: later rows win)."""
    out = {}
    for table in TABLES:
        parts = [regular_rows(b)]
        if table == "cpu" and has_late_rows(b):
            parts.append(late_rows(b))
        if resends(b, start) and table == resend_table(b):
            parts.append(regular_rows(b - RESEND_LAG, w=b))
        out[table] = _concat(parts)
    return out


def own_rows(b: int, table: str) -> int:
    """Rows whose ``batch`` field is ``b`` in ``table`` once ``b`` is written."""
    return rows_per_table(b) + (LATE_ROWS if table == "cpu" and has_late_rows(b) else 0)


class Reporter:
    """Prints protocol lines from several threads, one whole line at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _maintain(engine: Engine, acked: list[int], cond: threading.Condition, every: int, out: Reporter) -> None:
    """Alternate flush and compaction, each after ``every`` more acknowledged batches."""
    done = 0
    step = 0
    while True:
        with cond:
            while acked[0] < done + every:
                cond.wait()
            done = acked[0]
        step += 1
        if step % 2:
            out.say("FLUSH-START")
            engine.flush()
            out.say("FLUSH-END")
        else:
            out.say("COMPACT-START")
            engine.compact()
            out.say("COMPACT-END")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--start", type=int, required=True, help="id of the first batch")
    parser.add_argument("--count", type=int, default=0, help="stop after this many batches (0: never)")
    parser.add_argument("--maintain-every", type=int, default=0, help="acks between flush/compact (0: never)")
    parser.add_argument("--min-chunk-rows", type=int, default=64)
    parser.add_argument("--max-chunk-rows", type=int, default=512)
    parser.add_argument("--max-chunk-age-s", type=float, default=0.2)
    parser.add_argument("--wal-segment-bytes", type=int, default=64 * 1024)
    args = parser.parse_args(argv)

    from tsengine import Engine
    from tsengine.model import TableBatch

    out = Reporter()
    engine = Engine.open(
        args.data_dir,
        fsync="always",
        min_chunk_rows=args.min_chunk_rows,
        max_chunk_rows=args.max_chunk_rows,
        max_chunk_age_s=args.max_chunk_age_s,
        persist_check_interval_s=0.05,
        wal_segment_bytes=args.wal_segment_bytes,
        clock=FixedDayClock(),
    )
    out.say("READY")
    acked = [0]
    cond = threading.Condition()
    if args.maintain_every:
        threading.Thread(
            target=_maintain,
            args=(engine, acked, cond, args.maintain_every, out),
            name="maintenance",
            daemon=True,
        ).start()
    b = args.start
    while not args.count or b < args.start + args.count:
        batches = []
        for table, cols in batch_rows(b, args.start).items():
            batches.append(
                TableBatch.build(
                    table,
                    cols["time"],
                    tags={"host": cols["host"]},
                    fields={"batch": cols["batch"], "w": cols["w"], "v": cols["v"]},
                )
            )
        engine.write_batches(batches)
        out.say(f"ACK {b}")
        with cond:
            acked[0] += 1
            cond.notify_all()
        b += 1
    out.say("IDLE")
    sys.stdin.read()  # killed here; never closed cleanly


if __name__ == "__main__":
    main()
