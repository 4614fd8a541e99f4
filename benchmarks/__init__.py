"""Benchmarks of tsengine, with VictoriaMetrics measured on the same data in the same run.

What comes in: nothing but the machine; the data is generated (:mod:`benchmarks.tsbs`, the TSBS
devops cpu-only data set). What goes out: a printed table and ``benchmarks/.work/results.json``;
the published figures live in ``benchmarks/RESULTS.md``. Who calls it: ``make bench``
(``python -m benchmarks.run``). Modules: ``tsbs`` (generator), ``queries`` (q1-q4 ground truth),
``storage_bench`` (tsengine), ``victoriametrics`` (the peer), ``run`` (the harness), and any
``bench_<name>`` module exposing ``run(quick) -> dict``.
"""
