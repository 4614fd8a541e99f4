"""Alert rules: the document shape, its validation, and loading rule files.

Who calls it: :mod:`server.alerting.service` (rule files at start, the rule API), the CLI's
``tsengine rules check``. What comes in: one mapping per rule (from YAML or JSON, the same
fields either way; see ``docs/alerting.md``). What goes out: frozen :class:`Rule` objects, or an
:class:`InvalidRule` naming the rule and the field at fault. A rule that could only fail at every
evaluation is refused here: SQL (``sql``, ``expr``) the query sandbox refuses — checked with its
parser (:func:`tsengine.query.sandbox.check_sql`), never run —, a ``where`` regex that does not
compile, a tag name the engine or Prometheus would not accept. No engine, no I/O except
:func:`load_rules_file` reading one file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import yaml

from server.alerting.matchers import parse_where
from server.alerting.templates import check_template
from tsengine.errors import InvalidInput, TsengineError
from tsengine.model.names import validate_column, validate_db
from tsengine.query.sandbox import check_sql

__all__ = [
    "AGGREGATES",
    "KINDS",
    "OPS",
    "SEVERITIES",
    "EscalationStep",
    "InvalidRule",
    "Rule",
    "Selector",
    "format_duration",
    "load_rules_file",
    "parse_duration",
    "parse_escalation",
    "parse_rule",
    "parse_rules",
    "substitute_now",
]

KINDS = ("threshold", "ratio", "sql", "anomaly", "absence")
#: Aggregates over a window; ``rate``/``increase`` are for counters (per series last - first,
#: resets ignored, then summed per group), ``last`` is the newest value.
AGGREGATES = ("avg", "max", "min", "sum", "count", "last", "p50", "p90", "p95", "p99", "rate", "increase")
OPS = (">", ">=", "<", "<=", "==", "!=")
SEVERITIES = ("info", "warning", "error", "critical")
ANOMALY_METHODS = ("zscore", "ewma")
DIRECTIONS = ("above", "below", "both")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_COMMON_KEYS = {
    "name", "kind", "enabled", "for", "keep_firing_for", "severity", "labels", "annotations",
    "escalation", "group_by", "op", "threshold", "db", "limit",
}  # fmt: skip
_SELECTOR_KEYS = {"table", "field", "expr", "where", "agg", "window"}
_KIND_KEYS = {
    "threshold": _SELECTOR_KEYS,
    "ratio": {"numerator", "denominator", "window"},
    "sql": {"sql"},
    "anomaly": _SELECTOR_KEYS | {"baseline", "method", "min_baseline", "alpha", "direction"},
    "absence": {"table", "where", "window", "lookback"},
}


_NOW_RE = re.compile(r"\$now(_ns)?\b")


def substitute_now(sql: str, now_ns: int) -> str:
    """A sql rule's text with ``$now`` (a ``TIMESTAMP_NS``) and ``$now_ns`` (an integer) filled in."""
    return _NOW_RE.sub(lambda m: str(now_ns) if m.group(1) else f"make_timestamp_ns({now_ns})", sql)


class InvalidRule(InvalidInput):
    """A rule document that does not validate (HTTP 400); ``name`` is the rule, ``field`` the key."""

    def __init__(self, rule: str, key: str, reason: str) -> None:
        super().__init__(f"cannot load rule {rule!r}: field {key!r} {reason}")
        self.name = rule
        self.field = key


def parse_duration(raw: Any) -> float:
    """Seconds of ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"2d"`` or a number of seconds.

    Raises:
        ValueError: not a non-negative finite duration.
    """
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a duration")
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"{raw!r} is not a non-negative duration")
        return float(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a duration like '5m'")
    text = raw.strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS_S[m.group(2)]
        pos = m.end()
    if pos != len(text):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not a duration like '5m' or '1h30m'") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{raw!r} is not a non-negative duration")
        return value
    return total


