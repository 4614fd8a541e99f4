"""Line-protocol parse rate on TSBS-like ``cpu`` lines (single core, in-process).

``run()`` builds ~100k lines of the TSBS devops ``cpu`` measurement (100 hosts, 10 integer
fields, nanosecond timestamps 10 s apart), parses the body with
:func:`tsengine.protocols.influx.parse` a few times and reports the best wall-clock and CPU-time
rates (the parse is single-threaded: numpy and Arrow kernels run on the calling thread). Called by
``benchmarks/run.py``; ``python -m benchmarks.bench_influx_parse [--quick]`` prints the figures.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks.tsbs import FIELDS
from tsengine.protocols.influx import parse

__all__ = ["make_tsbs_cpu_body", "run"]

_REGIONS = ("eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1", "sa-east-1")
_OSES = ("Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10")
_START_NS = 1_451_606_400_000_000_000


def make_tsbs_cpu_body(n_lines: int = 100_000, n_hosts: int = 100, seed: int = 0) -> bytes:
    """TSBS ``cpu`` lines: ``n_lines`` rows cycling over ``n_hosts`` hosts, 10 s per round."""
    rng = np.random.default_rng(seed)
    keys = []
    for h in range(n_hosts):
        region = _REGIONS[h % len(_REGIONS)]
        keys.append(
            f"cpu,hostname=host_{h},region={region},datacenter={region}a,rack={h % 100},"
            f"os={_OSES[h % len(_OSES)]},arch=x{'86' if h % 2 else '64'},team=CHI,service={h % 20},"
            f"service_version={h % 2},service_environment=test"
        )
    values = rng.integers(0, 100, size=(n_lines, len(FIELDS))).tolist()
    lines = []
    for i in range(n_lines):
        fields = ",".join(f"{name}={v}i" for name, v in zip(FIELDS, values[i], strict=True))
        lines.append(f"{keys[i % n_hosts]} {fields} {_START_NS + (i // n_hosts) * 10_000_000_000}")
    return ("\n".join(lines) + "\n").encode()


def run(quick: bool = False) -> dict[str, float]:
    """Parse rate of TSBS-like cpu lines; ``quick`` uses 20k lines and fewer repeats."""
    n_lines = 20_000 if quick else 100_000
    repeats = 3 if quick else 7
    body = make_tsbs_cpu_body(n_lines)
    parse(body)  # warm up imports and caches
    best_s = best_cpu_s = float("inf")
    samples = 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        batches = parse(body)
        best_cpu_s = min(best_cpu_s, time.process_time() - c0)
        best_s = min(best_s, time.perf_counter() - t0)
        samples = sum(b.num_samples for b in batches)
    return {
        "lines": float(n_lines),
        "body_mb": len(body) / 1e6,
        "best_s": best_s,
        "lines_per_s": n_lines / best_s,
        "samples_per_s": samples / best_s,
        "mb_per_s": len(body) / 1e6 / best_s,
        # CPU time of this process: steadier than wall time on a shared machine.
        "best_cpu_s": best_cpu_s,
        "cpu_samples_per_s": samples / best_cpu_s,
    }


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv[1:])
    for name, value in result.items():
        print(f"{name:>14}: {value:,.3f}")
