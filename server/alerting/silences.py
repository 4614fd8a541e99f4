"""Silences: label matchers with a start and an expiry; a silenced alert is not notified.

Who calls it: the silence API (:mod:`server.routes.alerts`) creates them, the notifier asks
:func:`silencing` which active silences cover an alert. In: a JSON document
``{"matchers": [...], "starts_at"?, "ends_at" | "duration", "created_by", "comment"}``
(matchers as in :mod:`server.alerting.matchers`; times as epoch seconds or RFC 3339), or
Alertmanager's shape (``matchers: [{name, value, isRegex, isEqual}]``, ``startsAt``,
``endsAt``, ``createdBy``, ``comment``). Out: the
stored silence (a plain dict in :attr:`AlertState.silences`, so it persists with the state).
Silences are evaluated against the engine's clock; an expired one stays listed (``state:
"expired"``) until deleted, or for a day after its end (``SILENCE_RETENTION_S``); at
most ``MAX_SILENCES`` exist at once (:mod:`server.alerting.service`).
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Mapping
from typing import Any

from server.alerting.matchers import Matcher, parse_matchers
from server.alerting.rules import parse_duration
from tsengine.errors import InvalidInput

__all__ = ["epoch_ns", "parse_silence", "silence_state", "silencing"]

_NS = 1_000_000_000


def epoch_ns(raw: Any) -> int | None:
    """Epoch seconds (a finite number) or an RFC 3339 string (UTC when it names no zone) as
    epoch nanoseconds; None when ``raw`` is neither. Also reads the history API's ``start``/``end``."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return int(raw * _NS) if math.isfinite(raw) else None
    if not isinstance(raw, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * _NS)


def _time_ns(raw: Any, key: str) -> int:
    ns = epoch_ns(raw)
    if ns is None:
        raise InvalidInput(f"cannot create silence: {key} must be epoch seconds or RFC 3339, got {raw!r}")
    return ns


#: Alertmanager's ``POST /api/v2/silences`` keys and ours.
_AM_KEYS = {"startsAt": "starts_at", "endsAt": "ends_at", "createdBy": "created_by"}


def _from_alertmanager(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """Alertmanager's silence shape (``startsAt``, ``endsAt``, ``createdBy``) in ours."""
    if not any(k in doc for k in _AM_KEYS):
        return doc
    out = dict(doc)
    for am, ours in _AM_KEYS.items():
        if am in out:
            if ours in out:
                raise InvalidInput(f"cannot create silence: give {am} or {ours}, not both")
            out[ours] = out.pop(am)
    return out


def parse_silence(doc: Any, now_ns: int) -> dict[str, Any]:
    """Validate a silence document; returns the stored form (with a new ``id``).

    Raises:
        InvalidInput: naming the key at fault.
    """
    if not isinstance(doc, Mapping):
        raise InvalidInput("cannot create silence: expected a JSON object")
    doc = _from_alertmanager(doc)
    unknown = set(doc) - {"matchers", "starts_at", "ends_at", "duration", "created_by", "comment"}
    if unknown:
        raise InvalidInput(f"cannot create silence: unknown keys {sorted(unknown)}")
    try:
        matchers = parse_matchers(doc.get("matchers"))
    except ValueError as exc:
        raise InvalidInput(f"cannot create silence: matchers: {exc}") from None
    if not matchers:
        raise InvalidInput("cannot create silence: matchers must not be empty")
    if all(m.matches("") for m in matchers):
        raise InvalidInput("cannot create silence: matchers match every alert (one must need a value)")
    starts = _time_ns(doc["starts_at"], "starts_at") if doc.get("starts_at") is not None else now_ns
    if doc.get("ends_at") is not None:
        ends = _time_ns(doc["ends_at"], "ends_at")
    elif doc.get("duration") is not None:
        try:
            ends = starts + int(parse_duration(doc["duration"]) * _NS)
        except ValueError as exc:
            raise InvalidInput(f"cannot create silence: duration: {exc}") from None
    else:
        raise InvalidInput("cannot create silence: give ends_at or duration (a silence must expire)")
    if ends <= starts or ends <= now_ns:
        raise InvalidInput("cannot create silence: it ends before it starts or in the past")
    for key in ("created_by", "comment"):
        if not isinstance(doc.get(key, ""), str):
            raise InvalidInput(f"cannot create silence: {key} must be a string")
    return {
        "id": secrets.token_hex(8),
        "matchers": [str(m) for m in matchers],
        "starts_at_ns": starts,
        "ends_at_ns": ends,
        "created_by": doc.get("created_by", ""),
        "comment": doc.get("comment", ""),
        "created_at_ns": now_ns,
    }


def silence_state(silence: Mapping[str, Any], now_ns: int) -> str:
    if now_ns < silence["starts_at_ns"]:
        return "pending"
    return "active" if now_ns < silence["ends_at_ns"] else "expired"


def _matchers(silence: Mapping[str, Any]) -> tuple[Matcher, ...]:
    return parse_matchers(list(silence["matchers"]))


def silencing(silences: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], now_ns: int) -> list[str]:
    """Ids of the active silences whose matchers all match ``labels``."""
    return [
        sid
        for sid, s in silences.items()
        if silence_state(s, now_ns) == "active" and all(m.matches(labels.get(m.name)) for m in _matchers(s))
    ]
