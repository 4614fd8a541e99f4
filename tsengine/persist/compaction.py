"""Compaction: merge a partition's files into one, dropping duplicate (series, time) rows.

For each hour of a table that holds at least ``min_files`` files, or any file marked dirty,
the files are read oldest first (by WAL seq, then generation), concatenated, sorted and
de-duplicated exactly as a flush does (the newest row wins), and written as one file named
with the highest input seq and the next generation. The caller swaps the new manifest in under
the engine lock and defers deleting the inputs until no query may still read them, so readers
never see a row missing or doubled.

Blocking I/O; the caller holds the table's persist lock.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tsengine.persist.manifest import FileEntry, Manifest
from tsengine.persist.parquet import read_files, sort_dedup_split, write_file
from tsengine.persist.paths import PartitionFile, table_dir
from tsengine.settings import Settings

__all__ = ["compact_table"]


def compact_table(
    data_dir: Path, db: str, manifest: Manifest, *, settings: Settings, min_files: int = 2
) -> tuple[Manifest, list[Path]] | None:
    """Compact every eligible hour; returns (new manifest, obsolete files) or None."""
    table = manifest.table
    by_hour: dict[int, list[FileEntry]] = defaultdict(list)
    for e in manifest.files.values():
        by_hour[e.file.hour].append(e)
    new = manifest.copy()
    obsolete: list[Path] = []
    for hour, entries in sorted(by_hour.items()):
        if len(entries) < min_files and not any(e.dirty for e in entries):
            continue
        entries.sort(key=lambda e: (e.file.seq, e.file.gen))
        paths = [e.file.path(data_dir, db, table) for e in entries]
        data = read_files(paths, manifest.schema)
        parts = sort_dedup_split(data, manifest.schema.tags)
        out = PartitionFile(
            hour=hour,
            seq=max(e.file.seq for e in entries),
            gen=max(e.file.gen for e in entries) + 1,
            node=settings.node_id,
        )
        for e in entries:
            del new.files[e.file.relpath()]
        if parts:
            (_, rows), = parts
            written = write_file(
                out.path(data_dir, db, table),
                rows,
                manifest.schema,
                row_group_rows=settings.row_group_rows,
                zstd_level=settings.zstd_level,
                max_decimals=settings.max_scaled_decimals,
            )
            new.files[out.relpath()] = FileEntry(out, written.rows, written.min_ns, written.max_ns, written.bytes)
        obsolete.extend(paths)
    if not obsolete:
        return None
    new.save(table_dir(data_dir, db, table))
    return new, obsolete
