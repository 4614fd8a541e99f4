"""The wrk output parser of the middleware benchmark, on wrk 4.1's real output shapes."""

from __future__ import annotations

import pytest

from benchmarks.bench_middleware import parse_wrk

_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40000/items/0
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.05ms  311.20us   7.90ms   91.03%
    Req/Sec     7.85k   301.44     8.14k    90.00%
  Latency Distribution
     50%    1.98ms
     75%    2.07ms
     90%    2.25ms
     99%    3.12ms
  39050 requests in 5.00s, 5.66MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   7808.41
Transfer/sec:      1.13MB
"""


def test_parse_wrk_reads_rate_latencies_and_errors() -> None:
    out = parse_wrk(_OUTPUT)
    assert out["requests_per_s"] == pytest.approx(7808.41)
    assert out["p50_us"] == pytest.approx(1980.0)
    assert out["p99_us"] == pytest.approx(3120.0)
    assert out["requests"] == 39050
    assert out["non_2xx"] == 5
    assert out["socket_errors"] == 3


def test_parse_wrk_microsecond_latencies_and_clean_run() -> None:
    text = _OUTPUT.replace("1.98ms", "850.00us").replace(
        "  Socket errors: connect 0, read 1, write 0, timeout 2\n", ""
    )
    text = text.replace("  Non-2xx or 3xx responses: 5\n", "")
    out = parse_wrk(text)
    assert out["p50_us"] == pytest.approx(850.0)
    assert (out["non_2xx"], out["socket_errors"]) == (0, 0)


def test_parse_wrk_refuses_output_without_a_rate() -> None:
    with pytest.raises(ValueError, match="no Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
