"""The ``alerting:`` section of the server config, parsed into frozen dataclasses.

Who calls it: :func:`server.alerting.setup_alerting` (at app creation) and ``tsengine rules
check``. In: ``ServerConfig.alerting`` (a mapping from the YAML/TOML config file). Out:
:class:`AlertingConfig`. Every error is an :class:`~tsengine.errors.InvalidInput` naming the key
(``alerting.channels.ops.url``). The full reference is ``docs/alerting.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.alerting.matchers import Matcher, parse_matchers
from server.alerting.rules import EscalationStep, parse_duration, parse_escalation
from tsengine.errors import InvalidInput
from tsengine.model.names import validate_db

__all__ = ["CHANNEL_TYPES", "AlertingConfig", "ChannelConfig", "RouteConfig", "parse_alerting"]

CHANNEL_TYPES = ("console", "webhook", "slack", "email", "alertmanager")


@dataclass(frozen=True)
class ChannelConfig:
    """One notification channel; fields not used by its ``type`` keep their defaults."""

    name: str
    type: str
    url: str = ""
    #: Seconds one delivery may take in all, retries included (the other channels never wait).
    timeout_s: float = 10.0
    #: Extra attempts after a 5xx, 429 or connection error, with exponential backoff.
    retries: int = 3
    backoff_s: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict)
    send_resolved: bool = True
    #: At most ``rate_limit_count`` notifications per ``rate_limit_per_s`` (0: unlimited).
    rate_limit_count: int = 0
    rate_limit_per_s: float = 60.0
    # email
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    starttls: bool = False
    #: CA bundle (PEM) that signs the SMTP server's certificate; empty: the system's trust store.
    tls_ca_file: str = ""
    #: Verify the SMTP server's certificate and host name on STARTTLS (``false``: explicit opt-out).
    tls_verify: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = "tsengine@localhost"
    to: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteConfig:
    """Alerts matching ``matchers`` go to ``channels``, grouped by ``group_by`` labels."""

    channels: tuple[str, ...]
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ("alertname",)
    group_wait_s: float = 0.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    escalation: tuple[EscalationStep, ...] = ()
    #: Keep matching the routes after this one (Alertmanager's ``continue``).
    continue_: bool = False
    name: str = ""


@dataclass(frozen=True)
class AlertingConfig:
    """Everything under ``alerting:``; defaults documented in docs/alerting.md."""

    enabled: bool = True
    rules_file: str | None = None
    default_rules: bool = True
    max_alerts: int = 10_000
    history_db: str = "default"
    external_url: str = ""
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    default_route: RouteConfig = field(default_factory=lambda: RouteConfig(channels=("console",)))


def _fail(where: str, reason: str) -> InvalidInput:
    return InvalidInput(f"cannot read config {where}: {reason}")


def _duration(raw: Any, where: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def _typed(raw: Mapping[str, Any], key: str, default: Any, where: str) -> Any:
    value = raw.get(key, default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise _fail(f"{where}.{key}", f"expected {type(default).__name__}, got {value!r}")
    return value


_CHANNEL_KEYS = {
    "type", "url", "timeout", "retries", "backoff", "headers", "send_resolved", "rate_limit",
    "host", "port", "starttls", "tls_ca_file", "tls_verify", "username", "password", "from", "to",
}  # fmt: skip


def _channel(name: str, raw: Any) -> ChannelConfig:
    where = f"alerting.channels.{name}"
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be a mapping with a 'type'")
    unknown = set(raw) - _CHANNEL_KEYS
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "is not a known channel key")
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        raise _fail(f"{where}.type", f"must be one of {list(CHANNEL_TYPES)}, got {kind!r}")
    values: dict[str, Any] = {"name": name, "type": kind}
    if kind in ("webhook", "slack", "alertmanager"):
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(f"{where}.url", f"must be an http(s) URL, got {url!r}")
        values["url"] = url.rstrip("/") if kind == "alertmanager" else url
    if "timeout" in raw:
        values["timeout_s"] = _duration(raw["timeout"], f"{where}.timeout")
        if values["timeout_s"] <= 0:
            raise _fail(f"{where}.timeout", "must be > 0")
    if "backoff" in raw:
        values["backoff_s"] = _duration(raw["backoff"], f"{where}.backoff")
    values["retries"] = _typed(raw, "retries", 3, where)
    if values["retries"] < 0:
        raise _fail(f"{where}.retries", "must be >= 0")
    values["send_resolved"] = _typed(raw, "send_resolved", True, where)
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise _fail(f"{where}.headers", "must be a mapping of strings")
    values["headers"] = dict(headers)
    rl = raw.get("rate_limit")
    if rl is not None:
        if not isinstance(rl, Mapping) or set(rl) - {"count", "per"}:
            raise _fail(f"{where}.rate_limit", "must be {count: N, per: '1m'}")
        values["rate_limit_count"] = _typed(rl, "count", 0, f"{where}.rate_limit")
        values["rate_limit_per_s"] = _duration(rl.get("per", "1m"), f"{where}.rate_limit.per")
    if kind == "email":
        values["smtp_host"] = _typed(raw, "host", "127.0.0.1", where)
        values["smtp_port"] = _typed(raw, "port", 25, where)
        values["starttls"] = _typed(raw, "starttls", False, where)
        values["tls_ca_file"] = _typed(raw, "tls_ca_file", "", where)
        values["tls_verify"] = _typed(raw, "tls_verify", True, where)
        if values["tls_ca_file"] and not Path(values["tls_ca_file"]).is_file():
            raise _fail(f"{where}.tls_ca_file", f"{values['tls_ca_file']!r} is not a readable file")
        values["username"] = _typed(raw, "username", "", where)
        values["password"] = _typed(raw, "password", "", where)
        values["sender"] = _typed(raw, "from", "tsengine@localhost", where)
        to = raw.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or not all(isinstance(t, str) and "@" in t for t in to):
            raise _fail(f"{where}.to", "must be a non-empty list of e-mail addresses")
        values["to"] = tuple(to)
    return ChannelConfig(**values)


_ROUTE_KEYS = {
    "name", "matchers", "channels", "group_by", "group_wait", "group_interval", "repeat_interval",
    "escalation", "continue",
}  # fmt: skip


def _route(raw: Any, where: str, channels: Mapping[str, ChannelConfig]) -> RouteConfig:
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be a mapping")
    unknown = set(raw) - _ROUTE_KEYS
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "is not a known route key")
    names = raw.get("channels", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise _fail(f"{where}.channels", "must be a non-empty list of channel names")
    for n in names:
        if n not in channels:
            raise _fail(f"{where}.channels", f"names unknown channel {n!r} (known: {sorted(channels)})")
    try:
        matchers = parse_matchers(raw.get("matchers", []))
    except ValueError as exc:
        raise _fail(f"{where}.matchers", str(exc)) from None
    group_by = raw.get("group_by", ["alertname"])
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise _fail(f"{where}.group_by", "must be a list of label names")

    def fail(key: str, reason: str) -> InvalidInput:
        return _fail(f"{where}.{key}", reason)

    escalation = parse_escalation(raw.get("escalation"), "escalation", fail)
    for step in escalation:
        for n in step.channels:
            if n not in channels:
                raise _fail(f"{where}.escalation", f"names unknown channel {n!r}")
    cont = raw.get("continue", False)
    if not isinstance(cont, bool):
        raise _fail(f"{where}.continue", "must be true or false")
    return RouteConfig(
        channels=tuple(names),
        matchers=matchers,
        group_by=tuple(group_by),
        group_wait_s=_duration(raw.get("group_wait", 0), f"{where}.group_wait"),
        group_interval_s=_duration(raw.get("group_interval", "5m"), f"{where}.group_interval"),
        repeat_interval_s=_duration(raw.get("repeat_interval", "4h"), f"{where}.repeat_interval"),
        escalation=escalation,
        continue_=cont,
        name=str(raw.get("name", where)),
    )


_KEYS = {
    "enabled", "rules_file", "default_rules", "max_alerts", "history_db", "external_url",
    "channels", "routes", "default_route",
}  # fmt: skip


def parse_alerting(raw: Mapping[str, Any] | None) -> AlertingConfig:
    """Parse ``ServerConfig.alerting``.

    Raises:
        InvalidInput: naming the key at fault.
    """
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise _fail("alerting", "must be a mapping")
    unknown = set(raw) - _KEYS
    if unknown:
        raise _fail(f"alerting.{sorted(unknown)[0]}", "is not a known alerting key")
    where = "alerting"
    channels_raw = raw.get("channels", {}) or {}
    if not isinstance(channels_raw, Mapping):
        raise _fail("alerting.channels", "must be a mapping of name to channel")
    channels = {str(n): _channel(str(n), c) for n, c in channels_raw.items()}
    channels.setdefault("console", ChannelConfig(name="console", type="console"))
    routes_raw = raw.get("routes", []) or []
    if not isinstance(routes_raw, list):
        raise _fail("alerting.routes", "must be a list of routes")
    routes = tuple(_route(r, f"alerting.routes[{i}]", channels) for i, r in enumerate(routes_raw))
    default_raw = raw.get("default_route", {"channels": ["console"]})
    default_route = _route(default_raw, "alerting.default_route", channels)
    if default_route.matchers:
        raise _fail("alerting.default_route.matchers", "the default route matches every alert")
    rules_file = raw.get("rules_file")
    if rules_file is not None and not isinstance(rules_file, str):
        raise _fail("alerting.rules_file", "must be a path")
    max_alerts = _typed(raw, "max_alerts", 10_000, where)
    if max_alerts < 1:
        raise _fail("alerting.max_alerts", "must be >= 1")
    history_db = _typed(raw, "history_db", "default", where)
    try:
        validate_db(history_db)
    except InvalidInput as exc:
        raise _fail("alerting.history_db", exc.reason) from None
    return AlertingConfig(
        enabled=_typed(raw, "enabled", True, where),
        rules_file=rules_file,
        default_rules=_typed(raw, "default_rules", True, where),
        max_alerts=max_alerts,
        history_db=history_db,
        external_url=_typed(raw, "external_url", "", where),
        channels=channels,
        routes=routes,
        default_route=default_route,
    )
