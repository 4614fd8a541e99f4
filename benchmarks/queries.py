"""The four benchmark queries, their expected answers, and the check that an engine gave them.

What comes in: the generated batches (:mod:`benchmarks.tsbs`) and each engine's answer, already
converted by its harness into the plain shape below. What goes out: the ground truth computed
with numpy straight from the generated values, and a comparison report. Who calls it: the
tsengine harness (:mod:`benchmarks.storage_bench`) and the VictoriaMetrics harness
(:mod:`benchmarks.victoriametrics`). Checking both engines against the same numpy answer is what
makes their timings comparable: a benchmark that compares different answers is worthless.

Queries, over a data set of whole hours starting at :data:`benchmarks.tsbs.START_NS`:

* q1 — max ``usage_user`` per host per hour for 8 hosts over the whole range;
  answer ``{(hostname, hour): value}`` (hour = hours since the start of the data);
* q2 — avg of all 10 fields per host per hour over the last 12 h (the whole range if shorter);
  answer ``{(hostname, field, hour): value}``;
* q3 — the last value of every series; answer ``{(hostname, field): value}``;
* q4 — the 99th percentile of ``usage_user`` per host over the whole range (linear
  interpolation, DuckDB's ``quantile_cont`` and MetricsQL's ``quantile_over_time``);
  answer ``{hostname: value}``.

Hour buckets are half-open, ``[h, h + 1h)``, as SQL's ``epoch_ns(time) // 3600e9`` makes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.tsbs import FIELDS, NS_PER_S, START_NS, Batch

__all__ = ["QUERIES", "Dataset", "Expected", "compare"]

QUERIES = ("q1", "q2", "q3", "q4")
NS_PER_HOUR = 3600 * NS_PER_S
Q1_HOSTS = 8
Q2_HOURS = 12
Q4_QUANTILE = 0.99


@dataclass(frozen=True)
class Dataset:
    """The whole generated data set in flat arrays (row order of the batches).

    Attributes:
        time: int64 ns per row.
        host: host number per row.
        fields: field name -> values per row.
        hosts: number of hosts.
    """

    time: np.ndarray
    host: np.ndarray
    fields: Mapping[str, np.ndarray]
    hosts: int

    @classmethod
    def from_batches(cls, batches: Iterable[Batch], *, hosts: int) -> Dataset:
        batches = list(batches)
        return cls(
            time=np.concatenate([b.time for b in batches]),
            host=np.concatenate([b.host for b in batches]),
            fields={f: np.concatenate([b.fields[f] for b in batches]) for f in FIELDS},
            hosts=hosts,
        )

    @property
    def num_samples(self) -> int:
        return len(self.time) * len(self.fields)

    @property
    def end_ns(self) -> int:
        """The first hour boundary at or after the last sample (exclusive end of the data)."""
        last = int(self.time.max())
        return START_NS + (-(-(last - START_NS + 1) // NS_PER_HOUR)) * NS_PER_HOUR

    @property
    def hours(self) -> int:
        return (self.end_ns - START_NS) // NS_PER_HOUR

    @property
    def q1_hosts(self) -> list[str]:
        return [f"host_{i}" for i in range(min(Q1_HOSTS, self.hosts))]

    @property
    def q2_start_ns(self) -> int:
        """Start of q2's range: 12 h before the end, or the start of the data."""
        return max(START_NS, self.end_ns - Q2_HOURS * NS_PER_HOUR)


@dataclass(frozen=True)
class Expected:
    """Ground-truth answers of q1-q4 and the number of result values each must have."""

    answers: Mapping[str, Mapping[Any, float]]

    @classmethod
    def of(cls, ds: Dataset) -> Expected:
        hour = (ds.time - START_NS) // NS_PER_HOUR
        answers: dict[str, dict[Any, float]] = {}

        user = ds.fields["usage_user"].astype(np.float64)
        q1: dict[Any, float] = {}
        for h in range(len(ds.q1_hosts)):
            sel = ds.host == h
            for hr in range(ds.hours):
                q1[(f"host_{h}", hr)] = float(user[sel & (hour == hr)].max())
        answers["q1"] = q1

        first_hour = (ds.q2_start_ns - START_NS) // NS_PER_HOUR
        in_range = hour >= first_hour
        q2: dict[Any, float] = {}
        # One group id per (host, hour): sums by bincount are exact enough for a 1e-9 check.
        group = ds.host[in_range] * ds.hours + hour[in_range]
        counts = np.bincount(group, minlength=ds.hosts * ds.hours)
        for f, values in ds.fields.items():
            sums = np.bincount(group, weights=values[in_range].astype(np.float64), minlength=len(counts))
            for h in range(ds.hosts):
                for hr in range(first_hour, ds.hours):
                    g = h * ds.hours + hr
                    q2[(f"host_{h}", f, hr)] = float(sums[g] / counts[g])
        answers["q2"] = q2

        # The last row of each host (rows are time-ordered).
        last_row = np.full(ds.hosts, -1)
        last_row[ds.host] = np.arange(len(ds.host))
        answers["q3"] = {
            (f"host_{h}", f): float(values[last_row[h]])
            for f, values in ds.fields.items()
            for h in range(ds.hosts)
        }
        answers["q4"] = {
            f"host_{h}": float(np.quantile(user[ds.host == h], Q4_QUANTILE)) for h in range(ds.hosts)
        }
        return cls(answers=answers)

    def size(self, query: str) -> int:
        return len(self.answers[query])


def compare(
    query: str, got: Mapping[Any, float], expected: Expected, *, rel_tol: float = 1e-9
) -> dict[str, Any]:
    """Compare an engine's answer with the ground truth.

    Averages and quantiles are sums and interpolations whose last bits depend on the order of
    additions, so values are equal within ``rel_tol``; ``exact`` counts the bit-for-bit equal ones.

    Returns:
        ``{"ok", "expected_size", "got_size", "missing", "unexpected", "mismatched", "exact",
        "max_rel_err", "example"}``, where ``example`` is one (key, got, expected) triple.
    """
    want = expected.answers[query]
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    mismatched = 0
    exact = 0
    max_rel = 0.0
    for key, value in want.items():
        if key not in got:
            continue
        value_got = float(got[key])
        if value_got == value:
            exact += 1
            continue
        rel = abs(value_got - value) / max(abs(value), 1e-300)
        max_rel = max(max_rel, rel)
        if rel > rel_tol:
            mismatched += 1
    first = next(iter(want))
    return {
        "ok": not missing and not unexpected and not mismatched,
        "expected_size": len(want),
        "got_size": len(got),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "mismatched": mismatched,
        "exact": exact,
        "max_rel_err": max_rel,
        "example": [repr(first), got.get(first), want[first]],
    }
