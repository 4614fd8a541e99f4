"""Storage budget (oldest first, event recorded), retention policies (lookup, persistence,
property: nothing inside its retention is ever removed), the storage config section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsengine import Engine
from tsengine.clock import ManualClock
from tsengine.errors import InvalidInput
from tsengine.lifecycle import ArchiveStore, Lifecycle, RetentionPolicies, StorageConfig, defaults_from_env
from tsengine.lifecycle.budget import plan_evictions, wal_bytes

H = 3_600_000_000_000
START = 1_700_000_000_000_000_000 // H * H


def _fill(eng: Engine, table: str, first_hour: int, hours: int) -> None:
    t = START + first_hour * H + np.arange(hours * 60, dtype=np.int64) * (H // 60)
    eng.write(table, t, tags={"host": ["a"] * len(t)}, fields={"v": np.random.default_rng(1).random(len(t))})
    eng.flush()


@pytest.mark.parametrize("archive", [False, True])
def test_budget_evicts_oldest_first_and_records_the_event(tmp_path: Path, archive: bool) -> None:
    clock = ManualClock(START)
    with Engine.open(tmp_path / "d", clock=clock, fsync="none") as eng:
        _fill(eng, "cpu", -10, 10)  # hours -10..-1
        _fill(eng, "mem", -5, 5)  # hours -5..-1
        files = {(t, e.file.hour): e for db, t in eng.tables() for e in eng.table_files(db, t)}
        used = eng.disk_usage() + wal_bytes(eng.path)
        budget = used - sum(e.bytes for (_, h), e in files.items() if h < START // H - 7)  # keep the last 7 h
        store = ArchiveStore.local(tmp_path / "arch") if archive else None
        life = Lifecycle(eng, StorageConfig(max_local_bytes=budget + 1), archive=store)
        result = life.enforce_budget()
        action = "archived" if archive else "dropped"
        assert result[action] == 3 and result["bytes_freed"] == used - budget
        left = {(t, e.file.hour) for db, t in eng.tables() if t != "events" for e in eng.table_files(db, t)}
        assert min(h for _, h in left) == START // H - 7  # the three oldest cpu hours went
        assert all(h >= START // H - 7 for _, h in left)
        event = eng.sql("SELECT service, category, severity, name, attributes FROM events").to_pylist()
        assert len(event) == 1 and event[0]["name"] == "storage_budget_exceeded"
        assert event[0]["category"] == "system" and json.loads(event[0]["attributes"])["action"] == action
        assert life.counters["budget_evictions"] == 1
        if archive:
            assert eng.sql("SELECT count(*) AS c FROM archive.cpu").column("c")[0].as_py() == 180


def test_plan_evictions_is_empty_within_budget() -> None:
    assert plan_evictions([], 10, 0) == [] and plan_evictions([], 10, 20) == []


def test_policies_lookup_persist_and_validate(tmp_path: Path) -> None:
    p = RetentionPolicies(tmp_path, {"*": 100, "*.events": 10, "metrics": 50})
    assert p.hours_for("default", "cpu") == 100 and p.hours_for("default", "events") == 10
    assert p.hours_for("metrics", "events") == 50  # a database default beats the "*.events" one
    p.set("default", None, 5)
    p.set("default", "cpu", None)  # forever, hiding every default
    assert p.hours_for("default", "mem") == 5 and p.hours_for("default", "cpu") is None
    again = RetentionPolicies(tmp_path, {"*": 100})
    assert again.hours_for("default", "cpu") is None and again.hours_for("default", "x") == 5
    assert again.delete("default", "cpu") and not again.delete("default", "cpu")
    assert again.hours_for("default", "cpu") == 5
    again.set_default("m.cpu_1h", None)  # a rollup level without retention: forever
    again.set_default("m.cpu_1h", 3, replace=False)  # the first default is kept
    assert again.hours_for("m", "cpu_1h") is None and again.hours_for("m", "cpu") == 100
    for bad in (-1, "x", True, float("inf"), float("nan")):
        with pytest.raises(InvalidInput, match=r"default\.cpu"):
            again.set("default", "cpu", bad)
    with pytest.raises(InvalidInput, match=r"\*\.events"):
        again.set_default("*.events", float("inf"))  # a cutoff in ns has no infinity
    with pytest.raises(InvalidInput):
        again.set("bad db", None, 1)


def test_defaults_from_env() -> None:
    env = {"METRICS_RETENTION_HOURS": "720", "EVENTS_RETENTION_HOURS": "2160"}
    assert defaults_from_env(env) == {"*": 720.0, "*.events": 2160.0}
    for bad in ("a week", "inf", "-1"):
        with pytest.raises(InvalidInput, match="METRICS_RETENTION_HOURS"):
            defaults_from_env({"METRICS_RETENTION_HOURS": bad})


def test_storage_config_errors_name_the_key() -> None:
    cfg = StorageConfig.from_mapping(
        {"max_local_bytes": "2GiB", "downsampling": {"lateness": "5m", "resolutions": [
            {"name": "1m", "every": "60s", "retention_hours": 48}, {"name": "1h", "every": "1h"}]}}
    )  # fmt: skip
    assert cfg.max_local_bytes == 2 * 1024**3 and cfg.lateness_s == 300
    assert [(r.name, r.every_s, r.retention_hours) for r in cfg.resolutions] == [
        ("1m", 60, 48),
        ("1h", 3600, None),
    ]
    for doc, needle in [
        ({"nope": 1}, "unknown keys"),
        ({"max_local_bytes": "lots"}, "storage.max_local_bytes"),
        (
            {"downsampling": {"resolutions": [{"name": "1h", "every": "1h"}, {"name": "1m", "every": 60}]}},
            "finest",
        ),
        ({"downsampling": {"resolutions": [{"name": "x y", "every": 1}]}}, "resolutions[0]"),
        ({"retention": {"default": -1}}, "storage.retention.default"),
        ({"downsampling": {"lateness": float("inf")}}, "storage.downsampling.lateness"),  # YAML .inf
        ({"downsampling": {"resolutions": [{"name": "1m", "every": float("inf")}]}}, "resolutions[0].every"),
    ]:
        with pytest.raises(InvalidInput, match=needle.replace("[", r"\[")):
            StorageConfig.from_mapping(doc)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hours=st.lists(st.integers(-100, 5), min_size=1, max_size=40),
    retention=st.floats(0.5, 72),
    advance_h=st.floats(0, 48),
)
def test_nothing_inside_its_retention_is_removed(tmp_path_factory, hours, retention, advance_h) -> None:
    clock = ManualClock(START)
    path = tmp_path_factory.mktemp("d")
    with Engine.open(path, clock=clock, fsync="none", retention_hours={"default": retention}) as eng:
        t = np.array(sorted({START + h * H + 17 for h in hours}), dtype=np.int64)
        eng.write("cpu", t, tags={"host": ["a"] * len(t)}, fields={"v": np.arange(len(t), dtype=np.float64)})
        eng.flush()
        clock.advance(advance_h * 3600)
        life = Lifecycle(eng, StorageConfig(), archive=ArchiveStore.local(path.parent / (path.name + "-a")))
        life.run()
        cutoff = clock.now_ns() - int(retention * 3600e9)
        local = set(eng.sql("SELECT epoch_ns(time) AS t FROM cpu").column("t").to_pylist())
        assert {x for x in t.tolist() if x >= cutoff} <= local  # inside retention: still local
        if local != set(t.tolist()):
            archived = set(eng.sql("SELECT epoch_ns(time) AS t FROM archive.cpu").column("t").to_pylist())
            assert all(x < cutoff for x in archived) and archived | local == set(t.tolist())
