"""Query layer: the DuckDB catalog, the read-only sandbox and the analysis SQL builders.

In: SQL text from ``engine.sql()``, the HTTP ``/api/v1/sql`` endpoint and alert rules, plus the
Parquet files and in-memory Arrow tables the write and persist layers produce. Out: Arrow
tables. The query layer owns the engine's one DuckDB connection and hands a cursor to each
thread; every piece of user SQL passes :mod:`tsengine.query.sandbox` first.
"""
