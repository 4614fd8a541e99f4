"""Every on-disk name of the data directory is built and parsed here, and nowhere else.

Layout::

    <data>/
      _wal/<first_seq:020d>.wal                      WAL segments (see tsengine.write.wal)
      _tmp/                                          DuckDB spill space
      _empty.parquet                                 zero-row file, keeps view shapes constant
      _lock                                          flock of the engine that has the directory open
      <db>/<table>/_manifest.json                    the table's schema and file list
      <db>/<table>/date=YYYY-MM-DD/hour=HH/<node>-<seq:020d>[.<gen>].parquet   an hour's rows
      <db>/<table>/date=YYYY-MM-DD/<node>-<seq:020d>.<gen>.parquet              a whole day's rows

Flushes write hour files. Once a day is over (plus a grace period for late samples),
compaction merges its hour files into one day file directly under ``date=``: each series is then
one long sorted run, which is what makes delta coding and row-group skipping pay off (TSBS
integers: 0.52 bytes/sample in hour files, 0.37 in a day file; a one-host query reads a tenth
of the row groups). ``seq`` is the highest WAL sequence number whose rows the file holds (it
orders files newest-last for de-duplication); ``gen`` counts compactions (0, the flush output,
is left out of the name).
Table names are stored as written; characters a filesystem or the Hive layout cannot hold
(``/``, ``\\``, ``%``, ``=``, control characters, a leading dot or underscore) are
percent-escaped.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EMPTY_PARQUET",
    "LOCK_FILE",
    "MANIFEST",
    "TMP_DIR",
    "WAL_DIR",
    "PartitionFile",
    "escape_name",
    "hour_of_ns",
    "partition_dir",
    "table_dir",
    "unescape_name",
    "wal_segment_path",
]

WAL_DIR = "_wal"
TMP_DIR = "_tmp"
MANIFEST = "_manifest.json"
EMPTY_PARQUET = "_empty.parquet"
LOCK_FILE = "_lock"

NS_PER_HOUR = 3_600_000_000_000
_UNSAFE = re.compile(r"[/\\%=\x00-\x1f\x7f]|^\.|^_")
_FILE_RE = re.compile(r"(?P<node>[A-Za-z0-9_\-]+)-(?P<seq>\d{20})(?:\.(?P<gen>\d+))?\.parquet\Z")
_PART_RE = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})(?:/hour=(\d{2}))?\Z")
HOURS_PER_DAY = 24


def escape_name(name: str) -> str:
    """Escape a table name for use as one path component."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), name)


def unescape_name(component: str) -> str:
    """Inverse of :func:`escape_name`."""
    return urllib.parse.unquote(component, errors="strict")


def table_dir(data_dir: Path, db: str, table: str) -> Path:
    return data_dir / db / escape_name(table)


def hour_of_ns(ts_ns: int) -> int:
    """Hours since the epoch of a nanosecond timestamp (the partition key)."""
    return ts_ns // NS_PER_HOUR


def partition_dir(data_dir: Path, db: str, table: str, hour: int) -> Path:
    import datetime as _dt

    start = _dt.datetime.fromtimestamp(hour * 3600, tz=_dt.UTC)
    return table_dir(data_dir, db, table) / f"date={start:%Y-%m-%d}" / f"hour={start:%H}"


def parse_partition(rel: str) -> tuple[int, int]:
    """(first hour, hours spanned) of a ``date=...[/hour=..]`` relative directory."""
    import calendar

    m = _PART_RE.match(rel)
    if not m:
        raise ValueError(f"cannot parse partition directory {rel!r}")
    y, mo, d = (int(g) for g in m.groups()[:3])
    h = m.group(4)
    first = calendar.timegm((y, mo, d, int(h or 0), 0, 0)) // 3600
    return first, 1 if h is not None else HOURS_PER_DAY


def wal_segment_path(data_dir: Path, first_seq: int) -> Path:
    return data_dir / WAL_DIR / f"{first_seq:020d}.wal"


def parse_wal_segment(name: str) -> int | None:
    if name.endswith(".wal") and len(name) == 24 and name[:20].isdigit():
        return int(name[:20])
    return None


@dataclass(frozen=True, order=True)
class PartitionFile:
    """One Parquet file of a table: which hours, which node wrote it, up to which WAL seq.

    ``hour`` is the first hour (since the epoch) the file covers and ``span`` how many: 1 for an
    hour file, 24 for a day file (whose ``hour`` is midnight UTC).
    """

    hour: int
    seq: int
    gen: int
    node: str
    span: int = 1

    @property
    def hours(self) -> range:
        return range(self.hour, self.hour + self.span)

    @property
    def name(self) -> str:
        suffix = f".{self.gen}" if self.gen else ""
        return f"{self.node}-{self.seq:020d}{suffix}.parquet"

    def path(self, data_dir: Path, db: str, table: str) -> Path:
        return table_dir(data_dir, db, table) / self.relpath()

    def relpath(self) -> str:
        import datetime as _dt

        start = _dt.datetime.fromtimestamp(self.hour * 3600, tz=_dt.UTC)
        if self.span == HOURS_PER_DAY:
            return f"date={start:%Y-%m-%d}/{self.name}"
        return f"date={start:%Y-%m-%d}/hour={start:%H}/{self.name}"

    @classmethod
    def parse(cls, relpath: str) -> PartitionFile:
        """Parse ``date=YYYY-MM-DD[/hour=HH]/<node>-<seq>[.<gen>].parquet``."""
        head, _, name = relpath.rpartition("/")
        m = _FILE_RE.match(name)
        if not m:
            raise ValueError(f"cannot parse partition file name {name!r}")
        first, span = parse_partition(head)
        return cls(
            hour=first,
            span=span,
            seq=int(m.group("seq")),
            gen=int(m.group("gen") or 0),
            node=m.group("node"),
        )
