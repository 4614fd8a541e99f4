"""A table's manifest: its schema, its Parquet files and how far its WAL records are persisted.

``<data>/<db>/<table>/_manifest.json`` is rewritten atomically (tmp, fsync, rename, fsync dir)
after every flush, compaction and retention pass. It is the list the query layer reads files
from, so a file appears in queries exactly when a manifest holding it is in force.

Crash windows and how :func:`reconcile` closes them on open:

* a file renamed into place but not yet in the manifest (crash between the two): it is complete
  (renamed only after fsync), so it is adopted and marked ``dirty`` (it may duplicate rows of a
  file it was compacted from; queries de-duplicate dirty hours until the next compaction);
* a manifest entry whose file is gone (deleted by hand): dropped with a warning;
* ``*.tmp`` files from an interrupted write: removed.

``dirty`` files may hold rows that duplicate rows of other files of the same hour; their hours
are de-duplicated at query time and cleaned by compaction.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from tsengine.durable import atomic_write
from tsengine.model.schema import TableSchema
from tsengine.persist.parquet import file_columns
from tsengine.persist.paths import MANIFEST, PartitionFile

__all__ = ["FileEntry", "Manifest", "reconcile"]

log = logging.getLogger("tsengine.persist")


@dataclass(frozen=True)
class FileEntry:
    file: PartitionFile
    rows: int
    min_ns: int
    max_ns: int
    bytes: int
    dirty: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.file.relpath(),
            "rows": self.rows,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "bytes": self.bytes,
            "dirty": self.dirty,
        }

    @classmethod
    def from_json(cls, doc: dict) -> FileEntry:
        return cls(
            file=PartitionFile.parse(doc["path"]),
            rows=int(doc["rows"]),
            min_ns=int(doc["min_ns"]),
            max_ns=int(doc["max_ns"]),
            bytes=int(doc["bytes"]),
            dirty=bool(doc.get("dirty", False)),
        )


@dataclass
class Manifest:
    db: str
    schema: TableSchema
    files: dict[str, FileEntry] = field(default_factory=dict)  # relpath -> entry
    hwm: dict[str, int] = field(default_factory=dict)  # node -> highest persisted WAL seq

    @property
    def table(self) -> str:
        return self.schema.table

    def copy(self) -> Manifest:
        return replace(self, files=dict(self.files), hwm=dict(self.hwm))

    def persisted_seq(self, node: str) -> int:
        """Every WAL record of this table with a seq up to this one is in a listed file.

        Only the manifest's own high-water mark counts: a file adopted after a crash may be one
        of several a flush was writing, so its records are replayed (and de-duplicated).
        """
        return self.hwm.get(node, 0)

    def max_file_seq(self) -> int:
        return max((e.file.seq for e in self.files.values()), default=0)

    def dirty_hours(self) -> set[int]:
        return {h for e in self.files.values() if e.dirty for h in e.file.hours}

    def max_ns(self) -> int | None:
        return max((e.max_ns for e in self.files.values()), default=None)

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "db": self.db,
            "table": self.table,
            "schema": self.schema.to_json(),
            **({"append_only": True} if self.schema.append_only else {}),
            "hwm": self.hwm,
            "files": [
                e.to_json() for e in sorted(self.files.values(), key=lambda e: (e.file.hour, e.file.seq))
            ],
        }

    @classmethod
    def from_json(cls, doc: dict) -> Manifest:
        schema = TableSchema.from_json(doc["table"], doc["schema"], append_only=bool(doc.get("append_only")))
        files = {e.file.relpath(): e for e in (FileEntry.from_json(f) for f in doc["files"])}
        return cls(db=doc["db"], schema=schema, files=files, hwm={k: int(v) for k, v in doc["hwm"].items()})

    def save(self, table_dir: Path) -> None:
        """Replace the manifest atomically (tmp, fsync, rename, fsync the directory)."""
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        atomic_write(table_dir / MANIFEST, lambda f: f.write(data))

    @classmethod
    def load(cls, table_dir: Path) -> Manifest | None:
        path = table_dir / MANIFEST
        if not path.exists():
            return None
        return cls.from_json(json.loads(path.read_bytes()))


def reconcile(manifest: Manifest | None, table_dir: Path, db: str, table: str) -> tuple[Manifest, bool]:
    """Make the manifest agree with the files on disk; returns (manifest, changed)."""
    changed = False
    if manifest is None:
        manifest = Manifest(db=db, schema=TableSchema(table))
        changed = True
    stale = table_dir / (MANIFEST + ".tmp")
    if stale.exists():
        log.warning("removing %s left by an interrupted manifest write", stale)
        stale.unlink()
    on_disk: dict[str, Path] = {}
    for date_dir in sorted(table_dir.glob("date=*")):
        for part_dir in [date_dir, *sorted(date_dir.glob("hour=*"))]:
            prefix = date_dir.name if part_dir is date_dir else f"{date_dir.name}/{part_dir.name}"
            for entry in os.scandir(part_dir):
                if not entry.is_file():
                    continue
                rel = f"{prefix}/{entry.name}"
                if entry.name.endswith(".tmp"):
                    log.warning("removing %s/%s left by an interrupted write", table_dir, rel)
                    os.unlink(entry.path)
                elif entry.name.endswith(".parquet"):
                    on_disk[rel] = Path(entry.path)
    for rel in list(manifest.files):
        if rel not in on_disk:
            log.warning("table %s.%s: file %s is listed but missing; dropping it", db, table, rel)
            del manifest.files[rel]
            changed = True
    for rel, path in on_disk.items():
        if rel in manifest.files:
            continue
        if manifest.schema.append_only:
            # Nothing de-duplicates an append-only table, and an unlisted file is always
            # redundant: a flush's rows are still in the WAL (replayed), a compaction's inputs
            # are still listed. Adopting it would double its rows.
            log.warning("table %s.%s: removing %s written before a crash (append-only)", db, table, rel)
            path.unlink()
            changed = True
            continue
        try:
            pfile = PartitionFile.parse(rel)
        except ValueError:
            log.warning("table %s.%s: ignoring foreign file %s", db, table, rel)
            continue
        cols, rows, lo, hi = file_columns(path)
        manifest.schema = manifest.schema.union(cols)
        manifest.files[rel] = FileEntry(pfile, rows, lo, hi, path.stat().st_size, dirty=True)
        log.warning(
            "table %s.%s: adopted %s written before a crash (hour marked for de-duplication)", db, table, rel
        )
        changed = True
    return manifest, changed
