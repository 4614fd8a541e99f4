"""The ``performance_analysis`` task: endpoint latency percentiles now vs a baseline.

Who calls it: the scheduler (every ``tasks.intervals.performance_analysis``, 10 min by default),
``POST /api/v1/tasks/performance_analysis/run``, and ``GET /api/v1/reports/performance`` when no
analysis has been written yet (then with ``persist=False``). In: the ``<histogram>_bucket`` table
of each configured histogram (``http_request_duration_seconds`` by default: the SDK middlewares'
and most Prometheus instrumentations'), cumulative ``le`` buckets. Out: rows of
``analysis_endpoint_performance``, one per endpoint (the labels other than ``le`` and the
ignored ones; ``METHOD route`` when the histogram has ``method`` and ``route``/``handler``):

* p50/p95/p99 over the window now, from the bucket increases, interpolated like PromQL's
  ``histogram_quantile``; p95 in the window before (``p95_previous_s``) and p95/p99 over the
  trailing baseline before now;
* ``degraded`` when p95 (or p99) now exceeds ``degradation_factor`` times its baseline, both windows
  having ``min_requests``; ``degradation_ratio`` = p95 now / p95 baseline;
* ``trend``: ``worsening`` when p95 rose from baseline to previous window to now,
  ``improving`` when it fell, else ``steady`` — the "trending issues" of the report;
* ``rank`` by p95 now, 1 = slowest.

Blocking (DuckDB); a missing table is skipped and said so in the result.
"""

from __future__ import annotations

from typing import Any

from server.analysis import sql
from server.analysis.settings import PerformanceSettings
from server.analysis.tables import AnalysisEngine, Source, source, write

__all__ = ["analyse_performance", "run_performance_analysis"]

_NS = 1_000_000_000
_PERIODS = ("current", "previous", "baseline")


def run_performance_analysis(engine: AnalysisEngine, settings: PerformanceSettings) -> dict[str, Any]:
    """One run: analyse and write; returns rows written, findings and what was skipped."""
    now = engine.clock.now_ns()
    rows, skipped = analyse_performance(engine, settings, now)
    found = findings(rows)
    outputs = {"analysis_endpoint_performance": rows}
    write(engine, "performance_analysis", outputs, time_ns=now, db=settings.db, findings=len(found))
    return {"rows": {"analysis_endpoint_performance": len(rows)}, "findings": found, "skipped": skipped}


