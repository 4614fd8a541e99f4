"""Crash safety: SIGKILL a writing process at random moments and inside flush and compaction.

A child process (:mod:`tests.integration.crash_writer`) writes numbered multi-table batches with
``fsync="always"`` and prints ``ACK <b>`` after each ``write_batches`` call returns; a thread in
it keeps flushing and compacting. The test kills it (seeded, several rounds: at random
acknowledgements, right after ``FLUSH-START``, right after ``COMPACT-START``), reopens the data
directory and checks that

* every acknowledged batch is there, whole, in every table; a batch that is there at all is
  whole (a write call is atomic) and is either acknowledged or the one call in flight;
* every row reads back exactly as written, once per (series, time), duplicates resolved
  last-write-wins;
* every Parquet file the manifests list reads with pyarrow, every file on disk is listed, and
  no ``*.tmp`` is left after the open;

then starts the next child on the same directory, so later rounds open a directory that has
already survived earlier crashes (some rounds skip the check and crash on top of a crash). The
engine's wall clock is fixed (:class:`crash_writer.FixedDayClock`): the data's first day is
over, so compaction writes day files for it and hour files for the second day.

A kill alone cannot tear a ``write()``, so the torn and the corrupt last WAL record are made by
hand in a killed child's WAL; stray temporary files are planted where an interrupted write
leaves them. Regression tests pin down the crash-window bugs found here.

Waiting on the child is by reading its stdout with a deadline; nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.integration import crash_writer as cw
from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.model import TableBatch
from tsengine.persist.paths import PartitionFile

ROOT = Path(__file__).resolve().parents[2]
#: Seconds any single expected line from a child may take (startup imports pyarrow and duckdb).
LINE_TIMEOUT_S = 30.0
SEED = 20261127
#: Maintenance runs after every this many acknowledged batches (flush, then compact, ...).
MAINTAIN_EVERY = 40
#: An open that reads back and never persists on its own, so the directory can be inspected.
INSPECT_SETTINGS = dict(
    min_chunk_rows=1 << 20,
    max_chunk_rows=1 << 20,
    max_chunk_age_s=3600.0,
    persist_check_interval_s=3600.0,
    clock=cw.FixedDayClock(),
)

pytestmark = pytest.mark.timeout(120)


# -- the child --------------------------------------------------------------------------------


class Child:
    """A crash_writer process and a line reader over its stdout with deadlines."""

    def __init__(self, data_dir: Path, start: int, log_dir: Path, *extra: str) -> None:
        self.start = start
        self.stderr_path = log_dir / f"child-{start}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.crash_writer",
                    str(data_dir),
                    "--start",
                    str(start),
                    *extra,
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self._eof = False

    def read_line(self, timeout_s: float = LINE_TIMEOUT_S) -> str | None:
        """The next line, or None at end of output; fails past the deadline."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            if self._eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child printed no line within {timeout_s} s; stderr:\n{self.stderr()}")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                data = os.read(self._fd, 65536)
                self._eof = not data
                self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def expect(self, want: str) -> None:
        line = self.read_line()
        assert line == want, f"child said {line!r}, expected {want!r}; stderr:\n{self.stderr()}"

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.returncode is None:  # a failed test: leave no writer behind
            self.kill()

    def kill(self) -> list[str]:
        """SIGKILL now; returns the lines it printed before dying that were not read yet."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT_S)
        rest = []
        while (line := self.read_line()) is not None:
            rest.append(line)
        self.proc.stdout.close()
        self.proc.stdin.close()
        return rest

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


# -- a kill round -----------------------------------------------------------------------------


@dataclass
class Round:
    start: int
    mode: str  # "random", "flush" or "compact"
    acked: list[int] = field(default_factory=list)
    #: Where the kill landed: inside flush(), inside compact(), or "other" (writing, with the
    #: background persister possibly writing Parquet too).
    phase: str = "other"
    tmp_files: list[str] = field(default_factory=list)  # *.tmp after the kill: writes it interrupted
    unlisted_files: int = 0  # Parquet files on disk no manifest lists (renamed, not yet listed)

    @property
    def in_flight(self) -> int:
        """The one batch that may have reached the WAL without being acknowledged."""
        return (self.acked[-1] if self.acked else self.start - 1) + 1


def run_round(data_dir: Path, log_dir: Path, start: int, mode: str, rng: random.Random) -> Round:
    rnd = Round(start=start, mode=mode)
    target = {"random": rng.randint(20, 600), "flush": rng.randint(1, 3), "compact": rng.randint(1, 3)}[mode]
    seen = 0
    phase = "other"
    with Child(data_dir, start, log_dir, "--maintain-every", str(MAINTAIN_EVERY)) as child:
        child.expect("READY")
        while seen < target:
            line = child.read_line()
            assert line is not None, f"child exited early; stderr:\n{child.stderr()}"
            if line.startswith("ACK "):
                rnd.acked.append(int(line[4:]))
                seen += mode == "random"
            elif line.endswith("-START"):
                phase = line.removesuffix("-START").lower()
                seen += phase == mode
            elif line.endswith("-END"):
                phase = "other"
        for line in child.kill():
            if line.startswith("ACK "):
                rnd.acked.append(int(line[4:]))
            elif line.endswith("-START"):
                phase = line.removesuffix("-START").lower()
            elif line.endswith("-END"):
                phase = "other"  # it returned before the signal landed
    rnd.phase = phase
    rnd.tmp_files = sorted(
        "parquet.tmp" if p.name.endswith(".parquet.tmp") else p.name for p in data_dir.rglob("*.tmp")
    )
    rnd.unlisted_files = len(_on_disk_parquet(data_dir) - _listed_parquet(data_dir))
    assert rnd.acked == list(range(start, start + len(rnd.acked))), "acknowledgements out of order"
    return rnd


# -- what the directory must hold -------------------------------------------------------------


def _table_dirs(data_dir: Path) -> list[Path]:
    return sorted(p.parent for p in data_dir.glob("*/*/_manifest.json"))


def _listed_parquet(data_dir: Path) -> set[Path]:
    out = set()
    for tdir in _table_dirs(data_dir):
        doc = json.loads((tdir / "_manifest.json").read_bytes())
        out |= {tdir / f["path"] for f in doc["files"]}
    return out


def _on_disk_parquet(data_dir: Path) -> set[Path]:
    return {*data_dir.glob("*/*/date=*/hour=*/*.parquet"), *data_dir.glob("*/*/date=*/*.parquet")}


def _round_of(b: int, starts: list[int]) -> int:
    return max(s for s in starts if s <= b)


def expected_rows(table: str, present: set[int], starts: list[int]) -> pa.Table:
    """The rows ``table`` must hold when exactly the batches ``present`` were written."""
    parts = []
    for b in sorted(present):
        r = b + cw.RESEND_LAG
        rewritten = r in present and cw.resends(r, _round_of(r, starts)) and cw.resend_table(r) == table
        parts.append(cw.regular_rows(b, w=r if rewritten else b))
        if table == "cpu" and cw.has_late_rows(b):
            parts.append(cw.late_rows(b))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in ("host", "time", "batch", "w", "v")}
    return pa.table(cols).sort_by([("host", "ascending"), ("time", "ascending")])


def read_back(eng: Engine, table: str) -> pa.Table:
    got = eng.sql(f'SELECT host, epoch_ns(time) AS time, batch, w, v FROM "{table}" ORDER BY host, time')
    return got.cast(
        pa.schema(
            [
                ("host", pa.string()),
                ("time", pa.int64()),
                ("batch", pa.int64()),
                ("w", pa.int64()),
                ("v", pa.float64()),
            ]
        )
    )


def check_files(data_dir: Path) -> None:
    """After an open: every listed file reads, every file is listed, no temporary file is left."""
    leftovers = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*.tmp"))
    assert not leftovers, f"temporary files left after open: {leftovers}"
    listed, on_disk = _listed_parquet(data_dir), _on_disk_parquet(data_dir)
    assert listed <= on_disk, f"listed but missing: {sorted(map(str, listed - on_disk))}"
    assert on_disk <= listed, f"on disk but not listed: {sorted(map(str, on_disk - listed))}"
    for p in sorted(listed):
        pq.read_table(p)  # raises on a torn or corrupt file


def check_contents(eng: Engine, acked: set[int], allowed: set[int], starts: list[int]) -> set[int]:
    """Every acknowledged batch whole, nothing else but whole in-flight batches; returns present."""
    present_by_table = {}
    for table in cw.TABLES:
        got = read_back(eng, table)
        dups = eng.sql(
            f'SELECT host, time, count(*) AS n FROM "{table}" GROUP BY ALL HAVING count(*) > 1 LIMIT 5'
        ).to_pylist()
        assert not dups, f"{table}: duplicate (series, time) rows: {dups}"
        ids, counts = np.unique(got.column("batch").to_numpy(), return_counts=True)
        wrong = {int(b): int(n) for b, n in zip(ids, counts, strict=True) if n != cw.own_rows(int(b), table)}
        assert not wrong, f"{table}: batches not whole (batch: rows): {dict(list(wrong.items())[:10])}"
        present_by_table[table] = set(ids.tolist())
    present = present_by_table["cpu"]
    for table, ids in present_by_table.items():
        assert ids == present, f"a batch is in some tables only: {sorted(ids ^ present)[:10]} ({table})"
    missing = acked - present
    assert not missing, f"{len(missing)} acknowledged batches lost, e.g. {sorted(missing)[:10]}"
    phantom = present - acked - allowed
    assert not phantom, f"batches neither acknowledged nor in flight: {sorted(phantom)[:10]}"
    for table in cw.TABLES:
        got, want = read_back(eng, table), expected_rows(table, present, starts)
        assert got.num_rows == want.num_rows, f"{table}: {got.num_rows} rows, expected {want.num_rows}"
        for name in want.column_names:
            diff = pc.not_equal(got.column(name), want.column(name))
            bad = np.flatnonzero(diff.to_numpy(zero_copy_only=False))
            if len(bad):
                first = int(bad[0])
                raise AssertionError(
                    f"{table}.{name} differs in {len(bad)} rows, first: "
                    f"got {got.slice(first, 1).to_pylist()}, expected {want.slice(first, 1).to_pylist()}"
                )
    return present


def check_compacted(data_dir: Path) -> None:
    """After compact(): no two files share an hour, none is dirty, no duplicates even on disk."""
    for tdir in _table_dirs(data_dir):
        doc = json.loads((tdir / "_manifest.json").read_bytes())
        hours = [h for f in doc["files"] for h in PartitionFile.parse(f["path"]).hours]
        assert len(hours) == len(set(hours)), f"{tdir.name}: an hour is still in several files"
        assert not any(f["dirty"] for f in doc["files"]), f"{tdir.name}: a file is still dirty"
        for f in doc["files"]:
            t = pq.read_table(tdir / f["path"], columns=["host", "time"])
            keys = pa.table({"h": t.column("host").cast(pa.string()), "t": t.column("time").cast(pa.int64())})
            assert keys.group_by(["h", "t"]).aggregate([]).num_rows == t.num_rows, (
                f"duplicates in {f['path']}"
            )


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_and_inside_flush_and_compaction(tmp_path: Path) -> None:
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    rng = random.Random(SEED)
    # (kill mode, verify after it): unverified rounds make the next child open a crashed
    # directory directly, so crashes pile on crashes.
    plan = [
        ("flush", True),
        ("compact", True),
        ("random", False),
        ("flush", True),
        ("random", True),
        ("compact", False),
        ("random", True),
        ("flush", False),
        ("compact", True),
        ("random", False),
        ("random", True),
    ]
    rounds: list[Round] = []
    acked: set[int] = set()
    allowed: set[int] = set()
    start = 0
    extra = 0
    while plan:
        mode, verify = plan.pop(0)
        rnd = run_round(data_dir, log_dir, start, mode, rng)
        rounds.append(rnd)
        acked |= set(rnd.acked)
        allowed.add(rnd.in_flight)
        start = rnd.in_flight + 1
        if mode not in ("random", rnd.phase) and extra < 4:
            plan.append((mode, True))  # the kill landed after the call returned: try again
            extra += 1
        if verify or not plan:
            starts = [r.start for r in rounds]
            with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
                check_files(data_dir)
                present = check_contents(eng, acked, allowed, starts)
    # Compaction folds every file adopted after a crash into one clean file per hour or day.
    with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
        eng.compact()
        check_compacted(data_dir)
        assert check_contents(eng, acked, allowed, starts) == present
    summary = [(r.mode, r.phase, len(r.acked), r.tmp_files, r.unlisted_files) for r in rounds]
    print("rounds (mode, killed in, acks, *.tmp left, unlisted files):", *summary, sep="\n  ")
    phases = [r.phase for r in rounds]
    assert len(rounds) >= 5
    assert "flush" in phases, f"no kill landed inside flush(): {summary}"
    assert "compact" in phases, f"no kill landed inside compact(): {summary}"
    assert len(acked) > 500, "too little was written to mean anything"


def _kill_after(data_dir: Path, log_dir: Path, start: int, count: int) -> list[int]:
    """A child writes ``count`` batches into the WAL only (no persistence), then is killed."""
    with Child(
        data_dir, start, log_dir,
        "--count", str(count), "--min-chunk-rows", str(1 << 20), "--max-chunk-rows", str(1 << 20),
        "--max-chunk-age-s", "3600", "--wal-segment-bytes", str(1 << 30),
    ) as child:  # fmt: skip
        child.expect("READY")
        acked = []
        while (line := child.read_line()) != "IDLE":
            assert line is not None and line.startswith("ACK "), f"unexpected {line!r}:\n{child.stderr()}"
            acked.append(int(line[4:]))
        assert child.kill() == []
    return acked


_HEADER = 20  # magic u32 | length u32 | crc32 u32 | seq u64 (tsengine.write.wal)


def _last_record(segment: Path) -> tuple[int, int]:
    """(offset, payload length) of the last record of a WAL segment, walking its framing."""
    data = segment.read_bytes()
    pos = last = 0
    length = 0
    while pos < len(data):
        last = pos
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += _HEADER + length
    assert pos == len(data), "the segment does not end on a record boundary"
    return last, length


@pytest.mark.parametrize("damage", ["torn", "crc"])
def test_damaged_last_wal_record_is_truncated_not_replayed(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir, log_dir = tmp_path / "data", tmp_path / "logs"
    log_dir.mkdir()
    acked = _kill_after(data_dir, log_dir, 0, 12)
    segment = max((data_dir / "_wal").glob("*.wal"))
    offset, length = _last_record(segment)
    with open(segment, "r+b") as f:
        if damage == "torn":
            f.truncate(segment.stat().st_size - 7)  # the kill tore the last write() mid-record
        else:
            f.seek(offset + _HEADER + length // 2)
            byte = f.read(1)[0]
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte ^ 0x5A]))  # a bit error inside the payload: CRC mismatch
    damaged = acked[-1]
    starts = [0]
    with caplog.at_level(logging.WARNING, logger="tsengine.wal"):
        eng = Engine.open(data_dir, **INSPECT_SETTINGS)
    with eng:
        assert any("truncating" in r.getMessage() and segment.name in r.getMessage() for r in caplog.records)
        assert segment.stat().st_size == offset, "the damaged record was not cut off at its start"
        present = check_contents(eng, set(acked[:-1]), set(), starts)
        assert damaged not in present
        check_files(data_dir)
    # Writing on after the truncation: the garbage never comes back, the new batches stay.
    more = _kill_after(data_dir, log_dir, damaged + 1, 5)
    with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
        present = check_contents(eng, set(acked[:-1]) | set(more), set(), [0, damaged + 1])
        assert damaged not in present


def _write_and_close(data_dir: Path, batches: range) -> None:
    with Engine.open(data_dir, fsync="always") as eng:
        for b in batches:
            eng.write_batches(
                [
                    TableBatch.build(
                        t,
                        c["time"],
                        tags={"host": c["host"]},
                        fields={"batch": c["batch"], "w": c["w"], "v": c["v"]},
                    )
                    for t, c in cw.batch_rows(b, batches.start).items()
                ]
            )
            if b % 10 == 9:
                eng.flush()


def test_stray_parquet_tmp_is_removed_on_open_and_never_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _write_and_close(data_dir, range(30))
    listed = sorted(_listed_parquet(data_dir))
    victim = listed[-1]
    half = victim.read_bytes()[: victim.stat().st_size // 2]
    # What a kill inside write_file leaves: a partly written file under the temporary name, in
    # an existing partition and in a partition no file has reached yet.
    strays = [
        victim.with_name("n0-99999999999999999999.parquet.tmp"),
        victim.with_name(victim.name + ".tmp"),
        victim.parent.parent.parent / "date=2030-01-01" / "hour=05" / "n0-00000000000000000001.parquet.tmp",
    ]
    for p in strays:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(half)
    with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
        assert not any(p.exists() for p in strays)
        check_files(data_dir)
        check_contents(eng, set(range(30)), set(), [0])
        assert sorted(_listed_parquet(data_dir)) == listed


def test_stray_manifest_tmp_is_removed_on_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _write_and_close(data_dir, range(5))
    tdir = _table_dirs(data_dir)[0]
    stray = tdir / "_manifest.json.tmp"  # a kill inside Manifest.save, before the rename
    stray.write_bytes((tdir / "_manifest.json").read_bytes()[:40])
    with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
        check_contents(eng, set(range(5)), set(), [0])
        check_files(data_dir)


@pytest.mark.parametrize("torn", ["empty", "half"])
def test_empty_parquet_torn_by_a_kill_during_the_first_open(tmp_path: Path, torn: str) -> None:
    data_dir = tmp_path / "data"
    _write_and_close(data_dir, range(5))
    # A kill during the very first open, while it wrote "_empty.parquet", leaves a zero-length
    # or partial file that a later open must not trust.
    empty = data_dir / "_empty.parquet"
    empty.write_bytes(b"" if torn == "empty" else empty.read_bytes()[: empty.stat().st_size // 2])
    with Engine.open(data_dir, **INSPECT_SETTINGS) as eng:
        check_files(data_dir)
        check_contents(eng, set(range(5)), set(), [0])
        assert pq.read_table(empty).num_rows == 0


@pytest.mark.parametrize("trigger", ["day over max_compaction_rows", "restart with a longer grace"])
def test_late_rewrite_of_a_compacted_day_keeps_last_write_wins(tmp_path: Path, trigger: str) -> None:
    """A day merged into a day file, then a late rewrite of one of its samples, then compaction.

    The crash rounds first showed this when the child restarted with another
    ``day_compaction_grace_s``; it needs no crash at all.
    """
    data_dir = tmp_path / "data"
    t0 = 1_451_606_400_000_000_000  # 2016-01-01T00:00Z, a day long over for this clock
    clock = ManualClock(start_ns=t0 + 10 * 24 * cw.HOUR_NS)
    settings = {"max_compaction_rows": 10} if trigger.startswith("day") else {}
    eng = Engine.open(data_dir, clock=clock, **settings)
    for first in (0, 5):
        eng.write(
            "m", t0 + np.arange(first, first + 5) * 10**9, tags={"h": ["a"] * 5}, fields={"v": [1.0] * 5}
        )
        eng.flush()
    eng.compact()  # 10 rows: one day file
    if trigger.startswith("restart"):
        eng.close()
        eng = Engine.open(data_dir, clock=clock, day_compaction_grace_s=1e12)
    with eng:
        eng.write("m", [t0, t0 + 100 * 10**9], tags={"h": ["a", "a"]}, fields={"v": [2.0, 3.0]})
        eng.flush()
        eng.compact()  # 12 rows, or a grace not yet over: the day is handled hour by hour
        got = eng.sql("SELECT v FROM m WHERE epoch_ns(time) = $1", [t0]).column("v").to_pylist()
        assert got == [2.0], f"the rewritten sample reads back as {got}"
