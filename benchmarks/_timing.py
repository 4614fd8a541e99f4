"""Timing toolkit of the in-process and HTTP benchmarks: timed loops, best of repeats, ratio tables.

Who calls it: :mod:`benchmarks.bench_instrument`, :mod:`benchmarks.bench_tracing` (ns per
operation against a peer library), :mod:`benchmarks.bench_middleware` (best of wrk rounds),
:mod:`benchmarks.bench_http_ingest`, :mod:`benchmarks.bench_span_ingest` (median of repeated
runs), :mod:`benchmarks.bench_lifecycle` (wall time of one step). What comes in: zero-argument
callables, or dicts of figures per run. What goes out: nanoseconds per call, the chosen run,
text rows of a table.

On a shared machine absolute times move with the load; the helpers interleave the variants
within each repeat and keep the best, so a burst of noise hits every variant alike and ratios
of one run hold. Every call here blocks for as long as it measures.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "Column",
    "best_ns_async",
    "compare",
    "empty",
    "format_table",
    "keep_best",
    "loop_ns",
    "median_run",
    "ratio",
    "timed",
]


def loop_ns(fn: Callable[[], Any], loops: int) -> float:
    """ns per call of ``fn`` over ``loops`` calls, with the garbage collector off."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        return (time.perf_counter_ns() - start) / loops
    finally:
        gc.enable()


def empty() -> None:
    """The function whose loop cost :func:`compare` subtracts."""
    return None


def compare(
    fns: Mapping[str, Callable[[], Any]],
    loops: int,
    repeats: int,
    *,
    settle: Callable[[], Any] | None = None,
    warmup_min: int = 100,
) -> dict[str, float]:
    """Best-of-``repeats`` ns per call of each function, interleaved, loop overhead subtracted.

    Each function first runs ``max(loops // 10, warmup_min)`` times untimed (first lookups,
    caches, CPU frequency). ``settle`` runs after each warm-up and timed loop, untimed: it lets a
    background thread drain what the loop queued (OTel's BatchSpanProcessor), so that work is
    not charged to the next function measured.
    """
    for fn in fns.values():
        loop_ns(fn, max(loops // 10, warmup_min))
        if settle is not None:
            settle()
    baseline = min(loop_ns(empty, loops) for _ in range(repeats))
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], loop_ns(fn, loops))
            if settle is not None:
                settle()
    return {name: max(ns - baseline, 0.0) for name, ns in best.items()}


async def best_ns_async(fn: Callable[[], Awaitable[Any]], loops: int, repeats: int) -> float:
    """Best-of-``repeats`` ns per ``await fn()`` over ``loops`` awaits (garbage collector on)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(loops):
            await fn()
        best = min(best, (time.perf_counter_ns() - start) / loops)
    return best


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call of ``fn``."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def ratio(ours: float, theirs: float) -> float:
    """``ours / theirs``, with a peer figure of 0 (below the loop overhead) taken as 1e-9."""
    return ours / max(theirs, 1e-9)


def median_run(runs: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """A copy of the run with the median ``key`` (the lower middle one of an even count)."""
    return dict(sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2])


def keep_best(
    best: dict[str, float] | None,
    new: dict[str, float],
    *,
    higher: Iterable[str] = (),
    lower: Iterable[str] = (),
) -> dict[str, float]:
    """Merge one round's figures into the best so far, each figure on its own.

    The first round is kept whole; then each ``higher`` key keeps its maximum and each
    ``lower`` key its minimum (a key missing in a round counts as infinitely bad).
    """
    if best is None:
        return new
    for key in higher:
        best[key] = max(best[key], new[key])
    for key in lower:
        best[key] = min(best.get(key, math.inf), new.get(key, math.inf))
    return best


class Column(NamedTuple):
    """One column of :func:`format_table`: the row key, its title and a format spec (``"9.0f"``)."""

    key: str
    title: str
    spec: str

    @property
    def width(self) -> int:
        digits = self.spec.lstrip("<>^").split(".", 1)[0]
        return int(digits) if digits.isdigit() else 0


def format_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[Column], *, first: str, first_width: int
) -> list[str]:
    """A header line, then a line per row: its name, then each column's value (blank if missing)."""
    head = [f"{c.title:<{c.width}}" if c.spec.startswith("<") else f"{c.title:>{c.width}}" for c in columns]
    lines = [f"{first:{first_width}} {' '.join(head)}"]
    for name, row in rows.items():
        cells = [format(row[c.key], c.spec) if c.key in row else " " * c.width for c in columns]
        lines.append(f"{name:{first_width}} {' '.join(cells)}")
    return lines
