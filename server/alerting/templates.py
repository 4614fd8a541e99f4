"""Annotation templates: the small subset of Prometheus' Go templates that alerts use.

Who calls it: :mod:`server.alerting.rules` (checks each annotation when a rule loads) and
:mod:`server.alerting.service` (renders annotations for each alert instance). In: a template
text, the instance's labels and value. Out: the rendered text. Pure.

Supported, inside ``{{ ... }}``:

* ``$labels.NAME`` (or ``$labels["NAME"]``): the label's value, empty when absent;
* ``$value``: the value (``%g``); ``$value | printf "%.2f"`` for a printf format;
  ``$value | humanize`` for 1.2k/3.4M style; ``$value | humanizePercentage`` (0.05 → 5%);
* ``$rule``, ``$severity``: the rule's name and severity.

Anything else is rejected when the rule loads, naming the annotation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["check_template", "render"]

_ACTION = re.compile(r"{{\s*(.*?)\s*}}")
_LABEL = re.compile(r'^\$labels(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"]+)"\s*\])$')
_PRINTF = re.compile(r'^printf\s+"(%[-+ #0]*\d*(?:\.\d+)?[dfeEgGs%])"$')


def _humanize(v: float) -> str:
    if not math.isfinite(v) or v == 0:
        return f"{v:g}"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.4g}{suffix}"
    return f"{v:.4g}"


def _eval(expr: str, labels: Mapping[str, str], value: float, rule: str, severity: str) -> str:
    head, _, pipe = expr.partition("|")
    head, pipe = head.strip(), pipe.strip()
    m = _LABEL.match(head)
    if m:
        if pipe:
            raise ValueError(f"template {{{{ {expr} }}}}: labels take no pipeline")
        return labels.get(m.group(1) or m.group(2), "")
    if head in ("$rule", "$severity") and not pipe:
        return rule if head == "$rule" else severity
    if head != "$value":
        raise ValueError(f"template {{{{ {expr} }}}}: use $labels.NAME, $value, $rule or $severity")
    if not pipe:
        return f"{value:g}"
    if pipe == "humanize":
        return _humanize(value)
    if pipe == "humanizePercentage":
        return f"{value * 100:.4g}%"
    pm = _PRINTF.match(pipe)
    if pm:
        fmt = pm.group(1)
        return fmt % (int(value) if fmt.endswith("d") and math.isfinite(value) else value)
    raise ValueError(f'template {{{{ {expr} }}}}: unknown pipeline (printf "%.2f", humanize, ...)')


def render(text: str, labels: Mapping[str, str], value: float, *, rule: str = "", severity: str = "") -> str:
    """Render ``text``; an invalid action renders as itself (rules are checked when loaded)."""

    def one(m: re.Match[str]) -> str:
        try:
            return _eval(m.group(1), labels, value, rule, severity)
        except (ValueError, TypeError):
            return m.group(0)

    return _ACTION.sub(one, text)


def check_template(text: str) -> None:
    """Raise ``ValueError`` naming the first unsupported action in ``text``."""
    if text.count("{{") != text.count("}}"):
        raise ValueError("has unbalanced '{{' and '}}'")
    for m in _ACTION.finditer(text):
        _eval(m.group(1), {}, 1.0, "", "")
