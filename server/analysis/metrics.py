"""The ``metrics_aggregation`` task: derived metrics, trends and anomaly scores.

Who calls it: the scheduler (every ``tasks.intervals.metrics_aggregation``, 5 min by default) and
``POST /api/v1/tasks/metrics_aggregation/run``. In: the metric tables of ``db`` (the SDK's push,
Prometheus remote write, OTLP: a table per metric, tags = labels, field ``value``). Out, written
through the engine into the same database (columns in docs/analysis.md):

* ``analysis_derived_metrics`` — over the last ``window``, from counter increases (resets
  handled): ``requests_per_second``, ``error_rate`` (5xx share), ``success_rate`` (1xx-3xx share)
  per service/method/route and per service, from ``http_requests_total`` (labels ``route`` or
  ``handler``/``endpoint``/``path``, ``status`` or ``code``/``status_code``);
  ``payment_success_rate`` per service/payment method from ``payments_total``; and the error
  rates of the SDK's other outcome counters, per ``operation``: ``db_query_error_rate``
  (``db_queries_total``), ``external_call_error_rate`` (``external_calls_total``, operation =
  the service called) and ``operation_error_rate`` (``telemetry_operations_total``, operation =
  ``domain.operation``). Each also per service as a whole (the other dimensions absent).
* ``analysis_trends`` — per series, the least-squares slope (units per second) over each of
  ``trend_windows`` ending now; gauges as they are, counters (``*_total``, ``*_count``) as their
  per-second rate between samples.
* ``analysis_anomalies`` — per series, z-score of the window's mean against the mean and standard
  deviation of the trailing ``baseline`` before it; ``anomalous`` when ``|z| >= anomaly_z``.

Blocking (DuckDB); runs on the scheduler's background pool. Missing input tables are not an
error: the result says what was skipped.
"""

from __future__ import annotations

import math
from typing import Any

from server.analysis import sql
from server.analysis.settings import MetricsSettings
from server.analysis.tables import AnalysisEngine, Source, source, write

__all__ = ["run_metrics_aggregation"]

_NS = 1_000_000_000
#: Tables of one trend/anomaly query (bounds the SQL text; each is one UNION ALL branch).
_TABLES_PER_QUERY = 50
_SKIP_SUFFIXES = ("_bucket", "_sum", "_created")
_COUNTER_SUFFIXES = ("_total", "_count")
#: Relative spread below which a baseline counts as flat (float noise of rates computed in SQL).
_FLAT = 1e-9


def run_metrics_aggregation(engine: AnalysisEngine, settings: MetricsSettings) -> dict[str, Any]:
    """One run; returns ``{"rows": {table: n}, "findings": [...], "skipped": [...]}``."""
    now = engine.clock.now_ns()
    skipped: list[str] = []
    derived = _derived(engine, settings, now, skipped)
    trends, anomalies = _trends_and_anomalies(engine, settings, now, skipped)
    outputs = {
        "analysis_derived_metrics": derived,
        "analysis_trends": trends,
        "analysis_anomalies": anomalies,
    }
    findings = [
        f"anomaly: {a['metric']} {a['series']} "
        + (f"z={a['z_score']:.2f}" if a["z_score"] is not None else "off a flat baseline")
        for a in anomalies
        if a["anomalous"]
    ]
    write(engine, "metrics_aggregation", outputs, time_ns=now, db=settings.db, findings=len(findings))
    return {
        "rows": {table: len(rows) for table, rows in outputs.items()},
        "findings": findings[:50],
        "skipped": skipped,
    }


# -- derived metrics ------------------------------------------------------------------------------


def _derived(
    engine: AnalysisEngine, s: MetricsSettings, now: int, skipped: list[str]
) -> list[dict[str, Any]]:
    window_ns = int(s.window_s * _NS)
    rows: list[dict[str, Any]] = []
    src = source(engine, s.db, s.requests_metric)
    status = src.first_tag("status", "code", "status_code") if src else None
    if src is None or status is None:
        skipped.append(f"{s.requests_metric}: no such table with a status/code label in db {s.db!r}")
    else:
        route = src.first_tag("route", "handler", "endpoint", "path")
        dims = {"service": _tag(src, "service"), "method": _tag(src, "method"), "route": _tag(src, route)}
        for g in _increase(engine, src, now, window_ns, dims=dims, status=status):
            total, bad, good = g.pop("total"), g.pop("s5"), g.pop("s123")
            if not total:
                continue
            base = {**_dims(g), "window_s": s.window_s}
            rows.append({**base, "metric": "requests_per_second", "value": total / s.window_s,
                         "numerator": total, "denominator": s.window_s})  # fmt: skip
            rows.append({**base, "metric": "error_rate", "value": bad / total,
                         "numerator": bad, "denominator": total})  # fmt: skip
            rows.append({**base, "metric": "success_rate", "value": good / total,
                         "numerator": good, "denominator": total})  # fmt: skip
    for table, metric, share, dims_of in _outcome_counters(s):
        src = source(engine, s.db, table)
        if src is None or "status" not in src.tags:
            skipped.append(f"{table}: no such table with a status label in db {s.db!r}")
            continue
        for g in _increase(engine, src, now, window_ns, dims=dims_of(src), status="status"):
            attempts = g["ok"] + g["failed"]
            if attempts:
                part = g[share]
                rows.append({**_dims(g), "metric": metric, "value": part / attempts, "numerator": part,
                             "denominator": attempts, "window_s": s.window_s})  # fmt: skip
    return rows[: s.max_series]


