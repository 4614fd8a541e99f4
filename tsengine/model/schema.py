"""Table schemas: which columns a table has, which are tags, and each field's type.

A schema only grows: a batch may bring new tags and fields (older rows read them as NULL). A
column keeps its kind and type forever; a batch that disagrees raises
:class:`~tsengine.errors.SchemaConflict` naming the table, the column, the stored and the new
type. Schemas are immutable values; ``merge`` returns a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tsengine.errors import LimitExceeded, SchemaConflict
from tsengine.model.batch import FieldType, TableBatch

__all__ = ["MAX_COLUMNS", "Column", "TableSchema"]

#: Columns per table; past it a batch is refused (a guard against label explosions).
MAX_COLUMNS = 1024


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "tag" or "field"
    type: FieldType  # tags are always STRING

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "type": self.type.value}

    @classmethod
    def from_json(cls, doc: Mapping[str, str]) -> Column:
        return cls(name=doc["name"], kind=doc["kind"], type=FieldType(doc["type"]))


@dataclass(frozen=True)
class TableSchema:
    """Ordered columns of one table (``time`` is implicit and always first).

    ``append_only``: rows are never de-duplicated (two rows of one series and time both stay);
    set when the table is declared (:meth:`tsengine.engine.Engine.declare_table`), kept forever.
    """

    table: str
    columns: tuple[Column, ...] = ()
    append_only: bool = False

    @property
    def tags(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "tag"]

    @property
    def fields(self) -> dict[str, FieldType]:
        return {c.name: c.type for c in self.columns if c.kind == "field"}

    def get(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def merge(self, batch: TableBatch) -> TableSchema:
        """The schema extended by ``batch``'s new columns; raises on a kind or type conflict."""
        known = {c.name: c for c in self.columns}
        new: list[Column] = []
        for name in batch.tags:
            col = known.get(name)
            if col is None:
                new.append(Column(name, "tag", FieldType.STRING))
            elif col.kind != "tag":
                raise SchemaConflict(
                    f"cannot write {name!r} of table {self.table!r} as a tag: it is stored as a "
                    f"{col.type.value} field",
                    table=self.table,
                    field=name,
                )
        for name, ftype in batch.field_types().items():
            col = known.get(name)
            if col is None:
                new.append(Column(name, "field", ftype))
            elif col.kind != "field":
                raise SchemaConflict(
                    f"cannot write field {name!r} of table {self.table!r}: it is stored as a tag",
                    table=self.table,
                    field=name,
                )
            elif col.type is not ftype:
                raise SchemaConflict(
                    f"cannot write field {name!r} of table {self.table!r} as {ftype.value}: "
                    f"it is stored as {col.type.value}",
                    table=self.table,
                    field=name,
                )
        if not new:
            return self
        if len(self.columns) + len(new) > MAX_COLUMNS:
            raise LimitExceeded(
                f"cannot write table {self.table!r}: more than {MAX_COLUMNS} columns "
                f"({len(self.columns)} stored, {len(new)} new)"
            )
        return TableSchema(self.table, self.columns + tuple(new), self.append_only)

    def union(self, columns: Iterable[Column]) -> TableSchema:
        """Add columns found elsewhere (e.g. in a file footer) that this schema lacks."""
        known = {c.name for c in self.columns}
        extra = tuple(c for c in columns if c.name not in known)
        return TableSchema(self.table, self.columns + extra, self.append_only) if extra else self

    def to_json(self) -> list[dict[str, str]]:
        return [c.to_json() for c in self.columns]

    @classmethod
    def from_json(
        cls, table: str, doc: Iterable[Mapping[str, str]], *, append_only: bool = False
    ) -> TableSchema:
        return cls(table, tuple(Column.from_json(d) for d in doc), append_only)
