"""Reports built from the latest analysis, and their JSON, HTML and Markdown renderings.

Who calls it: ``server.routes.reports`` (on the query pool: blocking). In: the engine and the
task's settings. A report reads the rows the task's latest run wrote (the time of its latest
``analysis_runs`` row); when the task has never run in that database it computes the analysis
on demand without writing it (``"source": "on_demand"``). Out: a dict
``{"report", "title", "generated_at", "source", "settings", "summary", "sections"}`` where each
section is a list of row dicts — the JSON answer as it is — and :func:`render_html` /
:func:`render_markdown` draw the same dict as headed tables (values escaped).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any

from server.analysis import sql
from server.analysis.events import analyse_events
from server.analysis.performance import analyse_performance
from server.analysis.settings import EventSettings, PerformanceSettings
from server.analysis.tables import AnalysisEngine, source

__all__ = ["events_report", "performance_report", "render_html", "render_markdown", "user_activity_report"]

#: Columns shown per section in HTML/Markdown (JSON carries every column).
_SHOWN: dict[str, tuple[str, ...]] = {
    "endpoint_performance": ("rank", "endpoint", "service", "requests", "p50_s", "p95_s", "p99_s",
                             "p95_baseline_s", "degradation_ratio", "degraded", "trend"),
    "event_counts": ("category", "severity", "name", "service", "count", "baseline_mean", "spike"),
    "security_findings": ("kind", "subject", "service", "count", "threshold"),
    "user_activity": ("item", "service", "value"),
}  # fmt: skip


Rows = list[dict[str, Any]]


def _latest(
    engine: AnalysisEngine, db: str, task: str, tables: Sequence[str]
) -> tuple[int, dict[str, Rows]] | None:
    """(run time, rows per table) of ``task``'s latest run in ``db``; None if it never ran there."""
    if source(engine, db, "analysis_runs", numeric_value=False) is None:
        return None
    found = engine.sql(
        f"SELECT epoch_ns(max(time)) AS t FROM {sql.table_ref(db, 'analysis_runs')} WHERE task = $1",
        [task],
        db=db,
    ).to_pylist()
    run_ns = found[0]["t"] if found else None
    if run_ns is None:
        return None
    out: dict[str, Rows] = {}
    for table in tables:
        if source(engine, db, table, numeric_value=False) is None:
            out[table] = []
            continue
        rows = engine.sql(
            f"SELECT * EXCLUDE (time) FROM {sql.table_ref(db, table)} WHERE time = {sql.ts(run_ns)}", db=db
        ).to_pylist()
        out[table] = rows
    return run_ns, out


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def performance_report(engine: AnalysisEngine, s: PerformanceSettings) -> dict[str, Any]:
    """Slowest endpoints, degraded ones and worsening ones (blocking)."""
    latest = _latest(engine, s.db, "performance_analysis", ["analysis_endpoint_performance"])
    if latest is None:
        now = engine.clock.now_ns()
        rows, skipped = analyse_performance(engine, s, now)
        origin = "on_demand"
    else:
        now, tables = latest
        rows, skipped = tables["analysis_endpoint_performance"], []
        origin = "analysis"
    rows = sorted(rows, key=lambda r: r.get("rank") or 0)
    measured = [r for r in rows if r.get("p95_s") is not None]
    return {
        "report": "performance",
        "title": "Endpoint performance",
        "generated_at": _iso(now),
        "source": origin,
        "settings": {
            "db": s.db,
            "window_s": s.window_s,
            "baseline_s": s.baseline_s,
            "degradation_factor": s.degradation_factor,
        },
        "summary": {
            "endpoints": len(rows),
            "degraded": sum(1 for r in rows if r.get("degraded")),
            "worsening": sum(1 for r in rows if r.get("trend") == "worsening"),
            "skipped": skipped,
        },
        "sections": {
            "slowest": measured[: s.top],
            "degraded": [r for r in rows if r.get("degraded")],
            "trending": [r for r in rows if r.get("trend") == "worsening"],
            "endpoints": rows,
        },
    }