def _tag(src: Source, name: str | None) -> str:
    return sql.q(name) if name is not None and name in src.tags else "NULL::VARCHAR"


def _dims(g: dict[str, Any]) -> dict[str, Any]:
    return {k: g[k] for k in _DIMS}


def _outcome_counters(s: MetricsSettings) -> list[tuple[str, str, str, Any]]:
    """Counters with a success/failure ``status`` label: (table, derived metric, "ok" or "failed"
    share reported, the dimension expressions for a table)."""

    def payments(src: Source) -> dict[str, str]:
        return {"service": _tag(src, "service"), "method": _tag(src, "method")}

    def by_operation(src: Source) -> dict[str, str]:
        return {"service": _tag(src, "service"), "operation": _tag(src, "operation")}

    def decorated(src: Source) -> dict[str, str]:
        op = f"concat_ws('.', {_tag(src, 'domain')}, {_tag(src, 'operation')})"
        return {"service": _tag(src, "service"), "operation": op}

    def external(src: Source) -> dict[str, str]:
        # The SDK's ``service`` label here is the service called (it wins over the exporter's tag).
        return {"operation": _tag(src, "service")}

    return [
        (s.payments_metric, "payment_success_rate", "ok", payments),
        ("db_queries_total", "db_query_error_rate", "failed", by_operation),
        ("external_calls_total", "external_call_error_rate", "failed", external),
        ("telemetry_operations_total", "operation_error_rate", "failed", decorated),
    ]


#: The dimensions of ``analysis_derived_metrics`` (its tags besides ``metric``).
_DIMS = ("service", "method", "route", "operation")


def _increase(
    engine: AnalysisEngine, src: Source, now: int, window_ns: int, *, dims: dict[str, str], status: str
) -> list[dict[str, Any]]:
    """Counter increases over the window, by every dimension and by service alone, split by status.

    ``dims`` maps dimension names to SQL expressions over the table (absent ones are NULL).
    """
    exprs = {d: dims.get(d, "NULL::VARCHAR") for d in _DIMS}
    st = sql.q(status)
    deltas = sql.counter_deltas(
        sql.table_ref(src.db, src.table), src.tags, now - 2 * window_ns, now,
        extra=[f"{e} AS __{d}" for d, e in exprs.items()],
    )  # fmt: skip
    every = ", ".join(f"__{d}" for d in _DIMS)
    text = (
        f"SELECT {', '.join(f'__{d} AS {d}' for d in _DIMS)}, sum(inc) AS total, "
        f"coalesce(sum(inc) FILTER (WHERE left({st}, 1) = '5'), 0) AS s5, "
        f"coalesce(sum(inc) FILTER (WHERE left({st}, 1) IN ('1', '2', '3')), 0) AS s123, "
        f"coalesce(sum(inc) FILTER (WHERE lower({st}) IN ('success', 'succeeded', 'ok')), 0) AS ok, "
        f"coalesce(sum(inc) FILTER (WHERE lower({st}) IN ('failure', 'failed', 'error')), 0) AS failed "
        f"FROM ({deltas}) WHERE inc IS NOT NULL AND t > {now - window_ns} "
        f"GROUP BY GROUPING SETS (({every}), (__service)) "
        f"ORDER BY {', '.join(f'{d} NULLS FIRST' for d in _DIMS)}"
    )
    return engine.sql(text, db=src.db).to_pylist()


# -- trends and anomalies -------------------------------------------------------------------------


def _candidates(engine: AnalysisEngine, s: MetricsSettings, skipped: list[str]) -> list[tuple[Source, bool]]:
    """(table, is_counter) of every metric table scored."""
    if s.metrics:
        names = list(s.metrics)
    else:
        names = [t for _, t in engine.tables(s.db) if not t.startswith("analysis_")]
    out = []
    for name in names:
        if name.endswith(_SKIP_SUFFIXES):
            continue
        src = source(engine, s.db, name)
        if src is None:
            if s.metrics:
                skipped.append(f"{name}: no such table with a numeric 'value' in db {s.db!r}")
            continue
        out.append((src, name.endswith(_COUNTER_SUFFIXES)))
    return out


