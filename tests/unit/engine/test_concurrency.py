"""Queries racing writers, flushes and compactions; concurrent writers sharing WAL fsyncs.

Writers write numbered batches of known rows (new samples, late samples half an hour back, and
exact re-sends of the previous batch, which must not count twice) to two tables in one atomic
call each. Readers query while a flusher and a compactor thread keep flushing and compacting
and the background persister rolls small chunks into Parquet. Because one writer's batches are
applied in order and each atomically, every query must see, per writer, exactly a prefix of its
batches — the same prefix in both tables — no shorter than what was acknowledged before the
query started and no longer than what was acknowledged or in flight when it ended; per reader
the counts never go down, and at the end everything adds up exactly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tsengine import Engine
from tsengine.model import TableBatch

T0 = 1_451_606_400_000_000_000  # 2016-01-01T00:00:00Z
LATE_NS = 30 * 60 * 1_000_000_000
BATCH_NS = 20_000_000_000  # 180 batches per hour partition
ROW_NS = 100_000_000
WRITERS = 3
BATCHES = 250
JOIN_TIMEOUT_S = 120.0
#: The flusher and the compactor each run once per this many acknowledged batches (all writers).
MAINTAIN_EVERY = 20

pytestmark = pytest.mark.timeout(180)


def new_rows(w: int, k: int) -> int:
    """Rows of ``cpu`` that batch ``k`` of writer ``w`` adds (re-sent rows excluded)."""
    return 5 + (7 * k + w) % 20 + (3 if k % 4 == 2 else 0)


def cpu_rows(w: int, k: int) -> dict[str, np.ndarray]:
    """Batch ``k`` of writer ``w`` for ``cpu``: its own rows, then a re-send of batch k-1's."""
    n = 5 + (7 * k + w) % 20
    i = np.arange(n)
    time = T0 + k * BATCH_NS + i * ROW_NS
    host = np.array([f"w{w}-{j % 3}" for j in range(n)])
    if k % 4 == 2:  # late samples: half an hour before their series' latest, odd ns: all new
        time = np.concatenate([time, T0 + k * BATCH_NS - LATE_NS + np.arange(3) * ROW_NS + 1])
        host = np.concatenate([host, [f"w{w}-0"] * 3])
    cols = {
        "time": time,
        "host": host,
        "writer": np.full(len(time), f"w{w}"),
        "batch": np.full(len(time), k, dtype=np.int64),
        "v": (k % 10 + 1) * np.ones(len(time), dtype=np.int64),
    }
    if k % 5 == 4:  # exact duplicates of the previous batch: last write wins, counted once
        prev = cpu_rows(w, k - 1)
        cols = {name: np.concatenate([cols[name], prev[name]]) for name in cols}
    return cols


def batches_of(w: int, k: int) -> list[TableBatch]:
    c = cpu_rows(w, k)
    return [
        TableBatch.build(
            "cpu",
            c["time"],
            tags={"host": c["host"], "writer": c["writer"]},
            fields={"batch": c["batch"], "v": c["v"]},
        ),
        TableBatch.build(
            "mem", [T0 + k * BATCH_NS], tags={"writer": [f"w{w}"]}, fields={"batch": [k], "v": [k % 10 + 1]}
        ),
    ]


# Per writer, rows and sum(v) of cpu after its first k batches, at index k.
CUM_ROWS = [np.cumsum([0, *(new_rows(w, k) for k in range(BATCHES))]).tolist() for w in range(WRITERS)]
CUM_SUM = [
    np.cumsum([0, *(new_rows(w, k) * (k % 10 + 1) for k in range(BATCHES))]).tolist() for w in range(WRITERS)
]


