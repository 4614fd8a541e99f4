"""W3C Trace Context: write and read the ``traceparent`` / ``tracestate`` headers.

Who calls it: the client hooks (httpx, aiohttp TraceConfig) and applications with other
transports call :func:`inject` on an outgoing carrier; the server middleware hook and
applications call :func:`extract` on incoming headers and pass the result as ``parent=``.

Interoperable with OpenTelemetry's ``TraceContextTextMapPropagator`` both ways: the same header
format (``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``) and the same acceptance rules —
lower-case hex only; version ``ff`` refused; version ``00`` with anything after the flags
refused; a higher version may carry more fields after a ``-``; all-zero ids refused; at most
512 characters. A refused ``traceparent`` is ignored (the request starts a new trace), as the
W3C spec asks. ``tracestate`` is kept only with a valid ``traceparent``, and dropped whole when
any member is malformed, a key repeats, there are more than 32 members or it is longer than
512 characters — OTel's rules. Baggage is not propagated.

Carriers: ``inject`` sets items on any mutable mapping (``dict``, ``CIMultiDict``, httpx
``Headers``); ``extract`` reads with ``.get`` from any mapping. Header names are lower case, as
HTTP/2 and OTel's propagator write them; case-insensitive mappings accept them as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from tsengine.instrument._tracing.span import Span, SpanContext, current_span_var

__all__ = ["TRACEPARENT", "TRACESTATE", "extract", "inject", "parse_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_MAX_TRACEPARENT = 512
_MAX_TRACESTATE = 512
_MAX_TRACESTATE_MEMBERS = 32
# The W3C grammar (OTel's regex, anchored with fullmatch): a version other than 00 may be
# followed by more fields after a "-"; optional spaces/tabs around the value.
_TRACEPARENT = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)")
_FLAGS = {f"{i:02x}": i for i in range(256)}
_FLAGS_HEX = [f"{i:02x}" for i in range(256)]

# OpenTelemetry's (and the W3C spec's) tracestate member grammar.
_KEY = r"[a-z][_0-9a-z\-\*\/]{0,255}|[a-z0-9][_0-9a-z\-\*\/]{0,240}@[a-z][_0-9a-z\-\*\/]{0,13}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")


def inject(carrier: MutableMapping[str, str], span: Span | SpanContext | None = None) -> None:
    """Write ``traceparent`` (and ``tracestate`` if any) for ``span`` (default: the current span).

    Does nothing when there is no span. An unsampled span is propagated too (flags ``00``), so
    the services downstream honour the decision.
    """
    if span is None:
        span = current_span_var.get()
        if span is None:
            return
    if not span.trace_id:  # the disabled tracer's id-less span: nothing to propagate
        return
    carrier[TRACEPARENT] = (
        f"00-{span.trace_id:032x}-{span.span_id:016x}-{_FLAGS_HEX[span.trace_flags & 0xFF]}"
    )
    if span.trace_state:
        carrier[TRACESTATE] = span.trace_state


def extract(carrier: Mapping[str, Any]) -> SpanContext | None:
    """The remote parent in ``carrier``'s headers, or None when absent or invalid (see module doc)."""
    value = carrier.get(TRACEPARENT)
    if not value:
        return None
    if type(value) is not str:
        if isinstance(value, list | tuple):  # a getter giving all values: the first one counts
            value = value[0]
        if not isinstance(value, str):
            return None
    ctx = parse_traceparent(value)
    if ctx is None:
        return None
    state = carrier.get(TRACESTATE)
    if state:
        ctx.trace_state = parse_tracestate(state)
    return ctx


def parse_traceparent(value: str) -> SpanContext | None:
    """A remote :class:`SpanContext` from one ``traceparent`` value, or None when invalid."""
    if len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (rest is not None and version == "00"):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, _FLAGS[flags], "", True)


def parse_tracestate(value: Any) -> str:
    """The validated ``tracestate`` (members joined by ``,``), or ``""`` when invalid."""
    headers = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    if sum(len(h) for h in headers) + len(headers) - 1 > _MAX_TRACESTATE:
        return ""
    keys: set[str] = set()
    members: list[str] = []
    for header in headers:
        for raw in header.split(","):
            member = raw.strip(" \t")
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None or match.group(1) in keys:
                return ""
            keys.add(match.group(1))
            members.append(member)
    if len(members) > _MAX_TRACESTATE_MEMBERS:
        return ""
    return ",".join(members)
