"""The tsengine harness and the query ground truth.

The harness runs on the real engine; a lossy in-memory fake (the part of the ``tsengine.Engine``
interface the harness uses, over an Arrow table and DuckDB) shows that its checks catch a loss.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from benchmarks import storage_bench, tsbs
from benchmarks.queries import Dataset, Expected, compare

HOSTS, DURATION_S = 3, 7200


class FakeEngine:
    """Keeps every write in memory; ``sql`` runs DuckDB over the concatenation as ``cpu``."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._con = duckdb.connect()

    @classmethod
    def open(cls, path: Path, **settings: Any) -> FakeEngine:
        assert settings == {"fsync": "interval"}
        return cls()

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._con.close()

    def write(self, table: str, time: np.ndarray, *, tags: Any, fields: Any, db: str = "default") -> None:
        columns = {"time": pa.array(time).cast(pa.timestamp("ns")), **tags}
        columns.update({k: pa.array(v) for k, v in fields.items()})
        self._parts.append(pa.table(columns))

    def flush(self) -> None:
        pass

    def compact(self) -> None:
        pass

    def disk_usage(self) -> int:
        return 1000

    def sql(self, query: str, params: Any = None) -> pa.Table:
        cpu = pa.concat_tables(self._parts)  # noqa: F841 — DuckDB finds it by name
        return self._con.sql(query).to_arrow_table()

    def latest(self, table: str, db: str = "default", where: Any = None) -> pa.Table:
        lasts = ", ".join(f"arg_max({f}, time) AS {f}" for f in tsbs.FIELDS)
        return self.sql(f"SELECT max(time) AS time, hostname, {lasts} FROM cpu GROUP BY hostname")


class LosingEngine(FakeEngine):
    """Loses the last row written: the harness must notice."""

    def flush(self) -> None:
        self._parts[-1] = self._parts[-1].slice(0, self._parts[-1].num_rows - 1)


def _with_engine(monkeypatch: pytest.MonkeyPatch, engine: type) -> None:
    module = types.ModuleType("tsengine.engine")
    module.Engine = engine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tsengine.engine", module)


def test_the_engine_passes_every_check(tmp_path: Path) -> None:
    result = storage_bench.bench("dec2", hosts=HOSTS, duration_s=DURATION_S, work_dir=tmp_path)
    assert result["available"]
    assert result["readback"]["ok"], result["readback"]
    assert result["readback"]["values_checked_bit_for_bit"] == 720 * len(
        tsbs.FIELDS
    )  # host_0 only: there is no host_57
    for name, q in result["queries"].items():
        assert q["check"]["ok"], (name, q["check"])
        assert len(q["runs_ms"]) == 5
    assert result["queries"]["q1"]["check"]["expected_size"] == HOSTS * 2
    assert result["queries"]["q2"]["check"]["expected_size"] == HOSTS * len(tsbs.FIELDS) * 2
    assert result["bytes_per_sample"] == result["disk_bytes"] / (HOSTS * 720 * len(tsbs.FIELDS)) > 0


def test_a_lossy_engine_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _with_engine(monkeypatch, LosingEngine)
    result = storage_bench.bench("int", hosts=HOSTS, duration_s=DURATION_S, work_dir=tmp_path)
    assert not result["readback"]["ok"]
    assert not result["queries"]["q3"]["check"]["ok"]


def test_expected_answers_have_the_sizes_both_engines_must_return() -> None:
    ds = Dataset.from_batches(tsbs.generate("int", hosts=10, duration_s=86_400 // 8), hosts=10)
    expected = Expected.of(ds)
    assert ds.hours == 3
    assert expected.size("q1") == 8 * 3
    assert expected.size("q2") == 10 * len(tsbs.FIELDS) * 3
    assert expected.size("q3") == 10 * len(tsbs.FIELDS)
    assert expected.size("q4") == 10
    host0 = ds.fields["usage_user"][(ds.host == 0) & (ds.time < tsbs.START_NS + 3600 * 10**9)]
    assert expected.answers["q1"][("host_0", 0)] == host0.max()


def test_compare_reports_missing_and_wrong_values() -> None:
    ds = Dataset.from_batches(tsbs.generate("float", hosts=2, duration_s=3600), hosts=2)
    expected = Expected.of(ds)
    got = dict(expected.answers["q4"])
    assert compare("q4", got, expected)["ok"]
    got["host_0"] *= 1.001
    del got["host_1"]
    check = compare("q4", got, expected)
    assert not check["ok"]
    assert (check["missing"], check["mismatched"]) == (1, 1)
