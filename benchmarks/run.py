"""Run the benchmarks and print tsengine's figures next to VictoriaMetrics's.

Usage::

    python -m benchmarks.run [--quick] [--only storage,influx_parse,...] [--modes int,dec2,float]
                             [--targets tsengine,victoriametrics] [--json PATH]

What it runs:

* ``storage`` — the TSBS cpu-only storage benchmark, per value mode: tsengine
  (:mod:`benchmarks.storage_bench`, in a child process per mode so that modes do not share a
  peak RSS) and VictoriaMetrics (:mod:`benchmarks.victoriametrics`) on the same generated data;
* every other ``benchmarks/bench_<name>.py`` module that exposes ``run(quick: bool) -> dict``
  (selected by ``<name>`` or a prefix of it with ``--only``).

What comes out: a table per mode with both engines' figures, the ratio tsengine/VM and whether
each goal is met (ingest >= 5 M samples/s; bytes per sample <= VM's; each query's latency <= VM's),
whether every answer matched the numpy ground truth, and ``benchmarks/.work/results.json`` with
everything plus the machine (CPU, cores, RAM, versions). ``--quick`` uses 10 hosts x 1 hour, for
smoke tests; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

import benchmarks
from benchmarks import tsbs, victoriametrics
from benchmarks.queries import QUERIES, Dataset, Expected

__all__ = ["main"]

WORK_DIR = Path(__file__).parent / ".work"
INGEST_GOAL_SAMPLES_PER_S = 5_000_000
QUICK = {"hosts": 10, "duration_s": 3600}
FULL = {"hosts": 100, "duration_s": 86_400}
CHILD_TIMEOUT_S = 1800


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM and the versions that the figures depend on."""
    import duckdb
    import numpy
    import pyarrow

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
    }


def _tsengine_mode(mode: str, size: dict[str, int]) -> dict[str, Any]:
    """Run storage_bench for one mode in a child process and return its figures."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=WORK_DIR, delete=False) as tmp:
        out = Path(tmp.name)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.storage_bench",
        f"--mode={mode}",
        f"--hosts={size['hosts']}",
        f"--duration-s={size['duration_s']}",
        f"--work-dir={WORK_DIR}",
        f"--json={out}",
    ]
    root = Path(benchmarks.__file__).parent.parent
    try:
        # The child's stderr goes to ours, so its progress and any traceback are seen as they come.
        proc = subprocess.run(cmd, cwd=root, timeout=CHILD_TIMEOUT_S, check=False, stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            return {"available": False, "reason": f"storage_bench exited with {proc.returncode}: see above"}
        return dict(orjson.loads(out.read_bytes()))
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"storage_bench did not finish within {CHILD_TIMEOUT_S} s"}
    finally:
        out.unlink(missing_ok=True)


def run_storage(quick: bool, modes: list[str], targets: list[str]) -> dict[str, Any]:
    size = QUICK if quick else FULL
    results: dict[str, Any] = {"size": size}
    for mode in modes:
        print(f"== storage, mode {mode}: {size['hosts']} hosts x {size['duration_s']} s", flush=True)
        entry: dict[str, Any] = {}
        if "tsengine" in targets:
            t0 = time.monotonic()
            entry["tsengine"] = _tsengine_mode(mode, size)
            print(f"  tsengine: {time.monotonic() - t0:.0f} s", _status(entry["tsengine"]), flush=True)
        if "victoriametrics" in targets:
            t0 = time.monotonic()
            batches = list(tsbs.generate(mode, **size))  # type: ignore[arg-type]
            ds = Dataset.from_batches(batches, hosts=size["hosts"])
            try:
                entry["victoriametrics"] = victoriametrics.bench(
                    mode, batches, ds, Expected.of(ds), work_dir=WORK_DIR
                )
            except (RuntimeError, TimeoutError, OSError) as exc:
                # A peer that fails to start or settle must not cost tsengine's figures.
                entry["victoriametrics"] = {"available": False, "reason": str(exc)}
            del batches, ds
            vm = entry["victoriametrics"]
            print(f"  VictoriaMetrics: {time.monotonic() - t0:.0f} s", _status(vm), flush=True)
        entry["agreement"] = _agreement(entry.get("tsengine"), entry.get("victoriametrics"))
        results[mode] = entry
    return results


def _status(r: dict[str, Any]) -> str:
    if not r.get("available"):
        return f"- {r.get('reason')}"
    bad = [q for q, v in r.get("queries", {}).items() if not v["check"]["ok"]]
    readback = r.get("readback", {"ok": True})
    return "- answers " + ("OK" if not bad and readback["ok"] else f"WRONG: {bad} readback={readback}")


def _agreement(ts: dict[str, Any] | None, vm: dict[str, Any] | None) -> dict[str, Any]:
    """Compare the two engines' answers on the first key of each query (e.g. q1 host_0 hour 0)."""
    if not ts or not vm or not ts.get("available") or not vm.get("available"):
        return {"checked": False}
    out: dict[str, Any] = {"checked": True}
    for q in QUERIES:
        key, ts_value, _ = ts["queries"][q]["check"]["example"]
        _, vm_value, _ = vm["queries"][q]["check"]["example"]
        same = (
            ts_value is not None
            and vm_value is not None
            and abs(ts_value - vm_value) <= 1e-9 * max(abs(vm_value), 1.0)
        )
        out[q] = {"key": key, "tsengine": ts_value, "victoriametrics": vm_value, "agree": same}
    return out


