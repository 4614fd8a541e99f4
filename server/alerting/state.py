"""Alert instances and their state machine; the persisted alerting state.

Who calls it: :class:`server.alerting.service.AlertService` (once per rule per evaluation, and for
acknowledgements), :mod:`server.alerting.notifier` (reads instances, keeps its send records in
:attr:`AlertState.notify`). In: a rule, the samples its evaluation returned, ``now_ns``. Out:
the updated instances and the transitions to record.

State machine per instance (Prometheus semantics)::

    inactive ──condition true──▶ pending ──true for ``for``──▶ firing ──false (after
       ▲                            │                            │       keep_firing_for)──▶ resolved
       └──────condition false───────┘                            ▼                              │
                                                   (``for: 0s`` goes straight to firing)        │
    resolved ──condition true again──▶ pending (a new cycle: ack and escalation cleared) ◀──────┘

Durability: :meth:`AlertState.save` replaces ``<data>/_alerting/state.json`` atomically
(``tsengine.durable.atomic_write``); the service saves after every evaluation round, before the
notifications of that round are sent, and again after them, so a crash re-sends at most the
notifications of the round in flight, never older ones. Not thread-safe: the service mutates it
on the event loop only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from server.alerting.evaluator import Sample
from server.alerting.rules import Rule
from server.alerting.templates import render
from tsengine.durable import atomic_write
from tsengine.errors import StorageError

__all__ = ["AlertState", "Instance", "Transition", "fingerprint", "step_rule"]

log = logging.getLogger(__name__)

_NS = 1_000_000_000
STATE_VERSION = 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of a label set (the rule's name is in it as ``alertname``)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Instance:
    """One alert: a rule and a label set. Times are epoch nanoseconds of the engine's clock."""

    id: str
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    state: str  # pending | firing | resolved
    active_at_ns: int
    fired_at_ns: int | None = None
    resolved_at_ns: int | None = None
    last_true_ns: int = 0
    acked_by: str | None = None
    ack_comment: str | None = None
    acked_at_ns: int | None = None
    escalation_step: int = 0
    #: Set by an escalation step that raises the severity (routing then sees it).
    severity_override: str | None = None
    silenced_by: list[str] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return self.severity_override or self.labels.get("severity", "warning")

    def effective_labels(self) -> dict[str, str]:
        """The labels routing, silences and notifications see (escalated severity included)."""
        return {**self.labels, "severity": self.severity}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_api(self) -> dict[str, Any]:
        """The ``GET /api/v1/alerts`` shape (times as epoch seconds)."""

        def s(ns: int | None) -> float | None:
            return None if ns is None else ns / _NS

        return {
            "id": self.id, "rule": self.rule, "state": self.state, "labels": self.labels,
            "annotations": self.annotations, "value": self.value, "since": s(self.active_at_ns),
            "fired_at": s(self.fired_at_ns), "resolved_at": s(self.resolved_at_ns),
            "acknowledged_by": self.acked_by, "ack_comment": self.ack_comment,
            "acked_at": s(self.acked_at_ns),
            "escalation_step": self.escalation_step, "severity": self.severity,
            "silenced_by": self.silenced_by,
        }  # fmt: skip


@dataclass(frozen=True)
class Transition:
    """A state change to record in ``alerts_history``: ``event`` is the new state."""

    instance: Instance
    event: str  # pending | firing | resolved | inactive
    from_state: str


def _labels(rule: Rule, sample: Sample) -> dict[str, str]:
    # As Prometheus: the rule's labels win over the sample's; alertname and severity always set.
    out = {**sample.labels, **rule.labels, "alertname": rule.name}
    out.setdefault("severity", rule.severity)
    return out


