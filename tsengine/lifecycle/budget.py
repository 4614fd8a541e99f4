"""The storage budget: which local files to evict, oldest data first, to get under a byte limit.

Pure planning (:func:`plan_evictions`); the lifecycle archives or drops what it returns and
records the event. Local bytes are the Parquet files the manifests list plus the WAL segments
(:func:`wal_bytes`); the live ring buffers are memory, bounded separately.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from tsengine.persist.manifest import FileEntry
from tsengine.persist.paths import WAL_DIR, parse_wal_segment

__all__ = ["plan_evictions", "wal_bytes"]


def wal_bytes(data_dir: Path) -> int:
    """Bytes of the WAL segments now on disk."""
    total = 0
    try:
        with os.scandir(data_dir / WAL_DIR) as it:
            for entry in it:
                if parse_wal_segment(entry.name) is not None:
                    with contextlib.suppress(FileNotFoundError):  # removed by a persist round meanwhile
                        total += entry.stat().st_size
    except FileNotFoundError:
        pass
    return total


def plan_evictions(
    files: Iterable[tuple[str, str, FileEntry]], used_bytes: int, max_bytes: int
) -> list[tuple[str, str, FileEntry]]:
    """The oldest files (by their newest row, then their first hour) whose removal brings
    ``used_bytes`` to at most ``max_bytes``; empty when within the budget or ``max_bytes`` is 0.

    If every file together is not enough (the WAL alone is over the budget), all are returned.
    """
    if not max_bytes or used_bytes <= max_bytes:
        return []
    out = []
    for item in sorted(files, key=lambda f: (f[2].max_ns, f[2].file.hour, f[0], f[1])):
        if used_bytes <= max_bytes:
            break
        out.append(item)
        used_bytes -= item[2].bytes
    return out
