"""The VictoriaMetrics harness's pure parts: query windows, result conversion, directory sizes.

The harness against a real server is exercised by ``python -m benchmarks.run --quick``; these
tests pin the parts that decide whether VictoriaMetrics answers the same question as the SQL.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import tsbs
from benchmarks.queries import Dataset, Expected, compare
from benchmarks.victoriametrics import _answer, _hour_of, _metricsql, dir_bytes

HOUR_S = 3600
START_S = tsbs.START_NS // 1_000_000_000


def _dataset(hours: int = 2) -> Dataset:
    return Dataset.from_batches(tsbs.generate("int", hosts=3, duration_s=hours * HOUR_S), hosts=3)


def test_range_queries_end_each_window_on_the_hour_and_shift_it_by_1ms() -> None:
    queries = _metricsql(_dataset())
    path, q1 = queries["q1"]
    assert path == "/api/v1/query_range"
    assert "[1h] offset 1ms" in q1["query"]
    assert float(q1["start"]) == START_S + HOUR_S  # answers hour 0
    assert float(q1["end"]) == START_S + 2 * HOUR_S
    assert q1["step"] == "3600s"
    assert 'hostname=~"host_0|host_1|host_2"' in q1["query"]
    assert "keep_metric_names" in queries["q2"][1]["query"]
    path, q4 = queries["q4"]
    assert path == "/api/v1/query"
    assert f"[{2 * HOUR_S}s] offset 1ms" in q4["query"]
    assert float(q4["time"]) == START_S + 2 * HOUR_S


def test_a_point_at_t_answers_the_hour_ending_at_t() -> None:
    assert _hour_of(START_S + HOUR_S) == 0
    assert _hour_of(START_S + 24 * HOUR_S) == 23


def test_prometheus_api_results_convert_to_the_expected_shape() -> None:
    ds = _dataset()
    expected = Expected.of(ds)
    q1 = {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "cpu_usage_user", "hostname": host},
                "values": [[START_S + (hour + 1) * HOUR_S, str(value)]],
            }
            for (host, hour), value in expected.answers["q1"].items()
        ],
    }
    assert compare("q1", _answer("q1", q1), expected)["ok"]
    q3 = {
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": f"cpu_{field}", "hostname": host}, "value": [START_S, repr(value)]}
            for (host, field), value in expected.answers["q3"].items()
        ],
    }
    check = compare("q3", _answer("q3", q3), expected)
    assert check["ok"] and check["exact"] == check["expected_size"]


def test_dir_bytes_sums_files_per_top_level_entry(tmp_path: Path) -> None:
    (tmp_path / "data" / "small").mkdir(parents=True)
    (tmp_path / "data" / "small" / "a").write_bytes(b"x" * 10)
    (tmp_path / "data" / "b").write_bytes(b"x" * 5)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "c").write_bytes(b"x" * 7)
    (tmp_path / "flock.lock").write_bytes(b"")
    assert dir_bytes(tmp_path, exclude=("cache",)) == {"data": 15, "flock.lock": 0}
