"""SQL builders of the analysis tasks: pure functions from table shapes to DuckDB SQL text.

Who calls it: :mod:`server.analysis.metrics`, ``performance`` and ``events``, which run the text
through ``engine.sql`` (read-only sandbox, per-query snapshot). Identifiers are quoted here and
only here; times enter as ``make_timestamp_ns(<int>)`` literals built from integers, never from
user text. Conventions shared by every builder:

* a metric table has tags (labels) and a numeric field ``value`` — the shape of the SDK's push,
  Prometheus remote write and OTLP;
* a **counter's increase** over ``(start, end]`` sums, per series, the differences between
  consecutive samples whose later sample falls in the window (the earlier one may be up to one
  lookback before ``start``); a negative difference is a reset, counted as the new value —
  PromQL's ``increase`` without the extrapolation;
* NaN (Prometheus staleness markers) and infinite samples are skipped;
* a **series key** is the label set as text, ``{a="x",b="y"}`` in schema order, absent labels left
  out.
"""

from __future__ import annotations

from collections.abc import Sequence

from tsengine.query.views import quote_ident

__all__ = [
    "counter_deltas",
    "histogram_quantiles",
    "q",
    "series_key",
    "table_ref",
    "ts",
]

#: The sample filter: Prometheus staleness markers (a NaN) and nulls are not values.
FINITE = "isfinite(CAST(value AS DOUBLE))"

#: Quantiles the performance analysis reports, by output column suffix.
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def q(name: str) -> str:
    return quote_ident(name)


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_ref(db: str, table: str) -> str:
    return f"{q(db)}.{q(table)}"


def ts(ns: int) -> str:
    return f"make_timestamp_ns({int(ns)})"


def series_key(tags: Sequence[str]) -> str:
    """SQL text of the series key of a row (``'{}'`` for a table without tags)."""
    if not tags:
        return "'{}'"
    parts = ", ".join(
        f"CASE WHEN {q(t)} IS NOT NULL THEN {lit(t + '=')} || '\"' || {q(t)} || '\"' END" for t in tags
    )
    return f"'{{' || concat_ws(',', {parts}) || '}}'"


def counter_deltas(ref: str, tags: Sequence[str], lo_ns: int, hi_ns: int, extra: Sequence[str] = ()) -> str:
    """Per sample of a counter in ``(lo_ns, hi_ns]``: its tags, ``t`` (epoch ns), ``v`` and ``inc``
    (the increase since the previous sample of its series, resets counted as the new value;
    NULL for a series' first sample in the range) and ``dt_s`` (seconds since that sample).

    ``extra`` are more SQL expressions selected as they are (aliased by the caller).
    """
    part = ", ".join(q(t) for t in tags)
    over = f"OVER (PARTITION BY {part} ORDER BY time)" if tags else "OVER (ORDER BY time)"
    cols = "".join(f"{q(t)}, " for t in tags) + "".join(f"{e}, " for e in extra)
    return (
        f"SELECT {cols}epoch_ns(time) AS t, CAST(value AS DOUBLE) AS v, "
        f"CASE WHEN CAST(value AS DOUBLE) < lag(CAST(value AS DOUBLE)) {over} THEN CAST(value AS DOUBLE) "
        f"ELSE CAST(value AS DOUBLE) - lag(CAST(value AS DOUBLE)) {over} END AS inc, "
        f"(epoch_ns(time) - lag(epoch_ns(time)) {over}) / 1e9 AS dt_s "
        f"FROM {ref} WHERE time > {ts(lo_ns)} AND time <= {ts(hi_ns)} AND {FINITE}"
    )


def histogram_quantiles(buckets: str, keys: Sequence[str], *, ctes: str = "") -> str:
    """Quantiles of cumulative ``le`` buckets, interpolated as PromQL ``histogram_quantile`` does.

    ``buckets`` is SQL giving ``keys...``, ``period``, ``le_num`` (the bound as DOUBLE, ``inf``
    for ``+Inf``) and ``c`` (that bucket's count — cumulative, as Prometheus buckets are); ``ctes``
    are common table expressions (``name AS (...), ``) it may read. Out: ``keys..., period,
    total, p50, p95, p99``. As in PromQL: buckets of equal bound are summed and counts made
    monotonic in ``le`` first; a quantile in the ``+Inf`` bucket is the highest finite bound
    (NULL when there is none); the first bucket's lower bound is 0 (its own bound when that is
    <= 0); no observations → NULL.
    """
    part = ", ".join([*(q(k) for k in keys), "period"])
    win = f"PARTITION BY {part} ORDER BY le_num"
    key_cols = "".join(f"{q(k)}, " for k in keys)
    picks = []
    for name, quant in QUANTILES.items():
        rank = f"({quant} * total)"
        value = (
            f"CASE WHEN isinf(le_num) THEN prev_le "
            f"WHEN prev_le IS NULL AND le_num <= 0 THEN le_num "
            f"ELSE coalesce(prev_le, 0) + (le_num - coalesce(prev_le, 0)) * ({rank} - prev_cum) "
            f"/ nullif(cum - prev_cum, 0) END"
        )
        picks.append(f"arg_min({value}, le_num) FILTER (WHERE cum >= {rank} AND total > 0) AS {name}")
    return (
        f"WITH {ctes}m AS (SELECT {key_cols}period, le_num, "
        f"max(coalesce(c, 0)) OVER ({win} ROWS UNBOUNDED PRECEDING) AS cum "
        f"FROM (SELECT {key_cols}period, le_num, sum(c) AS c FROM ({buckets}) GROUP BY ALL)), "
        f"b AS (SELECT *, lag(cum, 1, 0) OVER ({win}) AS prev_cum, "
        f"lag(le_num) OVER ({win}) AS prev_le, "
        f"max(cum) OVER (PARTITION BY {part}) AS total FROM m) "
        f"SELECT {key_cols}period, max(total) AS total, {', '.join(picks)} "
        f"FROM b GROUP BY {part}"
    )
