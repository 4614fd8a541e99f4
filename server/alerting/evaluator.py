"""Rule evaluation: one rule and "now" in, the alerting samples out.

Who calls it: :class:`server.alerting.service.AlertService`, on the background pool (every call
here blocks on DuckDB). In: a :class:`~server.alerting.rules.Rule`, an :class:`AlertSource` (the
engine's narrow read side: ``sql``, ``tables``, ``schema``) and ``now_ns`` from the engine's
clock. Out: the :class:`Sample` list whose condition holds right now — one per group, as a
Prometheus alerting expression returns only the series that alert. The state machine
(pending/firing/resolved) is :mod:`server.alerting.state`'s business, not this module's.

"No data" is not an error: a rule over a table that does not exist yet, a missing field or a tag
filter on a tag the table never had returns ``[]`` (an absence rule fires on it). A SQL error in
a ``sql`` rule, or a ``sql`` rule without a numeric ``value`` column, raises
:class:`~tsengine.errors.TsengineError`; the service records it per rule.

Window semantics: rows with ``now - window < time <= now``. ``rate`` is, per series (all tags),
``last - first`` over the window (a drop counts as a counter reset: ``last``), summed per group
and divided by the window in seconds; ``increase`` is the same without the division. No
extrapolation (Prometheus extrapolates to the window's edges; ours reads a little lower).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from server.alerting.matchers import parse_where
from server.alerting.rules import Rule, Selector, substitute_now
from tsengine.errors import InvalidInput, QueryError
from tsengine.query.views import quote_ident as _q

__all__ = ["AlertSource", "Sample", "compare", "evaluate_rule"]

_NS = 1_000_000_000


class AlertSource(Protocol):
    """What evaluation needs from the engine (``tsengine.Engine`` satisfies it)."""

    def sql(self, query: str, params: Any = None, *, db: str = "default") -> Any: ...

    def tables(self, db: str | None = None) -> list[tuple[str, str]]: ...

    def schema(self, table: str, db: str = "default") -> Any: ...


@dataclass(frozen=True)
class Sample:
    """One alerting group: its labels (from group-by tags or SQL string columns) and value."""

    labels: Mapping[str, str]
    value: float


def compare(value: float, op: str | None, threshold: float | None) -> bool:
    """``value op threshold``; no op means "every row alerts" (a ``sql`` rule without one)."""
    if op is None or threshold is None:
        return True
    return {
        ">": value > threshold, ">=": value >= threshold, "<": value < threshold,
        "<=": value <= threshold, "==": value == threshold, "!=": value != threshold,
    }[op]  # fmt: skip


_AGG_SQL = {
    "avg": "avg({x})", "max": "max({x})", "min": "min({x})", "sum": "sum({x})", "count": "count({x})",
    "last": "arg_max({x}, time)", "p50": "quantile_cont({x}, 0.5)", "p90": "quantile_cont({x}, 0.9)",
    "p95": "quantile_cont({x}, 0.95)", "p99": "quantile_cont({x}, 0.99)",
}  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """A selector resolved against the table's schema, or None-worthy "no data"."""

    table: str
    tags: tuple[str, ...]
    x: str
    filters: str
    params: tuple[Any, ...]


def _plan(source: AlertSource, db: str, sel: Selector) -> _Plan | None:
    if (db, sel.table) not in set(source.tables(db)):
        return None
    schema = source.schema(sel.table, db)
    tags = tuple(schema.tags)
    if sel.expr is not None:
        x = f"({sel.expr})"
    elif sel.field == "*":
        x = "*"
    elif sel.field in schema.fields:
        x = _q(sel.field)
    else:
        return None
    clauses: list[str] = []
    params: list[Any] = []
    for tag, matcher in parse_where(sel.where).items():
        if tag not in tags:
            # An absent tag reads as "": it matches only "", "!=x" and regexes matching "".
            if not matcher.matches(""):
                return None
            continue
        sql, value = matcher.sql(_q(tag))
        clauses.append(sql)
        params.append(value)
    filters = "".join(f" AND {c}" for c in clauses)
    return _Plan(sel.table, tags, x, filters, tuple(params))


def _rows(source: AlertSource, query: str, params: list[Any], db: str, sel: Selector) -> list[dict[str, Any]]:
    try:
        return list(source.sql(query, params, db=db).to_pylist())
    except QueryError as exc:
        # An ``expr`` naming a column the table does not have (yet): no data, not an error storm.
        if sel.expr is not None and "Binder Error" in exc.reason:
            return []
        raise


def _group_cols(plan: _Plan, group_by: Sequence[str]) -> list[str]:
    return [_q(g) if g in plan.tags else f"NULL::VARCHAR AS {_q(g)}" for g in group_by]


def _labels(row: Mapping[str, Any], group_by: Sequence[str]) -> dict[str, str]:
    return {g: str(row[g]) for g in group_by if row.get(g) not in (None, "")}


