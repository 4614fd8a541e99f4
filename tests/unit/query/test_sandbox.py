"""The read-only sandbox: the parser check, the hardened connection and the query timeout.

The engine's own setup is reproduced as the engine does it: a schema ``"default"``, a view over
Parquet files read through ``read_parquet(getvariable(...))``, a ``SET VARIABLE`` and an Arrow
table registered per cursor, all on a connection hardened by ``configure_connection``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tsengine.errors import QueryError, SandboxViolation
from tsengine.query.sandbox import (
    DENIED_FUNCTIONS,
    DENIED_TABLE_FUNCTIONS,
    check_sql,
    configure_connection,
    run_with_timeout,
    translate_error,
)

T0 = datetime(2026, 1, 1)
HOSTS = ("web-1", "web-2")
TIMEOUT_S = 10.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with one Parquet file of table ``cpu``: 2 hosts x 6 points, 2 hours."""
    path = tmp_path / "data" / "default" / "cpu"
    path.mkdir(parents=True)
    times = [T0 + timedelta(minutes=20 * i) for i in range(6)]
    table = pa.table(
        {
            "time": pa.array([t for t in times for _ in HOSTS], pa.timestamp("ns")),
            "host": [h for _ in times for h in HOSTS],
            "usage": [float(i * 10 + j) for i in range(6) for j in range(len(HOSTS))],
        }
    )
    pq.write_table(table, path / "part-0.parquet")
    return tmp_path / "data"