def step_rule(
    rule: Rule, samples: Iterable[Sample], instances: Mapping[str, Instance], now_ns: int
) -> tuple[list[Instance], list[Transition], list[str]]:
    """Advance every instance of ``rule`` given this evaluation's ``samples``.

    ``instances`` are the current ones of this rule (by id). Returns the instances to keep
    (new and updated), the transitions, and the ids to drop (pending instances whose condition
    went false become inactive and are forgotten, as in Prometheus). Pure.
    """
    keep: list[Instance] = []
    transitions: list[Transition] = []
    seen: set[str] = set()
    for sample in samples:
        labels = _labels(rule, sample)
        iid = fingerprint(labels)
        if iid in seen:
            continue  # two rows with the same labels: the first wins (Prometheus refuses them)
        seen.add(iid)
        annotations = {
            k: render(v, labels, sample.value, rule=rule.name, severity=labels["severity"])
            for k, v in rule.annotations.items()
        }
        inst = instances.get(iid)
        if inst is None or inst.state == "resolved":
            inst = Instance(
                id=iid, rule=rule.name, labels=labels, annotations=annotations, value=sample.value,
                state="pending", active_at_ns=now_ns, last_true_ns=now_ns,
            )  # fmt: skip
            transitions.append(Transition(inst, "pending", "inactive"))
        else:
            inst.value, inst.annotations, inst.labels, inst.last_true_ns = (
                sample.value, annotations, labels, now_ns,
            )  # fmt: skip
        if inst.state == "pending" and now_ns - inst.active_at_ns >= rule.for_s * _NS:
            inst.state, inst.fired_at_ns = "firing", now_ns
            transitions.append(Transition(inst, "firing", "pending"))
        keep.append(inst)
    dropped: list[str] = []
    for iid, inst in instances.items():
        if iid in seen or inst.state == "resolved":
            continue
        if inst.state == "pending":
            dropped.append(iid)
            transitions.append(Transition(inst, "inactive", "pending"))
        elif now_ns - inst.last_true_ns >= rule.keep_firing_for_s * _NS:
            inst.state, inst.resolved_at_ns = "resolved", now_ns
            transitions.append(Transition(inst, "resolved", "firing"))
            keep.append(inst)
        else:
            keep.append(inst)  # keep_firing_for: still firing although the condition is false
    return keep, transitions, dropped


class AlertState:
    """Instances, silences and notification records; saved as one JSON document.

    Args:
        path: the state file (``<data>/_alerting/state.json``).
        max_alerts: instances kept in memory (all states); to make room resolved instances go,
            oldest first, and when none is left new instances are refused (:meth:`room_for`).
    """

    def __init__(self, path: Path, max_alerts: int = 10_000) -> None:
        self.path = path
        self.max_alerts = max_alerts
        self.instances: dict[str, Instance] = {}
        self.silences: dict[str, dict[str, Any]] = {}
        #: The notifier's records (see server.alerting.notifier): JSON-able, opaque here.
        self.notify: dict[str, Any] = {}
        #: Rules created, replaced or deleted through the API: ``{name: doc or None}``.
        self.rule_overrides: dict[str, Any] = {}

    def is_empty(self) -> bool:
        return not (self.instances or self.silences or self.notify or self.rule_overrides)

    def of_rule(self, rule: str) -> dict[str, Instance]:
        return {i.id: i for i in self.instances.values() if i.rule == rule}

    def evict(self, extra: int = 0) -> list[Instance]:
        """Drop resolved instances, oldest first, until at most ``max_alerts - extra`` remain."""
        over = len(self.instances) + extra - self.max_alerts
        if over <= 0:
            return []
        resolved = sorted(
            (i for i in self.instances.values() if i.state == "resolved"), key=lambda i: i.resolved_at_ns or 0
        )
        gone = resolved[:over]
        for inst in gone:
            del self.instances[inst.id]
        return gone

    def room_for(self, n: int) -> tuple[int, list[Instance]]:
        """How many of ``n`` new instances fit under ``max_alerts``, and the resolved ones evicted
        (oldest first) to make room.

        Pending and firing instances are never evicted to make room: past the bound, new
        instances are refused (the caller counts and reports them), so memory and the state
        file stay bounded whatever a rule returns.
        """
        if n <= 0:
            return 0, []
        gone = self.evict(extra=n)
        return max(0, min(n, self.max_alerts - len(self.instances))), gone

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "instances": [i.to_dict() for i in self.instances.values()],
                "silences": self.silences,
                "notify": self.notify,
                "rule_overrides": self.rule_overrides,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    def save(self, data: bytes | None = None) -> None:
        """Replace the state file atomically (blocks: fsync). ``data`` from :meth:`to_json`."""
        payload = self.to_json() if data is None else data
        try:
            atomic_write(self.path, lambda f: f.write(payload))
        except OSError as exc:
            raise StorageError(f"cannot save alert state: {exc.strerror}", path=str(self.path)) from exc

    def load(self) -> None:
        """Read the state file if there is one (blocks). A corrupt file is kept aside, not fatal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = orjson.loads(raw)
            instances = {d["id"]: Instance(**d) for d in doc.get("instances", [])}
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            self.path.replace(aside)
            log.error(
                "cannot read alert state %s (%s); moved it to %s, starting empty", self.path, exc, aside
            )
            return
        self.instances = instances
        self.silences = dict(doc.get("silences", {}))
        self.notify = dict(doc.get("notify", {}))
        self.rule_overrides = dict(doc.get("rule_overrides", {}))
