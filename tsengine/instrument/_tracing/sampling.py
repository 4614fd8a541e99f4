"""Samplers: decide at a span's start whether its trace is recorded and exported.

Who calls them: :class:`~tsengine.instrument.Tracer` for every new span, with the parent's
context (None for a root span) and the trace id. What comes out: True (record and sample:
the ``sampled`` flag is set and propagated) or False.

The four samplers of OpenTelemetry, with the same decisions:

* :data:`ALWAYS_ON`, :data:`ALWAYS_OFF`;
* :class:`TraceIdRatioBased` — keeps a trace when the low 64 bits of its trace id are below
  ``round(rate * 2**64)``, exactly OTel's ``TraceIdRatioBased``: every service that samples
  with the same rate takes the same decision for the same trace, so a trace is never half-kept,
  and tsengine and OTel services agree with each other;
* :class:`ParentBased` — follows the parent's ``sampled`` flag when there is a parent (local
  or remote, each overridable), and asks ``root`` for root spans. The tracer's default is
  ``ParentBased(TraceIdRatioBased(TRACING_SAMPLING_RATE))``.

Samplers are immutable and thread-safe; ``should_sample`` is called on the request path and
is a few comparisons.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tsengine.instrument._tracing.span import Span, SpanContext, SpanKind

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "ParentBased",
    "Sampler",
    "StaticSampler",
    "TraceIdRatioBased",
    "fast_root_bound",
]

_LOW_64 = (1 << 64) - 1


@runtime_checkable
class Sampler(Protocol):
    """Decides whether a new span's trace is sampled."""

    def should_sample(
        self, parent: Span | SpanContext | None, trace_id: int, name: str, kind: SpanKind
    ) -> bool: ...

    def describe(self) -> str: ...


class StaticSampler:
    """Always the same decision (:data:`ALWAYS_ON` / :data:`ALWAYS_OFF`)."""

    __slots__ = ("decision",)

    def __init__(self, decision: bool) -> None:
        self.decision = decision

    def should_sample(
        self, parent: Span | SpanContext | None, trace_id: int, name: str, kind: SpanKind
    ) -> bool:
        return self.decision

    def describe(self) -> str:
        return "AlwaysOnSampler" if self.decision else "AlwaysOffSampler"

    def __repr__(self) -> str:
        return self.describe()


ALWAYS_ON = StaticSampler(True)
ALWAYS_OFF = StaticSampler(False)


class TraceIdRatioBased:
    """Keep the fraction ``rate`` of traces, deterministically on the trace id (see module doc)."""

    __slots__ = ("bound", "rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:  # also refuses NaN
            raise ValueError(f"cannot use sampling rate {rate!r}: must be within 0..1")
        self.rate = rate
        self.bound = round(rate * (_LOW_64 + 1))  # OTel's get_bound_for_rate

    def should_sample(
        self, parent: Span | SpanContext | None, trace_id: int, name: str, kind: SpanKind
    ) -> bool:
        return trace_id & _LOW_64 < self.bound

    def describe(self) -> str:
        return f"TraceIdRatioBased{{{self.rate}}}"

    def __repr__(self) -> str:
        return self.describe()


class ParentBased:
    """Follow the parent's decision; ``root`` decides for root spans.

    Args:
        root: sampler for spans without a parent.
        remote_parent_sampled / remote_parent_not_sampled: for a parent extracted from headers.
        local_parent_sampled / local_parent_not_sampled: for a parent in this process.
    """

    __slots__ = ("local_not_sampled", "local_sampled", "remote_not_sampled", "remote_sampled", "root")

    def __init__(
        self,
        root: Sampler,
        *,
        remote_parent_sampled: Sampler = ALWAYS_ON,
        remote_parent_not_sampled: Sampler = ALWAYS_OFF,
        local_parent_sampled: Sampler = ALWAYS_ON,
        local_parent_not_sampled: Sampler = ALWAYS_OFF,
    ) -> None:
        self.root = root
        self.remote_sampled = remote_parent_sampled
        self.remote_not_sampled = remote_parent_not_sampled
        self.local_sampled = local_parent_sampled
        self.local_not_sampled = local_parent_not_sampled

    def should_sample(
        self, parent: Span | SpanContext | None, trace_id: int, name: str, kind: SpanKind
    ) -> bool:
        if parent is None:
            return self.root.should_sample(None, trace_id, name, kind)
        sampled = parent.trace_flags & 1
        if type(parent) is SpanContext and parent.is_remote:
            sampler = self.remote_sampled if sampled else self.remote_not_sampled
        else:
            sampler = self.local_sampled if sampled else self.local_not_sampled
        return sampler.should_sample(parent, trace_id, name, kind)

    def describe(self) -> str:
        return f"ParentBased{{root:{self.root.describe()}}}"

    def __repr__(self) -> str:
        return self.describe()


def fast_root_bound(sampler: Sampler) -> int | None:
    """For a ``ParentBased`` sampler with the default parent rules and an always-on/off or ratio
    root: the bound such that a root span is sampled iff ``trace_id & (2**64 - 1) < bound``
    (children follow their parent's flag). None for any other sampler (it is called instead).

    The tracer uses it to decide without calling the sampler — the same decision, cheaper.
    """
    if type(sampler) is not ParentBased:
        return None
    if (sampler.remote_sampled, sampler.local_sampled) != (ALWAYS_ON, ALWAYS_ON) or (
        sampler.remote_not_sampled,
        sampler.local_not_sampled,
    ) != (ALWAYS_OFF, ALWAYS_OFF):
        return None
    root = sampler.root
    if root is ALWAYS_ON:
        return _LOW_64 + 1
    if root is ALWAYS_OFF:
        return 0
    if type(root) is TraceIdRatioBased:
        return root.bound
    return None