def _aggregate(
    source: AlertSource, db: str, sel: Selector, group_by: Sequence[str], *, window_s: float, now_ns: int
) -> dict[tuple[tuple[str, str], ...], float]:
    """``{labels: value}`` of ``sel.agg`` per group over the window; empty when there is no data."""
    plan = _plan(source, db, sel)
    if plan is None:
        return {}
    start = now_ns - int(window_s * _NS)
    where = f"time > make_timestamp_ns(?) AND time <= make_timestamp_ns(?){plan.filters}"
    params = [start, now_ns, *plan.params]
    cols = _group_cols(plan, group_by)
    keys = [_q(g) for g in group_by]
    if sel.agg in ("rate", "increase"):
        # per series (every tag) first; a group-by key that is not a tag is NULL (_group_cols)
        inner_cols = ", ".join(sorted(_q(t) for t in plan.tags))
        inc = "CASE WHEN l >= f THEN l - f ELSE l END"
        divisor = f" / {float(window_s)!r}" if sel.agg == "rate" else ""
        query = (
            f"SELECT {''.join(c + ', ' for c in cols)}sum({inc}){divisor} AS value FROM ("
            f"SELECT {inner_cols + ', ' if inner_cols else ''}arg_min({plan.x}, time) AS f, "
            f"arg_max({plan.x}, time) AS l FROM {_q(plan.table)} WHERE {where} AND {plan.x} IS NOT NULL"
            f"{' GROUP BY ' + inner_cols if inner_cols else ''})"
            f"{' GROUP BY ' + ', '.join(keys) if keys else ''}"
        )
    else:
        agg = _AGG_SQL[sel.agg].format(x=plan.x)
        query = (
            f"SELECT {''.join(c + ', ' for c in cols)}{agg} AS value FROM {_q(plan.table)} WHERE {where}"
            f"{' GROUP BY ' + ', '.join(keys) if keys else ''}"
        )
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for row in _rows(source, query, params, db, sel):
        value = row["value"]
        if value is None or isinstance(value, bool):
            continue
        value = float(value)
        if math.isnan(value):
            continue
        out[tuple(sorted(_labels(row, group_by).items()))] = value
    return out


