"""The engine against a dict model: random writes, flushes, compactions and restarts.

Writes go to a few tables with tags and fields appearing over time, times drawn from a small
range (so out-of-order rows and exact duplicates are common), and sometimes a batch that must
be refused whole (a field type conflict). After every step the engine must read back exactly
what the model holds: one row per (series, time) whose fields are the last value written for
each (InfluxDB's merge of duplicate points).
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.errors import SchemaConflict

T0 = 1_451_606_400_000_000_000
HOUR = 3_600_000_000_000
TABLES = ["cpu", "mem", "disk io"]
TAG_NAMES = ["host", "dc", "rack"]
FIELD_TYPES = {"f": "float", "i": "int", "b": "bool", "s": "str"}

times = st.integers(min_value=0, max_value=5).map(lambda k: T0 + k * (HOUR // 2))
tag_values = st.sampled_from(["a", "b", "c"])
values = {
    "float": st.one_of(
        st.floats(allow_nan=False, width=64),
        st.integers(-10_000, 10_000).map(lambda k: k / 100),
    ),
    "int": st.integers(-(2**63), 2**63 - 1),
    "bool": st.booleans(),
    "str": st.text(max_size=5),
}


@st.composite
def row(draw, tags_allowed: list[str], fields_allowed: list[str]) -> dict:
    tags = {t: draw(tag_values) for t in tags_allowed if draw(st.booleans())}
    fields = {f: draw(values[FIELD_TYPES[f]]) for f in fields_allowed if draw(st.booleans())}
    if not fields:
        f = draw(st.sampled_from(fields_allowed))
        fields[f] = draw(values[FIELD_TYPES[f]])
    return {"time": draw(times), "tags": tags, "fields": fields}


def _bits(v: object) -> object:
    return struct.pack("<d", v) if isinstance(v, float) else v


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tsengine-stateful-"))
        self.clock = ManualClock()
        self.engine = self._open()
        self.model: dict[str, dict[tuple, dict]] = {}

    def _open(self) -> Engine:
        return Engine.open(self.dir, clock=self.clock, min_chunk_rows=4, max_chunk_rows=16, fsync="none")

    @rule(
        data=st.data(),
        table=st.sampled_from(TABLES),
        n_tags=st.integers(0, len(TAG_NAMES)),
        fields=st.lists(st.sampled_from(sorted(FIELD_TYPES)), min_size=1, max_size=4, unique=True),
    )
    def write(self, data, table: str, n_tags: int, fields: list[str]) -> None:
        rows = data.draw(st.lists(row(TAG_NAMES[:n_tags], fields), min_size=1, max_size=12))
        tag_cols = {t: [r["tags"].get(t) for r in rows] for t in TAG_NAMES[:n_tags]}
        tag_cols = {t: v for t, v in tag_cols.items() if any(x is not None for x in v)}
        field_cols = {f: [r["fields"].get(f) for r in rows] for f in fields}
        field_cols = {f: v for f, v in field_cols.items() if any(x is not None for x in v)}
        self.engine.write(table, [r["time"] for r in rows], tags=tag_cols, fields=field_cols)
        store = self.model.setdefault(table, {})
        for r in rows:
            key = (frozenset(r["tags"].items()), r["time"])
            merged = store.setdefault(key, {})
            merged.update({f: v for f, v in r["fields"].items() if v is not None})

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def write_conflicting_type(self, data) -> None:
        table = data.draw(st.sampled_from(sorted(t for t in self.model if self.model[t])))
        schema = self.engine.schema(table)
        field = data.draw(st.sampled_from(sorted(schema.fields)))
        wrong = "text" if FIELD_TYPES[field] != "str" else 1.5
        try:
            self.engine.write(
                table,
                [T0, T0 + 1],
                tags={"host": ["zz", "zz"]},
                fields={
                    "f" if field != "f" else "i": [1.0, 2.0] if field != "f" else [1, 2],
                    field: [wrong, wrong],
                },
            )
        except SchemaConflict:
            return
        raise AssertionError("a conflicting field type was accepted")

    @rule()
    def flush(self) -> None:
        self.engine.flush()

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = self._open()

    @invariant()
    def reads_back_the_model(self) -> None:
        for table, store in self.model.items():
            schema = self.engine.schema(table)
            got_tbl = self.engine.sql(f'SELECT * EXCLUDE (time), epoch_ns(time) AS "time" FROM "{table}"')
            got: dict[tuple, dict] = {}
            for r in got_tbl.to_pylist():
                tags = frozenset((t, r[t]) for t in schema.tags if r[t] is not None)
                key = (tags, r["time"])
                assert key not in got, f"duplicate row for {key} in {table}"
                got[key] = {f: _bits(r[f]) for f in schema.fields if r[f] is not None}
            want = {
                k: {f: _bits(v) for f, v in fields.items() if v is not None} for k, fields in store.items()
            }
            assert got == want, f"table {table!r} differs from the model"

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)


EngineModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEngineModel = EngineModel.TestCase
