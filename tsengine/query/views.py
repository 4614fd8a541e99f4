"""The SQL of a table's view, and the per-query snapshot it reads.

Each table ``db.table`` is a DuckDB view over four sources, bound per query from a
:class:`TableSnapshot` taken under the engine lock:

* ``clean`` Parquet files: hours in which no row can duplicate another (read as they are);
* ``clean`` live rows: the ring-buffer rows of those hours (an Arrow table registered on the
  querying cursor, zero-copy over the numpy chunks);
* ``dirty`` files and live rows: hours that received a row at or before its series' latest
  time (a late sample or a duplicate). These are de-duplicated in the view — the rows of one
  series and time merge field by field, the newest non-null value winning (file order, then
  live row order), as InfluxDB merges duplicate points — until compaction rewrites the hour as
  one clean file.

File lists reach the view through DuckDB variables (``SET VARIABLE``, per connection) and the
live rows through per-connection registrations, so concurrent queries each see their own
consistent snapshot and a flush or compaction racing a query can neither hide nor double a
row. A zero-row Parquet file stands in for an empty list, which keeps the view's shape fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from tsengine.model.schema import TableSchema

__all__ = ["TableSnapshot", "quote_ident", "view_names", "view_sql"]

ROW_COLUMN = "__tsrow"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class ViewNames:
    clean_files: str
    dirty_files: str
    clean_live: str
    dirty_live: str


def view_names(view_id: int) -> ViewNames:
    return ViewNames(f"__tsf{view_id}c", f"__tsf{view_id}d", f"__tsl{view_id}c", f"__tsl{view_id}d")


@dataclass
class TableSnapshot:
    """What one query reads of one table: file lists and live Arrow tables."""

    db: str
    schema: TableSchema
    view_id: int
    #: (schema version, has a de-duplicating branch); both only grow, so a later view serves an
    #: earlier snapshot too
    view_version: tuple[int, bool]
    clean_files: list[str] = field(default_factory=list)
    dirty_files: list[str] = field(default_factory=list)  # oldest first
    clean_live: pa.Table | None = None
    dirty_live: pa.Table | None = None  # carries ROW_COLUMN: later rows win

    @property
    def table(self) -> str:
        return self.schema.table


def _anchor(schema: TableSchema, extra: str = "") -> str:
    cols = ["NULL::TIMESTAMP_NS AS time"]
    for c in schema.columns:
        cols.append(f"NULL::{c.type.duckdb_type} AS {quote_ident(c.name)}")
    return f"SELECT {', '.join(cols)}{extra} WHERE false"


def view_sql(db: str, schema: TableSchema, view_id: int, *, dedup: bool = True) -> str:
    """``CREATE OR REPLACE VIEW`` statement of a table (``dedup``: with the dirty branch)."""
    names = view_names(view_id)
    group = ", ".join([*(quote_ident(t) for t in schema.tags), "time"])
    anchor = _anchor(schema)
    anchor_ord = _anchor(schema, ", NULL::BIGINT AS __tso")
    # Rows of one series and time merge field by field, the newest non-null value winning:
    # files by their order in the list (oldest first), then live rows by position.
    merged = ", ".join(
        f"arg_max({quote_ident(c.name)}, __tso) FILTER (WHERE {quote_ident(c.name)} IS NOT NULL) "
        f"AS {quote_ident(c.name)}"
        for c in schema.columns
        if c.kind == "field"
    )
    dirty = (
        f"SELECT {group}, {merged} FROM ("
        f"{anchor_ord} "
        f"UNION ALL BY NAME SELECT *, file_index::BIGINT AS __tso "
        f"FROM read_parquet(getvariable('{names.dirty_files}'), union_by_name=true) "
        f"UNION ALL BY NAME SELECT * EXCLUDE ({ROW_COLUMN}), "
        f"(4611686018427387904 + {ROW_COLUMN})::BIGINT AS __tso FROM {names.dirty_live}"
        f") GROUP BY {group}"
    )
    outer = ["time"]
    for c in schema.columns:
        q = quote_ident(c.name)
        outer.append(f"CAST({q} AS {c.type.duckdb_type}) AS {q}")
    body = (
        f"SELECT {', '.join(outer)} FROM ("
        f"{anchor} "
        f"UNION ALL BY NAME SELECT * FROM "
        f"read_parquet(getvariable('{names.clean_files}'), union_by_name=true) "
        f"UNION ALL BY NAME SELECT * FROM {names.clean_live}"
        + (f" UNION ALL BY NAME ({dirty}))" if dedup else ")")
    )
    return f"CREATE OR REPLACE VIEW {quote_ident(db)}.{quote_ident(schema.table)} AS {body}"


def list_literal(paths: list[str]) -> str:
    return "[" + ", ".join(quote_str(p) for p in paths) + "]"
