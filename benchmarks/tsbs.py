"""Deterministic generator of the TSBS "devops cpu-only" data set.

What comes in: a value mode and the size of the data set (hosts, duration, interval, seed).
What goes out: time-ordered columnar :class:`Batch` es — the shape ``tsengine.Engine.write``
takes — and, through :func:`to_line_protocol`, the same rows as InfluxDB line protocol for peers
such as VictoriaMetrics. Who calls it: the storage benchmark, its VictoriaMetrics harness and
their tests.

The data follows TSBS (``pkg/data/usecases/devops``): one ``cpu`` row per host every interval,
from 2016-01-01T00:00:00Z; ten tags fixed per host and drawn at random from the TSBS choice
lists; ten fields, each a random walk with N(0, 1) steps clamped to 0..100 (TSBS's
"clamped walk distribution"). Three value modes, because storage cost depends on them:

* ``int`` — the walk truncated to int64, as TSBS itself writes it (``usage_user=58i``);
* ``dec2`` — the walk rounded to two decimals (typical gauges): ``rint(x * 100) / 100``, which is
  the float nearest to the decimal, so ``repr`` prints at most two decimals;
* ``float`` — the walk at full float64 precision (what agents like Telegraf send).

All three modes are views of the same walk, so a seed gives the same series shape in every mode.
The random stream is consumed in time order, so the values do not depend on the batch size.
Generation is vectorised over hosts and fields; the whole day (8.64 M samples) takes well under a
second. Not thread-safe per generator (it is an iterator); separate calls are independent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "DEFAULT_SEED",
    "FIELDS",
    "MEASUREMENT",
    "MODES",
    "START_NS",
    "TAGS",
    "Batch",
    "Mode",
    "generate",
    "host_tags",
    "to_line_protocol",
]

Mode = Literal["int", "dec2", "float"]
MODES: tuple[Mode, ...] = ("int", "dec2", "float")

MEASUREMENT = "cpu"
#: 2016-01-01T00:00:00Z, where TSBS starts by default.
START_NS = 1_451_606_400 * 1_000_000_000
DEFAULT_SEED = 123
NS_PER_S = 1_000_000_000

TAGS = (
    "hostname",
    "region",
    "datacenter",
    "rack",
    "os",
    "arch",
    "team",
    "service",
    "service_version",
    "service_environment",
)
FIELDS = (
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
)

# The TSBS choice lists (pkg/data/usecases/devops/host.go).
_REGIONS: dict[str, tuple[str, ...]] = {
    "us-east-1": ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"),
    "us-west-1": ("us-west-1a", "us-west-1b"),
    "us-west-2": ("us-west-2a", "us-west-2b", "us-west-2c"),
    "eu-west-1": ("eu-west-1a", "eu-west-1b", "eu-west-1c"),
    "eu-central-1": ("eu-central-1a", "eu-central-1b"),
    "ap-southeast-1": ("ap-southeast-1a", "ap-southeast-1b"),
    "ap-southeast-2": ("ap-southeast-2a", "ap-southeast-2b"),
    "ap-northeast-1": ("ap-northeast-1a", "ap-northeast-1c"),
    "sa-east-1": ("sa-east-1a", "sa-east-1b", "sa-east-1c"),
}
_OS = ("Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10")
_ARCH = ("x64", "x86")
_TEAM = ("SF", "NYC", "LON", "CHI")
_SERVICE_ENV = ("production", "staging", "test")
_RACKS, _SERVICES, _SERVICE_VERSIONS = 100, 20, 2

#: Rows per batch when the caller does not say: 100 timestamps x 100 hosts.
DEFAULT_BATCH_ROWS = 10_000


@dataclass(frozen=True, eq=False)
class Batch:
    """Rows of the ``cpu`` table, column by column, ordered by time then host.

    Attributes:
        time: int64 nanoseconds since the epoch (UTC).
        tags: tag name -> Arrow string array (batches of the same size share these arrays).
        fields: field name -> float64 array (``dec2``, ``float``) or int64 array (``int``).
        host: int64 host number of each row (``host_<n>``), for reference computations.
    """

    time: np.ndarray
    tags: Mapping[str, pa.Array]
    fields: Mapping[str, np.ndarray]
    host: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.time)

    @property
    def num_samples(self) -> int:
        """Field values in the batch (a sample is one field value)."""
        return self.num_rows * len(self.fields)


def host_tags(hosts: int, *, seed: int = DEFAULT_SEED) -> dict[str, list[str]]:
    """Tag values of hosts ``0..hosts-1``: tag name -> one value per host.

    Drawn like TSBS draws them (uniform choices, datacenter within the host's region) from a
    generator seeded with ``seed``, independent of the value stream.
    """
    rng = np.random.default_rng([seed, 1])
    region_names = list(_REGIONS)
    region_idx = rng.integers(len(region_names), size=hosts)
    dc_pick = rng.random(hosts)
    tags: dict[str, list[str]] = {
        "hostname": [f"host_{i}" for i in range(hosts)],
        "region": [region_names[r] for r in region_idx],
        "datacenter": [],
        "rack": [str(v) for v in rng.integers(_RACKS, size=hosts)],
        "os": [_OS[v] for v in rng.integers(len(_OS), size=hosts)],
        "arch": [_ARCH[v] for v in rng.integers(len(_ARCH), size=hosts)],
        "team": [_TEAM[v] for v in rng.integers(len(_TEAM), size=hosts)],
        "service": [str(v) for v in rng.integers(_SERVICES, size=hosts)],
        "service_version": [str(v) for v in rng.integers(_SERVICE_VERSIONS, size=hosts)],
        "service_environment": [_SERVICE_ENV[v] for v in rng.integers(len(_SERVICE_ENV), size=hosts)],
    }
    for r, pick in zip(region_idx, dc_pick, strict=True):
        dcs = _REGIONS[region_names[r]]
        tags["datacenter"].append(dcs[int(pick * len(dcs))])
    return tags


def generate(
    mode: Mode,
    *,
    hosts: int = 100,
    duration_s: int = 86_400,
    interval_s: int = 10,
    seed: int = DEFAULT_SEED,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[Batch]:
    """Yield the data set as time-ordered batches of about ``batch_rows`` rows.

    Each batch holds whole timestamps (``max(1, batch_rows // hosts)`` of them, times every
    host), so ``hosts=100`` gives 10k-row batches. The same arguments always yield the same
    values, whatever ``batch_rows`` is.

    Raises:
        ValueError: unknown mode or a non-positive size.
    """
    if mode not in MODES:
        raise ValueError(f"cannot generate mode {mode!r}: expected one of {MODES}")
    if hosts <= 0 or duration_s <= 0 or interval_s <= 0 or batch_rows <= 0:
        raise ValueError("cannot generate: hosts, duration_s, interval_s and batch_rows must be > 0")
    ticks_total = duration_s // interval_s
    ticks_per_batch = max(1, batch_rows // hosts)
    tag_dictionaries = {name: pa.array(values) for name, values in host_tags(hosts, seed=seed).items()}
    rng = np.random.default_rng([seed, 2])
    state = rng.random((hosts, len(FIELDS))) * 100.0
    interval_ns = interval_s * NS_PER_S
    shared_tags: dict[int, tuple[dict[str, pa.Array], np.ndarray]] = {}

    for first in range(0, ticks_total, ticks_per_batch):
        ticks = min(ticks_per_batch, ticks_total - first)
        steps = rng.standard_normal((ticks, hosts, len(FIELDS)))
        walk = np.empty_like(steps)
        for t in range(ticks):
            state += steps[t]
            np.clip(state, 0.0, 100.0, out=state)
            walk[t] = state
        values = walk.reshape(ticks * hosts, len(FIELDS))
        if mode == "int":
            # TSBS converts with int64(value): truncation, which is floor on 0..100.
            values = values.astype(np.int64)
        elif mode == "dec2":
            values = np.rint(values * 100.0) / 100.0

        if ticks not in shared_tags:
            host = np.tile(np.arange(hosts, dtype=np.int64), ticks)
            indices = pa.array(host.astype(np.int32))
            shared_tags[ticks] = ({k: d.take(indices) for k, d in tag_dictionaries.items()}, host)
        tags, host = shared_tags[ticks]
        tick_ns = START_NS + (first + np.arange(ticks, dtype=np.int64)) * interval_ns
        yield Batch(
            time=np.repeat(tick_ns, hosts),
            tags=tags,
            fields={name: np.ascontiguousarray(values[:, j]) for j, name in enumerate(FIELDS)},
            host=host,
        )


def _escape_key(arr: pa.Array) -> pa.Array:
    # Line protocol escapes commas, equals signs and spaces in tag keys and values.
    for ch in ("\\", ",", "=", " "):
        arr = pc.replace_substring(arr, ch, "\\" + ch)
    return arr


def to_line_protocol(batch: Batch, *, measurement: str = MEASUREMENT) -> bytes:
    """Render a batch as InfluxDB line protocol, one line per row, ``\\n``-separated.

    Integers carry the ``i`` suffix; floats are printed with ``repr`` so that they parse back
    to exactly the same float64. Timestamps are in nanoseconds (the protocol's default).
    """
    n = batch.num_rows
    parts: list[pa.Array] = [pa.array([measurement] * n)]
    for name, values in batch.tags.items():
        parts.append(pc.binary_join_element_wise(name + "=", _escape_key(values), ""))
    series_key = pc.binary_join_element_wise(*parts, ",")

    field_parts = []
    for name, values in batch.fields.items():
        if values.dtype.kind == "i":
            text = pc.cast(pa.array(values), pa.string())
            suffix = "i"
        else:
            text = pa.array(list(map(repr, values.tolist())), pa.string())
            suffix = ""
        field_parts.append(pc.binary_join_element_wise(name + "=", text, suffix, ""))
    field_set = pc.binary_join_element_wise(*field_parts, ",")
    time_text = pc.cast(pa.array(batch.time), pa.string())
    lines = pc.binary_join_element_wise(series_key, field_set, time_text, " ")
    return ("\n".join(lines.to_pylist()) + "\n").encode()