def _event_tables(engine: AnalysisEngine, s: EventSettings) -> tuple[int, str, dict[str, Rows], list[str]]:
    tables = ["analysis_event_counts", "analysis_security_findings", "analysis_user_activity"]
    latest = _latest(engine, s.db, "event_aggregation", tables)
    if latest is None:
        now = engine.clock.now_ns()
        out, skipped = analyse_events(engine, s, now)
        return now, "on_demand", out, skipped
    return latest[0], "analysis", latest[1], []


def _event_settings(s: EventSettings) -> dict[str, Any]:
    return {"db": s.db, "window_s": s.window_s, "baseline_s": s.baseline_s, "auth_window_s": s.auth_window_s,
            "auth_failure_threshold": s.auth_failure_threshold}  # fmt: skip


def user_activity_report(engine: AnalysisEngine, s: EventSettings) -> dict[str, Any]:
    """Active users, busiest users, user actions, feature usage, business events (blocking)."""
    now, origin, tables, skipped = _event_tables(engine, s)
    rows = tables["analysis_user_activity"]

    def of(metric: str) -> list[dict[str, Any]]:
        picked = [r for r in rows if r["metric"] == metric]
        return sorted(picked, key=lambda r: (-(r["value"] or 0), str(r["item"])))

    return {
        "report": "user-activity",
        "title": "User activity",
        "generated_at": _iso(now),
        "source": origin,
        "settings": _event_settings(s),
        "summary": {"active_users": sum(r["value"] or 0 for r in of("active_users")), "skipped": skipped},
        "sections": {
            "active_users": of("active_users"),
            "top_users": of("user_events"),
            "user_actions": of("user_action"),
            "feature_usage": of("feature_usage"),
            "business_events": of("business_event"),
        },
    }


def events_report(engine: AnalysisEngine, s: EventSettings) -> dict[str, Any]:
    """Event counts, spikes and security findings (blocking)."""
    now, origin, tables, skipped = _event_tables(engine, s)
    counts = sorted(tables["analysis_event_counts"], key=lambda r: (-r["count"], str(r["name"])))
    findings = sorted(tables["analysis_security_findings"], key=lambda r: (-r["count"], str(r["subject"])))
    return {
        "report": "events",
        "title": "Events",
        "generated_at": _iso(now),
        "source": origin,
        "settings": _event_settings(s),
        "summary": {
            "events": sum(r["count"] for r in counts),
            "spikes": sum(1 for r in counts if r["spike"]),
            "security_findings": len(findings),
            "skipped": skipped,
        },
        "sections": {
            "spikes": [r for r in counts if r["spike"]],
            "security_findings": findings,
            "counts": counts,
        },
    }


# -- renderings -----------------------------------------------------------------------------------


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The readable subset of columns for rows of a known output table, else all of them."""
    have = set(rows[0]) if rows else set()
    for shown in _SHOWN.values():
        if set(shown) <= have:
            return list(shown)
    return list(rows[0]) if rows else []


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _title(key: str) -> str:
    return key.replace("_", " ").capitalize()


def render_markdown(report: Mapping[str, Any]) -> str:
    out = [f"# {report['title']}", "", f"Generated {report['generated_at']} from {report['source']}.", ""]
    for key, value in report["summary"].items():
        if value or value == 0:
            out.append(
                f"- **{_title(key)}**: {', '.join(value) if isinstance(value, list) else _cell(value)}"
            )
    for name, rows in report["sections"].items():
        out += ["", f"## {_title(name)}", ""]
        if not rows:
            out.append("_None._")
            continue
        cols = _columns(rows)
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for r in rows:
            out.append("| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out) + "\n"


def render_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    out = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8"><title>{e(report["title"])}</title></head><body>',
        f"<h1>{e(report['title'])}</h1>",
        f"<p>Generated {e(report['generated_at'])} from {e(report['source'])}.</p>",
        "<ul>",
    ]
    for key, value in report["summary"].items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else _cell(value)
        out.append(f"<li><b>{e(_title(key))}</b>: {e(text)}</li>")
    out.append("</ul>")
    for name, rows in report["sections"].items():
        out.append(f"<h2>{e(_title(name))}</h2>")
        if not rows:
            out.append("<p><i>None.</i></p>")
            continue
        cols = _columns(rows)
        out.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>")
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in cols) + "</tr>")
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
