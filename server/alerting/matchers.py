"""Label matchers (``=``, ``!=``, ``=~``, ``!~``), as Prometheus and Alertmanager write them.

Who calls it: :mod:`server.alerting.evaluator` (a rule's ``where`` tag filters become SQL),
:mod:`server.alerting.silences` and :mod:`server.alerting.notifier` (silences and routes match
alert labels). Pure.

Forms accepted:

* a rule's ``where: {tag: value}`` — ``value`` is an exact match unless it starts with an
  operator: ``"=~5.."``, ``"!~GET|HEAD"``, ``"!=prod"``, ``"=x"`` (exact, for a value that itself
  starts with ``=`` or ``!``);
* a matcher string ``service="api"`` / ``status=~"5.."`` (quotes optional);
* Alertmanager's JSON ``{"name", "value", "isRegex", "isEqual"}``.

Regexes are anchored (full match), as in Prometheus. An absent label matches as ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OPS", "Matcher", "parse_matcher", "parse_matchers", "parse_where"]

OPS = ("=", "!=", "=~", "!~")
_STRING_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    """``name op value``; ``matches`` takes the label's value (``""`` when absent)."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"matcher {self.name}: operator {self.op!r} is not one of {list(OPS)}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}: invalid regex {self.value!r}: {exc}") from None

    def matches(self, value: str | None) -> bool:
        v = value or ""
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit

    def sql(self, column: str) -> tuple[str, str]:
        """A SQL condition with one ``?`` parameter, and the parameter."""
        col = f"coalesce({column}, '')"
        if self.op == "=":
            return f"{col} = ?", self.value
        if self.op == "!=":
            return f"{col} <> ?", self.value
        neg = "NOT " if self.op == "!~" else ""
        return f"{neg}regexp_full_match({col}, ?)", self.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value,
            "isRegex": self.op in ("=~", "!~"), "isEqual": self.op in ("=", "=~"),
        }  # fmt: skip

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_where(where: Mapping[str, str]) -> dict[str, Matcher]:
    """A rule's ``where`` mapping as matchers (see the module docstring for the value forms)."""
    out = {}
    for tag, raw in where.items():
        for op in ("=~", "!~", "!=", "="):
            if raw.startswith(op):
                out[tag] = Matcher(tag, op, raw[len(op) :])
                break
        else:
            out[tag] = Matcher(tag, "=", raw)
    return out


def parse_matcher(raw: Any) -> Matcher:
    """One matcher from a string or Alertmanager's JSON form.

    Raises:
        ValueError: naming what is wrong.
    """
    if isinstance(raw, str):
        m = _STRING_RE.match(raw)
        if not m:
            raise ValueError(f"matcher {raw!r} is not name=value, name!=value, name=~re or name!~re")
        value = m.group(3)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return Matcher(m.group(1), m.group(2), value)
    if isinstance(raw, Mapping):
        name, value = raw.get("name"), raw.get("value")
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise ValueError(f"matcher {raw!r} needs string 'name' and 'value'")
        regex, equal = raw.get("isRegex", False), raw.get("isEqual", True)
        if not isinstance(regex, bool) or not isinstance(equal, bool):
            raise ValueError(f"matcher {raw!r}: isRegex and isEqual must be booleans")
        op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        return Matcher(name, op, value)
    raise ValueError(f"matcher {raw!r} must be a string or {{name, value, isRegex, isEqual}}")


def parse_matchers(raw: Any) -> tuple[Matcher, ...]:
    """A list of matchers, or a ``{label: value}`` mapping read like a rule's ``where``."""
    if isinstance(raw, Mapping) and "name" not in raw:
        bad = [k for k, v in raw.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"matcher {bad[0]!r} must have a string value")
        return tuple(parse_where(raw).values())
    if not isinstance(raw, list):
        raise ValueError("matchers must be a list or a {label: value} mapping")
    return tuple(parse_matcher(m) for m in raw)
