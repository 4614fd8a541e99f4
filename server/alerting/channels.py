"""Notification channels: console, webhook, Slack, e-mail, Prometheus Alertmanager.

Who calls it: :mod:`server.alerting.notifier`, on the event loop, one task per channel so one
slow or failing channel never delays another. In: a :class:`Notification` (a group of alert
instances) and the channel's :class:`~server.alerting.config.ChannelConfig`. Out: a delivery, or
:class:`DeliveryError` with the reason (the notifier records it in ``alerts_history`` and the
metrics).

Payloads (documented in ``docs/alerting.md``):

* webhook — Alertmanager's webhook JSON (``version: "4"``, ``status``, ``groupKey``,
  ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``alerts[]`` with ``startsAt``/
  ``endsAt``/``fingerprint``) plus ``kind`` (``notification``, ``repeat``, ``escalation``) and each
  alert's ``value`` and ``acknowledgedBy``;
* slack — an incoming-webhook ``{"text": ...}``;
* email — ``text/plain``; subject ``[FIRING:2] alertname (group labels)``; with ``starttls`` the
  server's certificate is verified (``tls_ca_file``, or ``tls_verify: false`` to opt out) before
  any credential is sent;
* alertmanager — ``POST /api/v2/alerts`` with ``labels``, ``annotations``, ``startsAt``,
  ``endsAt`` (in the future while firing, the resolve time once resolved), ``generatorURL``.

HTTP deliveries retry 5xx, 429 and connection errors ``retries`` times with exponential backoff
(``backoff * 2**attempt``); any other 4xx is final. The whole delivery, retries included, is
bounded by the channel's ``timeout``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiohttp
import orjson

from server.alerting.config import ChannelConfig
from server.alerting.state import Instance

__all__ = ["DeliveryError", "Notification", "deliver", "rfc3339"]

log = logging.getLogger("tsengine.alerting")

_NS = 1_000_000_000


class DeliveryError(Exception):
    """A notification could not be delivered; ``reason`` says why (status, error, timeout)."""

    def __init__(self, reason: str, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass
class Notification:
    """What one channel is told: a group's alerts and whether it fires or resolves."""

    channel: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Instance]
    kind: str = "notification"  # notification | repeat | escalation
    now_ns: int = 0
    #: For an escalation step that raises the severity.
    severity: str | None = None
    external_url: str = ""
    #: Alertmanager only: how long a firing alert stays valid without a refresh.
    ends_after_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "firing" if any(a.state == "firing" for a in self.alerts) else "resolved"

    def alert_labels(self, a: Instance) -> dict[str, str]:
        labels = a.effective_labels()
        return {**labels, "severity": self.severity} if self.severity else labels

    def common_labels(self) -> dict[str, str]:
        return _common([self.alert_labels(a) for a in self.alerts])


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    """The items every one of ``dicts`` has (Alertmanager's ``commonLabels``)."""
    return {k: v for k, v in dicts[0].items() if all(d.get(k) == v for d in dicts[1:])} if dicts else {}


def rfc3339(ns: int | None) -> str:
    if ns is None:
        return "0001-01-01T00:00:00Z"
    t = dt.datetime.fromtimestamp(ns / _NS, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _alert_doc(n: Notification, a: Instance) -> dict[str, Any]:
    resolved = a.state == "resolved"
    return {
        "status": "resolved" if resolved else "firing",
        "labels": n.alert_labels(a),
        "annotations": a.annotations,
        "startsAt": rfc3339(a.fired_at_ns or a.active_at_ns),
        "endsAt": rfc3339(a.resolved_at_ns) if resolved else "0001-01-01T00:00:00Z",
        "generatorURL": f"{n.external_url}/api/v1/alerts?id={a.id}" if n.external_url else "",
        "fingerprint": a.id,
        "value": a.value,
        "acknowledgedBy": a.acked_by,
    }


def webhook_payload(n: Notification) -> dict[str, Any]:
    return {
        "version": "4",
        "kind": n.kind,
        "receiver": n.channel,
        "status": n.status,
        "groupKey": n.group_key,
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": _common([a.annotations for a in n.alerts]),
        "externalURL": n.external_url,
        "truncatedAlerts": 0,
        "alerts": [_alert_doc(n, a) for a in n.alerts],
        **({"escalationLevel": n.extra["level"]} if "level" in n.extra else {}),
    }


def _title(n: Notification) -> str:
    firing = sum(a.state == "firing" for a in n.alerts)
    status = f"FIRING:{firing}" if firing else "RESOLVED"
    prefix = "ESCALATED " if n.kind == "escalation" else ""
    name = n.group_labels.get("alertname") or n.common_labels().get("alertname", "alerts")
    rest = " ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()) if k != "alertname")
    return f"{prefix}[{status}] {name}" + (f" ({rest})" if rest else "")


def _text(n: Notification) -> str:
    lines = [_title(n), ""]
    for a in n.alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(n.alert_labels(a).items()))
        lines.append(f"- [{a.state}] {a.rule} value={a.value:g} {{{labels}}}")
        for k, v in sorted(a.annotations.items()):
            lines.append(f"    {k}: {v}")
        if a.acked_by:
            lines.append(f"    acknowledged by {a.acked_by}: {a.ack_comment or ''}")
    return "\n".join(lines) + "\n"