def format_duration(seconds: float) -> str:
    """The shortest ``1h30m``-style text :func:`parse_duration` reads back as ``seconds``."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if abs(ms / 1000 - seconds) > 1e-9 or ms <= 0:
        return repr(float(seconds))
    out = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


@dataclass(frozen=True)
class Selector:
    """Which rows an aggregate reads: one table, a field (or SQL expression), tag filters."""

    table: str
    field: str = "value"
    expr: str | None = None
    where: Mapping[str, str] = dc_field(default_factory=dict)
    agg: str = "avg"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table, "agg": self.agg, "where": dict(self.where)}
        if self.expr is not None:
            out["expr"] = self.expr
        else:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class EscalationStep:
    """After ``after_s`` of firing unacknowledged, notify ``channels`` (with ``severity`` if set)."""

    after_s: float
    channels: tuple[str, ...]
    severity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"after": format_duration(self.after_s), "channels": list(self.channels)}
        if self.severity:
            out["severity"] = self.severity
        return out


@dataclass(frozen=True)
class Rule:
    """One validated rule; see ``docs/alerting.md`` for each field's meaning and default."""

    name: str
    kind: str
    enabled: bool = True
    db: str = "default"
    selector: Selector | None = None
    numerator: Selector | None = None
    denominator: Selector | None = None
    sql: str | None = None
    group_by: tuple[str, ...] = ()
    window_s: float = 300.0
    op: str | None = ">"
    threshold: float | None = None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = dc_field(default_factory=dict)
    annotations: Mapping[str, str] = dc_field(default_factory=dict)
    escalation: tuple[EscalationStep, ...] = ()
    #: At most this many alerts per evaluation (0: no limit); past it the evaluation fails.
    limit: int = 0
    # anomaly
    baseline_s: float = 3600.0
    method: str = "zscore"
    min_baseline: int = 10
    alpha: float = 0.3
    direction: str = "both"
    # absence
    lookback_s: float = 3600.0

    def to_dict(self) -> dict[str, Any]:
        """The canonical document: :func:`parse_rule` of it gives this rule back."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "enabled": self.enabled, "db": self.db}
        if self.kind in ("threshold", "anomaly") and self.selector is not None:
            out.update(self.selector.to_dict())
        if self.kind == "absence" and self.selector is not None:
            out["table"] = self.selector.table
            out["where"] = dict(self.selector.where)
            out["lookback"] = format_duration(self.lookback_s)
        if self.kind == "ratio" and self.numerator is not None and self.denominator is not None:
            out["numerator"] = self.numerator.to_dict()
            out["denominator"] = self.denominator.to_dict()
        if self.kind == "sql":
            out["sql"] = self.sql
        if self.kind != "sql":
            out["window"] = format_duration(self.window_s)
            out["group_by"] = list(self.group_by)
        if self.kind == "anomaly":
            out.update(
                baseline=format_duration(self.baseline_s), method=self.method,
                min_baseline=self.min_baseline, alpha=self.alpha, direction=self.direction,
            )  # fmt: skip
        if self.kind != "absence":
            out["op"] = self.op
            out["threshold"] = self.threshold
        out.update(
            {"for": format_duration(self.for_s), "keep_firing_for": format_duration(self.keep_firing_for_s)}
        )
        out["severity"] = self.severity
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        out["escalation"] = [s.to_dict() for s in self.escalation]
        out["limit"] = self.limit
        return out


class _Reader:
    """Reads one rule document, raising :class:`InvalidRule` naming the rule and key."""

    def __init__(self, doc: Mapping[str, Any], name: str) -> None:
        self.doc = doc
        self.name = name

    def fail(self, key: str, reason: str) -> InvalidRule:
        return InvalidRule(self.name, key, reason)

    def str_(self, key: str, default: str | None = None, *, choices: Sequence[str] = ()) -> str | None:
        raw = self.doc.get(key, default)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise self.fail(key, f"must be a non-empty string, got {raw!r}")
        if choices and raw not in choices:
            raise self.fail(key, f"must be one of {list(choices)}, got {raw!r}")
        return raw

    def duration(self, key: str, default: float) -> float:
        if key not in self.doc or self.doc[key] is None:
            return default
        try:
            return parse_duration(self.doc[key])
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def number(self, key: str, default: float | None) -> float | None:
        raw = self.doc.get(key, default)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self.fail(key, f"must be a finite number, got {raw!r}")
        return float(raw)

    def string_map(self, key: str, *, label_keys: bool = True, prefix: str = "") -> dict[str, str]:
        raw = self.doc.get(key) or {}
        if not isinstance(raw, Mapping):
            raise self.fail(prefix + key, f"must be a mapping of strings, got {raw!r}")
        out = {}
        for k, v in raw.items():
            if not isinstance(k, str) or not k or (label_keys and not _LABEL_RE.match(k)):
                raise self.fail(f"{prefix}{key}.{k}", "is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.fail(f"{prefix}{key}.{k}", f"must be a string, got {v!r}")
            out[k] = str(v)
        return out

    def tags(self, key: str) -> tuple[str, ...]:
        raw = self.doc.get(key) or []
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise self.fail(key, f"must be a list of tag names, got {raw!r}")
        for t in raw:
            if not isinstance(t, str) or not t:
                raise self.fail(key, f"must be a list of tag names, got {raw!r}")
            try:
                validate_column(t)
            except InvalidInput as exc:
                raise self.fail(key, exc.reason) from None
            if not _LABEL_RE.match(t):
                # a group-by tag becomes an alert label: Prometheus's label-name rule applies
                raise self.fail(key, f"tag {t!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
        if len(set(raw)) != len(raw):
            raise self.fail(key, "lists a tag twice")
        return tuple(raw)

    def where(self, prefix: str = "") -> dict[str, str]:
        """Tag filters: valid tag names, values that parse as matchers (regexes compile)."""
        where = self.string_map("where", label_keys=False, prefix=prefix)
        for tag in where:
            try:
                validate_column(tag)
            except InvalidInput as exc:
                raise self.fail(f"{prefix}where.{tag}", exc.reason) from None
        try:
            parse_where(where)
        except ValueError as exc:
            raise self.fail(f"{prefix}where", str(exc)) from None
        return where

    def sql_text(self, key: str, sql: str) -> None:
        """Refuse what the query sandbox would refuse at every evaluation (parsed, not run)."""
        try:
            check_sql(sql)
        except TsengineError as exc:
            raise self.fail(key, f"is refused by the query sandbox: {exc.reason}") from None

    def selector(self, doc: Mapping[str, Any], prefix: str) -> Selector:
        sub = _Reader(doc, self.name)
        for key in doc:
            if key not in _SELECTOR_KEYS - {"window"}:
                raise self.fail(f"{prefix}{key}", "is not a known key")
        table = doc.get("table")
        if not isinstance(table, str) or not table:
            raise self.fail(f"{prefix}table", f"must be a non-empty table name, got {table!r}")
        expr = doc.get("expr")
        if expr is not None and (not isinstance(expr, str) or not expr.strip()):
            raise self.fail(f"{prefix}expr", "must be a SQL expression")
        fld = doc.get("field", "value")
        if not isinstance(fld, str) or not fld:
            raise self.fail(f"{prefix}field", f"must be a column name, got {fld!r}")
        agg = doc.get("agg", "avg")
        if agg not in AGGREGATES:
            raise self.fail(f"{prefix}agg", f"must be one of {list(AGGREGATES)}, got {agg!r}")
        if fld == "*" and agg != "count":
            raise self.fail(f"{prefix}field", "'*' (every row) goes with agg 'count' only")
        where = sub.where(prefix)
        if expr is not None:
            self.sql_text(f"{prefix}expr", f"SELECT ({expr}) AS x")
        return Selector(table=table, field=fld, expr=expr, where=where, agg=agg)


def parse_escalation(raw: Any, where: str, fail: Any) -> tuple[EscalationStep, ...]:
    """Escalation steps from ``[{after, channels, severity?}]``, ``after`` increasing."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise fail(where, "must be a list of {after, channels, severity}")
    steps: list[EscalationStep] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"after", "channels", "severity"}:
            raise fail(at, "must be a mapping with keys after, channels, severity")
        try:
            after = parse_duration(item.get("after"))
        except ValueError as exc:
            raise fail(f"{at}.after", str(exc)) from None
        channels = item.get("channels") or []
        if isinstance(channels, str):
            channels = [channels]
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise fail(f"{at}.channels", "must be a list of channel names")
        sev = item.get("severity")
        if sev is not None and sev not in SEVERITIES:
            raise fail(f"{at}.severity", f"must be one of {list(SEVERITIES)}, got {sev!r}")
        if not channels and sev is None:
            raise fail(at, "must name channels or a severity")
        if steps and after <= steps[-1].after_s:
            raise fail(f"{at}.after", "must be later than the step before")
        steps.append(EscalationStep(after_s=after, channels=tuple(channels), severity=sev))
    return tuple(steps)


