"""Routing, grouping, repeats, escalation and rate limits: who is told what, and when.

Who calls it: :class:`server.alerting.service.AlertService`, once per evaluation round, on the
event loop. In: the alert state (instances, silences, send records), the rules, ``now_ns``.
Out: deliveries through :mod:`server.alerting.channels` (concurrent, each within its channel's
timeout) and one history record per alert per delivery (sent or failed). Three steps, so the
service can deliver without holding its state lock: :meth:`Notifier.plan` (under the lock;
updates only its bookkeeping of empty or quiet groups), :meth:`Notifier.send` (the network; no
state), :meth:`Notifier.apply` (records what was sent: group records, escalation steps).

Decisions are taken at each evaluation round (Alertmanager runs its own timers; ours tick with
the evaluation, so a ``group_wait`` shorter than the evaluation interval behaves as 0):

* **Routing** — routes are tried in order; the first whose matchers all match the alert's
  labels takes it (``continue: true`` goes on to the next ones); no match → ``default_route``.
* **Grouping** — per route, alerts with the same values of the route's ``group_by`` labels form
  one group (``["..."]``: every label) and are sent in one notification. A new group waits
  ``group_wait``; later changes to a group wait until ``group_interval`` after the group's last
  notification. A notification is due when an alert of the group newly fires or resolves
  (Alertmanager's rule: a firing alert that merely disappears — silenced — sends nothing).
* **Repeat** — an unchanged group with a firing alert nobody acknowledged is sent again every
  ``repeat_interval``. Acknowledged alerts do not repeat.
* **Alertmanager channels** are refreshed every round an alert changes and at least every
  60 s while it fires, with ``endsAt`` 5 minutes ahead (as Prometheus does), so Alertmanager
  resolves an alert itself if tsengine goes away; Alertmanager dedups the refreshes.
* **Escalation** — a firing, unacknowledged, unsilenced alert climbs the steps of its rule's
  ``escalation`` (else its route's) one at a time: after ``after`` since it fired, the step's
  channels get an ``escalation`` notification, and a step's ``severity`` replaces the alert's
  severity from then on (so routes on ``severity`` see it).
* **Rate limit** — per channel, at most ``count`` deliveries per ``per``; beyond it the delivery
  is recorded as failed (``rate limited``) and retried at the next round.

A failed delivery leaves the group's record unchanged, so the next round retries it. Records
live in ``AlertState.notify`` and are saved with the state: after a restart nothing already
sent is sent again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from server.alerting.channels import DeliveryError, Notification, deliver
from server.alerting.config import AlertingConfig, ChannelConfig, RouteConfig
from server.alerting.rules import EscalationStep, Rule
from server.alerting.state import AlertState, Instance

__all__ = ["Delivery", "Job", "Notifier", "route_for"]

_NS = 1_000_000_000
_AM_RESEND_S = 60.0
_AM_ENDS_AFTER_S = 300.0


def _matches(route: RouteConfig, labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels.get(m.name)) for m in route.matchers)


def route_for(config: AlertingConfig, labels: Mapping[str, str]) -> list[tuple[str, RouteConfig]]:
    """The routes an alert with ``labels`` goes to, with their ids (``r0``, ..., ``default``)."""
    out = []
    for i, route in enumerate(config.routes):
        if _matches(route, labels):
            out.append((f"r{i}", route))
            if not route.continue_:
                return out
    return out or [("default", config.default_route)]


@dataclass
class Delivery:
    """The outcome of one notification through one channel (for history and metrics)."""

    notification: Notification
    channel: ChannelConfig
    ok: bool
    error: str = ""
    attempts: int = 0


@dataclass
class Job:
    """One planned delivery; ``on_success``/``on_failure`` record its outcome in the state."""

    notification: Notification
    channel: ChannelConfig
    on_success: Callable[[], None]
    on_failure: Callable[[], None] | None = None


class Notifier:
    """See the module docstring. Holds only per-channel rate-limit windows in memory."""

    def __init__(self, config: AlertingConfig, state: AlertState) -> None:
        self.config = config
        self.state = state
        self._sent: dict[str, collections.deque[int]] = {}

    # -- planning ---------------------------------------------------------------------------------

    def _groups(self) -> dict[str, tuple[RouteConfig, dict[str, str], list[Instance]]]:
        groups: dict[str, tuple[RouteConfig, dict[str, str], list[Instance]]] = {}
        for inst in self.state.instances.values():
            if inst.state == "pending":
                continue
            labels = inst.effective_labels()
            for rid, route in route_for(self.config, labels):
                if "..." in route.group_by:
                    glabels = dict(labels)
                else:
                    glabels = {g: labels[g] for g in route.group_by if g in labels}
                text = "\x00".join(f"{k}={v}" for k, v in sorted(glabels.items()))
                key = f"{rid}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
                groups.setdefault(key, (route, glabels, []))[2].append(inst)
        return groups

    def plan(self, now_ns: int, rules: Mapping[str, Rule]) -> list[Job]:
        """Decide this round's notifications. Changes nothing until a job's ``on_success``."""
        records: dict[str, Any] = self.state.notify.setdefault("groups", {})
        first_seen: dict[str, int] = self.state.notify.setdefault("first_seen", {})
        # Escalations first: a severity-only step re-routes the alert in this very round.
        escalations = self._escalations(now_ns, rules)
        jobs: list[Job] = []
        groups = self._groups()
        firing_groups: set[str] = set()
        for gkey, (route, glabels, members) in groups.items():
            firing = {a.id: a for a in members if a.state == "firing" and not a.silenced_by}
            by_id = {a.id: a for a in members}
            if firing:
                first_seen.setdefault(gkey, now_ns)
                firing_groups.add(gkey)
            for cname in route.channels:
                ch = self.config.channels[cname]
                rkey = f"{gkey}|{cname}"
                rec = records.get(rkey)
                prev = set(rec["firing"]) if rec else set()
                resolved = [by_id[i] for i in sorted(prev) if i in by_id and by_id[i].state == "resolved"]
                new = set(firing) - prev
                if not firing and not (resolved and ch.send_resolved) and not rec:
                    continue
                is_am = ch.type == "alertmanager"
                changed = bool(new) or bool(resolved and ch.send_resolved)
                if rec is None:
                    due = changed and now_ns - first_seen.get(gkey, now_ns) >= route.group_wait_s * _NS
                else:
                    interval = 0.0 if is_am or rec.get("failed") else route.group_interval_s
                    due = changed and now_ns - rec["sent_ns"] >= interval * _NS
                kind = "notification"
                if not due and not changed and firing and rec is not None:
                    repeat_s = _AM_RESEND_S if is_am else route.repeat_interval_s
                    unacked = is_am or any(a.acked_by is None for a in firing.values())
                    if unacked and now_ns - rec["sent_ns"] >= repeat_s * _NS:
                        due, kind = True, "repeat"
                if not due:
                    if rec is not None and not changed and set(rec["firing"]) != set(firing):
                        rec["firing"] = sorted(firing)  # silenced or gone: forget quietly
                    continue
                alerts = sorted(firing.values(), key=lambda a: a.id)
                if ch.send_resolved:
                    alerts += resolved
                n = Notification(
                    channel=cname, group_key=gkey, group_labels=glabels, alerts=alerts, kind=kind,
                    now_ns=now_ns, external_url=self.config.external_url, ends_after_s=_AM_ENDS_AFTER_S,
                )  # fmt: skip
                fired = sorted(firing)

                def success(rkey: str = rkey, fired: list[str] = fired) -> None:
                    records[rkey] = {"firing": fired, "sent_ns": now_ns}

                def failure(rkey: str = rkey) -> None:
                    if rkey in records:
                        records[rkey]["failed"] = True

                jobs.append(Job(n, ch, success, failure))
        # A group with nothing outstanding is forgotten (as Alertmanager drops an empty group):
        # when it fires again it is a new group, with group_wait and not group_interval.
        for rkey in list(records):
            if not records[rkey]["firing"] or rkey.rpartition("|")[0] not in groups:
                del records[rkey]
        for gkey in list(first_seen):
            if gkey not in firing_groups:
                del first_seen[gkey]
        return jobs + escalations

    def _steps(self, inst: Instance, rules: Mapping[str, Rule]) -> tuple[EscalationStep, ...]:
        rule = rules.get(inst.rule)
        if rule is not None and rule.escalation:
            return rule.escalation
        for _, route in route_for(self.config, inst.effective_labels()):
            if route.escalation:
                return route.escalation
        return ()

    def _escalations(self, now_ns: int, rules: Mapping[str, Rule]) -> list[Job]:
        jobs: list[Job] = []
        for inst in self.state.instances.values():
            if inst.state != "firing" or inst.acked_by is not None or inst.silenced_by:
                continue
            steps = self._steps(inst, rules)
            if inst.escalation_step >= len(steps) or inst.fired_at_ns is None:
                continue
            step = steps[inst.escalation_step]
            if now_ns - inst.fired_at_ns < step.after_s * _NS:
                continue
            level = inst.escalation_step + 1

            def advance(inst: Instance = inst, level: int = level, sev: str | None = step.severity) -> None:
                if inst.escalation_step < level:
                    inst.escalation_step = level
                    if sev:
                        inst.severity_override = sev

            if not step.channels:
                advance()  # a severity-only step: routing picks the alert up with its new severity
                continue
            for cname in step.channels:
                n = Notification(
                    channel=cname, group_key=f"escalation:{inst.id}:{level}",
                    group_labels=inst.effective_labels(), alerts=[inst], kind="escalation",
                    now_ns=now_ns, severity=step.severity,
                    external_url=self.config.external_url, ends_after_s=_AM_ENDS_AFTER_S,
                    extra={"level": level},
                )  # fmt: skip
                jobs.append(Job(n, self.config.channels[cname], advance))
        return jobs

    # -- delivery ---------------------------------------------------------------------------------

    def _rate_limited(self, ch: ChannelConfig, now_ns: int) -> bool:
        if ch.rate_limit_count <= 0:
            return False
        window = self._sent.setdefault(ch.name, collections.deque())
        while window and now_ns - window[0] >= ch.rate_limit_per_s * _NS:
            window.popleft()
        if len(window) >= ch.rate_limit_count:
            return True
        window.append(now_ns)
        return False

    async def send(self, session: aiohttp.ClientSession, jobs: list[Job], now_ns: int) -> list[Delivery]:
        """Deliver every job concurrently and report each outcome; changes no alert state.

        The service calls this without holding its lock, then :meth:`apply` under it.
        """

        async def one(job: Job) -> Delivery:
            if self._rate_limited(job.channel, now_ns):
                return Delivery(job.notification, job.channel, False, "rate limited", 0)
            try:
                attempts = await deliver(session, job.channel, job.notification)
            except DeliveryError as exc:
                return Delivery(job.notification, job.channel, False, exc.reason, exc.attempts)
            return Delivery(job.notification, job.channel, True, "", attempts)

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    @staticmethod
    def apply(jobs: list[Job], deliveries: list[Delivery]) -> None:
        """Record what was sent (the group records, escalation steps) in the state."""
        for job, result in zip(jobs, deliveries, strict=True):
            if result.ok:
                job.on_success()
            elif job.on_failure is not None:
                job.on_failure()