def slack_payload(n: Notification) -> dict[str, Any]:
    return {"text": _text(n)}


def alertmanager_payload(n: Notification) -> list[dict[str, Any]]:
    out = []
    for a in n.alerts:
        doc = _alert_doc(n, a)
        ends = a.resolved_at_ns if a.state == "resolved" else n.now_ns + int(n.ends_after_s * _NS)
        out.append({
            "labels": doc["labels"], "annotations": doc["annotations"], "startsAt": doc["startsAt"],
            "endsAt": rfc3339(ends), "generatorURL": doc["generatorURL"] or "http://tsengine/alerts",
        })  # fmt: skip
    return out


async def _post(session: aiohttp.ClientSession, ch: ChannelConfig, url: str, body: Any) -> int:
    """POST with retries; returns the attempts used. Raises DeliveryError."""
    data = orjson.dumps(body)
    headers = {"Content-Type": "application/json", **ch.headers}
    last = ""
    for attempt in range(ch.retries + 1):
        if attempt:
            await asyncio.sleep(ch.backoff_s * 2 ** (attempt - 1))  # backoff between attempts
        try:
            async with session.post(url, data=data, headers=headers) as resp:
                if resp.status < 300:
                    return attempt + 1
                text = (await resp.text())[:200]
                last = f"HTTP {resp.status}: {text}"
                if resp.status < 500 and resp.status != 429:
                    raise DeliveryError(f"cannot notify {ch.name}: {last}", attempt + 1)
        except aiohttp.ClientError as exc:
            last = f"{type(exc).__name__}: {exc}"
    raise DeliveryError(f"cannot notify {ch.name}: {last} (after {ch.retries + 1} attempts)", ch.retries + 1)


def tls_context(ch: ChannelConfig) -> ssl.SSLContext:
    """The STARTTLS context: the server's certificate and host name are verified against the
    system's trust store, or ``tls_ca_file``; ``tls_verify: false`` is the explicit opt-out."""
    ctx = ssl.create_default_context(cafile=ch.tls_ca_file or None)
    if not ch.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _send_mail(ch: ChannelConfig, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = ch.sender
    msg["To"] = ", ".join(ch.to)
    msg.set_content(body)
    with smtplib.SMTP(ch.smtp_host, ch.smtp_port, timeout=ch.timeout_s) as smtp:
        if ch.starttls:
            smtp.starttls(context=tls_context(ch))
        if ch.username:
            smtp.login(ch.username, ch.password)
        smtp.send_message(msg)


async def _deliver(session: aiohttp.ClientSession, ch: ChannelConfig, n: Notification) -> int:
    if ch.type == "console":
        log.warning("alert notification: %s", _text(n).rstrip())
        return 1
    if ch.type == "webhook":
        return await _post(session, ch, ch.url, webhook_payload(n))
    if ch.type == "slack":
        return await _post(session, ch, ch.url, slack_payload(n))
    if ch.type == "alertmanager":
        return await _post(session, ch, f"{ch.url}/api/v2/alerts", alertmanager_payload(n))
    if ch.type == "email":
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _send_mail, ch, _title(n), _text(n))
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot notify {ch.name}: {type(exc).__name__}: {exc}") from exc
        return 1
    raise AssertionError(f"BUG: unknown channel type {ch.type!r}")


async def deliver(session: aiohttp.ClientSession, ch: ChannelConfig, n: Notification) -> int:
    """Deliver ``n`` through ``ch`` within its timeout; returns the attempts used.

    Raises:
        DeliveryError: the channel refused, failed every attempt, or timed out.
    """
    try:
        return await asyncio.wait_for(_deliver(session, ch, n), timeout=ch.timeout_s)
    except TimeoutError:
        raise DeliveryError(f"cannot notify {ch.name}: timed out after {ch.timeout_s:g} s") from None