@dataclass
class Ledger:
    """What the writers have acknowledged and what they have in flight, under one lock."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    acked: list[int] = field(default_factory=lambda: [0] * WRITERS)  # batches acknowledged
    in_flight: list[bool] = field(default_factory=lambda: [False] * WRITERS)
    errors: list[BaseException] = field(default_factory=list)

    def wait_for_progress(self, since: int, batches: int, stop: threading.Event) -> int:
        """Block until ``batches`` more batches are acknowledged than ``since`` (or the end)."""
        with self.lock:
            self.lock.wait_for(lambda: sum(self.acked) >= since + batches or stop.is_set(), JOIN_TIMEOUT_S)
            return sum(self.acked)

    def bounds(self) -> list[tuple[int, int]]:
        """Per writer: (batches acknowledged, batches acknowledged or in flight), right now."""
        with self.lock:
            return [(a, a + f) for a, f in zip(self.acked, self.in_flight, strict=True)]


def _writer(eng: Engine, w: int, ledger: Ledger) -> None:
    try:
        for k in range(ledger.acked[w], BATCHES):
            with ledger.lock:
                ledger.in_flight[w] = True
            eng.write_batches(batches_of(w, k))
            with ledger.lock:
                ledger.acked[w] = k + 1
                ledger.in_flight[w] = False
                ledger.lock.notify_all()
    except BaseException as exc:  # reported by the test thread
        ledger.errors.append(exc)


PREFIX_SQL = """
SELECT 'cpu' AS t, writer, count(*) AS n, sum(v) AS s, max(batch) AS m FROM cpu GROUP BY writer
UNION ALL
SELECT 'mem', writer, count(*), sum(v), max(batch) FROM mem GROUP BY writer
"""


def _check_prefixes(eng: Engine, ledger: Ledger) -> int:
    """One query; returns the cpu rows it saw. Raises AssertionError on any inconsistency."""
    before = ledger.bounds()
    got = eng.sql(PREFIX_SQL).to_pylist()
    after = ledger.bounds()
    seen = {(r["t"], r["writer"]): r for r in got}
    total = 0
    for w in range(WRITERS):
        cpu, mem = seen.get(("cpu", f"w{w}")), seen.get(("mem", f"w{w}"))
        batches = 0 if cpu is None else cpu["m"] + 1
        assert (0 if mem is None else mem["m"] + 1) == batches, f"writer {w}: tables disagree: {cpu} vs {mem}"
        if batches:
            assert cpu["n"] == CUM_ROWS[w][batches], f"writer {w}: {cpu['n']} rows for {batches} batches"
            assert int(cpu["s"]) == CUM_SUM[w][batches], f"writer {w}: sum {cpu['s']} for {batches} batches"
            assert mem["n"] == batches, f"writer {w}: mem has {mem['n']} rows for {batches} batches"
        lo, hi = before[w][0], after[w][1]
        assert lo <= batches <= hi, f"writer {w}: saw {batches} batches, acknowledged {lo} .. {hi} in flight"
        total += CUM_ROWS[w][batches]
    return total


def _check_total(eng: Engine, ledger: Ledger) -> int:
    """One count and sum over all of cpu; returns the count. Raises AssertionError if outside bounds."""
    before = ledger.bounds()
    row = eng.sql("SELECT count(*) AS n, coalesce(sum(v), 0) AS s FROM cpu").to_pylist()[0]
    after = ledger.bounds()
    n, s = row["n"], int(row["s"])
    lo_n = sum(CUM_ROWS[w][before[w][0]] for w in range(WRITERS))
    hi_n = sum(CUM_ROWS[w][after[w][1]] for w in range(WRITERS))
    lo_s = sum(CUM_SUM[w][before[w][0]] for w in range(WRITERS))
    hi_s = sum(CUM_SUM[w][after[w][1]] for w in range(WRITERS))
    assert lo_n <= n <= hi_n, f"count {n} outside acknowledged {lo_n} .. in flight {hi_n}"
    assert lo_s <= s <= hi_s, f"sum {s} outside acknowledged {lo_s} .. in flight {hi_s}"
    return n


def _reader(
    check: Callable[[Engine, Ledger], int],
    eng: Engine,
    ledger: Ledger,
    stop: threading.Event,
    counts: list[int],
) -> None:
    """Run ``check`` until the writers are done (and once more after); counts never go down."""
    try:
        while True:
            last = stop.is_set()  # one more query after the writers are done
            n = check(eng, ledger)
            assert not counts or n >= counts[-1], f"count went down: {counts[-1]} -> {n}"
            counts.append(n)
            if last:
                return
    except BaseException as exc:  # reported by the test thread
        ledger.errors.append(exc)


def _maintainer(step: Callable[[], Any], ledger: Ledger, stop: threading.Event, results: list[Any]) -> None:
    """Run ``step`` (a flush, a compaction) every MAINTAIN_EVERY acknowledged batches."""
    try:
        seen = 0
        while not stop.is_set():
            seen = ledger.wait_for_progress(seen, MAINTAIN_EVERY, stop)
            results.append(step())
    except BaseException as exc:  # reported by the test thread
        ledger.errors.append(exc)


def _stop(ledger: Ledger, stop: threading.Event) -> None:
    with ledger.lock:
        stop.set()
        ledger.lock.notify_all()


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
        assert not t.is_alive(), f"thread {t.name} did not finish"


@pytest.mark.parametrize("compaction", ["hours", "days"])
def test_queries_racing_writers_flushes_and_compactions_are_consistent(
    data_dir: Path, compaction: str
) -> None:
    eng = Engine.open(
        data_dir,
        fsync="none",
        min_chunk_rows=64,
        max_chunk_rows=512,
        max_chunk_age_s=0.05,
        persist_check_interval_s=0.01,
        # 2016 is long over: day files, unless the grace period outlasts the test.
        day_compaction_grace_s=3600.0 if compaction == "days" else 1e12,
    )
    ledger = Ledger()
    for w in range(WRITERS):  # the tables exist before the first query
        eng.write_batches(batches_of(w, 0))
        ledger.acked[w] = 1
    stop = threading.Event()
    prefix_counts: list[list[int]] = [[], []]
    total_counts: list[int] = []
    flushes: list[None] = []
    removed: list[int] = []
    writers = [
        threading.Thread(target=_writer, args=(eng, w, ledger), name=f"writer-{w}", daemon=True)
        for w in range(WRITERS)
    ]
    others = [
        *(
            threading.Thread(
                target=_reader,
                args=(_check_prefixes, eng, ledger, stop, c),
                name=f"prefix-reader-{i}",
                daemon=True,
            )
            for i, c in enumerate(prefix_counts)
        ),
        threading.Thread(
            target=_reader,
            args=(_check_total, eng, ledger, stop, total_counts),
            name="total-reader",
            daemon=True,
        ),
        threading.Thread(
            target=_maintainer, args=(eng.flush, ledger, stop, flushes), name="flusher", daemon=True
        ),
        threading.Thread(
            target=_maintainer, args=(eng.compact, ledger, stop, removed), name="compactor", daemon=True
        ),
    ]
    try:
        for t in [*others, *writers]:
            t.start()
        _join(writers)
        _stop(ledger, stop)
        _join(others)
        assert not ledger.errors, f"{len(ledger.errors)} thread(s) failed, first: {ledger.errors[0]!r}"
        total = sum(c[-1] for c in CUM_ROWS)
        assert prefix_counts[0][-1] == prefix_counts[1][-1] == total_counts[-1] == total
        print(
            f"queries: {[len(c) for c in prefix_counts]} prefix, {len(total_counts)} total; "
            f"flushes: {len(flushes)}, compactions: {len(removed)}, files compacted away: {sum(removed)}"
        )
        eng.flush()
        eng.compact()
        assert _check_prefixes(eng, ledger) == total
    finally:
        _stop(ledger, stop)
        eng.close()
    with Engine.open(data_dir) as eng:
        assert _check_prefixes(eng, ledger) == total


# -- group commit ---------------------------------------------------------------------------------


class WalFsyncs:
    """Counts fsync calls on the engine's current WAL segment (a wrapper around os.fsync)."""

    def __init__(self, eng: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self._segment = os.stat(eng.wal.segments()[-1][1])
        self._real = os.fsync
        self.count = 0
        monkeypatch.setattr(os, "fsync", self._fsync)

    def _fsync(self, fd: int) -> None:
        if os.path.samestat(os.fstat(fd), self._segment):
            self.count += 1
        self._real(fd)


def _cpu_batch(w: int, k: int) -> list[TableBatch]:
    return [TableBatch.build("cpu", [T0 + k * BATCH_NS + w], tags={"writer": [f"w{w}"]}, fields={"v": [1]})]


def test_two_fsync_always_writers_share_one_fsync(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = Engine.open(data_dir, fsync="always", max_chunk_age_s=3600.0)
    try:
        fsyncs = WalFsyncs(eng, monkeypatch)
        # Hold each writer between its WAL append and its wait for durability until both
        # have appended: whoever fsyncs first then covers both records.
        both_appended = threading.Barrier(2, timeout=JOIN_TIMEOUT_S)
        real_wait = eng.wal.wait_durable

        def wait_after_both_appended(seq: int) -> None:
            both_appended.wait()
            real_wait(seq)

        monkeypatch.setattr(eng.wal, "wait_durable", wait_after_both_appended)
        errors: list[BaseException] = []

        def write(w: int) -> None:
            try:
                eng.write_batches(_cpu_batch(w, 0))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,), name=f"writer-{w}") for w in range(2)]
        for t in threads:
            t.start()
        _join(threads)
        assert not errors, errors
        assert fsyncs.count == 1, f"{fsyncs.count} fsyncs for two concurrent writes"
        monkeypatch.setattr(eng.wal, "wait_durable", real_wait)
        eng.write_batches(_cpu_batch(0, 1))  # alone: it pays for its own fsync
        assert fsyncs.count == 2
        assert eng.sql("SELECT writer, count(*) FROM cpu GROUP BY writer ORDER BY writer").to_pylist() == [
            {"writer": "w0", "count_star()": 2},
            {"writer": "w1", "count_star()": 1},
        ]
    finally:
        eng.close()


