"""How tables read as Prometheus series, for ``/federate`` and remote read.

A table's field ``value`` is the metric named like the table (what remote write and OTLP
store); any other numeric field ``f`` of table ``t`` is the metric ``t_f`` (how Influx data
reads in Prometheus, as VictoriaMetrics maps it). Tags are labels. Names that are not valid
Prometheus names get each run of invalid characters replaced by ``_`` (and a ``_`` before a
leading digit). Boolean, integer and unsigned fields are numbers; string fields are not series.

Pure functions, except :func:`metrics_matching`, which reads table schemas from the engine
(cheap, in memory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from server.selectors import Matcher, matches

__all__ = ["SeriesSource", "label_name", "metric_name", "metrics_matching", "rows_matching"]

_INVALID_METRIC = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
NUMERIC_FIELD_TYPES = ("float", "integer", "unsigned", "boolean")


def metric_name(table: str, field: str) -> str:
    name = _INVALID_METRIC.sub("_", table if field == "value" else f"{table}_{field}")
    return "_" + name if name[0].isdigit() else name


def label_name(tag: str) -> str:
    name = _INVALID_LABEL.sub("_", tag)
    return "_" + name if name[0].isdigit() else name


@dataclass(frozen=True)
class SeriesSource:
    """One metric as stored: database, table, field, and its label → tag column names."""

    db: str
    table: str
    field: str
    name: str
    labels: dict[str, str]


def metrics_matching(engine: Any, db: str, matchers: tuple[Matcher, ...]) -> list[SeriesSource]:
    """The stored metrics whose name passes the ``__name__`` matchers (blocking, cheap)."""
    name_matchers = [m for m in matchers if m.label == "__name__"]
    out = []
    for table_db, table in engine.tables(db):
        schema = engine.schema(table, db=table_db)
        for field, ftype in schema.fields.items():
            if ftype.value not in NUMERIC_FIELD_TYPES:
                continue
            name = metric_name(table, field)
            if all(matches(m, pa.array([name]))[0].as_py() for m in name_matchers):
                labels = {label_name(t): t for t in schema.tags}
                out.append(SeriesSource(table_db, table, field, name, labels))
    return out


def rows_matching(data: pa.Table, labels: dict[str, str], matchers: tuple[Matcher, ...]) -> np.ndarray:
    """Boolean mask of the rows of ``data`` whose tags pass every label matcher."""
    mask = np.ones(data.num_rows, dtype=bool)
    for m in matchers:
        if m.label == "__name__":
            continue
        tag = labels.get(m.label)
        column = (
            data.column(tag).combine_chunks() if tag is not None else pa.nulls(data.num_rows, pa.string())
        )
        mask &= np.asarray(matches(m, column), dtype=bool)
    return mask
