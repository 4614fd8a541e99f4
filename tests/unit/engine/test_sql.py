"""SQL through the engine: the sandbox refuses what it must, analytics SQL works on real tables."""

from __future__ import annotations

import numpy as np
import pytest

from tsengine import Engine
from tsengine.errors import QueryError, SandboxViolation

T0 = 1_451_606_400_000_000_000
S = 1_000_000_000


@pytest.fixture
def eng(engine: Engine) -> Engine:
    n = 720
    engine.write(
        "http",
        T0 + np.arange(n) * 10 * S,
        tags={"route": ["/a", "/b"] * (n // 2), "method": ["GET"] * n},
        fields={"latency": np.linspace(1, 100, n), "status": np.where(np.arange(n) % 10 == 0, 500, 200)},
    )
    engine.flush()
    engine.write(
        "http", [T0 + n * 10 * S], tags={"route": ["/a"], "method": ["POST"]}, fields={"latency": [5.0]}
    )
    engine.write("deploys", [T0 + 3600 * S], tags={"service": ["api"]}, fields={"version": ["1.2"]})
    return engine


REFUSED = [
    ("SELECT 1; SELECT 2", "more than one statement"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
    ("SELECT * FROM read_parquet('/tmp/x.parquet')", "read_parquet"),
    ("EXPORT DATABASE '/tmp/out'", "EXPORT"),
    ("ATTACH ':memory:' AS x", "ATTACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD icu", "LOAD"),
    ("SET threads = 1", "SET"),
    ("PRAGMA version", "PRAGMA"),
    ("RESET threads", "RESET"),
    ("CREATE TABLE t (a INT)", "CREATE"),
    ("DROP VIEW http", "DROP"),
    ("INSERT INTO http VALUES (1)", "INSERT"),
    ("DELETE FROM http", "DELETE"),
    ("WITH x AS (SELECT * FROM read_json('/etc/hosts')) SELECT * FROM x", "read_json"),
    ("SELECT (SELECT count(*) FROM read_text('/etc/hostname'))", "read_text"),
]


@pytest.mark.parametrize(("sql", "named"), REFUSED)
def test_sandbox_refuses(eng: Engine, sql: str, named: str) -> None:
    with pytest.raises(SandboxViolation) as err:
        eng.sql(sql)
    assert named.lower() in str(err.value).lower()
    assert "not allowed" in str(err.value)


def test_bad_sql_is_a_query_error_with_duckdbs_message(eng: Engine) -> None:
    with pytest.raises(QueryError, match="nope"):
        eng.sql("SELECT nope FROM http")
    with pytest.raises(QueryError):
        eng.sql("SELEC 1")


ALLOWED = {
    "join": (
        "SELECT d.version, count(*) FROM http h JOIN deploys d ON h.time >= d.time GROUP BY ALL",
        [("1.2", 361)],
    ),
    "window": (
        "SELECT route, max(rn) FROM (SELECT route, row_number() OVER (PARTITION BY route ORDER BY time) rn "
        "FROM http) GROUP BY route ORDER BY route",
        [("/a", 361), ("/b", 360)],
    ),
    "cte + time_bucket": (
        "WITH b AS (SELECT time_bucket(INTERVAL '1 hour', time) AS hour, count(*) AS n FROM http GROUP BY 1) "
        "SELECT count(*), sum(n) FROM b",
        [(3, 721)],
    ),
    "quantile_cont": (
        "SELECT round(quantile_cont(latency, 0.5), 6) FROM http WHERE method = 'GET'",
        [(50.5,)],
    ),
    "regr_slope": (
        "SELECT regr_slope(latency, epoch_ns(time) / 1e9) > 0 FROM http WHERE method = 'GET'",
        [(True,)],
    ),
    "error rate": (
        "SELECT round(avg((status >= 500)::INT), 3) FROM http WHERE status IS NOT NULL",
        [(0.1,)],
    ),
    "qualify + arg_max": (
        "SELECT route, arg_max(latency, time) FROM http GROUP BY route ORDER BY route",
        [("/a", 5.0), ("/b", 100.0)],
    ),
    "explain": ("EXPLAIN SELECT count(*) FROM http", None),
}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_analytics_sql_works(eng: Engine, name: str) -> None:
    sql, want = ALLOWED[name]
    got = eng.sql(sql)
    if want is not None:
        assert list(zip(*(c.to_pylist() for c in got.columns), strict=True)) == want
    else:
        assert got.num_rows >= 1


def test_unqualified_names_resolve_in_the_given_database(engine: Engine) -> None:
    engine.write("cpu", [T0], fields={"v": [1.0]})
    engine.write("cpu", [T0], fields={"v": [2.0]}, db="other")
    assert engine.sql("SELECT v FROM cpu").column("v").to_pylist() == [1.0]
    assert engine.sql("SELECT v FROM cpu", db="other").column("v").to_pylist() == [2.0]
    assert engine.sql('SELECT v FROM "default".cpu', db="other").column("v").to_pylist() == [1.0]
    assert engine.sql("SELECT v FROM cpu").column("v").to_pylist() == [1.0]  # the alias is gone again


def test_now_compares_with_time_columns_in_utc(engine: Engine) -> None:
    # DuckDB's own now() is TIMESTAMP WITH TIME ZONE, which it refuses to compare with the
    # TIMESTAMP_NS `time` column; the engine's now() is the current UTC time as a TIMESTAMP.
    import time as _time

    now_ns = _time.time_ns()
    engine.write_rows(
        "t", [{"time": now_ns - 30 * 60 * 10**9, "v": 1.0}, {"time": now_ns - 90 * 60 * 10**9, "v": 2.0}]
    )
    assert engine.sql("SELECT sum(v) AS s FROM t WHERE time > now() - INTERVAL 1 HOUR").to_pylist() == [
        {"s": 1.0}
    ]
    skew_s = engine.sql("SELECT epoch_ns(now()) AS n").to_pylist()[0]["n"] / 1e9 - now_ns / 1e9
    assert abs(skew_s) < 60  # UTC, not the machine's local wall clock
    engine.write_rows("t", [{"time": now_ns, "v": 3.0}], db="other")
    assert engine.sql(
        "SELECT count(*) AS n FROM t WHERE time > now() - INTERVAL 1 HOUR", db="other"
    ).to_pylist() == [{"n": 1}]
