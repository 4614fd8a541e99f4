"""Data model: names, field types and the columnar batch. No I/O; imported by every layer."""

from tsengine.model.batch import TAG_METADATA, FieldType, TableBatch
from tsengine.model.names import TIME_COLUMN, validate_column, validate_db, validate_table

__all__ = [
    "TAG_METADATA",
    "TIME_COLUMN",
    "FieldType",
    "TableBatch",
    "validate_column",
    "validate_db",
    "validate_table",
]
