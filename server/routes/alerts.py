"""Alerting API: rules, alerts, acknowledgements, silences, history and statistics.

* ``GET /api/v1/rules``, ``GET /api/v1/rules/{name}`` (admin) — rules with ``source``
  (default/file/api) and the last evaluation error;
* ``POST /api/v1/rules`` (create), ``PUT /api/v1/rules/{name}`` (create or replace; a body
  without ``kind`` is merged into the existing rule, e.g. ``{"enabled": false}``),
  ``DELETE /api/v1/rules/{name}`` (admin) — persisted; a bad rule is a 400 naming the rule and
  the field; the body is JSON, or YAML with ``Content-Type: application/yaml``;
* ``POST /api/v1/rules/evaluate`` (admin) — one evaluation round now, its counts as the answer;
* ``GET /api/v1/alerts[?state=firing]`` (read), ``GET /api/v1/alerts/{id}`` (read);
* ``POST /api/v1/alerts/{id}/ack`` (write) — ``{"by": "alice", "comment": "on it"}``;
* ``GET /api/v1/silences`` (read), ``POST /api/v1/silences`` (write; ours or Alertmanager's shape),
  ``DELETE /api/v1/silences/{id}`` (write);
* ``GET /api/v1/alerts/history?rule=&instance=&event=&channel=&since=3600&limit=100`` (or
  ``start=``/``end=`` as epoch seconds or RFC 3339 instead of ``since``) and
  ``GET /api/v1/alerts/stats?since=604800`` (read; ``since`` in seconds back from now).

Handlers parse and answer; the work is :class:`server.alerting.service.AlertService`'s.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import yaml
from aiohttp import web

from server.alerting.silences import epoch_ns
from server.auth import requires
from server.body import decode_body, read_body
from server.keys import ALERTING_KEY, run_blocking
from tsengine.errors import InvalidInput, ParseError

__all__ = ["ROUTES"]

_MAX_BODY = 1024 * 1024
_NS = 1_000_000_000
#: Rows one history answer carries at most (they are built in memory).
_MAX_HISTORY_ROWS = 100_000


def _json(data: object, status: int = 200) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(status=status, body=body, content_type="application/json")


async def _document(request: web.Request, what: str) -> Any:
    raw = decode_body(await read_body(request, _MAX_BODY), _MAX_BODY)
    if request.content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParseError(f"cannot read {what}: invalid YAML ({exc})") from exc
    try:
        return orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"cannot read {what}: invalid JSON ({exc})") from exc


def _seconds(request: web.Request, key: str, default: float) -> float:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"cannot read query parameter {key}={raw!r}: not a number of seconds") from None
    if not 0 <= value < math.inf:
        raise InvalidInput(f"cannot read query parameter {key}={raw!r}: must be a finite number >= 0")
    return value


def _time_ns(request: web.Request, key: str) -> int:
    """A query parameter as epoch seconds or RFC 3339 (``2026-11-27T10:00:00Z``)."""
    raw = request.query[key]
    try:
        ns = epoch_ns(float(raw))
    except ValueError:
        ns = epoch_ns(raw)
    if ns is None:
        raise InvalidInput(
            f"cannot read query parameter {key}={raw!r}: not epoch seconds or an RFC 3339 time"
        )
    return ns


# -- rules ---------------------------------------------------------------------------------------


@requires("admin")
async def list_rules(request: web.Request) -> web.StreamResponse:
    return _json({"rules": request.app[ALERTING_KEY].list_rules()})


@requires("admin")
async def get_rule(request: web.Request) -> web.StreamResponse:
    return _json(request.app[ALERTING_KEY].get_rule(request.match_info["name"]))


@requires("admin")
async def create_rule(request: web.Request) -> web.StreamResponse:
    doc = await _document(request, "rule")
    return _json(await request.app[ALERTING_KEY].put_rule(doc, create=True), status=201)


@requires("admin")
async def replace_rule(request: web.Request) -> web.StreamResponse:
    doc = await _document(request, "rule")
    return _json(await request.app[ALERTING_KEY].put_rule(doc, name=request.match_info["name"]))


@requires("admin")
async def delete_rule(request: web.Request) -> web.StreamResponse:
    await request.app[ALERTING_KEY].delete_rule(request.match_info["name"])
    return web.Response(status=204)


@requires("admin")
async def evaluate(request: web.Request) -> web.StreamResponse:
    return _json(await request.app[ALERTING_KEY].evaluate())


# -- alerts --------------------------------------------------------------------------------------


@requires("read")
async def list_alerts(request: web.Request) -> web.StreamResponse:
    state = request.query.get("state")
    if state is not None and state not in ("pending", "firing", "resolved"):
        raise InvalidInput(f"cannot list alerts: state={state!r} is not pending, firing or resolved")
    return _json({"alerts": request.app[ALERTING_KEY].alerts(state)})


@requires("read")
async def get_alert(request: web.Request) -> web.StreamResponse:
    return _json(request.app[ALERTING_KEY].alert(request.match_info["id"]).to_api())


@requires("write")
async def ack_alert(request: web.Request) -> web.StreamResponse:
    doc = await _document(request, "acknowledgement")
    if not isinstance(doc, dict):
        raise InvalidInput('cannot acknowledge alert: expected {"by": "...", "comment": "..."}')
    by, comment = doc.get("by"), doc.get("comment", "")
    if not isinstance(by, str) or not by.strip():
        raise InvalidInput("cannot acknowledge alert: 'by' (who acknowledges) must be a non-empty string")
    if not isinstance(comment, str):
        raise InvalidInput("cannot acknowledge alert: 'comment' must be a string")
    return _json(await request.app[ALERTING_KEY].acknowledge(request.match_info["id"], by, comment))


@requires("read")
async def history(request: web.Request) -> web.StreamResponse:
    service = request.app[ALERTING_KEY]
    now_ns = service.now_ns()
    since_ns = now_ns - int(_seconds(request, "since", 86400.0) * _NS)
    if "start" in request.query:
        since_ns = _time_ns(request, "start")
    until_ns = _time_ns(request, "end") if "end" in request.query else None
    if until_ns is not None and until_ns < since_ns:
        raise InvalidInput("cannot read alert history: end is before start")
    raw_limit = request.query.get("limit", "1000")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= _MAX_HISTORY_ROWS:
        raise InvalidInput(f"cannot read query parameter limit={raw_limit!r}: must be 1..{_MAX_HISTORY_ROWS}")
    limit = int(raw_limit)
    filters = {k: v for k, v in request.query.items() if k not in ("since", "start", "end", "limit")}
    rows = await run_blocking(
        request,
        "query",
        lambda: service.history.query(since_ns=since_ns, until_ns=until_ns, filters=filters, limit=limit),
    )
    return _json({"history": rows})


@requires("read")
async def stats(request: web.Request) -> web.StreamResponse:
    service = request.app[ALERTING_KEY]
    since_ns = service.now_ns() - int(_seconds(request, "since", 7 * 86400.0) * _NS)
    return _json(await run_blocking(request, "query", service.stats, since_ns))


# -- silences ------------------------------------------------------------------------------------


@requires("read")
async def list_silences(request: web.Request) -> web.StreamResponse:
    return _json({"silences": request.app[ALERTING_KEY].silences()})


@requires("write")
async def create_silence(request: web.Request) -> web.StreamResponse:
    doc = await _document(request, "silence")
    return _json(await request.app[ALERTING_KEY].add_silence(doc), status=201)


@requires("write")
async def delete_silence(request: web.Request) -> web.StreamResponse:
    await request.app[ALERTING_KEY].delete_silence(request.match_info["id"])
    return web.Response(status=204)


ROUTES = [
    web.get("/api/v1/rules", list_rules),
    web.post("/api/v1/rules", create_rule),
    web.post("/api/v1/rules/evaluate", evaluate),
    web.get("/api/v1/rules/{name}", get_rule),
    web.put("/api/v1/rules/{name}", replace_rule),
    web.delete("/api/v1/rules/{name}", delete_rule),
    web.get("/api/v1/alerts", list_alerts),
    web.get("/api/v1/alerts/history", history),
    web.get("/api/v1/alerts/stats", stats),
    web.get("/api/v1/alerts/{id}", get_alert),
    web.post("/api/v1/alerts/{id}/ack", ack_alert),
    web.get("/api/v1/silences", list_silences),
    web.post("/api/v1/silences", create_silence),
    web.delete("/api/v1/silences/{id}", delete_silence),
]
