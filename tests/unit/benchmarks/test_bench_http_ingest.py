"""The HTTP ingestion benchmark's pure parts: the bodies it sends and how it picks and compares runs.

The servers themselves are exercised by ``python -m benchmarks.bench_http_ingest --quick``.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from benchmarks import bench_http_ingest as bench
from benchmarks import tsbs
from server.routes.imports import parse_arrow
from tsengine.protocols import influx, prom_remote

HOSTS = 3
DURATION_S = 600  # 60 ticks of 10 s


def _batches(rows: int) -> list[tsbs.Batch]:
    return list(bench.generate(HOSTS, DURATION_S, rows))


def test_line_protocol_bodies_hold_one_line_per_row_and_parse_back() -> None:
    bodies = bench.line_protocol_bodies(_batches(30))  # 10 ticks x 3 hosts per body
    assert len(bodies) == 6
    assert all(b.count(b"\n") == 30 and b.endswith(b"\n") for b in bodies)
    parsed = [t for body in bodies for t in influx.parse(body)]
    assert sum(t.num_rows for t in parsed) == HOSTS * 60
    assert sum(t.num_samples for t in parsed) == HOSTS * 60 * len(tsbs.FIELDS)


def test_arrow_bodies_carry_tags_as_dictionaries_and_import_as_the_same_rows() -> None:
    batches = _batches(90)
    bodies = bench.arrow_bodies(batches)
    assert len(bodies) == 2
    table = pa.ipc.open_stream(bodies[0]).read_all()
    assert table.num_rows == 90
    assert table.schema.field("time").type == pa.int64()
    for tag in tsbs.TAGS:
        assert pa.types.is_dictionary(table.schema.field(tag).type)
    assert table.column("hostname").to_pylist() == batches[0].tags["hostname"].to_pylist()
    assert table.column("usage_user").to_pylist() == batches[0].fields["usage_user"].tolist()
    (imported,) = parse_arrow(bodies[0], db="default", table="cpu", tags=[])
    assert set(imported.tags) == set(tsbs.TAGS)
    assert set(imported.fields) == set(tsbs.FIELDS)
    assert imported.num_samples == 90 * len(tsbs.FIELDS)


def test_remote_write_requests_hold_every_series_with_consecutive_samples() -> None:
    batch = _batches(60)[0]  # 20 ticks x 3 hosts
    requests = list(bench.remote_write_series(batch, hosts=HOSTS, samples_per_series=8))
    assert [len(r) for r in requests] == [HOSTS * len(tsbs.FIELDS)] * 3
    assert [len(r[0][1]) for r in requests] == [8, 8, 4]  # the last request takes what is left
    labels, points = requests[0][0]
    assert labels["__name__"] == "cpu_usage_user"
    assert labels["hostname"] == "host_0"
    assert set(labels) == {"__name__", *tsbs.TAGS}
    assert points[0] == (tsbs.START_NS // 1_000_000, float(batch.fields["usage_user"][0]))
    assert points[1][0] - points[0][0] == 10_000  # 10 s apart, in ms
    # host_1's usage_system at the second tick is row 1 * HOSTS + 1.
    by_series = {(lab["__name__"], lab["hostname"]): pts for lab, pts in requests[0]}
    assert by_series[("cpu_usage_system", "host_1")][1][1] == float(batch.fields["usage_system"][HOSTS + 1])


def test_remote_write_bodies_decode_to_every_sample() -> None:
    bodies = bench.remote_write_bodies(_batches(60), hosts=HOSTS, samples_per_series=10)
    assert len(bodies) == 6
    decoded = [t for body in bodies for t in prom_remote.parse(body)]
    assert sum(t.num_samples for t in decoded) == HOSTS * 60 * len(tsbs.FIELDS)
    assert {t.table for t in decoded} == {f"cpu_{f}" for f in tsbs.FIELDS}


def test_remote_write_series_refuses_a_batch_of_partial_ticks() -> None:
    batch = _batches(60)[0]
    with pytest.raises(ValueError, match="ticks of 7 hosts"):
        list(bench.remote_write_series(batch, hosts=7, samples_per_series=10))


def _run(rate: float, *, ok: bool = True) -> dict[str, object]:
    return {
        "samples_per_s": rate,
        "server_cpu_us_per_sample": 1e6 / rate,
        "rss_peak_mib": 100.0,
        "all_204": ok,
        "complete": ok,
    }


def test_median_run_is_the_middle_rate_and_keeps_every_run() -> None:
    chosen = bench.median_run([_run(3.0), _run(1.0), _run(2.0, ok=False)])
    assert chosen["samples_per_s"] == 2.0
    assert chosen["runs_samples_per_s"] == [3.0, 1.0, 2.0]
    assert chosen["all_runs_204"] is False
    assert bench.median_run([_run(4.0), _run(1.0)])["samples_per_s"] == 1.0  # the lower middle


def test_ratios_compare_the_median_runs_against_the_goals() -> None:
    out = {
        "victoriametrics_lp": _run(2.0),
        "tsengine_lp": _run(2.5),
        "tsengine_arrow": _run(5.0),
        "tsengine_remote_write": _run(1.0),
    }
    r = bench.ratios(out)
    assert r["lp_tsengine_over_vm"] == pytest.approx(1.25)
    assert r["lp_goal_met"] is True
    assert r["arrow_over_lp"] == pytest.approx(2.0)
    assert r["arrow_goal_met"] is False
    assert r["remote_write_over_lp"] == pytest.approx(0.4)
    assert bench.ratios({"tsengine_lp": _run(1.0), "victoriametrics_lp": {"available": False}}) == {}