def test_fsync_always_writers_racing_wal_rotation_all_return(data_dir: Path) -> None:
    # Tiny segments: nearly every append rotates the WAL while the other writer waits for an
    # fsync of the segment being closed.
    eng = Engine.open(data_dir, fsync="always", wal_segment_bytes=1024, max_chunk_age_s=3600.0)
    errors: list[BaseException] = []
    n = 200

    def write(w: int) -> None:
        try:
            for k in range(n):
                eng.write_batches(_cpu_batch(w, k))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=write, args=(w,), name=f"writer-{w}") for w in range(2)]
        for t in threads:
            t.start()
        _join(threads)
        assert not errors, f"{len(errors)} writers failed: {errors[0]!r}"
        assert eng.sql("SELECT count(*) FROM cpu").to_pylist() == [{"count_star()": 2 * n}]
    finally:
        eng.close()
    with Engine.open(data_dir) as eng:
        assert eng.sql("SELECT count(*) FROM cpu").to_pylist() == [{"count_star()": 2 * n}]


def test_flush_returns_while_writers_keep_filling_chunks(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush() persists what was live when it was called; it must not chase a busy writer.

    Each time flush() persists a chunk, a writer fills one more (as a writer faster than the
    persister does, e.g. with small chunks: with ``max_chunk_rows=512`` and one writer of 100-row
    batches, a flush took 9 s, the writer's whole run). The writer stops after ``rounds``
    chunks, so the failing case ends too.
    """
    eng = Engine.open(
        data_dir,
        fsync="none",
        min_chunk_rows=8,
        max_chunk_rows=8,
        max_chunk_age_s=3600.0,
        persist_check_interval_s=3600.0,
    )
    rounds = 30
    written = [0]  # rows

    def write(rows: int) -> None:
        t = T0 + (written[0] + np.arange(rows)) * ROW_NS
        eng.write("cpu", t, tags={"writer": ["w0"] * rows}, fields={"v": [1] * rows})
        written[0] += rows

    write(4)  # half a chunk: live, not frozen, so the background persister leaves it alone
    flusher = threading.current_thread()
    persisted_by_flush = [0]
    real_persist = eng._persist_chunk

    def persist_while_a_writer_writes(state, chunk) -> None:
        if threading.current_thread() is flusher:
            persisted_by_flush[0] += 1
            if persisted_by_flush[0] <= rounds:
                writer = threading.Thread(target=write, args=(8,), name="writer")  # fills a chunk
                writer.start()
                _join([writer])
        real_persist(state, chunk)

    monkeypatch.setattr(eng, "_persist_chunk", persist_while_a_writer_writes)
    try:
        eng.flush()
        assert eng.sql("SELECT count(*) FROM cpu").to_pylist() == [{"count_star()": written[0]}]
        assert persisted_by_flush[0] <= 1, f"flush() persisted {persisted_by_flush[0]} chunks, 1 was live"
    finally:
        monkeypatch.undo()
        eng.close()


def test_fsync_always_write_survives_a_rotation_during_its_fsync(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer A's group-commit fsync is in flight when writer B's append rotates the segment.

    B's rotation fsyncs and closes A's segment, so A's record is durable; but A then fsyncs the
    closed descriptor. When another thread has opened and closed a file in between (the
    persister writing Parquet, DuckDB reading it), the number is not the new segment's:
    EBADF, and A's write raises although it is committed (and visible). Here the interleaving
    is forced: A's fsync waits for B's rotation, whose new segment is kept off A's number.
    """
    import builtins

    from tsengine.write import wal as wal_module

    eng = Engine.open(data_dir, fsync="always", wal_segment_bytes=1, max_chunk_age_s=3600.0)
    real_fsync, real_open = os.fsync, builtins.open
    rotated = threading.Event()  # B's append, and the rotation in it, are done
    syncing_fd: list[int] = []
    b_errors: list[BaseException] = []

    def write_b() -> None:
        try:
            eng.write_batches(_cpu_batch(1, 0))
        except BaseException as exc:
            b_errors.append(exc)

    b = threading.Thread(target=write_b, name="writer-b")
    real_wait = eng.wal.wait_durable

    def wait_durable(seq: int) -> None:
        if threading.current_thread() is b:
            rotated.set()
        real_wait(seq)

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "writer-a" and not syncing_fd:
            syncing_fd.append(fd)
            b.start()  # A's record is appended and A is syncing: B appends and rotates now
            # A bound, not a synchronisation: an engine that makes rotation wait for the sync
            # in flight never rotates here, and A goes on once the bound is over.
            rotated.wait(5.0)
        real_fsync(fd)

    def open_segment(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if threading.current_thread() is b and f.fileno() in syncing_fd:
            moved = real_open(os.dup(f.fileno()), *args, **kwargs)  # as if another thread had
            f.close()  # taken the number in between
            f = moved
        return f

    monkeypatch.setattr(eng.wal, "wait_durable", wait_durable)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(wal_module, "open", open_segment, raising=False)
    a_errors: list[BaseException] = []

    def write_a() -> None:
        try:
            eng.write_batches(_cpu_batch(0, 0))
        except BaseException as exc:
            a_errors.append(exc)

    try:
        a = threading.Thread(target=write_a, name="writer-a")
        a.start()
        _join([a])
        _join([b])
        assert eng.sql("SELECT count(*) FROM cpu").to_pylist() == [{"count_star()": 2}]
        assert not b_errors, b_errors
        assert not a_errors, f"a committed write raised: {a_errors[0]!r}"
    finally:
        monkeypatch.undo()
        eng.close()
