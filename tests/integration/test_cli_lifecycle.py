"""``tsengine compact``/``archive``/``backfill`` on a real data directory, in subprocesses:
results, progress, SIGINT mid-backfill (consistent and resumable), refusal while the directory
is held."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tsengine import Engine

ROOT = Path(__file__).resolve().parents[2]
H = 3_600_000_000_000
T0 = 1_600_000_000_000_000_000


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TSENGINE_FSYNC": "none"}
    return subprocess.Popen(
        [sys.executable, "-m", "tsengine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,
    )


def _run(*args: str) -> tuple[int, dict, str]:
    proc = _cli(*args)
    out, err = proc.communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    return proc.returncode, (json.loads(lines[-1]) if lines else {}), err.decode()


def _count(data: Path, sql: str) -> list[tuple]:
    with Engine.open(data, fsync="none") as eng:
        return [tuple(r.values()) for r in eng.sql(sql).to_pylist()]


def test_backfill_interrupted_by_sigint_is_consistent_and_resumes(tmp_path: Path) -> None:
    n, batch = 200_000, 100
    src = tmp_path / "history.lp"
    with open(src, "w") as f:
        for i in range(n):
            f.write(f"cpu,host=h{i % 7} v={i}i {T0 + i * 1_000_000_000}\n")
    data = tmp_path / "data"
    proc = _cli("backfill", str(src), "--data", str(data), "--batch", str(batch), "--progress")
    try:
        assert proc.stderr is not None
        seen = 0
        for line in proc.stderr:
            seen += line.startswith(b"backfill")
            if seen == 20:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["interrupted"] and not result["complete"] and 20 <= result["units"] < n // batch
    # Consistent: exactly the finished units are in, each whole.
    done = result["units"]
    assert _count(data, "SELECT count(*), max(v) FROM cpu") == [(done * batch, done * batch - 1)]
    checkpoints = list((data / "_lifecycle" / "backfill").glob("*.json"))
    assert len(checkpoints) == 1 and json.loads(checkpoints[0].read_text())["units_done"] == done

    code, result, err = _run("backfill", str(src), "--data", str(data), "--batch", str(batch))
    assert code == 0, err
    assert result["complete"] and result["resumed_at_unit"] == done and result["rows"] == n
    assert _count(data, "SELECT count(*), count(DISTINCT v), sum(v) FROM cpu") == [(n, n, n * (n - 1) // 2)]
    assert not list((data / "_lifecycle" / "backfill").glob("*.json"))


def test_backfill_formats_and_bad_lines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    nd = tmp_path / "rows.ndjson"
    rows = [{"table": "m", "time": T0 + i, "tags": {"k": "a"}, "fields": {"x": i}} for i in range(10)]
    nd.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.table({"time": pa.array([T0, T0 + 1], pa.int64()), "host": ["a", "b"], "v": [1.0, 2.0]})
    pq.write_table(table, tmp_path / "p.parquet")
    code, result, err = _run("backfill", str(nd), "--data", str(data), "--batch", "3")
    assert code == 0 and result["rows"] == 10 and result["units"] == 4, err
    code, result, err = _run("backfill", str(tmp_path / "p.parquet"), "--data", str(data), "--table", "pq",
                             "--tags", "host")  # fmt: skip
    assert code == 0 and result["rows"] == 2, err
    with pa.OSFile(str(tmp_path / "s.arrows"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1)
    code, result, err = _run("backfill", str(tmp_path / "s.arrows"), "--data", str(data), "--table", "ipc",
                             "--tags", "host")  # fmt: skip
    assert code == 0 and result["rows"] == 2 and result["units"] == 2, err
    bad = tmp_path / "bad.lp"
    bad.write_text("cpu v=1i 1\ncpu v=2i 2\ncpu v=oops 3\n")
    code, _, err = _run("backfill", str(bad), "--data", str(data), "--batch", "2")
    assert code == 2 and "line 3" in err and "bad.lp" in err
    assert _count(
        data, "SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM pq), (SELECT count(*) FROM cpu)"
    ) == [(10, 2, 2)]


def test_compact_and_archive_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    now_h = 1_700_000_000_000_000_000 // H * H  # ManualClock's default is not used by the CLI: real time
    old = now_h - 20_000 * H
    with Engine.open(data, fsync="none") as eng:
        for i in range(4):  # four small files in one hour
            eng.write("cpu", [old + i], tags={"host": ["a"]}, fields={"v": [float(i)]})
            eng.flush()
    code, result, err = _run("compact", "--data", str(data), "--progress")
    assert code == 0 and result == {"tables": 1, "files_removed": 4, "interrupted": False}, err
    assert "compact [" in err
    cfg = tmp_path / "tsengine.yaml"
    cfg.write_text(
        f"storage:\n  retention: {{default: 1}}\n  archive: {{type: local, path: {tmp_path / 'arch'}}}\n"
    )
    code, result, err = _run("archive", "--data", str(data), "--config", str(cfg))
    assert code == 0 and result["archived"] == 1, err
    assert len(list((tmp_path / "arch" / "default" / "cpu").rglob("*.parquet"))) == 1
    assert _count(data, "SELECT count(*) FROM cpu") == [(0,)]


def test_jobs_refuse_a_directory_a_server_holds(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "data", fsync="none"):
        code, _, err = _run("compact", "--data", str(tmp_path / "data"))
    assert code == 2 and "in use" in err and "POST /api/v1/tasks/cleanup/run" in err