def parse_rule(doc: Any) -> Rule:
    """Validate one rule document.

    Raises:
        InvalidRule: naming the rule and the field, e.g. ``cannot load rule 'x': field 'window'
            '5q' is not a duration like '5m'``.
    """
    if not isinstance(doc, Mapping):
        raise InvalidRule("?", "(rule)", f"must be a mapping, got {type(doc).__name__}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidRule(str(name), "name", "must match [A-Za-z_][A-Za-z0-9_.:-]* (at most 128 characters)")
    r = _Reader(doc, name)
    kind = r.str_("kind", choices=KINDS)
    if kind is None:
        raise r.fail("kind", f"is required: one of {list(KINDS)}")
    unknown = set(doc) - _COMMON_KEYS - _KIND_KEYS[kind]
    if unknown:
        raise r.fail(sorted(unknown)[0], f"is not a known key of a {kind} rule")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise r.fail("enabled", f"must be true or false, got {enabled!r}")
    db = r.str_("db", "default") or "default"
    try:
        validate_db(db)
    except InvalidInput as exc:
        raise r.fail("db", exc.reason) from None
    values: dict[str, Any] = {
        "name": name, "kind": kind, "enabled": enabled, "db": db,
        "for_s": r.duration("for", 0.0), "keep_firing_for_s": r.duration("keep_firing_for", 0.0),
        "severity": r.str_("severity", "warning", choices=SEVERITIES),
        "labels": r.string_map("labels"), "annotations": r.string_map("annotations", label_keys=False),
        "escalation": parse_escalation(doc.get("escalation"), "escalation", r.fail),
    }  # fmt: skip
    limit = doc.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise r.fail("limit", f"must be an integer >= 0 (0: no limit), got {limit!r}")
    values["limit"] = limit
    for key, text in values["annotations"].items():
        try:
            check_template(text)
        except ValueError as exc:
            raise r.fail(f"annotations.{key}", str(exc)) from None
    if kind != "sql":
        values["group_by"] = r.tags("group_by")
        values["window_s"] = r.duration("window", 300.0)
        if values["window_s"] <= 0:
            raise r.fail("window", "must be longer than 0s")
    op = r.str_("op", ">" if kind != "sql" else None, choices=OPS)
    threshold = r.number("threshold", None)
    values["op"], values["threshold"] = op, threshold
    if kind in ("threshold", "ratio") and threshold is None:
        raise r.fail("threshold", "is required for a threshold or ratio rule")
    if kind == "sql" and (op is None) != (threshold is None):
        raise r.fail("threshold", "and 'op' go together in a sql rule (both or neither)")
    if kind in ("threshold", "anomaly"):
        values["selector"] = r.selector({k: doc[k] for k in _SELECTOR_KEYS - {"window"} if k in doc}, "")
    elif kind == "ratio":
        for part in ("numerator", "denominator"):
            sub = doc.get(part)
            if not isinstance(sub, Mapping):
                raise r.fail(part, "must be a mapping {table, field, where, agg}")
            values[part] = r.selector(sub, f"{part}.")
    elif kind == "absence":
        table = doc.get("table")
        if not isinstance(table, str) or not table:
            raise r.fail("table", f"must be a non-empty table name, got {table!r}")
        values["selector"] = Selector(table=table, where=r.where(), agg="count")
        values["lookback_s"] = r.duration("lookback", 3600.0)
        if values["group_by"] and values["lookback_s"] <= values["window_s"]:
            raise r.fail("lookback", "must be longer than 'window' (groups seen then but not in the window)")
    elif kind == "sql":
        sql = doc.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise r.fail("sql", "must be a read-only SQL statement")
        r.sql_text("sql", substitute_now(sql, 0))
        values["sql"] = sql
    if kind == "anomaly":
        values["baseline_s"] = r.duration("baseline", 3600.0)
        if values["baseline_s"] < 2 * values["window_s"]:
            raise r.fail("baseline", "must be at least twice 'window'")
        values["method"] = r.str_("method", "zscore", choices=ANOMALY_METHODS)
        values["direction"] = r.str_("direction", "both", choices=DIRECTIONS)
        mb = doc.get("min_baseline", 10)
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 2:
            raise r.fail("min_baseline", f"must be an integer >= 2, got {mb!r}")
        values["min_baseline"] = mb
        alpha = r.number("alpha", 0.3)
        if alpha is None or not 0 < alpha <= 1:
            raise r.fail("alpha", f"must be in (0, 1], got {alpha!r}")
        values["alpha"] = alpha
        if threshold is None:
            values["threshold"] = 3.0
    return Rule(**values)


def parse_rules(docs: Any, source: str) -> list[Rule]:
    """Rules from ``[{...}, ...]`` or ``{"rules": [...]}``; names must be unique."""
    if isinstance(docs, Mapping):
        docs = docs.get("rules", [])
    if docs is None:
        return []
    if not isinstance(docs, list):
        raise InvalidInput(f"cannot load rules from {source}: expected a list of rules or {{rules: [...]}}")
    rules: list[Rule] = []
    seen: set[str] = set()
    for doc in docs:
        rule = parse_rule(doc)
        if rule.name in seen:
            raise InvalidRule(rule.name, "name", f"is used twice in {source}")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_rules_file(path: str | Path) -> list[Rule]:
    """Read a YAML (or JSON) rule file.

    Raises:
        InvalidInput: the file cannot be read or parsed; InvalidRule for a bad rule.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"cannot read rules file {str(p)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"cannot read rules file {str(p)!r}: {exc}") from exc
    return parse_rules(data, repr(str(p)))
