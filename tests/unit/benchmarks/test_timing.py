"""The benchmarks' timing toolkit: best of interleaved repeats, run selection, ratio tables."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import _timing


def test_compare_times_every_function_and_subtracts_the_empty_loop() -> None:
    calls = {"a": 0, "b": 0}
    settled = []

    def a() -> None:
        calls["a"] += 1

    def b() -> None:
        calls["b"] += 1
        sum(range(200))  # clearly slower than a

    out = _timing.compare({"a": a, "b": b}, 1000, 3, settle=lambda: settled.append(1), warmup_min=50)
    assert set(out) == {"a", "b"}
    assert all(ns >= 0.0 for ns in out.values())
    assert out["b"] > out["a"]
    assert calls == {"a": 100 + 3 * 1000, "b": 100 + 3 * 1000}  # warm-up of loops // 10, then 3 repeats
    assert len(settled) == 2 + 2 * 3  # after each warm-up and each timed loop


def test_best_ns_async_awaits_loops_times_repeats() -> None:
    awaited = []

    async def op() -> None:
        awaited.append(1)

    ns = asyncio.run(_timing.best_ns_async(op, 10, 3))
    assert ns > 0 and len(awaited) == 30


def test_median_run_is_the_lower_middle_copy() -> None:
    runs = [{"r": 3.0}, {"r": 1.0}, {"r": 2.0}, {"r": 4.0}]
    chosen = _timing.median_run(runs, "r")
    assert chosen == {"r": 2.0}
    chosen["extra"] = 1
    assert runs[2] == {"r": 2.0}  # a copy


def test_keep_best_keeps_each_figure_best_on_its_own() -> None:
    best = _timing.keep_best(None, {"rate": 10.0, "cpu": 5.0, "p99": 9.0})
    best = _timing.keep_best(best, {"rate": 8.0, "cpu": 4.0}, higher=("rate",), lower=("cpu", "p99"))
    assert best == {"rate": 10.0, "cpu": 4.0, "p99": 9.0}


def test_ratio_treats_a_zero_peer_as_tiny() -> None:
    assert _timing.ratio(2.0, 4.0) == 0.5
    assert _timing.ratio(1.0, 0.0) == pytest.approx(1e9)


def test_format_table_aligns_columns_and_leaves_missing_cells_blank() -> None:
    rows: dict[str, dict[str, object]] = {
        "op": {"ours": 12.345, "ratio": 0.5, "goal": "met"},
        "other": {"ours": 1.0},
    }
    columns = (
        _timing.Column("ours", "ours", "6.1f"),
        _timing.Column("ratio", "ratio", "6.2f"),
        _timing.Column("goal", "goal", "<"),
    )
    lines = _timing.format_table(rows, columns, first="operation", first_width=10)
    assert lines == [
        "operation    ours  ratio goal",
        "op           12.3   0.50 met",
        "other         1.0        ",
    ]
