"""The analysis tasks' tables: what they read (discovery) and what they write (output shapes).

Who calls it: the three task modules and the report routes. Input side: :class:`Source` finds a
metric table's tag columns and checks it has a numeric ``value`` (from the engine's in-memory
schemas: cheap). Output side: :data:`OUTPUTS` is the one list of output tables with each column's
kind and type (documented in docs/analysis.md); :func:`batch` turns a task's row dicts into a
:class:`~tsengine.model.TableBatch` of that exact shape, so a table's columns keep their types
from run to run, and :func:`write` writes all of a run's batches in one atomic engine call
(a run's output is stored whole or not at all), with one ``analysis_runs`` row per run. Every
row of one run carries the run's time (the engine clock's ``now_ns``): readers find "the latest
analysis" as the rows at the task's latest ``analysis_runs`` time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from tsengine.clock import Clock
from tsengine.errors import NotFound
from tsengine.model.batch import TableBatch
from tsengine.model.schema import TableSchema

__all__ = ["OUTPUTS", "AnalysisEngine", "Source", "batch", "source", "write"]

NUMERIC = ("float", "integer", "unsigned")


class AnalysisEngine(Protocol):
    """What the analysis needs of the engine (:class:`tsengine.engine.Engine` is one)."""

    clock: Clock

    def sql(self, query: str, params: Any = None, *, db: str = "default") -> pa.Table: ...

    def tables(self, db: str | None = None) -> list[tuple[str, str]]: ...

    def schema(self, table: str, db: str = "default") -> TableSchema: ...

    def write_batches(self, batches: list[TableBatch]) -> int: ...


@dataclass(frozen=True)
class Source:
    """An input table: database, name, tag columns, and its fields with their types."""

    db: str
    table: str
    tags: tuple[str, ...]
    fields: Mapping[str, str]

    def has(self, column: str) -> bool:
        return column in self.tags or column in self.fields

    def first_tag(self, *candidates: str) -> str | None:
        return next((c for c in candidates if c in self.tags), None)


def source(engine: AnalysisEngine, db: str, table: str, *, numeric_value: bool = True) -> Source | None:
    """The table ``db.table`` if it exists (and, with ``numeric_value``, has a numeric ``value``)."""
    try:
        schema = engine.schema(table, db=db)
    except NotFound:
        return None
    fields = {name: ftype.value for name, ftype in schema.fields.items()}
    if numeric_value and fields.get("value") not in NUMERIC:
        return None
    return Source(db, table, tuple(schema.tags), fields)


_F64, _I64, _STR, _BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()

#: Output tables: column → ("tag" | "field", Arrow type). Time is the run's time.
OUTPUTS: dict[str, dict[str, tuple[str, pa.DataType]]] = {
    "analysis_derived_metrics": {
        "metric": ("tag", _STR),
        "service": ("tag", _STR),
        "method": ("tag", _STR),
        "route": ("tag", _STR),
        "operation": ("tag", _STR),
        "value": ("field", _F64),
        "numerator": ("field", _F64),
        "denominator": ("field", _F64),
        "window_s": ("field", _F64),
    },
    "analysis_trends": {
        "metric": ("tag", _STR),
        "series": ("tag", _STR),
        "period": ("tag", _STR),
        "slope_per_s": ("field", _F64),
        "mean": ("field", _F64),
        "samples": ("field", _I64),
        "window_s": ("field", _F64),
    },
    "analysis_anomalies": {
        "metric": ("tag", _STR),
        "series": ("tag", _STR),
        "z_score": ("field", _F64),
        "current_mean": ("field", _F64),
        "baseline_mean": ("field", _F64),
        "baseline_stddev": ("field", _F64),
        "current_samples": ("field", _I64),
        "baseline_samples": ("field", _I64),
        "anomalous": ("field", _BOOL),
    },
    "analysis_endpoint_performance": {
        "metric": ("tag", _STR),
        "service": ("tag", _STR),
        "endpoint": ("tag", _STR),
        "requests": ("field", _F64),
        "requests_per_s": ("field", _F64),
        "p50_s": ("field", _F64),
        "p95_s": ("field", _F64),
        "p99_s": ("field", _F64),
        "p95_previous_s": ("field", _F64),
        "p95_baseline_s": ("field", _F64),
        "p99_baseline_s": ("field", _F64),
        "degradation_ratio": ("field", _F64),
        "degraded": ("field", _BOOL),
        "trend": ("field", _STR),
        "rank": ("field", _I64),
        "window_s": ("field", _F64),
        "baseline_s": ("field", _F64),
    },
    "analysis_event_counts": {
        "category": ("tag", _STR),
        "severity": ("tag", _STR),
        "name": ("tag", _STR),
        "service": ("tag", _STR),
        "count": ("field", _I64),
        "baseline_mean": ("field", _F64),
        "ratio": ("field", _F64),
        "spike": ("field", _BOOL),
        "window_s": ("field", _F64),
    },
    "analysis_security_findings": {
        "kind": ("tag", _STR),
        "subject": ("tag", _STR),
        "service": ("tag", _STR),
        "count": ("field", _I64),
        "threshold": ("field", _I64),
        "first_seen_ns": ("field", _I64),
        "last_seen_ns": ("field", _I64),
        "window_s": ("field", _F64),
    },
    "analysis_user_activity": {
        "metric": ("tag", _STR),
        "item": ("tag", _STR),
        "service": ("tag", _STR),
        "value": ("field", _F64),
        "window_s": ("field", _F64),
    },
    # One row per run, even one that found nothing: "the latest analysis" is the latest run.
    "analysis_runs": {
        "task": ("tag", _STR),
        "rows": ("field", _I64),
        "findings": ("field", _I64),
    },
}


def batch(table: str, rows: Sequence[Mapping[str, Any]], *, time_ns: int, db: str) -> TableBatch | None:
    """The rows as a batch of output ``table`` (None when there are none)."""
    if not rows:
        return None
    spec = OUTPUTS[table]
    unknown = {k for r in rows for k in r} - set(spec)
    if unknown:
        raise ValueError(f"BUG: columns {sorted(unknown)} are not in the shape of {table}")
    arrays = {"time": pa.array([time_ns] * len(rows), _I64)}
    tags = []
    for name, (kind, dtype) in spec.items():
        values = [r.get(name) for r in rows]
        if kind == "tag":
            # A tag null on every row is left out: the engine cannot yet hold a tag column
            # without any value (its buffer has no dictionary for it and queries fail).
            if all(v is None for v in values):
                continue
            tags.append(name)
        arrays[name] = pa.array(values, dtype)
    data = pa.table(arrays)
    return TableBatch.from_arrow(table, data, tags=tags, db=db)


def write(
    engine: AnalysisEngine,
    task: str,
    outputs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    time_ns: int,
    db: str,
    findings: int,
) -> int:
    """Write a run's rows per output table, plus its ``analysis_runs`` row, in one atomic call."""
    run = {"task": task, "rows": sum(len(r) for r in outputs.values()), "findings": findings}
    batches = [batch(t, rows, time_ns=time_ns, db=db) for t, rows in outputs.items()]
    batches.append(batch("analysis_runs", [run], time_ns=time_ns, db=db))
    return engine.write_batches([b for b in batches if b is not None])
