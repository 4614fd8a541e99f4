"""The alert manager: rules, one evaluation round, acknowledgements, silences, persistence.

Who calls it: the scheduler (task ``alert_evaluation`` runs :meth:`AlertService.evaluate`), the
HTTP routes of :mod:`server.routes.alerts`, and the app's cleanup context (:meth:`start`,
:meth:`close`). Everything here runs on the event loop; blocking work — the rules' DuckDB
queries, history writes, state saves — goes to the executor given (the app's ``background``
pool). Two locks: ``_lock`` guards the state (instances, silences, rules, notification records)
and is held only for short in-memory steps and their saves; ``_round`` lets one evaluation round
run at a time. Neither a rule's query nor a delivery holds ``_lock``, so a hanging channel
never delays an acknowledgement, a silence or a rule change.

One round (:meth:`evaluate`), at ``now = engine.clock.now_ns()``:

1. every enabled rule is evaluated (:mod:`~server.alerting.evaluator`) in one trip to the pool,
   without ``_lock``; a rule that fails, or returns more groups than its ``limit``, is recorded
   (history ``evaluation_failed``, metric) and its instances keep their state — the other
   rules never notice;
2. under ``_lock``: instances advance (:mod:`~server.alerting.state`), new ones only while
   fewer than ``max_alerts`` are held (resolved ones are evicted to make room, then new ones
   are refused and counted); instances of a deleted or disabled rule resolve; silences are
   applied; notifications are planned (:mod:`~server.alerting.notifier`); the state and the
   round's transitions are saved (state file, then ``alerts_history``);
3. notifications are delivered concurrently, without ``_lock``;
4. under ``_lock``: what was sent is recorded in the state, which is saved again.

A crash during 3 re-sends at most that round's notifications; nothing sent in an earlier round
is sent again (the next round starts only after 4), and acknowledgements and silences survive
(they are saved when made).

Rules come from, later ones winning by name: the default pack (unless ``default_rules: false``),
the rules file (``rules_file``), then what the API created, replaced or deleted (kept in the
state file as ``rule_overrides``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from server.alerting.config import AlertingConfig
from server.alerting.evaluator import AlertSource, Sample, evaluate_rule
from server.alerting.history import History, Record
from server.alerting.metrics import AlertingMetrics
from server.alerting.notifier import Delivery, Job, Notifier
from server.alerting.rules import InvalidRule, Rule, load_rules_file, parse_rule, parse_rules
from server.alerting.silences import parse_silence, silence_state, silencing
from server.alerting.state import AlertState, Instance, Transition, step_rule
from tsengine.errors import InvalidInput, LimitExceeded, NotFound, TsengineError
from tsengine.instrument import CollectorRegistry

__all__ = ["AlertService", "default_rules"]

log = logging.getLogger("tsengine.alerting")

T = TypeVar("T")
_NS = 1_000_000_000
#: Bounds on what the API may make the service hold in memory.
MAX_SILENCES = 10_000
MAX_RULES = 10_000
#: Expired silences stay listed this long after their end, then go.
SILENCE_RETENTION_S = 86_400.0


def default_rules() -> list[Rule]:
    """The default rule pack shipped as ``server/alerting/default_rules.yaml``."""
    text = resources.files("server.alerting").joinpath("default_rules.yaml").read_text()
    return parse_rules(yaml.safe_load(text), "the default rule pack")


class AlertService:
    """See the module docstring.

    Args:
        engine: the engine (rules read it, history is written to it, its clock is "now").
        config: the parsed ``alerting:`` section.
        state_dir: where ``state.json`` lives (``<data>/_alerting``).
        registry: where the alerting metrics are registered.
    """

    def __init__(
        self,
        engine: Any,
        config: AlertingConfig,
        state_dir: Path,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.executor: Executor | None = None
        self.state = AlertState(state_dir / "state.json", max_alerts=config.max_alerts)
        self.history = History(engine, config.history_db)
        self.notifier = Notifier(config, self.state)
        self.metrics = AlertingMetrics(registry or CollectorRegistry())
        #: Guards the state (instances, silences, rules, records); never held across a delivery.
        self._lock = asyncio.Lock()
        #: One evaluation round at a time (a round's sends are recorded before the next plans).
        self._round = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._base: dict[str, tuple[Rule, str]] = {}
        if config.default_rules:
            self._base.update({r.name: (r, "default") for r in default_rules()})
        if config.rules_file:
            self._base.update({r.name: (r, "file") for r in load_rules_file(config.rules_file)})
        self.rules: dict[str, tuple[Rule, str]] = dict(self._base)
        self.last_errors: dict[str, str] = {}
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------

    def now_ns(self) -> int:
        return int(self.engine.clock.now_ns())

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(func, *args))

    async def start(self) -> None:
        """Load the saved state and open the HTTP session the channels use."""
        await self._run(self.state.load)
        self._apply_overrides()
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        async with self._round, self._lock:
            self._closed = True
            if self._session is not None:
                await self._session.close()
                self._session = None
            if self.state.path.exists() or not self.state.is_empty():
                await self._run(self.state.save)

    def _apply_overrides(self) -> None:
        rules = dict(self._base)
        for name, doc in self.state.rule_overrides.items():
            if doc is None:
                rules.pop(name, None)
                continue
            try:
                rules[name] = (parse_rule(doc), "api")
            except InvalidInput as exc:
                log.error("ignoring stored rule %s: %s", name, exc.reason)
        self.rules = rules

    # -- evaluation -------------------------------------------------------------------------------

    def _evaluate_all(self, rules: list[Rule], now_ns: int) -> dict[str, list[Sample] | str]:
        out: dict[str, list[Sample] | str] = {}
        source: AlertSource = self.engine
        for rule in rules:
            t0 = time.perf_counter()
            try:
                out[rule.name] = evaluate_rule(source, rule, now_ns)
            except TsengineError as exc:
                out[rule.name] = exc.reason
            except Exception as exc:  # one rule's bug must not stop the others (logged)
                log.exception("cannot evaluate rule %s", rule.name)
                out[rule.name] = f"{type(exc).__name__}: {exc}"
            finally:
                self.metrics.rule_duration.labels(rule.name).observe(time.perf_counter() - t0)
        return out

    async def evaluate(self) -> dict[str, Any]:
        """One round (see the module docstring); returns counts for the scheduler and the API.

        Rounds run one at a time (``_round``). The state lock (``_lock``) is held only to
        advance, plan and persist, and to record what was sent: the rules' queries and the
        deliveries run without it, so a slow channel never holds up an acknowledgement, a
        silence or a rule change.
        """
        async with self._round:
            if self._closed or self._session is None:
                return {"skipped": "the alert service is not running"}
            t0 = time.perf_counter()
            now = self.now_ns()
            enabled = [r for r, _ in self.rules.values() if r.enabled]
            results = await self._run(self._evaluate_all, enabled, now)
            async with self._lock:
                counts, jobs, n_records = await self._advance(enabled, results, now)
            deliveries: list[Delivery] = []
            if jobs:
                deliveries = await self.notifier.send(self._session, jobs, now)
                async with self._lock:
                    self.notifier.apply(jobs, deliveries)
                    sent = [r for d in deliveries for r in self._delivery_records(d)]
                    await self._persist(sent, now + n_records)
            states = self._update_gauges()
            self.metrics.round_duration.observe(time.perf_counter() - t0)
            return {
                **counts,
                "pending": states["pending"],
                "firing": states["firing"],
                "notifications_sent": sum(d.ok for d in deliveries),
                "notifications_failed": sum(not d.ok for d in deliveries),
            }

    async def _advance(
        self, evaluated: list[Rule], results: dict[str, list[Sample] | str], now: int
    ) -> tuple[dict[str, Any], list[Job], int]:
        """Under the state lock: advance the instances, plan the notifications, persist."""
        # A rule replaced, disabled or deleted while its query ran: its result is stale.
        enabled = [r for r in evaluated if self.rules.get(r.name, (None, ""))[0] is r]
        records: list[Record] = []
        transitions: list[Transition] = []
        errors = 0
        refused: dict[str, int] = {}
        for rule in enabled:
            result = results[rule.name]
            if isinstance(result, list) and rule.limit and len(result) > rule.limit:
                n = len({tuple(sorted(x.labels.items())) for x in result})  # as step_rule dedups
                if n > rule.limit:
                    result = (
                        f"cannot evaluate rule {rule.name!r}: {n} alerts exceed the rule's "
                        f"limit of {rule.limit}; its alerts are left unchanged"
                    )
            if isinstance(result, str):
                errors += 1
                self.last_errors[rule.name] = result
                self.metrics.rule_evaluations.labels(rule.name, "error").inc()
                records.append(Record("evaluation_failed", rule=rule.name, message=result))
                continue
            self.last_errors.pop(rule.name, None)
            self.metrics.rule_evaluations.labels(rule.name, "ok").inc()
            keep, trans, dropped = step_rule(rule, result, self.state.of_rule(rule.name), now)
            for iid in dropped:
                self.state.instances.pop(iid, None)
            new = [i for i in keep if i.id not in self.state.instances]
            admitted, evicted = self.state.room_for(len(new))
            self.metrics.evicted.inc(len(evicted))
            if len(new) > admitted:
                refused[rule.name] = len(new) - admitted
            gone = {i.id for i in new[admitted:]}
            for inst in keep:
                if inst.id not in gone:
                    self.state.instances[inst.id] = inst
            transitions.extend(t for t in trans if t.instance.id not in gone)
        if refused:
            total = sum(refused.values())
            self.metrics.refused.inc(total)
            for name, n in refused.items():
                self.last_errors[name] = (
                    f"cannot track {n} new alerts of rule {name!r}: {self.state.max_alerts} alerts "
                    "are in memory (alerting.max_alerts / ALERTS_MAX_ALERTS)"
                )
            log.error(
                "refused %d new alert instances (max_alerts=%d reached): %s", total, self.state.max_alerts,
                ", ".join(f"{k}={v}" for k, v in sorted(refused.items())),
            )  # fmt: skip
        transitions.extend(self._retire(now, {r.name for r in enabled}))
        for sid, silence in list(self.state.silences.items()):
            if now - silence["ends_at_ns"] > SILENCE_RETENTION_S * _NS:
                del self.state.silences[sid]
        for inst in self.state.instances.values():
            inst.silenced_by = silencing(self.state.silences, inst.effective_labels(), now)
        for inst in self.state.evict():
            self.metrics.evicted.inc()
            log.debug("evicted resolved alert %s (%s)", inst.id, inst.rule)
        records.extend(_transition_record(t, now) for t in transitions)
        jobs = self.notifier.plan(now, {n: r for n, (r, _) in self.rules.items()})
        await self._persist(records, now)
        counts = {"rules": len(evaluated), "errors": errors, "transitions": len(transitions),
                  "refused": sum(refused.values())}  # fmt: skip
        return counts, jobs, len(records)

    def _retire(self, now: int, live: set[str]) -> list[Transition]:
        """Instances of rules deleted or disabled: pending ones go, firing ones resolve."""
        out = []
        for iid, inst in list(self.state.instances.items()):
            if inst.rule in live or inst.state == "resolved":
                continue
            if inst.state == "pending":
                del self.state.instances[iid]
                out.append(Transition(inst, "inactive", "pending"))
            else:
                inst.state, inst.resolved_at_ns = "resolved", now
                out.append(Transition(inst, "resolved", "firing"))
        return out

    async def _persist(self, records: list[Record], now: int) -> None:
        data = self.state.to_json()
        await self._run(self.state.save, data)
        if records:
            try:
                await self._run(self.history.write, records, now)
            except TsengineError as exc:  # history is a record, not a reason to stop alerting
                log.error("cannot write %d alert history rows: %s", len(records), exc.reason)

    def _delivery_records(self, d: Delivery) -> list[Record]:
        result = "sent" if d.ok else "failed"
        self.metrics.notifications.labels(d.channel.name, result).inc()
        if not d.ok:
            log.warning("%s", d.error)
        n = d.notification
        return [
            Record(
                f"notification_{result}",
                rule=a.rule,
                instance=a.id,
                channel=d.channel.name,
                kind=n.kind,
                severity=n.severity or a.severity,
                value=a.value,
                labels=a.labels,
                message=d.error or a.state,
                attempts=d.attempts,
            )
            for a in n.alerts
        ]

    def _count_states(self) -> Counter[str]:
        # list() copies the values in one step: stats() runs on a pool thread while the event
        # loop may add or drop instances (iterating the dict itself could raise mid-way).
        return Counter(i.state for i in list(self.state.instances.values()))

    def _update_gauges(self) -> Counter[str]:
        """Set the instances-by-state gauge; returns the counts."""
        states = self._count_states()
        for state in ("pending", "firing", "resolved"):
            self.metrics.instances.labels(state).set(states[state])
        return states

    # -- alerts, acknowledgement ------------------------------------------------------------------

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        insts = sorted(self.state.instances.values(), key=lambda i: (i.rule, i.id))
        return [i.to_api() for i in insts if state is None or i.state == state]

    def alert(self, iid: str) -> Instance:
        inst = self.state.instances.get(iid)
        if inst is None:
            raise NotFound(f"cannot find alert {iid!r}: no such instance (it may have been evicted)")
        return inst

    async def acknowledge(self, iid: str, who: str, comment: str) -> dict[str, Any]:
        """Stop escalation and repeats of a firing (or pending) alert; saved before answering."""
        async with self._lock:
            inst = self.alert(iid)
            if inst.state == "resolved":
                raise InvalidInput(f"cannot acknowledge alert {iid!r}: it is resolved")
            now = self.now_ns()
            inst.acked_by, inst.ack_comment, inst.acked_at_ns = who, comment, now
            since = inst.fired_at_ns or inst.active_at_ns
            record = Record(
                "acknowledged", rule=inst.rule, instance=inst.id, severity=inst.severity, value=inst.value,
                labels=inst.labels, message=comment, duration_s=(now - since) / _NS, actor=who,
            )  # fmt: skip
            await self._persist([record], now)
            return inst.to_api()

    # -- silences ---------------------------------------------------------------------------------

    def silences(self) -> list[dict[str, Any]]:
        now = self.now_ns()
        ordered = sorted(self.state.silences.values(), key=lambda s: s["created_at_ns"])
        return [_silence_api(s, now) for s in ordered]

    async def add_silence(self, doc: Any) -> dict[str, Any]:
        async with self._lock:
            now = self.now_ns()
            silence = parse_silence(doc, now)
            if len(self.state.silences) >= MAX_SILENCES:
                raise LimitExceeded(
                    f"cannot create silence: {MAX_SILENCES} silences exist; delete some first"
                )
            self.state.silences[silence["id"]] = silence
            for inst in self.state.instances.values():
                inst.silenced_by = silencing(self.state.silences, inst.effective_labels(), now)
            await self._persist([Record("silence_created", message=", ".join(silence["matchers"]),
                                        actor=silence["created_by"])], now)  # fmt: skip
            return _silence_api(silence, now)

    async def delete_silence(self, sid: str) -> None:
        async with self._lock:
            if self.state.silences.pop(sid, None) is None:
                raise NotFound(f"cannot delete silence {sid!r}: no such silence")
            now = self.now_ns()
            for inst in self.state.instances.values():
                inst.silenced_by = [s for s in inst.silenced_by if s != sid]
            await self._persist([Record("silence_deleted", message=sid)], now)

    # -- rules ------------------------------------------------------------------------------------

    def list_rules(self) -> list[dict[str, Any]]:
        return [
            {**rule.to_dict(), "source": source, "last_error": self.last_errors.get(name)}
            for name, (rule, source) in sorted(self.rules.items())
        ]

    def get_rule(self, name: str) -> dict[str, Any]:
        if name not in self.rules:
            raise NotFound(f"cannot find rule {name!r}: no such rule")
        rule, source = self.rules[name]
        return {**rule.to_dict(), "source": source, "last_error": self.last_errors.get(name)}

    async def put_rule(self, doc: Any, *, name: str | None = None, create: bool = False) -> dict[str, Any]:
        """Create (``create``: refuse an existing name) or replace a rule; persisted before answering.

        With ``name`` (``PUT /api/v1/rules/{name}``) the name comes from the path; a document
        without ``kind`` is a partial update merged into the existing rule (``{"enabled": false}``),
        a document with ``kind`` replaces the rule whole.
        """
        if name is not None and isinstance(doc, dict):
            if doc.get("name", name) != name:
                raise InvalidRule(
                    str(doc["name"]), "name", f"differs from the rule named in the path ({name!r})"
                )
            doc = {**doc, "name": name}
        async with self._lock:
            if name is not None and isinstance(doc, dict) and "kind" not in doc:
                if name not in self.rules:
                    raise InvalidRule(name, "kind", "is required: there is no rule of this name to update")
                doc = {**self.rules[name][0].to_dict(), **doc}
            rule = parse_rule(doc)
            if create and rule.name in self.rules:
                raise InvalidRule(rule.name, "name", "is taken: use PUT /api/v1/rules/{name} to replace it")
            if rule.name not in self.rules and len(self.rules) >= MAX_RULES:
                raise LimitExceeded(f"cannot add rule {rule.name!r}: {MAX_RULES} rules exist")
            self.state.rule_overrides[rule.name] = rule.to_dict()
            self._apply_overrides()
            await self._persist([Record("rule_changed", rule=rule.name)], self.now_ns())
            return self.get_rule(rule.name)

    async def delete_rule(self, name: str) -> None:
        async with self._lock:
            if name not in self.rules:
                raise NotFound(f"cannot delete rule {name!r}: no such rule")
            self.state.rule_overrides[name] = None
            self._apply_overrides()
            await self._persist([Record("rule_deleted", rule=name)], self.now_ns())

    def stats(self, since_ns: int) -> dict[str, Any]:
        """Blocks (SQL): run on a pool."""
        out = self.history.stats(since_ns=since_ns)
        states = self._count_states()
        out["active"] = {s: states[s] for s in ("pending", "firing")}
        return out


def _silence_api(s: dict[str, Any], now: int) -> dict[str, Any]:
    return {**s, "state": silence_state(s, now), "starts_at": s["starts_at_ns"] / _NS,
            "ends_at": s["ends_at_ns"] / _NS}  # fmt: skip


def _transition_record(t: Transition, now: int) -> Record:
    inst = t.instance
    duration = None
    if t.event == "resolved" and inst.fired_at_ns is not None:
        duration = (now - inst.fired_at_ns) / _NS
    return Record(
        t.event, rule=inst.rule, instance=inst.id, severity=inst.severity, value=inst.value,
        labels=inst.labels, message=f"{t.from_state} -> {t.event}", duration_s=duration,
    )  # fmt: skip
