"""The analysis SQL against reference implementations, on DuckDB itself.

``histogram_quantiles`` must agree with PromQL's ``histogram_quantile`` (a transcription of
Prometheus' ``bucketQuantile``: sort, coalesce equal bounds, make monotonic, interpolate) on any
bucket set with a ``+Inf`` bucket; the series key must quote and order labels as documented.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.analysis.sql import QUANTILES, histogram_quantiles, series_key


@functools.cache
def connection() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def promql_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile (promql/quantile.go), for buckets that include +Inf."""
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    bs = sorted(merged.items())
    running = 0.0
    mono = []
    for le, count in bs:
        running = max(running, count)
        mono.append((le, running))
    if len(mono) < 2:
        return math.nan
    observations = mono[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(mono) - 1) if mono[i][1] >= rank), len(mono) - 1)
    if b == len(mono) - 1:
        return mono[-2][0]
    if b == 0 and mono[0][0] <= 0:
        return mono[0][0]
    start, end, count = 0.0, mono[b][0], mono[b][1]
    if b > 0:
        start = mono[b - 1][0]
        count -= mono[b - 1][1]
        rank -= mono[b - 1][1]
    return start + (end - start) * (rank / count)


def sql_quantiles(buckets: Sequence[tuple[float, float]]) -> dict[str, float | None]:
    values = ", ".join(f"('{le!r}'::DOUBLE, {c!r}::DOUBLE)" for le, c in buckets)
    source = f"SELECT 'k' AS key, 'current' AS period, le_num, c FROM (VALUES {values}) v(le_num, c)"
    row = connection().cursor().sql(histogram_quantiles(source, ["key"])).fetchall()[0]
    return dict(zip(["key", "period", "total", *QUANTILES], row, strict=True))


finite_bounds = st.lists(
    st.floats(min_value=-1, max_value=100, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 3)),
    min_size=0,
    max_size=8,
)


@given(finite_bounds, st.data())
def test_histogram_quantiles_match_promql(bounds: list[float], data: st.DataObject) -> None:
    les = [*bounds, math.inf]
    counts = data.draw(st.lists(st.integers(0, 1000), min_size=len(les), max_size=len(les)))
    buckets = list(zip(les, map(float, counts), strict=True))
    got = sql_quantiles(buckets)
    for name, q in QUANTILES.items():
        want = promql_quantile(q, buckets)
        if math.isnan(want):
            assert got[name] is None, (name, buckets, got)
        else:
            assert got[name] == pytest.approx(want, rel=1e-9, abs=1e-12), (name, buckets, got)


def test_histogram_quantile_examples() -> None:
    # 100 observations: 50 <= 0.1, 40 in (0.1, 0.5], 10 in (0.5, +Inf).
    got = sql_quantiles([(0.1, 50.0), (0.5, 90.0), (math.inf, 100.0)])
    assert got["p50"] == pytest.approx(0.1)
    assert got["p95"] == 0.5 and got["p99"] == 0.5  # in +Inf: the highest finite bound
    assert sql_quantiles([(0.1, 0.0), (math.inf, 0.0)])["p95"] is None  # no observations
    assert sql_quantiles([(math.inf, 10.0)])["p50"] is None  # no finite bucket


def test_series_key_quotes_and_skips_absent_labels() -> None:
    text = series_key(["host", 'odd"name'])
    row = (
        connection()
        .cursor()
        .sql(f"SELECT {text} FROM (VALUES ('a', NULL), (NULL, 'x'), (NULL, NULL)) v(host, \"odd\"\"name\")")
        .fetchall()
    )
    assert [r[0] for r in row] == ['{host="a"}', '{odd"name="x"}', "{}"]
    assert connection().cursor().sql(f"SELECT {series_key([])}").fetchall() == [("{}",)]
