"""Decode throughput of Prometheus remote write: samples/s for a realistic WriteRequest.

The body has ``series`` series of 8 labels over 50 metric names with ``samples`` samples each
(a tenth of them zero, as counters at rest are), built once; only :func:`parse` is timed.
"""

from __future__ import annotations

import random
import time

from tsengine.protocols import prom_remote


def _body(series: int, samples: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    out = []
    for s in range(series):
        labels = {"__name__": f"metric_{s % 50}", "job": "node", "instance": f"host-{s % 37}:9100"}
        labels.update({f"label{k}": f"value_{rnd.randrange(100)}" for k in range(5)})
        points = [
            (1_700_000_000_000 + j * 15_000, 0.0 if rnd.random() < 0.1 else rnd.random() * 100)
            for j in range(samples)
        ]
        out.append((labels, points))
    return prom_remote.build_write_request(out)


def run(quick: bool = False) -> dict:
    """Decode the body repeatedly; return the median samples/s and the body size."""
    series, samples = 1000, 10
    body = _body(series, samples)
    rounds = 5 if quick else 30
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        batches = prom_remote.parse(body)
        timings.append(time.perf_counter() - start)
    decoded = sum(b.num_samples for b in batches)
    assert decoded == series * samples, decoded
    median = sorted(timings)[len(timings) // 2]
    return {
        "name": "prom_remote.parse",
        "series": series,
        "samples_per_series": samples,
        "body_bytes": len(body),
        "median_s": round(median, 6),
        "samples_per_s": round(series * samples / median),
    }


if __name__ == "__main__":
    print(run())