def findings(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r["degraded"]:
            out.append(
                f"degraded: {r['endpoint']} p95 {r['p95_s']:.3f} s vs baseline {r['p95_baseline_s']:.3f} s"
            )
        elif r["trend"] == "worsening":
            out.append(f"worsening: {r['endpoint']} p95 {r['p95_s']:.3f} s")
    return out[:50]


def analyse_performance(
    engine: AnalysisEngine, s: PerformanceSettings, now: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Endpoint rows (sorted slowest first) and the skipped inputs, without writing anything."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for histogram in s.histograms:
        src = source(engine, s.db, f"{histogram}_bucket")
        if src is None or "le" not in src.tags:
            skipped.append(f"{histogram}_bucket: no such table with an 'le' label in db {s.db!r}")
            continue
        rows.extend(_endpoints(engine, s, histogram, src, now))
    rows.sort(key=lambda r: (r["p95_s"] is None, -(r["p95_s"] or 0.0), r["endpoint"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows[: s.max_series], skipped


def _endpoints(
    engine: AnalysisEngine, s: PerformanceSettings, histogram: str, src: Source, now: int
) -> list[dict[str, Any]]:
    window_ns, baseline_ns = int(s.window_s * _NS), int(s.baseline_s * _NS)
    cur_lo, prev_lo, base_lo = now - window_ns, now - 2 * window_ns, now - window_ns - baseline_ns
    keys = [t for t in src.tags if t != "le" and t not in s.ignore_labels]
    deltas = sql.counter_deltas(sql.table_ref(src.db, src.table), src.tags, base_lo - window_ns, now)
    key_cols = "".join(f"{sql.q(k)}, " for k in keys)
    group = ", ".join([*(sql.q(k) for k in keys), "le_num"])
    buckets = (
        f"SELECT {key_cols}CAST({sql.q('le')} AS DOUBLE) AS le_num, "
        f"sum(inc) FILTER (WHERE t > {cur_lo}) AS current, "
        f"sum(inc) FILTER (WHERE t > {prev_lo} AND t <= {cur_lo}) AS previous, "
        f"sum(inc) FILTER (WHERE t > {base_lo} AND t <= {cur_lo}) AS baseline "
        f"FROM ({deltas}) WHERE inc IS NOT NULL AND t > {base_lo} "
        f"AND TRY_CAST({sql.q('le')} AS DOUBLE) IS NOT NULL GROUP BY {group}"
    )
    unpivot = " UNION ALL ".join(
        f"SELECT {key_cols}'{p}' AS period, le_num, {p} AS c FROM per_bucket" for p in _PERIODS
    )
    text = sql.histogram_quantiles(unpivot, keys, ctes=f"per_bucket AS ({buckets}), ")
    by_endpoint: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in engine.sql(text, db=src.db).to_pylist():
        by_endpoint.setdefault(tuple(r[k] for k in keys), {})[r["period"]] = r
    service_col = "service" if "service" in keys else None
    method = "method" if "method" in keys else None
    route = next((c for c in ("route", "handler", "endpoint", "path") if c in keys), None)
    out = []
    for key, periods in by_endpoint.items():
        labels = dict(zip(keys, key, strict=True))
        cur = periods.get("current", {})
        prev = periods.get("previous", {})
        base = periods.get("baseline", {})
        requests = cur.get("total") or 0.0
        enough_now = requests >= s.min_requests
        enough_base = (base.get("total") or 0.0) >= s.min_requests
        p95, p99 = cur.get("p95") if enough_now else None, cur.get("p99") if enough_now else None
        p95_base = base.get("p95") if enough_base else None
        p99_base = base.get("p99") if enough_base else None
        p95_prev = prev.get("p95") if (prev.get("total") or 0.0) >= s.min_requests else None
        ratio = p95 / p95_base if p95 is not None and p95_base else None
        degraded = bool(
            (ratio is not None and ratio > s.degradation_factor)
            or (p99 is not None and p99_base and p99 / p99_base > s.degradation_factor)
        )
        out.append(
            {
                "metric": histogram,
                "service": labels.get(service_col) if service_col else None,
                "endpoint": _endpoint_name(labels, method, route, service_col),
                "requests": requests,
                "requests_per_s": requests / s.window_s,
                "p50_s": cur.get("p50") if enough_now else None,
                "p95_s": p95,
                "p99_s": p99,
                "p95_previous_s": p95_prev,
                "p95_baseline_s": p95_base,
                "p99_baseline_s": p99_base,
                "degradation_ratio": ratio,
                "degraded": degraded,
                "trend": _trend(p95_base, p95_prev, p95),
                "window_s": s.window_s,
                "baseline_s": s.baseline_s,
            }
        )
    return out


def _endpoint_name(labels: dict[str, Any], method: str | None, route: str | None, service: str | None) -> str:
    if route is not None and labels.get(route) is not None:
        return f"{labels[method]} {labels[route]}" if method and labels.get(method) else str(labels[route])
    rest = {k: v for k, v in labels.items() if k != service and v is not None}
    return "{" + ",".join(f'{k}="{v}"' for k, v in rest.items()) + "}"


def _trend(base: float | None, prev: float | None, now: float | None) -> str:
    if base is None or prev is None or now is None:
        return "steady"
    if base < prev < now:
        return "worsening"
    if base > prev > now:
        return "improving"
    return "steady"