def _threshold(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    assert rule.selector is not None, "BUG: threshold rule without selector"
    values = _aggregate(source, rule.db, rule.selector, rule.group_by, window_s=rule.window_s, now_ns=now_ns)
    return [Sample(dict(k), v) for k, v in values.items() if compare(v, rule.op, rule.threshold)]


def _ratio(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    assert rule.numerator is not None and rule.denominator is not None, "BUG: ratio without parts"
    num = _aggregate(source, rule.db, rule.numerator, rule.group_by, window_s=rule.window_s, now_ns=now_ns)
    den = _aggregate(source, rule.db, rule.denominator, rule.group_by, window_s=rule.window_s, now_ns=now_ns)
    out = []
    for key, d in den.items():
        if d == 0:
            continue  # no traffic: no ratio (Prometheus gives NaN, which never alerts)
        v = num.get(key, 0.0) / d
        if compare(v, rule.op, rule.threshold):
            out.append(Sample(dict(key), v))
    return out


def _sql(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    assert rule.sql is not None, "BUG: sql rule without sql"
    text = substitute_now(rule.sql, now_ns)
    result = source.sql(text, db=rule.db)
    names = result.schema.names
    if "value" not in names:
        raise InvalidInput(f"cannot evaluate rule {rule.name!r}: the query returns no 'value' column")
    vtype = result.schema.field("value").type
    if not (pa.types.is_integer(vtype) or pa.types.is_floating(vtype) or pa.types.is_decimal(vtype)):
        raise InvalidInput(f"cannot evaluate rule {rule.name!r}: column 'value' is {vtype}, not numeric")
    label_cols = [
        f.name
        for f in result.schema
        if f.name != "value" and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    out = []
    for row in result.to_pylist():
        v = row["value"]
        if v is None or math.isnan(float(v)):
            continue
        labels = {c: row[c] for c in label_cols if row[c] not in (None, "")}
        if compare(float(v), rule.op, rule.threshold):
            out.append(Sample(labels, float(v)))
    return out


def _anomaly(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    sel = rule.selector
    assert sel is not None, "BUG: anomaly rule without selector"
    plan = _plan(source, rule.db, sel)
    if plan is None:
        return []
    step_ns = int(rule.window_s * _NS)
    n_base = int(rule.baseline_s // rule.window_s)
    start = now_ns - (n_base + 1) * step_ns
    cols = _group_cols(plan, rule.group_by)
    keys = [_q(g) for g in rule.group_by]
    agg = _AGG_SQL.get(sel.agg, "avg({x})").format(x=plan.x)
    # Bucket k holds (start + k*step, start + (k+1)*step]; bucket n_base is the current window.
    bucket = f"CAST(ceil((epoch_ns(time) - {start}) / {step_ns}) AS BIGINT) - 1"
    query = (
        f"SELECT {''.join(c + ', ' for c in cols)}{bucket} AS b, {agg} AS v FROM {_q(plan.table)} "
        f"WHERE time > make_timestamp_ns(?) AND time <= make_timestamp_ns(?){plan.filters} "
        f"GROUP BY {''.join(k + ', ' for k in keys)}b"
    )
    groups: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
    for row in _rows(source, query, [start, now_ns, *plan.params], rule.db, sel):
        if row["v"] is None:
            continue
        key = tuple(sorted(_labels(row, rule.group_by).items()))
        groups.setdefault(key, {})[int(row["b"])] = float(row["v"])
    zero_fill = sel.agg in ("count", "sum")
    out = []
    threshold = rule.threshold if rule.threshold is not None else 3.0
    for key, buckets in groups.items():
        first = min(buckets)
        if zero_fill:
            series = [buckets.get(k, 0.0) for k in range(first, n_base + 1)]
        elif n_base in buckets:
            series = [buckets[k] for k in sorted(buckets)]
        else:
            continue
        baseline, current = series[:-1], series[-1]
        if first == n_base or len(baseline) < rule.min_baseline:
            continue
        z = _zscore(baseline, current) if rule.method == "zscore" else _ewma_z(baseline, current, rule.alpha)
        fire = (
            z > threshold if rule.direction == "above"
            else z < -threshold if rule.direction == "below"
            else abs(z) > threshold
        )  # fmt: skip
        if fire:
            out.append(Sample(dict(key), z))
    return out


def _floor_sd(sd: float, mean: float) -> float:
    # A flat baseline has sd 0; a floor keeps z finite (and huge) when the current value differs.
    return max(sd, 1e-9 * max(1.0, abs(mean)))


def _zscore(baseline: Sequence[float], current: float) -> float:
    mean = sum(baseline) / len(baseline)
    sd = math.sqrt(sum((x - mean) ** 2 for x in baseline) / len(baseline))
    return (current - mean) / _floor_sd(sd, mean)


def _ewma_z(baseline: Sequence[float], current: float, alpha: float) -> float:
    mean, var = baseline[0], 0.0
    for x in baseline[1:]:
        d = x - mean
        mean += alpha * d
        var = (1 - alpha) * (var + alpha * d * d)
    return (current - mean) / _floor_sd(math.sqrt(var), mean)


def _absence(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    sel = rule.selector
    assert sel is not None, "BUG: absence rule without selector"
    base = {"table": sel.table}
    base.update({t: m.value for t, m in parse_where(sel.where).items() if m.op == "=" and m.value})
    plan = _plan(source, rule.db, Selector(sel.table, expr="time", where=sel.where))
    if plan is None:
        # No table yet: an ungrouped rule fires (that table must have data); a grouped one fires
        # per group seen within ``lookback`` and knows none here (a fresh server stays quiet).
        return [] if rule.group_by else [Sample(base, rule.lookback_s)]
    lookback_ns = int(max(rule.lookback_s, rule.window_s) * _NS)
    cols = _group_cols(plan, rule.group_by)
    keys = [_q(g) for g in rule.group_by]
    query = (
        f"SELECT {''.join(c + ', ' for c in cols)}epoch_ns(max(time)) AS last FROM {_q(plan.table)} "
        f"WHERE time > make_timestamp_ns(?) AND time <= make_timestamp_ns(?){plan.filters}"
        f"{' GROUP BY ' + ', '.join(keys) if keys else ''}"
    )
    rows = [r for r in source.sql(query, [now_ns - lookback_ns, now_ns, *plan.params], db=rule.db).to_pylist()
            if r["last"] is not None]  # fmt: skip
    if not rows:
        # Nothing within the lookback: an ungrouped rule fires; a grouped one has no known group.
        return [] if rule.group_by else [Sample(base, max(rule.lookback_s, rule.window_s))]
    window_ns = int(rule.window_s * _NS)
    out = []
    for row in rows:
        age_ns = now_ns - int(row["last"])
        if age_ns >= window_ns:
            out.append(Sample({**base, **_labels(row, rule.group_by)}, age_ns / _NS))
    return out


_KINDS = {
    "threshold": _threshold, "ratio": _ratio, "sql": _sql, "anomaly": _anomaly, "absence": _absence,
}  # fmt: skip


def evaluate_rule(source: AlertSource, rule: Rule, now_ns: int) -> list[Sample]:
    """The samples of ``rule`` whose condition holds at ``now_ns``. Blocks (DuckDB).

    Raises:
        TsengineError: the rule's query failed (QueryError, SandboxViolation, InvalidInput).
    """
    try:
        return _KINDS[rule.kind](source, rule, now_ns)
    except QueryError as exc:
        raise QueryError(f"cannot evaluate rule {rule.name!r}: {exc.reason}") from exc
