"""Compaction: merge a partition's files into one, dropping duplicate (series, time) rows.

Two levels:

* an **hour** that holds at least ``compact_min_files`` files, or any file marked dirty, is
  merged into one hour file;
* a **day** that ended more than ``day_compaction_grace_s`` ago and holds more than one file
  (hour files, and a day file from an earlier pass when late samples arrived) is merged into
  one day file, unless it has more than ``max_compaction_rows`` rows (then its hours are
  compacted one by one instead).

Files are read oldest first (by WAL seq, then generation), concatenated, sorted and
de-duplicated exactly as a flush does (the newest row wins), and written as one file named with
the highest input seq and the next generation. The caller swaps the new manifest in under the
engine lock and defers deleting the inputs until no query may still read them, so readers never
see a row missing or doubled.

Blocking I/O; the caller holds the table's persist lock.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tsengine.persist.manifest import FileEntry, Manifest
from tsengine.persist.parquet import read_files, sort_dedup_split, write_file
from tsengine.persist.paths import HOURS_PER_DAY, NS_PER_HOUR, PartitionFile, table_dir
from tsengine.settings import Settings

__all__ = ["compact_table"]


def _plan(manifest: Manifest, settings: Settings, now_ns: int) -> list[tuple[int, int, list[FileEntry]]]:
    """Groups to merge: ``(first_hour, span_hours, entries)``."""
    closed_before_hour = (now_ns - int(settings.day_compaction_grace_s * 1e9)) // NS_PER_HOUR
    days: dict[int, list[FileEntry]] = defaultdict(list)
    for e in manifest.files.values():
        days[e.file.hour // HOURS_PER_DAY].append(e)
    groups = []
    for day, entries in sorted(days.items()):
        day_closed = (day + 1) * HOURS_PER_DAY <= closed_before_hour
        has_day_file = any(e.file.span == HOURS_PER_DAY for e in entries)
        rows = sum(e.rows for e in entries)
        # Once a day has a day file, late rows for it are merged at day level too, so that no
        # hour file ever sits clean beside a day file that covers its hour.
        if (day_closed or has_day_file) and rows <= settings.max_compaction_rows:
            if len(entries) > 1 or any(e.dirty or e.file.span == 1 for e in entries):
                groups.append((day * HOURS_PER_DAY, HOURS_PER_DAY, entries))
            continue
        hours: dict[int, list[FileEntry]] = defaultdict(list)
        for e in entries:
            if e.file.span == 1:
                hours[e.file.hour].append(e)
        for hour, group in sorted(hours.items()):
            # A lone dirty file is only worth rewriting if that makes its hour clean, which a
            # day file covering the hour (a day too big to merge) prevents.
            if len(group) >= settings.compact_min_files or (any(e.dirty for e in group) and not has_day_file):
                groups.append((hour, 1, group))
    return groups


def compact_table(
    data_dir: Path, db: str, manifest: Manifest, *, settings: Settings, now_ns: int
) -> tuple[Manifest, list[Path]] | None:
    """Compact every eligible partition; returns (new manifest, obsolete files) or None."""
    table = manifest.table
    new = manifest.copy()
    obsolete: list[Path] = []
    for first_hour, span, entries in _plan(manifest, settings, now_ns):
        entries.sort(key=lambda e: (e.file.seq, e.file.gen))
        paths = [e.file.path(data_dir, db, table) for e in entries]
        data = read_files(paths, manifest.schema)
        parts = sort_dedup_split(
            data, manifest.schema.tags, span_hours=span, dedup=not manifest.schema.append_only
        )
        out = PartitionFile(
            hour=first_hour,
            span=span,
            seq=max(e.file.seq for e in entries),
            gen=max(e.file.gen for e in entries) + 1,
            node=settings.node_id,
        )
        for e in entries:
            del new.files[e.file.relpath()]
        if parts:
            ((_, rows),) = parts
            written = write_file(
                out.path(data_dir, db, table),
                rows,
                manifest.schema,
                row_group_rows=settings.row_group_rows,
                zstd_level=settings.zstd_level,
                max_decimals=settings.max_scaled_decimals,
            )
            new.files[out.relpath()] = FileEntry(
                out, written.rows, written.min_ns, written.max_ns, written.bytes
            )
        obsolete.extend(paths)
    if not obsolete:
        return None
    new.save(table_dir(data_dir, db, table))
    return new, obsolete
