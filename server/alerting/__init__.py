"""The alert manager: rules over the engine's tables, alert state, notifications.

In: rules (the default pack ``default_rules.yaml``, a rules file, the rule API), the engine's
data and clock, the ``alerting:`` section of the server config. Out: alert instances
(``GET /api/v1/alerts``), notifications (console, webhook, Slack, e-mail, Alertmanager), the
``alerts_history`` table, the alerting metrics. Who calls it: :func:`setup_alerting`, from the
app factory; the scheduler's ``alert_evaluation`` task; :mod:`server.routes.alerts`.

Modules, data flowing down: :mod:`.rules` (document → :class:`Rule`), :mod:`.templates`,
:mod:`.matchers`, :mod:`.evaluator` (rule + engine → samples), :mod:`.state` (samples →
instances, the state file), :mod:`.silences`, :mod:`.notifier` (routing, grouping, repeat,
escalation, rate limits), :mod:`.channels` (deliveries), :mod:`.history`
(``alerts_history``), :mod:`.metrics`, :mod:`.config` and :mod:`.service` (one round, the API's
operations). See ``docs/alerting.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server.alerting.config import AlertingConfig, parse_alerting
from server.alerting.rules import InvalidRule, Rule, load_rules_file, parse_rule
from server.alerting.service import AlertService, default_rules
from server.keys import ALERTING_KEY, CONFIG_KEY, ENGINE_KEY, EXECUTORS_KEY, METRICS_KEY, SCHEDULER_KEY
from server.routes import alerts
from server.scheduler import interval_for

__all__ = [
    "AlertService",
    "AlertingConfig",
    "InvalidRule",
    "Rule",
    "default_rules",
    "load_rules_file",
    "parse_alerting",
    "parse_rule",
    "setup_alerting",
]

#: The scheduler task that evaluates every rule (``tasks.intervals.alert_evaluation``).
TASK = "alert_evaluation"


def setup_alerting(app: web.Application) -> AlertService:
    """Build the alert service of ``app``: its routes, its scheduler task, its lifecycle.

    Call once, after the app's pools and scheduler are set up (the app factory does).

    Raises:
        InvalidInput: the ``alerting:`` section or the rules file does not validate.
    """
    config = app[CONFIG_KEY]
    engine = app[ENGINE_KEY]
    alerting = parse_alerting(config.alerting)
    service = AlertService(
        engine, alerting, Path(engine.path) / "_alerting", registry=app[METRICS_KEY].registry
    )
    app[ALERTING_KEY] = service
    app.router.add_routes(alerts.ROUTES)
    if alerting.enabled:
        app[SCHEDULER_KEY].add(TASK, service.evaluate, interval_for(config.tasks, TASK))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        service.executor = app[EXECUTORS_KEY]["background"]
        await service.start()
        yield
        await service.close()

    app.cleanup_ctx.append(lifecycle)
    return service
