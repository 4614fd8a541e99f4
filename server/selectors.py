"""Prometheus series selectors: ``name``, ``name{label="v", l2=~"re", l3!="x", l4!~"re"}``, ``{...}``.

In: the ``match[]`` parameters of ``GET /federate``. Out: a :class:`Selector` (a list of
:class:`Matcher`), which :func:`matches` evaluates over Arrow string columns, vectorised.
Pure; raises :class:`~tsengine.errors.ParseError` naming the position and what was expected.

Semantics are Prometheus': a label a series does not have has the value ``""``; regular
expressions are fully anchored RE2 (Arrow's regex engine is RE2 too, so they agree); a selector
must contain at least one matcher that does not match the empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tsengine.errors import ParseError

__all__ = ["Matcher", "Selector", "matches", "parse_selector"]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "`": "`"}


@dataclass(frozen=True)
class Matcher:
    """``label op value``; ``op`` is one of ``=``, ``!=``, ``=~``, ``!~``."""

    label: str
    op: str
    value: str

    def matches_empty(self) -> bool:
        return bool(matches(self, pa.array([""]))[0].as_py())


@dataclass(frozen=True)
class Selector:
    text: str
    matchers: tuple[Matcher, ...]


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ParseError:
        return ParseError(f"cannot parse selector {self.text!r}: {what} at position {self.pos}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def name(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip_space()
        m = pattern.match(self.text, self.pos)
        if not m:
            raise self.fail(f"expected {what}")
        self.pos = m.end()
        return m.group()

    def op(self) -> str:
        self.skip_space()
        for op in _OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise self.fail("expected one of =, !=, =~, !~")

    def string(self) -> str:
        quote = self.peek()
        if quote not in ('"', "'", "`"):
            raise self.fail("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == quote:
                return "".join(out)
            if c == "\\" and quote != "`":
                if self.pos >= len(self.text) or self.text[self.pos] not in _ESCAPES:
                    raise self.fail("unknown escape sequence")
                out.append(_ESCAPES[self.text[self.pos]])
                self.pos += 1
            else:
                out.append(c)
        raise self.fail("unterminated string")


def parse_selector(text: str) -> Selector:
    """Parse one series selector (no range, offset or function)."""
    r = _Reader(text)
    matchers: list[Matcher] = []
    if r.peek() not in ("{", ""):
        matchers.append(Matcher("__name__", "=", r.name(_NAME_RE, "a metric name")))
    if r.peek() == "{":
        r.pos += 1
        while r.peek() != "}":
            label = r.name(_LABEL_RE, "a label name")
            op = r.op()
            value = r.string()
            matcher = Matcher(label, op, value)
            if op in ("=~", "!~"):
                try:  # RE2, as Prometheus and Arrow use it
                    matches(matcher, pa.array([""]))
                except pa.ArrowInvalid as exc:
                    raise r.fail(f"invalid regular expression {value!r} ({exc})") from None
            matchers.append(matcher)
            if r.peek() == ",":
                r.pos += 1
            elif r.peek() != "}":
                raise r.fail("expected ',' or '}'")
        r.pos += 1
    if r.peek():
        raise r.fail("unexpected text")
    if not matchers or all(m.matches_empty() for m in matchers):
        raise ParseError(
            f"cannot use selector {text!r}: it needs at least one matcher that does not match "
            "the empty string"
        )
    return Selector(text, tuple(matchers))


def matches(matcher: Matcher, values: pa.Array) -> pa.Array:
    """Boolean mask of ``values`` (a string column; null = label absent = "") matching."""
    filled = pc.fill_null(values, "") if values.null_count else values
    if matcher.op in ("=", "!="):
        hit = pc.equal(filled, matcher.value)
    else:
        hit = pc.match_substring_regex(filled, f"^(?:{matcher.value})$")
    return pc.invert(hit) if matcher.op in ("!=", "!~") else hit