@pytest.fixture
def con(data_dir: Path, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A hardened connection with the schema and view the engine creates."""
    connection = duckdb.connect(":memory:")
    configure_connection(
        connection,
        data_dir=str(data_dir),
        temp_dir=str(tmp_path / "tmp"),
        memory_limit="256MB",
        threads=2,
    )
    connection.execute('CREATE SCHEMA "default"')
    # a view over read_parquet(getvariable(...)) binds at creation: the variable must be set
    connection.execute("SET VARIABLE cpu_files = ?", [[str(data_dir / "default" / "cpu" / "part-0.parquet")]])
    connection.execute(
        """CREATE VIEW "default".cpu AS SELECT * FROM read_parquet(getvariable('cpu_files'))"""
    )
    yield connection
    connection.close()


@pytest.fixture
def cursor(con: duckdb.DuckDBPyConnection, data_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor prepared as the engine prepares one: its variable and its Arrow table."""
    cur = con.cursor()
    cur.execute("SET VARIABLE cpu_files = ?", [[str(data_dir / "default" / "cpu" / "part-0.parquet")]])
    cur.register("hosts", pa.table({"host": list(HOSTS), "region": ["eu", "us"]}))
    yield cur
    cur.close()


def run(cursor: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    """What the engine does with user SQL: check it, then run it with a bound."""
    return run_with_timeout(cursor, check_sql(sql), None, TIMEOUT_S, fetch=lambda c: c.fetchall())


# -- refused --------------------------------------------------------------------------------------

REFUSED = [
    # (sql, a fragment the message must contain)
    ("SELECT 1; SELECT 2", "more than one statement"),
    ("SELECT 1; DROP TABLE t", "more than one statement"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
    ("COPY t FROM '/etc/passwd'", "COPY"),
    ("EXPORT DATABASE '/tmp/x'", "EXPORT DATABASE"),
    ("IMPORT DATABASE '/tmp/x'", "IMPORT DATABASE"),
    ("ATTACH '/tmp/x.db' AS x", "ATTACH"),
    ("ATTACH ':memory:' AS x", "ATTACH"),
    ("DETACH x", "DETACH"),
    ("USE memory", "USE"),
    ("INSTALL httpfs", "INSTALL"),
    ("FORCE INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("LOAD '/tmp/evil.duckdb_extension'", "LOAD"),
    ("UPDATE EXTENSIONS", "UPDATE EXTENSIONS"),
    ("SET threads = 1", "SET"),
    ("SET GLOBAL enable_external_access = true", "SET"),
    ("SET VARIABLE cpu_files = ['/etc/passwd']", "SET VARIABLE"),
    ("RESET threads", "RESET"),
    ("PRAGMA version", "PRAGMA"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("CALL read_csv('/etc/passwd')", "CALL"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("FORCE CHECKPOINT", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("ANALYZE", "ANALYZE"),
    ("CREATE TABLE t (a INT)", "CREATE TABLE"),
    ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
    ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE OR REPLACE TEMP VIEW"),
    ("CREATE MACRO m(x) AS x + 1", "CREATE MACRO"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "CREATE SECRET"),
    ("CREATE SEQUENCE s", "CREATE SEQUENCE"),
    ("CREATE SCHEMA s", "CREATE SCHEMA"),
    ("CREATE TYPE e AS ENUM ('a')", "CREATE TYPE"),
    ("ALTER TABLE t ADD COLUMN b INT", "ALTER TABLE"),
    ('ALTER VIEW "default".cpu RENAME TO c', "ALTER VIEW"),
    ("COMMENT ON TABLE t IS 'x'", "COMMENT"),
    ('DROP VIEW "default".cpu', "DROP VIEW"),
    ('DROP SCHEMA "default" CASCADE', "DROP SCHEMA"),
    ("INSERT INTO t VALUES (1)", "INSERT INTO"),
    ("INSERT INTO t SELECT * FROM read_csv('/etc/passwd')", "INSERT INTO"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE FROM"),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE INTO"),
    ("TRUNCATE t", "TRUNCATE"),
    ("BEGIN TRANSACTION", "BEGIN"),
    ("COMMIT", "COMMIT"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("EXECUTE p", "EXECUTE"),
    ("DEALLOCATE p", "DEALLOCATE"),
    ("PIVOT hosts ON region USING count(*)", "PIVOT without an explicit IN"),
    ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
    ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
    # table functions over files, the network, memory, SQL strings and side effects
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto()"),
    ("SELECT * FROM read_json('/etc/x.json')", "read_json()"),
    ("SELECT * FROM read_json_auto('/etc/x.json')", "read_json_auto()"),
    ("SELECT * FROM read_json_objects('/etc/x.json')", "read_json_objects()"),
    ("SELECT * FROM read_ndjson('/etc/x.json')", "read_ndjson()"),
    ("SELECT * FROM read_ndjson_objects('/etc/x.json')", "read_ndjson_objects()"),
    ("SELECT * FROM read_parquet('/data/x.parquet')", "read_parquet()"),
    ("SELECT * FROM parquet_scan('/data/x.parquet')", "parquet_scan()"),
    ("SELECT * FROM parquet_metadata('/data/x.parquet')", "parquet_metadata()"),
    ("SELECT * FROM parquet_schema('/data/x.parquet')", "parquet_schema()"),
    ("SELECT * FROM parquet_file_metadata('/data/x.parquet')", "parquet_file_metadata()"),
    ("SELECT * FROM parquet_kv_metadata('/data/x.parquet')", "parquet_kv_metadata()"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text()"),
    ("SELECT * FROM read_blob('/etc/passwd')", "read_blob()"),
    ("SELECT * FROM glob('/etc/*')", "glob()"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv()"),
    ("SELECT * FROM read_duckdb('/tmp/x.db')", "read_duckdb()"),
    ("SELECT * FROM iceberg_scan('s3://bucket/t')", "iceberg_scan()"),
    ("SELECT * FROM delta_scan('s3://bucket/t')", "delta_scan()"),
    ("SELECT * FROM system.main.read_csv('/etc/passwd')", "read_csv()"),
    ("SELECT * FROM READ_CSV('/etc/passwd')", "read_csv()"),
    ("SELECT * FROM \"Read_Csv\"('/etc/passwd')", "read_csv()"),
    ("SELECT * FROM read_csv('/etc/passwd') WITH ORDINALITY", "read_csv()"),
    ("SELECT * FROM query('SELECT 1')", "query()"),
    ("SELECT * FROM query_table('hosts')", "query_table()"),
    ("SELECT * FROM histogram_values('x.csv', a)", "histogram_values()"),
    ("SELECT * FROM json_execute_serialized_sql('{}')", "json_execute_serialized_sql()"),
    ("SELECT * FROM arrow_scan(1, 2, 3)", "arrow_scan()"),
    ("SELECT * FROM python_map_function('x', 'y')", "python_map_function()"),
    ("SELECT * FROM checkpoint()", "checkpoint()"),
    ("SELECT * FROM force_checkpoint()", "force_checkpoint()"),
    ("SELECT * FROM enable_logging()", "enable_logging()"),
    ("SELECT * FROM duckdb_logs()", "duckdb_logs()"),
    ("SELECT * FROM duckdb_variables()", "duckdb_variables()"),
    # scalar functions
    ("SELECT getvariable('cpu_files')", "getvariable()"),
    ("SELECT nextval('s')", "nextval()"),
    ("SELECT setseed(0.5)", "setseed()"),
    ("SELECT write_log('x')", "write_log()"),
    ("SELECT json_serialize_plan('SELECT * FROM read_csv(''/etc/passwd'')')", "json_serialize_plan()"),
    # a file path or URL in FROM (DuckDB's replacement scans would read it)
    ("SELECT * FROM '/etc/passwd'", "'/etc/passwd'"),
    ("FROM 'x.parquet'", "'x.parquet'"),
    ('FROM "x.csv"', "'x.csv'"),
    ("FROM 'data/*.parquet'", "'data/*.parquet'"),
    ("FROM 'x.csv.gz'", "'x.csv.gz'"),
    ("FROM 'x.json?raw'", "'x.json?raw'"),
    ("FROM 'https://example.com/x'", "'https://example.com/x'"),
    ("FROM 's3://bucket/key'", "'s3://bucket/key'"),
    ('FROM "default"."x.parquet"', "'default.x.parquet'"),
    ("DESCRIBE '/etc/x.csv'", "'/etc/x.csv'"),
    ("SUMMARIZE 'x.csv'", "'x.csv'"),
    ("SHOW '/etc/x.csv'", "'/etc/x.csv'"),
    ("EXPLAIN SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    ("EXPLAIN ANALYZE SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    ("EXPLAIN (FORMAT json) SELECT * FROM '/etc/x.csv'", "'/etc/x.csv'"),
]

NESTED = [
    ("a CTE", "WITH a AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM a"),
    ("a materialized CTE", "WITH a AS MATERIALIZED (FROM read_text('/etc/passwd')) FROM a"),
    (
        "a recursive CTE",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r, glob('/*') WHERE n < 2) FROM r",
    ),
    ("a subquery in FROM", "SELECT * FROM (SELECT * FROM read_csv('/etc/passwd')) s"),
    ("a scalar subquery", "SELECT (SELECT count(*) FROM read_blob('/etc/passwd'))"),
    ("an EXISTS", "SELECT 1 WHERE EXISTS (FROM '/etc/passwd')"),
    ("an IN subquery", "SELECT 1 WHERE 'x' IN (SELECT content FROM read_text('/etc/passwd'))"),
    ("a lateral join", "SELECT * FROM hosts, LATERAL (SELECT * FROM read_csv(hosts.host)) l"),
    ("a join", "SELECT * FROM hosts h JOIN read_csv('/etc/passwd') p ON true"),
    ("an ASOF join", "SELECT * FROM hosts h ASOF JOIN 'x.csv' p ON h.host >= p.host"),
    ("a UNION branch", "SELECT 1 UNION ALL SELECT count(*) FROM read_parquet('/x.parquet')"),
    ("an EXCEPT branch", "SELECT host FROM hosts EXCEPT SELECT column0 FROM read_csv('/etc/passwd')"),
    ("a function argument", "SELECT length((SELECT content FROM read_text('/etc/passwd')))"),
    ("a lambda", "SELECT list_transform([1], lambda x: (SELECT count(*) FROM glob('/*')))"),
    ("a window definition", "SELECT sum(1) OVER (PARTITION BY (SELECT 1 FROM glob('/*'))) FROM hosts"),
    ("a named window", "SELECT sum(1) OVER w FROM hosts WINDOW w AS (ORDER BY getvariable('x'))"),
    ("a QUALIFY", "SELECT * FROM hosts QUALIFY getvariable('x') IS NULL"),
    ("a CASE", "SELECT CASE WHEN true THEN getvariable('x') END"),
    ("a PIVOT source", "PIVOT (FROM read_csv('/etc/passwd')) ON column0 IN ('a') USING count(*)"),
    ("an UNPIVOT source", "UNPIVOT 'x.csv' ON a INTO NAME k VALUE v"),
    ("a DESCRIBE", "DESCRIBE SELECT * FROM read_csv('/etc/passwd')"),
    ("a SUMMARIZE", "SUMMARIZE SELECT * FROM read_text('/etc/passwd')"),
    ("a VALUES list", "VALUES ((SELECT 1 FROM glob('/*')))"),
    ("an ORDER BY", "SELECT 1 ORDER BY (SELECT count(*) FROM glob('/*'))"),
    ("a LIMIT", "SELECT 1 LIMIT (SELECT count(*) FROM glob('/*'))"),
    ("an aggregate FILTER", "SELECT count(*) FILTER (WHERE getvariable('x') IS NULL) FROM hosts"),
    ("a nested EXPLAIN", "EXPLAIN WITH a AS (FROM read_csv('/etc/passwd')) FROM a"),
]


@pytest.mark.parametrize(("sql", "named"), REFUSED, ids=[sql[:60] for sql, _ in REFUSED])
def test_refused_statement_names_what_it_refuses(sql: str, named: str) -> None:
    with pytest.raises(SandboxViolation) as info:
        check_sql(sql)
    message = str(info.value)
    assert message.startswith("cannot run query: ")
    assert "is not allowed (read-only sandbox)" in message
    assert named in message


@pytest.mark.parametrize(("where", "sql"), NESTED, ids=[where for where, _ in NESTED])
def test_refused_when_nested(where: str, sql: str) -> None:
    with pytest.raises(SandboxViolation, match=r"is not allowed \(read-only sandbox\)"):
        check_sql(sql)


def test_call_refusal_points_to_select() -> None:
    with pytest.raises(SandboxViolation, match=r"SELECT \* FROM fn"):
        check_sql("CALL pragma_version()")


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment", ";"])
def test_empty_text_is_a_query_error(sql: str) -> None:
    with pytest.raises(QueryError, match="no SQL statement"):
        check_sql(sql)


def test_syntax_error_is_a_query_error_with_duckdbs_message() -> None:
    with pytest.raises(QueryError, match="syntax error") as info:
        check_sql("SELEC 1")
    assert not isinstance(info.value, SandboxViolation)


def test_non_string_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="must be a string"):
        check_sql(b"SELECT 1")  # type: ignore[arg-type]


# -- allowed --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;", "SELECT 1"),
        ("  SELECT 1 ;  ", "SELECT 1"),
        ("SELECT ';'", "SELECT ';'"),
        ("SELECT 'é'; -- trailing comment", "SELECT 'é'"),
        ("SELECT 1 -- no semicolon", "SELECT 1"),
        ("SELECT 1 /* a */ ; /* b */", "SELECT 1"),
        ("-- leading\nSELECT 1", "-- leading\nSELECT 1"),
        ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
    ],
)
def test_returns_one_statement_without_the_trailing_semicolon(sql: str, expected: str) -> None:
    assert check_sql(sql) == expected


ALLOWED = [
    ('SELECT count(*) FROM "default".cpu', [(12,)]),
    ("SELECT count(*) FROM hosts", [(2,)]),
    (
        'SELECT h.region, max(c.usage) FROM "default".cpu c JOIN hosts h USING (host) '
        "GROUP BY ALL ORDER BY ALL",
        [("eu", 50.0), ("us", 51.0)],
    ),
    (
        "SELECT time_bucket(INTERVAL '1 hour', time) AS hour, count(*) "
        'FROM "default".cpu GROUP BY ALL ORDER BY hour',
        [(T0, 6), (T0 + timedelta(hours=1), 6)],
    ),
    ('SELECT quantile_cont(usage, 0.5) FROM "default".cpu', [(25.5,)]),
    (
        "SELECT host, round(regr_slope(usage, epoch_ns(time) / 6e10), 6) "
        'FROM "default".cpu GROUP BY host ORDER BY host',
        [("web-1", 0.5), ("web-2", 0.5)],
    ),
    ('SELECT arg_max(host, usage) FROM "default".cpu', [("web-2",)]),
    ('SELECT min(epoch_ns(time)) FROM "default".cpu', [(int(T0.timestamp()) * 10**9,)]),
    (
        'SELECT host, usage FROM "default".cpu '
        "QUALIFY row_number() OVER (PARTITION BY host ORDER BY time DESC) = 1 ORDER BY host",
        [("web-1", 50.0), ("web-2", 51.0)],
    ),
    (
        "SELECT host, usage - lag(usage) OVER (PARTITION BY host ORDER BY time) AS d "
        'FROM "default".cpu ORDER BY time DESC, host LIMIT 1',
        [("web-1", 10.0)],
    ),
    (
        'WITH last AS (SELECT host, max(time) AS t FROM "default".cpu GROUP BY ALL) '
        "SELECT upper(host), length(host), host || '/' || region, regexp_replace(host, '-.*', '') "
        "FROM last JOIN hosts USING (host) ORDER BY 1",
        [("WEB-1", 5, "web-1/eu", "web"), ("WEB-2", 5, "web-2/us", "web")],
    ),
    ("SELECT sum(x) FROM generate_series(1, 10) t(x)", [(55,)]),
    ("SELECT count(*) FROM range(1000)", [(1000,)]),
    ("SELECT range(3)", [([0, 1, 2],)]),
    ("SELECT * FROM (VALUES (1, 'a')) v(n, s)", [(1, "a")]),
    ("FROM hosts SELECT host ORDER BY host LIMIT 1", [("web-1",)]),
    ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1", [(1,), (2,)]),
    (
        "SELECT * FROM hosts, LATERAL (SELECT length(hosts.host) AS n) ORDER BY host LIMIT 1",
        [("web-1", "eu", 5)],
    ),
    (
        "SELECT * FROM (PIVOT hosts ON region IN ('eu', 'us') USING count(*)) ORDER BY host",
        [("web-1", 1, 0), ("web-2", 0, 1)],
    ),
    ("SELECT count(*) FROM (UNPIVOT hosts ON host, region INTO NAME k VALUE v)", [(4,)]),
    ("SELECT histogram(region) FROM hosts", [({"eu": 1, "us": 1},)]),
    ("SELECT list_transform([1, 2], lambda x: x * 2)", [([2, 4],)]),
    ("SELECT current_setting('threads')", [(2,)]),
    ("SELECT count(*) > 0 FROM pragma_version()", [(True,)]),
    ("SELECT count(*) FROM duckdb_tables()", [(0,)]),
    ("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'default'", [(1,)]),
    (
        'SELECT column_name FROM (DESCRIBE "default".cpu) ORDER BY column_name',
        [("host",), ("time",), ("usage",)],
    ),
    ('SELECT count(*) FROM (SUMMARIZE "default".cpu)', [(3,)]),
    ("SELECT count(*) > 0 FROM (SHOW ALL TABLES)", [(True,)]),
]


@pytest.mark.parametrize(("sql", "expected"), ALLOWED, ids=[sql[:60] for sql, _ in ALLOWED])
def test_allowed_query_runs_on_hardened_connection(
    cursor: duckdb.DuckDBPyConnection, sql: str, expected: list[tuple[object, ...]]
) -> None:
    assert run(cursor, sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        'DESCRIBE "default".cpu',
        'SUMMARIZE "default".cpu',
        "SHOW TABLES",
        'EXPLAIN SELECT count(*) FROM "default".cpu',
        'EXPLAIN ANALYZE SELECT count(*) FROM "default".cpu',
        "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN (SELECT 1)",
        "SELECT * FROM hosts WHERE host = ?",
    ],
)
def test_read_only_statements_pass_the_check(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    params = ["web-1"] if "?" in sql else None
    rows = run_with_timeout(cursor, check_sql(sql), params, TIMEOUT_S, fetch=lambda c: c.fetchall())
    assert isinstance(rows, list)


def test_dotted_table_names_are_not_paths(cursor: duckdb.DuckDBPyConnection) -> None:
    # OTLP metric names are dotted; a name without a file ending must reach the catalog.
    assert check_sql('SELECT * FROM "default"."http.server.duration"')
    with pytest.raises(QueryError, match="does not exist"):
        run(cursor, 'SELECT * FROM "default"."http.server.duration"')


def test_default_fetch_returns_arrow(cursor: duckdb.DuckDBPyConnection) -> None:
    table = run_with_timeout(cursor, check_sql('SELECT host FROM "default".cpu'), None, TIMEOUT_S)
    assert isinstance(table, pa.Table)
    assert table.num_rows == 12


def test_check_sql_is_thread_safe() -> None:
    statements = [f"SELECT {i} + x FROM range(3) t(x)" for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(check_sql, statements)) == statements


# -- the second wall: the hardened connection ----------------------------------------------------


def test_engine_setup_works_after_hardening(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    cur = con.cursor()
    cur.execute('CREATE SCHEMA "other"')
    cur.execute("SET VARIABLE files = ?", [[str(data_dir / "default" / "cpu" / "part-0.parquet")]])
    cur.execute("""CREATE VIEW "other".mem AS SELECT * FROM read_parquet(getvariable('files'))""")
    cur.register("extra", pa.table({"n": [1, 2, 3]}))
    assert cur.execute('SELECT count(*) FROM "other".mem').fetchone() == (12,)
    assert cur.execute("SELECT sum(n) FROM extra").fetchone() == (6,)


def test_settings_are_applied(
    con: duckdb.DuckDBPyConnection, cursor: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    settings = dict(
        cursor.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'lock_configuration', 'autoload_known_extensions', 'autoinstall_known_extensions', "
            "'temp_directory', 'threads')"
        ).fetchall()
    )
    assert settings == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false",
        "temp_directory": str(tmp_path / "tmp"),
        "threads": "2",
    }
    # per connection: cursors keep their default, enable_external_access is what stops them
    assert con.execute("SELECT current_setting('python_enable_replacements')").fetchone() == (False,)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd.csv'",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "COPY (SELECT 1) TO '/tmp/tsengine-sandbox-test.csv'",
        "ATTACH '/tmp/tsengine-sandbox-test.db' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
def test_connection_refuses_access_outside_data_dir(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    # check_sql is bypassed on purpose: this is the wall behind it.
    with pytest.raises(duckdb.Error) as info:
        cursor.execute(sql)
    assert isinstance(translate_error(info.value), SandboxViolation)


def test_connection_refusal_surfaces_as_sandbox_violation(cursor: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(SandboxViolation, match="/etc/passwd"):
        run_with_timeout(cursor, "SELECT * FROM read_csv('/etc/passwd')", None, TIMEOUT_S)


def test_connection_refuses_parent_directory_escape(
    cursor: duckdb.DuckDBPyConnection, data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with pytest.raises(duckdb.PermissionException):
        cursor.execute(f"SELECT * FROM read_csv('{data_dir}/../secret.csv')")


@pytest.mark.parametrize(
    "sql",
    [
        "SET threads = 1",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "RESET lock_configuration",
        "SET lock_configuration = false",
        "SET python_enable_replacements = true",
        "SET autoload_known_extensions = true",
    ],
)
def test_settings_are_locked(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    with pytest.raises(duckdb.Error) as info:
        cursor.execute(sql)
    error = translate_error(info.value)
    assert isinstance(error, SandboxViolation)
    assert "read-only sandbox" in str(error)


def test_python_variables_are_not_scanned(cursor: duckdb.DuckDBPyConnection) -> None:
    leaked = pa.table({"secret": ["x"]})  # a replacement scan would find it by name
    with pytest.raises(duckdb.CatalogException):
        cursor.execute("SELECT * FROM leaked")
    assert leaked.num_rows == 1


# -- errors and time ------------------------------------------------------------------------------


def test_translate_error_maps_each_kind(cursor: duckdb.DuckDBPyConnection) -> None:
    cases = {
        "SELECT FROM WHERE": QueryError,  # parser
        "SELECT nope FROM hosts": QueryError,  # binder
        "SELECT * FROM nope": QueryError,  # catalog
        "SELECT 'x'::INTEGER": QueryError,  # conversion
    }
    for sql, kind in cases.items():
        with pytest.raises(duckdb.Error) as info:
            cursor.execute(sql)
        error = translate_error(info.value)
        assert type(error) is kind
        assert error.reason.startswith("cannot run query: ")
        assert str(info.value).splitlines()[0] in error.reason


def test_translate_error_out_of_memory_is_overloaded() -> None:
    error = translate_error(duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate"))
    assert error.http_status == 429
    assert error.retry_after_s > 0  # type: ignore[attr-defined]


def test_translate_error_interrupt_is_a_query_error() -> None:
    assert "interrupted" in str(translate_error(duckdb.InterruptException("INTERRUPT Error")))
    error = translate_error(duckdb.InterruptException("INTERRUPT Error"), timeout_s=2.5)
    assert isinstance(error, QueryError)
    assert str(error) == "cannot run query: timed out after 2.5 s"


def test_slow_query_times_out(cursor: duckdb.DuckDBPyConnection) -> None:
    slow = check_sql("SELECT count(*) FROM range(1000000000) a, range(1000000000) b")
    with pytest.raises(QueryError, match=r"timed out after 0\.2 s") as info:
        run_with_timeout(cursor, slow, None, 0.2)
    assert isinstance(info.value.__cause__, duckdb.InterruptException)
    # the cursor stays usable and the spent timer cannot interrupt the next query
    assert run_with_timeout(cursor, "SELECT 42", None, TIMEOUT_S, fetch=lambda c: c.fetchall()) == [(42,)]


def test_timer_never_outlives_the_query(cursor: duckdb.DuckDBPyConnection) -> None:
    before = {t for t in threading.enumerate() if isinstance(t, threading.Timer)}
    run_with_timeout(cursor, "SELECT 1", None, TIMEOUT_S)
    after = {t for t in threading.enumerate() if isinstance(t, threading.Timer)} - before
    for timer in after:
        timer.join(timeout=TIMEOUT_S)
        assert not timer.is_alive()


def test_timeout_must_be_positive(cursor: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="BUG"):
        run_with_timeout(cursor, "SELECT 1", None, 0)


# -- the deny-lists against DuckDB's catalog: an upgrade that adds a function fails here ----------

#: Table functions reviewed and found read-only, local and about the engine only.
REVIEWED_TABLE_FUNCTIONS = frozenset(
    {
        "duckdb_approx_database_count",
        "duckdb_available_metrics",
        "duckdb_columns",
        "duckdb_connection_count",
        "duckdb_constraints",
        "duckdb_coordinate_systems",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_dialects",
        "duckdb_eviction_queues",
        "duckdb_extension_repositories",
        "duckdb_extensions",
        "duckdb_external_file_cache",
        "duckdb_external_resource_types",
        "duckdb_external_resources",
        "duckdb_functions",
        "duckdb_grammar_extensions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_live_query_metrics",
        "duckdb_memory",
        "duckdb_optimizers",
        "duckdb_prepared_statements",
        "duckdb_profiling_settings",
        "duckdb_schemas",
        "duckdb_secret_type_parameters",
        "duckdb_secret_types",
        "duckdb_secrets",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_table_sample",
        "duckdb_tables",
        "duckdb_temporary_files",
        "duckdb_triggers",
        "duckdb_types",
        "duckdb_views",
        "generate_series",
        "icu_calendar_names",
        "json_each",
        "json_tree",
        "pg_timezone_names",
        "pragma_collations",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_platform",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_user_agent",
        "pragma_version",
        "range",
        "repeat",
        "repeat_row",
        "summary",
        "test_all_types",
        "test_vector_types",
        "unnest",
        "which_secret",
    }
)

#: Scalar functions whose names suggest I/O, reviewed and found harmless.
REVIEWED_SCALAR_FUNCTIONS = frozenset(
    {
        "current_catalog",
        "current_query",
        "current_query_id",
        "current_setting",
        "json_deserialize_sql",
        "json_serialize_sql",
        "log",
        "log10",
        "log2",
        "parse_duckdb_log_message",
        "parse_filename",
        "pg_conf_load_time",
        "read_only",  # in case a future version adds a pg-compat name
    }
)
_IO_LIKE = re.compile(r"read|writ|file|glob|http|env|exec|sql|query|variable|log|secret|checkpoint|setting")


@pytest.fixture(scope="module")
def catalog() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


def test_every_table_function_is_classified(catalog: duckdb.DuckDBPyConnection) -> None:
    names = {
        name
        for (name,) in catalog.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro')"
        ).fetchall()
    }
    unreviewed = names - set(DENIED_TABLE_FUNCTIONS) - REVIEWED_TABLE_FUNCTIONS
    assert not unreviewed, f"classify these table functions in sandbox.py or this test: {sorted(unreviewed)}"


def test_every_io_like_scalar_function_is_classified(catalog: duckdb.DuckDBPyConnection) -> None:
    names = {
        name
        for (name,) in catalog.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type NOT IN ('table', 'table_macro', 'pragma')"
        ).fetchall()
        if _IO_LIKE.search(name) and not name.startswith("__internal")
    }
    unreviewed = names - set(DENIED_FUNCTIONS) - REVIEWED_SCALAR_FUNCTIONS
    assert not unreviewed, f"classify these functions in sandbox.py or this test: {sorted(unreviewed)}"


def test_no_builtin_macro_wraps_a_denied_function(catalog: duckdb.DuckDBPyConnection) -> None:
    denied = set(DENIED_TABLE_FUNCTIONS) | set(DENIED_FUNCTIONS)
    wrappers = set()
    for name, definition in catalog.execute(
        "SELECT function_name, macro_definition FROM duckdb_functions() "
        "WHERE function_type IN ('macro', 'table_macro') AND macro_definition IS NOT NULL"
    ).fetchall():
        called = {m.lower() for m in re.findall(r"(\w+)\s*\(", definition)}
        if called & denied and name not in denied:
            wrappers.add(name)
    assert not wrappers, f"these macros call a denied function; deny them too: {sorted(wrappers)}"
