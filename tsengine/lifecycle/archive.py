"""The archive store: expired partitions moved (not deleted) to another directory or an
S3-compatible bucket, and read back on demand by the ``archive`` SQL schema.

Layout inside the store's root (the same as the data directory's)::

    <db>/<table>/_archive.json                              the table's archive manifest
    <db>/<table>/date=YYYY-MM-DD[/hour=HH]/<node>-<seq>[.<gen>].parquet

A move (:meth:`Archiver.move`) is crash-safe; its steps, in order:

1. **copy**: the local file is read, de-duplicated and re-encoded (floats as plain doubles,
   never as scaled decimals, so that one ``pyarrow.dataset`` with a single schema can read every
   archived file exactly) into ``<data>/_tmp/``, then uploaded whole (a local store writes a
   ``.tmp`` and renames; an S3 PUT is atomic);
2. **verify**: the object is read back: its SHA-256 must equal the bytes written and its row
   count the rows written;
3. **record**: the archive manifest lists it (with both checksums and the local file's name);
4. **drop**: the table's local manifest no longer lists the local file;
5. **delete**: the local file is deleted once no query snapshot reads it.

:func:`reconcile` (run when the lifecycle opens, before any move) makes an interruption at any
step lose nothing and duplicate nothing: an archived object missing from its manifest (1-2) is
deleted (the local file is still listed and is archived again), and a recorded file the local
manifest still lists, or that the engine re-adopted at open (3-4), is dropped locally when its
SHA-256 matches the recorded one.

Blocking I/O (network for S3); one archiver at a time (the lifecycle's lock).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tsengine.durable import atomic_write
from tsengine.errors import InvalidInput, StorageError
from tsengine.model.schema import TableSchema
from tsengine.persist.manifest import FileEntry
from tsengine.persist.parquet import read_files, sort_dedup_split, write_file
from tsengine.persist.paths import TMP_DIR, escape_name, unescape_name

if TYPE_CHECKING:
    from tsengine.engine import Engine

__all__ = ["ArchiveManifest", "ArchiveStore", "Archiver", "reconcile"]

log = logging.getLogger("tsengine.lifecycle")

ARCHIVE_MANIFEST = "_archive.json"
#: Steps of a move, in order; a test hook is called after each (see :class:`Archiver`).
STEPS = ("copied", "verified", "recorded", "dropped")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ArchivedFile:
    relpath: str
    rows: int
    bytes: int
    sha256: str
    min_ns: int
    max_ns: int
    #: SHA-256 of the local file it came from (reconcile matches a re-adopted local file by it)
    source_sha256: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ArchivedFile:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__})


@dataclass
class ArchiveManifest:
    db: str
    schema: TableSchema
    files: dict[str, ArchivedFile]

    @property
    def table(self) -> str:
        return self.schema.table

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field("time", pa.timestamp("ns"))]
        for c in self.schema.columns:
            fields.append(pa.field(c.name, pa.string() if c.kind == "tag" else c.type.arrow_type))
        return pa.schema(fields)

    def to_json(self) -> bytes:
        doc = {
            "version": 1,
            "db": self.db,
            "table": self.table,
            "schema": self.schema.to_json(),
            "files": [f.to_json() for f in sorted(self.files.values(), key=lambda f: f.relpath)],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ArchiveManifest:
        doc = json.loads(raw)
        files = {f["relpath"]: ArchivedFile.from_json(f) for f in doc["files"]}
        return cls(db=doc["db"], schema=TableSchema.from_json(doc["table"], doc["schema"]), files=files)


class ArchiveStore:
    """A ``pyarrow.fs`` file system rooted at the archive's root directory or bucket prefix.

    Build with :meth:`local` or :meth:`s3`, or :meth:`from_config` (the ``storage.archive``
    config section). Thread-safe for distinct paths.
    """

    def __init__(
        self, fs: pafs.FileSystem, *, atomic_rename: bool, description: str, local_root: Path | None = None
    ) -> None:
        self.fs = fs
        self._atomic_rename = atomic_rename
        self.description = description
        #: A local directory store writes through :func:`tsengine.durable.atomic_write` (fsynced
        #: before the local copy is deleted); an object store's PUT is durable when it returns.
        self._local_root = local_root

    @classmethod
    def local(cls, path: str | Path) -> ArchiveStore:
        root = Path(path).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), atomic_rename=True,
                   description=f"directory {root}", local_root=root)  # fmt: skip

    @classmethod
    def s3(
        cls,
        *,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        scheme: str = "https",
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
    ) -> ArchiveStore:
        s3 = pafs.S3FileSystem(
            endpoint_override=endpoint, scheme=scheme, access_key=access_key, secret_key=secret_key,
            region=region, allow_bucket_creation=True,
        )  # fmt: skip
        try:
            if s3.get_file_info(bucket).type == pafs.FileType.NotFound:
                s3.create_dir(bucket)
        except OSError as exc:
            raise StorageError(f"cannot open archive bucket {bucket!r}: {exc}") from exc
        root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
        return cls(pafs.SubTreeFileSystem(root, s3), atomic_rename=False, description=f"s3://{root}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, where: str = "storage.archive") -> ArchiveStore:
        """``{type: local, path: DIR}`` or ``{type: s3, bucket, prefix, endpoint, scheme,
        access_key, secret_key, region}``; errors name the key."""
        kind = cfg.get("type", "local")
        if kind == "local":
            if not isinstance(cfg.get("path"), str):
                raise InvalidInput(f"cannot read config {where}.path: a directory is required")
            return cls.local(cfg["path"])
        if kind == "s3":
            if not isinstance(cfg.get("bucket"), str):
                raise InvalidInput(f"cannot read config {where}.bucket: a bucket name is required")
            known = {"type", "bucket", "prefix", "endpoint", "scheme", "access_key", "secret_key", "region"}
            unknown = set(cfg) - known
            if unknown:
                raise InvalidInput(f"cannot read config {where}: unknown keys {sorted(unknown)}")
            return cls.s3(**{k: v for k, v in cfg.items() if k != "type"})
        raise InvalidInput(f"cannot read config {where}.type={kind!r}: expected 'local' or 's3'")

    # -- objects ----------------------------------------------------------------------------

    def put(self, rel: str, data: bytes) -> None:
        """Write an object whole or not at all, durably (it may be the only copy)."""
        parent = rel.rpartition("/")[0]
        try:
            if self._local_root is not None:
                atomic_write(self._local_root / rel, lambda f: f.write(data))
                return
            if parent:
                self.fs.create_dir(parent, recursive=True)
            target = rel + ".tmp" if self._atomic_rename else rel
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            if self._atomic_rename:
                self.fs.move(target, rel)
        except OSError as exc:
            raise StorageError(f"cannot write archive object {rel}: {exc}", path=rel) from exc

    def get(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(rel) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if self.fs.get_file_info(rel).type == pafs.FileType.NotFound:
                return None
            raise StorageError(f"cannot read archive object {rel}: {exc}", path=rel) from exc

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(rel)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete archive object {rel}: {exc}", path=rel) from exc

    def list_objects(self, prefix: str) -> list[str]:
        """Relative paths of every object under ``prefix`` (recursive; none if it is missing)."""
        sel = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
        return [i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]

    # -- manifests --------------------------------------------------------------------------

    @staticmethod
    def table_prefix(db: str, table: str) -> str:
        return f"{db}/{escape_name(table)}"

    def load_manifest(self, db: str, table: str) -> ArchiveManifest | None:
        raw = self.get(f"{self.table_prefix(db, table)}/{ARCHIVE_MANIFEST}")
        return ArchiveManifest.from_json(raw) if raw is not None else None

    def save_manifest(self, manifest: ArchiveManifest) -> None:
        self.put(f"{self.table_prefix(manifest.db, manifest.table)}/{ARCHIVE_MANIFEST}", manifest.to_json())

    def tables(self) -> list[tuple[str, str]]:
        """(db, table) of every table with an archive manifest."""
        out = []
        for rel in self.list_objects(""):
            parts = rel.split("/")
            if len(parts) == 3 and parts[2] == ARCHIVE_MANIFEST:
                out.append((parts[0], unescape_name(parts[1])))
        return sorted(out)

    def dataset(self, manifest: ArchiveManifest) -> pads.Dataset:
        """A Parquet dataset over the table's archived files (filter/projection push-down)."""
        prefix = self.table_prefix(manifest.db, manifest.table)
        paths = [f"{prefix}/{rel}" for rel in sorted(manifest.files)]
        return pads.dataset(paths, schema=manifest.arrow_schema(), format="parquet", filesystem=self.fs)