def _points(src: Source, is_counter: bool, lo: int, hi: int) -> str:
    """SQL: (metric, series, t, v) of one table; counters as per-second rates."""
    ref = sql.table_ref(src.db, src.table)
    key = sql.series_key(src.tags)
    if is_counter:
        inner = sql.counter_deltas(ref, src.tags, lo, hi, extra=[f"{key} AS __series"])
        return (
            f"SELECT {sql.lit('rate(' + src.table + ')')} AS metric, __series AS series, t, inc / dt_s AS v "
            f"FROM ({inner}) WHERE inc IS NOT NULL AND dt_s > 0"
        )
    return (
        f"SELECT {sql.lit(src.table)} AS metric, {key} AS series, epoch_ns(time) AS t, "
        f"CAST(value AS DOUBLE) AS v FROM {ref} "
        f"WHERE time > {sql.ts(lo)} AND time <= {sql.ts(hi)} AND {sql.FINITE}"
    )


def _trends_and_anomalies(
    engine: AnalysisEngine, s: MetricsSettings, now: int, skipped: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    window_ns, baseline_ns = int(s.window_s * _NS), int(s.baseline_s * _NS)
    trend_ns = [int(w * _NS) for w in s.trend_windows_s]
    lo = now - max([window_ns + baseline_ns, *trend_ns])
    cur_lo = now - window_ns
    base_lo = cur_lo - baseline_ns
    candidates = _candidates(engine, s, skipped)
    if not candidates:
        skipped.append(f"trends/anomalies: no metric tables in db {s.db!r}")
        return [], []
    aggs = []
    for i, w in enumerate(trend_ns):
        f = f"FILTER (WHERE t > {now - w})"
        aggs.append(
            f"regr_slope(v, (t - {now}) / 1e9) {f} AS slope{i}, avg(v) {f} AS mean{i}, count(*) {f} AS n{i}"
        )
    cur, base = f"FILTER (WHERE t > {cur_lo})", f"FILTER (WHERE t <= {cur_lo} AND t > {base_lo})"
    aggs.append(
        f"avg(v) {cur} AS cur_mean, count(*) {cur} AS cur_n, "
        f"avg(v) {base} AS base_mean, stddev_samp(v) {base} AS base_sd, count(*) {base} AS base_n"
    )
    trends: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    for start in range(0, len(candidates), _TABLES_PER_QUERY):
        part = candidates[start : start + _TABLES_PER_QUERY]
        union = " UNION ALL ".join(_points(src, counter, lo, now) for src, counter in part)
        text = (
            f"SELECT metric, series, {', '.join(aggs)} FROM ({union}) "
            f"GROUP BY metric, series ORDER BY metric, series LIMIT {s.max_series}"
        )
        for r in engine.sql(text, db=s.db).to_pylist():
            for i, win_s in enumerate(s.trend_windows_s):
                if r[f"n{i}"] >= 2 and r[f"slope{i}"] is not None:
                    trends.append({"metric": r["metric"], "series": r["series"], "period": _label(win_s),
                                   "slope_per_s": r[f"slope{i}"], "mean": r[f"mean{i}"],
                                   "samples": r[f"n{i}"], "window_s": win_s})  # fmt: skip
            anomaly = _score(r, s)
            if anomaly is not None:
                anomalies.append(anomaly)
    return trends[: s.max_series], anomalies[: s.max_series]


def _score(r: dict[str, Any], s: MetricsSettings) -> dict[str, Any] | None:
    if not r["cur_n"] or r["base_n"] < s.min_baseline_samples or r["base_sd"] is None:
        return None
    cur, mean, sd = r["cur_mean"], r["base_mean"], r["base_sd"]
    z: float | None
    if sd > _FLAT * max(abs(mean), 1e-12):
        z = (cur - mean) / sd
        anomalous = abs(z) >= s.anomaly_z
    else:  # a flat baseline: no z-score; any real move off it is anomalous
        z = None
        anomalous = not math.isclose(cur, mean, rel_tol=_FLAT, abs_tol=1e-12)
    return {
        "metric": r["metric"],
        "series": r["series"],
        "z_score": z,
        "current_mean": r["cur_mean"],
        "baseline_mean": r["base_mean"],
        "baseline_stddev": sd,
        "current_samples": r["cur_n"],
        "baseline_samples": r["base_n"],
        "anomalous": anomalous,
    }


def _label(seconds: float) -> str:
    """``900.0`` → ``"15m"``: the trend window as a tag value."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
