"""The TSBS cpu-only generator: deterministic, the right shape, values and line protocol."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import tsbs
from benchmarks.tsbs import FIELDS, START_NS, TAGS, Batch, generate, host_tags, to_line_protocol

SMALL = {"hosts": 3, "duration_s": 120, "interval_s": 10}


def _concat(batches: list[Batch]) -> dict[str, np.ndarray]:
    out = {
        "time": np.concatenate([b.time for b in batches]),
        "host": np.concatenate([b.host for b in batches]),
    }
    out.update({f: np.concatenate([b.fields[f] for b in batches]) for f in FIELDS})
    return out


@pytest.mark.parametrize("mode", tsbs.MODES)
def test_same_seed_gives_the_same_bytes(mode: tsbs.Mode) -> None:
    a = list(generate(mode, **SMALL, seed=7))
    b = list(generate(mode, **SMALL, seed=7))
    assert [to_line_protocol(x) for x in a] == [to_line_protocol(x) for x in b]
    for name, values in _concat(a).items():
        assert values.tobytes() == _concat(b)[name].tobytes(), name


def test_another_seed_gives_other_values() -> None:
    a = _concat(list(generate("float", **SMALL, seed=7)))
    b = _concat(list(generate("float", **SMALL, seed=8)))
    assert not np.array_equal(a["usage_user"], b["usage_user"])


def test_values_do_not_depend_on_the_batch_size() -> None:
    whole = _concat(list(generate("float", **SMALL, batch_rows=10_000)))
    split = _concat(list(generate("float", **SMALL, batch_rows=4)))
    for name, values in whole.items():
        assert np.array_equal(values, split[name]), name


def test_shape_and_order() -> None:
    # 12 ticks x 3 hosts; batch_rows=9 gives 3 ticks (9 rows) per batch
    batches = list(generate("int", **SMALL, batch_rows=9))
    assert [b.num_rows for b in batches] == [9, 9, 9, 9]
    assert sum(b.num_samples for b in batches) == 36 * len(FIELDS)
    data = _concat(batches)
    assert data["time"].dtype == np.int64
    assert data["time"][0] == START_NS
    assert np.all(np.diff(data["time"]) >= 0)
    assert sorted(set(np.diff(np.unique(data["time"])).tolist())) == [10_000_000_000]
    assert data["host"].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    first = batches[0]
    assert list(first.tags) == list(TAGS)
    assert list(first.fields) == list(FIELDS)
    assert all(isinstance(a, pa.Array) and a.type == pa.string() for a in first.tags.values())
    assert first.tags["hostname"].to_pylist()[:3] == ["host_0", "host_1", "host_2"]


def test_full_day_row_count_for_100_hosts() -> None:
    # The shape only: counting ticks, not generating 8.64 M values.
    ticks = 86_400 // 10
    assert ticks * 100 == 864_000
    assert ticks * 100 * len(FIELDS) == 8_640_000


@pytest.mark.parametrize("mode", tsbs.MODES)
def test_values_stay_within_0_and_100(mode: tsbs.Mode) -> None:
    data = _concat(list(generate(mode, hosts=5, duration_s=3600)))
    for f in FIELDS:
        assert data[f].min() >= 0 and data[f].max() <= 100, f


def test_modes_are_views_of_the_same_walk() -> None:
    full = _concat(list(generate("float", **SMALL)))
    ints = _concat(list(generate("int", **SMALL)))
    dec2 = _concat(list(generate("dec2", **SMALL)))
    for f in FIELDS:
        assert ints[f].dtype == np.int64 and full[f].dtype == np.float64 and dec2[f].dtype == np.float64
        assert np.array_equal(ints[f], full[f].astype(np.int64))
        assert np.all(np.abs(dec2[f] - full[f]) <= 0.005 + 1e-9)


def test_dec2_values_have_at_most_two_decimals() -> None:
    data = _concat(list(generate("dec2", hosts=5, duration_s=600)))
    for f in FIELDS:
        for v in data[f].tolist():
            assert round(v * 100) / 100 == v
            text = repr(v)
            assert len(text.split(".")[1]) <= 2, text


def test_host_tags_follow_the_tsbs_choices() -> None:
    tags = host_tags(100)
    assert tags["hostname"][:2] == ["host_0", "host_1"]
    assert set(tags) == set(TAGS)
    for region, dc in zip(tags["region"], tags["datacenter"], strict=True):
        assert dc.startswith(region) and dc[-1] in "abce"
    assert {int(r) for r in tags["rack"]} <= set(range(100))
    assert set(tags["os"]) <= {"Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"}
    assert set(tags["arch"]) <= {"x64", "x86"}
    assert set(tags["team"]) <= {"SF", "NYC", "LON", "CHI"}
    assert {int(s) for s in tags["service"]} <= set(range(20))
    assert set(tags["service_version"]) <= {"0", "1"}
    assert set(tags["service_environment"]) <= {"production", "staging", "test"}
    assert len(set(tags["region"])) > 3  # drawn, not constant
    assert host_tags(100) == tags


def _parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    # The generated data has no escaped characters, so plain splits are a full parser here.
    key, field_set, ts = line.split(" ")
    measurement, *pairs = key.split(",")
    tags = dict(p.split("=", 1) for p in pairs)
    fields = dict(p.split("=", 1) for p in field_set.split(","))
    return measurement, tags, fields, int(ts)


def test_line_protocol_int_mode() -> None:
    batch = next(generate("int", **SMALL))
    lines = to_line_protocol(batch).decode().splitlines()
    assert len(lines) == batch.num_rows
    measurement, tags, fields, ts = _parse_line(lines[1])
    assert measurement == "cpu"
    assert list(tags) == list(TAGS)
    assert tags["hostname"] == "host_1"
    assert tags["region"] == host_tags(3)["region"][1]
    assert ts == START_NS
    assert list(fields) == list(FIELDS)
    assert all(v.endswith("i") for v in fields.values())
    assert int(fields["usage_user"][:-1]) == batch.fields["usage_user"][1]
    assert _parse_line(lines[3])[3] == START_NS + 10_000_000_000


@pytest.mark.parametrize("mode", ["dec2", "float"])
def test_line_protocol_floats_round_trip_exactly(mode: tsbs.Mode) -> None:
    batch = next(generate(mode, **SMALL))
    lines = to_line_protocol(batch).decode().splitlines()
    for row in (0, len(lines) - 1):
        _, _, fields, ts = _parse_line(lines[row])
        assert ts == batch.time[row]
        for f in FIELDS:
            assert not fields[f].endswith("i")
            assert float(fields[f]) == batch.fields[f][row]


def test_line_protocol_escapes_tag_values() -> None:
    batch = Batch(
        time=np.array([START_NS], dtype=np.int64),
        tags={"hostname": pa.array(["a b,c=d"])},
        fields={"usage_user": np.array([1.5])},
        host=np.array([0]),
    )
    assert to_line_protocol(batch) == f"cpu,hostname=a\\ b\\,c\\=d usage_user=1.5 {START_NS}\n".encode()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot generate mode"):
        next(generate("decimal", **SMALL))  # type: ignore[arg-type]
