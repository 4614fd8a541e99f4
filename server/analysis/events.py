"""The ``event_aggregation`` task: event counts and spikes, security findings, user activity.

Who calls it: the scheduler (every ``tasks.intervals.event_aggregation``, 15 min by default),
``POST /api/v1/tasks/event_aggregation/run``, and the user-activity and events reports when no
analysis has been written yet (``persist=False``). In: the SDK's ``events`` table (tags
``service``, ``category``, ``severity``, ``name``; fields ``message``, ``attributes`` (JSON
text), ``user_id``…) and the ``feature_usage_total`` counter. Out (docs/analysis.md):

* ``analysis_event_counts`` — events per (category, severity, name, service) over the window,
  the baseline's mean count per window of the same length, and ``spike`` when the count is at
  least ``spike_min_count`` and ``spike_factor`` * max(baseline mean, 1);
* ``analysis_security_findings`` — authentication-failure bursts: events named in
  ``auth_failure_names`` within ``auth_window``, counted per user (``user_id``) and per source
  address (the first of ``address_attributes`` found in ``attributes``), at or above
  ``auth_failure_threshold``; plus the bursts the SDK's own security monitor reported
  (``auth_failure_burst`` events);
* ``analysis_user_activity`` — over the window: ``active_users`` (distinct ``user_id``),
  ``user_action`` and ``business_event`` counts by event name, ``feature_usage`` by feature
  (counter increase), and ``user_events`` of the ``top_users`` busiest users.

Blocking (DuckDB); a missing table is skipped and said so in the result.
"""

from __future__ import annotations

from typing import Any

from server.analysis import sql
from server.analysis.settings import EventSettings
from server.analysis.tables import AnalysisEngine, Source, source, write

__all__ = ["analyse_events", "run_event_aggregation"]

_NS = 1_000_000_000
_BUSINESS = ("business", "payment", "billing", "license", "document")


def run_event_aggregation(engine: AnalysisEngine, settings: EventSettings) -> dict[str, Any]:
    """One run: analyse and write; returns rows written per table, findings and what was skipped."""
    now = engine.clock.now_ns()
    out, skipped = analyse_events(engine, settings, now)
    counts = out["analysis_event_counts"]
    findings = [f"spike: {r['category']}/{r['name']} {r['count']} events" for r in counts if r["spike"]]
    findings += [f"{r['kind']}: {r['subject']} ({r['count']})" for r in out["analysis_security_findings"]]
    write(engine, "event_aggregation", out, time_ns=now, db=settings.db, findings=len(findings))
    return {"rows": {t: len(r) for t, r in out.items()}, "findings": findings[:50], "skipped": skipped}


