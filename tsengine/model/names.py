"""Validation of database, table and column names.

Names arrive from every protocol (Influx measurement and tag names, Prometheus metric names and
labels, OTLP metric names), so the rules are as loose as storage allows and no looser:

* database names become directory names and DuckDB schema names, so they follow a strict
  identifier rule: ``[A-Za-z_][A-Za-z0-9_-]*``, at most 64 characters;
* table and column names are kept exactly as written (Influx allows spaces, commas and '='
  in them once escaped); they must be non-empty UTF-8, at most ``MAX_NAME_BYTES`` bytes,
  without control characters, and not start with ``_`` followed by ``_ts`` (reserved for the
  engine's hidden columns). The path module escapes table names for the filesystem.
* ``time`` is the time column of every table and cannot be a tag or field name.
"""

from __future__ import annotations

import re

from tsengine.errors import InvalidName

__all__ = ["MAX_NAME_BYTES", "TIME_COLUMN", "validate_column", "validate_db", "validate_table"]

MAX_NAME_BYTES = 255
TIME_COLUMN = "time"
RESERVED_PREFIX = "__ts"

_DB_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def validate_db(name: str) -> str:
    """Return ``name`` if it is a valid database name, else raise InvalidName."""
    if not isinstance(name, str) or not _DB_RE.match(name):
        raise InvalidName(
            f"cannot use database name {name!r}: must match [A-Za-z_][A-Za-z0-9_-]* "
            "and be at most 64 characters",
            name=str(name),
        )
    return name


def _validate_free_name(kind: str, name: str) -> str:
    if not isinstance(name, str):
        raise InvalidName(f"cannot use {kind} name {name!r}: not a string", name=str(name))
    if not name:
        raise InvalidName(f"cannot use {kind} name '': empty", name=name)
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidName(
            f"cannot use {kind} name {name[:40]!r}...: longer than {MAX_NAME_BYTES} bytes", name=name
        )
    if _CONTROL_RE.search(name):
        raise InvalidName(f"cannot use {kind} name {name!r}: contains a control character", name=name)
    if name.startswith(RESERVED_PREFIX):
        raise InvalidName(
            f"cannot use {kind} name {name!r}: the prefix {RESERVED_PREFIX!r} is reserved", name=name
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"cannot use {kind} name {name!r}: not valid UTF-8", name=name) from None
    return name


def validate_table(name: str) -> str:
    """Return ``name`` if it is a valid table name, else raise InvalidName."""
    return _validate_free_name("table", name)


def validate_column(name: str) -> str:
    """Return ``name`` if it is a valid tag or field name, else raise InvalidName."""
    _validate_free_name("column", name)
    if name == TIME_COLUMN:
        raise InvalidName(
            f"cannot use column name {name!r}: 'time' is the time column of every table", name=name
        )
    return name