def _extra_modules() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )


def run_extra(name: str, quick: bool) -> dict[str, Any]:
    """Import benchmarks.bench_<name> and call its run(quick); a failure is recorded, not raised."""
    print(f"== {name}", flush=True)
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        return dict(module.run(quick))
    except Exception as exc:  # one benchmark's failure must not lose the others' figures
        traceback.print_exc()
        return {"error": f"cannot run benchmark {name}: {exc!r}"}


# --- the report --------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "samples/s":
        return f"{value / 1e6:.2f} M/s"
    if unit == "B":
        return f"{value:.3f}"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.1f} ms"


def _rows(entry: dict[str, Any]) -> list[tuple[str, float | None, float | None, str, str]]:
    """(figure, tsengine, VM, unit, goal) rows of one mode."""
    ts = entry.get("tsengine") or {}
    vm = entry.get("victoriametrics") or {}
    ts = ts if ts.get("available") else {}
    vm = vm if vm.get("available") else {}

    def q(r: dict[str, Any], name: str) -> float | None:
        return r.get("queries", {}).get(name, {}).get("median_ms")

    rows = [
        ("ingest", ts.get("ingest_samples_per_s"), vm.get("ingest_samples_per_s"), "samples/s", ">=5M"),
        ("peak RSS (ts: growth)", ts.get("rss_growth_mib"), vm.get("rss_peak_mib"), "MiB", ""),
        ("bytes/sample", ts.get("bytes_per_sample"), vm.get("bytes_per_sample"), "B", "<=VM"),
    ]
    for name in QUERIES:
        rows.append((name, q(ts, name), q(vm, name), "ms", "<=VM"))
    rows.append(("q3 via SQL", q(ts, "q3_sql"), q(vm, "q3"), "ms", ""))
    return rows


def _goal_met(figure: str, goal: str, ts: float | None, vm: float | None) -> str:
    if ts is None or not goal:
        return ""
    if goal == ">=5M":
        return "met" if ts >= INGEST_GOAL_SAMPLES_PER_S else "MISSED"
    if vm is None:
        return "?"
    return "met" if ts <= vm else "MISSED"


def print_storage(storage: dict[str, Any]) -> None:
    for mode, entry in storage.items():
        if mode == "size":
            continue
        print(f"\nstorage, mode {mode}  (ratio = tsengine / VictoriaMetrics)")
        print(f"  {'figure':<22}{'tsengine':>14}{'VictoriaMetrics':>17}{'ratio':>9}  goal")
        for figure, ts, vm, unit, goal in _rows(entry):
            ratio = f"{ts / vm:.2f}" if ts is not None and vm else "-"
            met = _goal_met(figure, goal, ts, vm)
            goal_text = f"{goal} {met}".strip() if met else ""
            print(f"  {figure:<22}{_fmt(ts, unit):>14}{_fmt(vm, unit):>17}{ratio:>9}  {goal_text}")
        for who in ("tsengine", "victoriametrics"):
            r = entry.get(who)
            if r is not None:
                print(f"  {who}: {_status(r)}")
        vm_result = entry.get("victoriametrics") or {}
        if vm_result.get("available"):
            print(f"  VictoriaMetrics read-back: {vm_result['readback_exact']}")
        agreement = entry.get("agreement", {})
        if agreement.get("checked"):
            disagree = [q for q in QUERIES if not agreement[q]["agree"]]
            print("  engines agree on " + ("every checked value" if not disagree else f"NOT {disagree}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tsengine benchmarks (see benchmarks/RESULTS.md)")
    parser.add_argument("--quick", action="store_true", help="10 hosts x 1 hour: a smoke test")
    parser.add_argument("--only", help="comma-separated: storage and/or bench_<name> names or prefixes")
    parser.add_argument("--modes", default=",".join(tsbs.MODES), help="value modes of the storage benchmark")
    parser.add_argument(
        "--targets", default="tsengine,victoriametrics", help="engines of the storage benchmark"
    )
    parser.add_argument("--json", type=Path, default=WORK_DIR / "results.json")
    args = parser.parse_args(argv)

    extras = _extra_modules()
    wanted = args.only.split(",") if args.only else ["storage", *extras]
    unknown = [w for w in wanted if w != "storage" and not any(e.startswith(w) for e in extras)]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from storage, {', '.join(extras)}")
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in tsbs.MODES]:
        parser.error(f"unknown mode(s) {bad}: choose from {', '.join(tsbs.MODES)}")
    targets = args.targets.split(",")

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine_info(),
        "results": {},
    }
    print("machine:", ", ".join(f"{k}={v}" for k, v in report["machine"].items()), flush=True)
    if "storage" in wanted:
        report["results"]["storage"] = run_storage(args.quick, modes, targets)
        versions = {
            e["victoriametrics"].get("version")
            for m, e in report["results"]["storage"].items()
            if m != "size" and e.get("victoriametrics", {}).get("available")
        }
        report["machine"]["victoriametrics"] = ", ".join(sorted(v for v in versions if v)) or "not measured"
    for name in extras:
        if any(name.startswith(w) for w in wanted):
            report["results"][name] = run_extra(name, args.quick)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if "storage" in report["results"]:
        print_storage(report["results"]["storage"])
    for name, value in report["results"].items():
        if name != "storage":
            print(f"\n{name}:")
            for key, v in value.items():
                print(f"  {key}: {v}")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