Hook = Callable[[str], None]


class Archiver:
    """Moves local partition files of an engine into an :class:`ArchiveStore` (see the module
    docstring for the steps). ``hook(step)`` is called after each step (tests raise from it to
    simulate a crash). Holds a lock: one move at a time; manifests are cached per table."""

    def __init__(self, engine: Engine, store: ArchiveStore, *, hook: Hook | None = None) -> None:
        self.engine = engine
        self.store = store
        self.hook = hook
        self.lock = threading.Lock()
        self._manifests: dict[tuple[str, str], ArchiveManifest] = {}
        self.version = 0  # grows with every recorded file: the query side caches by it

    def manifest(self, db: str, table: str) -> ArchiveManifest | None:
        key = (db, table)
        if key not in self._manifests:
            m = self.store.load_manifest(db, table)
            if m is None:
                return None
            self._manifests[key] = m
        return self._manifests[key]

    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def move(self, db: str, table: str, entry: FileEntry) -> ArchivedFile:
        """Archive one local file (copy, verify, record, drop, delete); returns its record.

        Raises:
            StorageError: the store failed, or the read-back object does not match.
        """
        with self.lock:
            eng = self.engine
            local = entry.file.path(eng.path, db, table)
            rel = entry.file.relpath()
            schema = eng.schema(table, db)
            source = local.read_bytes()
            data = read_files([local], schema)
            parts = sort_dedup_split(
                data, schema.tags, span_hours=entry.file.span, dedup=not schema.append_only
            )
            staging = eng.path / TMP_DIR / f"archive-{uuid.uuid4().hex}.parquet"
            try:
                ((_, rows_table),) = parts
                written = write_file(
                    staging, rows_table, schema, row_group_rows=eng.settings.row_group_rows,
                    zstd_level=eng.settings.zstd_level, max_decimals=-1,
                )  # fmt: skip
                payload = staging.read_bytes()
            finally:
                staging.unlink(missing_ok=True)
            digest = _sha256(payload)
            obj = f"{self.store.table_prefix(db, table)}/{rel}"
            self.store.put(obj, payload)
            self._step("copied")
            back = self.store.get(obj)
            if back is None or _sha256(back) != digest:
                raise StorageError(f"cannot archive {db}.{table} {rel}: the copy read back differs", path=obj)
            rows_back = pq.read_metadata(io.BytesIO(back)).num_rows  # type: ignore[arg-type]
            if rows_back != written.rows:
                raise StorageError(
                    f"cannot archive {db}.{table} {rel}: {rows_back} rows read back, {written.rows} written",
                    path=obj,
                )
            self._step("verified")
            record = ArchivedFile(
                relpath=rel, rows=written.rows, bytes=len(payload), sha256=digest,
                min_ns=written.min_ns, max_ns=written.max_ns, source_sha256=_sha256(source),
            )  # fmt: skip
            old = self.manifest(db, table)
            new = ArchiveManifest(
                db=db,
                schema=schema.union(old.schema.columns) if old else schema,
                files={**(old.files if old else {}), rel: record},
            )
            self.store.save_manifest(new)
            self._manifests[(db, table)] = new
            self.version += 1
            self._step("recorded")
            eng.drop_files(db, table, [rel], after_save=lambda: self._step("dropped"))
            return record


