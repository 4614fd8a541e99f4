"""The write-path benchmark's data and result shape (its figures mean nothing in quick mode)."""

from __future__ import annotations

from benchmarks import bench_write_path


def test_batches_have_the_intended_shapes() -> None:
    (spans,) = bench_write_path._span_batches(1)
    assert spans.num_rows == bench_write_path.BATCH
    assert set(spans.tags) == {"service", "name"} and len(spans.fields) == 10
    assert len(set(spans.fields["s0"].to_pylist())) == bench_write_path.BATCH  # distinct ids
    (cpu,) = bench_write_path._cpu_batches(1)
    assert set(cpu.tags) == {"host"} and len(cpu.fields) == 10
    assert len(set(cpu.tags["host"].to_pylist())) == 100


def test_quick_run_writes_and_reads_every_row() -> None:
    result = bench_write_path.run(quick=True)
    for shape in ("spans", "cpu"):
        r = result[shape]
        assert r["rows"] == r["live_rows_counted"] == 20 * bench_write_path.BATCH
        assert r["write_us_per_row"] > 0 and r["live_query_ms"] > 0 and r["flush_us_per_row"] > 0