def analyse_events(
    engine: AnalysisEngine, s: EventSettings, now: int
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Rows per output table and the skipped inputs, without writing anything."""
    out: dict[str, list[dict[str, Any]]] = {
        "analysis_event_counts": [],
        "analysis_security_findings": [],
        "analysis_user_activity": [],
    }
    skipped: list[str] = []
    events = source(engine, s.db, s.events_table, numeric_value=False)
    if events is None:
        skipped.append(f"{s.events_table}: no such table in db {s.db!r}")
    else:
        out["analysis_event_counts"] = _counts(engine, s, events, now)
        out["analysis_security_findings"] = _security(engine, s, events, now)
        out["analysis_user_activity"] = _activity(engine, s, events, now)
    features = source(engine, s.db, s.feature_metric)
    if features is None or "feature" not in features.tags:
        skipped.append(f"{s.feature_metric}: no such table with a 'feature' label in db {s.db!r}")
    else:
        out["analysis_user_activity"] += _features(engine, s, features, now)
    return out, skipped


def _col(src: Source, name: str) -> str:
    return sql.q(name) if src.has(name) else "NULL::VARCHAR"


def _counts(engine: AnalysisEngine, s: EventSettings, src: Source, now: int) -> list[dict[str, Any]]:
    window_ns, baseline_ns = int(s.window_s * _NS), int(s.baseline_s * _NS)
    cur_lo, base_lo = now - window_ns, now - window_ns - baseline_ns
    windows = max(baseline_ns / window_ns, 1.0)
    dims = ", ".join(f"{_col(src, c)} AS {c}" for c in ("category", "severity", "name", "service"))
    text = (
        f"SELECT {dims}, count(*) FILTER (WHERE time > {sql.ts(cur_lo)}) AS count, "
        f"count(*) FILTER (WHERE time <= {sql.ts(cur_lo)}) / {windows} AS baseline_mean "
        f"FROM {sql.table_ref(src.db, src.table)} "
        f"WHERE time > {sql.ts(base_lo)} AND time <= {sql.ts(now)} "
        f"GROUP BY ALL HAVING count(*) FILTER (WHERE time > {sql.ts(cur_lo)}) > 0 "
        f"ORDER BY count DESC, category, name LIMIT {s.max_series}"
    )
    rows = engine.sql(text, db=src.db).to_pylist()
    for r in rows:
        mean = r["baseline_mean"]
        r["ratio"] = r["count"] / mean if mean else None
        r["spike"] = r["count"] >= s.spike_min_count and r["count"] >= s.spike_factor * max(mean, 1.0)
        r["window_s"] = s.window_s
    return rows


def _has_json(src: Source) -> bool:
    return src.fields.get("attributes") == "string"


def _address(src: Source, s: EventSettings) -> str:
    if not _has_json(src):
        return "NULL::VARCHAR"
    picks = ", ".join(f"json_extract_string(attributes, {sql.lit('$.' + k)})" for k in s.address_attributes)
    return f"CASE WHEN json_valid(attributes) THEN coalesce({picks}) END"


def _security(engine: AnalysisEngine, s: EventSettings, src: Source, now: int) -> list[dict[str, Any]]:
    lo = now - int(s.auth_window_s * _NS)
    names = ", ".join(sql.lit(n) for n in s.auth_failure_names)
    threshold = s.auth_failure_threshold
    base = (
        f"SELECT {_col(src, 'user_id')} AS user_id, {_address(src, s)} AS address, "
        f"{_col(src, 'service')} AS service, {_col(src, 'name')} AS name, epoch_ns(time) AS t, "
        f"{_count_attr(src)} AS reported FROM {sql.table_ref(src.db, src.table)} "
        f"WHERE time > {sql.ts(lo)} AND time <= {sql.ts(now)}"
    )
    per = (
        "SELECT {kind} AS kind, {subject} AS subject, service, count(*) AS count, "
        "min(t) AS first_seen_ns, max(t) AS last_seen_ns FROM ev "
        "WHERE name IN ({names}) AND {subject} IS NOT NULL GROUP BY ALL HAVING count(*) >= {threshold}"
    )
    branches = [
        per.format(kind="'auth_failure_burst_user'", subject="user_id", names=names, threshold=threshold),
        per.format(kind="'auth_failure_burst_address'", subject="address", names=names, threshold=threshold),
        # Bursts the SDK's SecurityMonitor already detected in the application (one event each).
        "SELECT 'reported_auth_failure_burst' AS kind, address AS subject, service, "
        "CAST(max(coalesce(reported, 1)) AS BIGINT) AS count, "
        "min(t) AS first_seen_ns, max(t) AS last_seen_ns "
        "FROM ev WHERE name = 'auth_failure_burst' AND address IS NOT NULL GROUP BY ALL",
    ]  # fmt: skip
    text = (
        f"WITH ev AS ({base}) {' UNION ALL '.join(branches)} "
        f"ORDER BY count DESC, kind, subject LIMIT {s.max_series}"
    )
    return _rows(engine, text, src, threshold=s.auth_failure_threshold, window_s=s.auth_window_s)


def _count_attr(src: Source) -> str:
    if not _has_json(src):
        return "NULL::BIGINT"
    count = "TRY_CAST(json_extract_string(attributes, '$.count') AS BIGINT)"
    return f"CASE WHEN json_valid(attributes) THEN {count} END"


def _activity(engine: AnalysisEngine, s: EventSettings, src: Source, now: int) -> list[dict[str, Any]]:
    lo = now - int(s.window_s * _NS)
    ref = sql.table_ref(src.db, src.table)
    where = f"time > {sql.ts(lo)} AND time <= {sql.ts(now)}"
    user, service, category = _col(src, "user_id"), _col(src, "service"), _col(src, "category")
    business = ", ".join(sql.lit(c) for c in _BUSINESS)
    text = (
        f"SELECT 'active_users' AS metric, NULL::VARCHAR AS item, {service} AS service, "
        f"CAST(count(DISTINCT {user}) AS DOUBLE) AS value FROM {ref} WHERE {where} GROUP BY ALL "
        f"UNION ALL SELECT 'user_action', {_col(src, 'name')}, {service}, count(*) FROM {ref} "
        f"WHERE {where} AND {category} = 'user_action' GROUP BY ALL "
        f"UNION ALL SELECT 'business_event', {_col(src, 'name')}, {service}, count(*) FROM {ref} "
        f"WHERE {where} AND {category} IN ({business}) GROUP BY ALL "
        f"UNION ALL (SELECT 'user_events', {user}, NULL::VARCHAR, count(*) FROM {ref} "
        f"WHERE {where} AND {user} IS NOT NULL GROUP BY ALL ORDER BY count(*) DESC, 2 LIMIT {s.top_users}) "
        f"ORDER BY metric, value DESC, item LIMIT {s.max_series}"
    )
    return _rows(engine, text, src, window_s=s.window_s)


def _features(engine: AnalysisEngine, s: EventSettings, src: Source, now: int) -> list[dict[str, Any]]:
    window_ns = int(s.window_s * _NS)
    service = sql.q("service") if "service" in src.tags else "NULL::VARCHAR"
    deltas = sql.counter_deltas(
        sql.table_ref(src.db, src.table), src.tags, now - 2 * window_ns, now,
        extra=[f"{sql.q('feature')} AS __feature", f"{service} AS __service"],
    )  # fmt: skip
    text = (
        f"SELECT 'feature_usage' AS metric, __feature AS item, __service AS service, sum(inc) AS value "
        f"FROM ({deltas}) WHERE inc IS NOT NULL AND t > {now - window_ns} GROUP BY ALL "
        f"ORDER BY value DESC, item LIMIT {s.max_series}"
    )
    return _rows(engine, text, src, window_s=s.window_s)


def _rows(engine: AnalysisEngine, text: str, src: Source, **settings: Any) -> list[dict[str, Any]]:
    """The query's rows, each with the ``settings`` it was computed under (threshold, window)."""
    return [{**r, **settings} for r in engine.sql(text, db=src.db).to_pylist()]