def reconcile(archiver: Archiver) -> dict[str, int]:
    """Close the crash windows of :meth:`Archiver.move` (see the module docstring).

    Returns ``{"orphans_deleted": n, "local_dropped": m}``. Call before any move.
    """
    eng, store = archiver.engine, archiver.store
    orphans = dropped = 0
    with archiver.lock:
        for db, table in sorted(set(store.tables()) | set(eng.tables())):
            manifest = archiver.manifest(db, table)
            prefix = store.table_prefix(db, table)
            recorded = set(manifest.files) if manifest else set()
            for obj in store.list_objects(prefix):
                rel = obj[len(prefix) + 1 :]
                if rel == ARCHIVE_MANIFEST or rel in recorded:
                    continue
                log.warning("archive %s: deleting %s, copied but never recorded (interrupted move)",
                            store.description, obj)  # fmt: skip
                store.delete(obj)
                orphans += 1
            if manifest is None:
                continue
            local = {e.file.relpath(): e for e in eng.table_files(db, table)}
            stale = []
            for rel, rec in manifest.files.items():
                if rel not in local:
                    continue
                path = local[rel].file.path(eng.path, db, table)
                if _sha256(path.read_bytes()) == rec.source_sha256:
                    stale.append(rel)
                else:
                    log.warning(
                        "table %s.%s: local %s differs from the archived one; keeping both", db, table, rel
                    )
            if stale:
                log.warning("table %s.%s: dropping %d local files already archived (interrupted move)",
                            db, table, len(stale))  # fmt: skip
                dropped += eng.drop_files(db, table, stale)
    return {"orphans_deleted": orphans, "local_dropped": dropped}
