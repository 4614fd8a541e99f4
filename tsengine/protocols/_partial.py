"""The result of an OTLP decode that may reject some items: what is valid, and why the rest is not.

Shared by :mod:`tsengine.protocols.otlp_traces` (spans) and :mod:`tsengine.protocols.otlp_logs`
(log records): both answer a request with OTLP's ``partial_success`` when some items cannot be
stored. Pure data; picklable (the span decoder sends it back from its child processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tsengine.model import TableBatch

__all__ = ["PartialBatch"]


@dataclass(frozen=True)
class PartialBatch:
    """The decoded request: the rows of the valid items, and what was rejected and why."""

    batch: TableBatch | None  # None when no item is valid (or the request holds none)
    rejected: int
    reasons: tuple[str, ...]  # the first MAX_REASONS "<item>: <reason>"
    #: How the message names the items ("span(s)", "log record(s)").
    items: ClassVar[str] = "item(s)"

    @property
    def accepted(self) -> int:
        return self.batch.num_rows if self.batch is not None else 0

    @property
    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.reasons)
        tail = f" (and {more} more)" if more > 0 else ""
        return f"rejected {self.rejected} {self.items}: " + "; ".join(self.reasons) + tail
