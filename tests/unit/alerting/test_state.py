"""The state machine against a reference model (hypothesis), the state file, eviction."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.alerting import parse_rule
from server.alerting.evaluator import Sample
from server.alerting.silences import parse_silence, silence_state, silencing
from server.alerting.state import AlertState, Instance, step_rule
from tsengine.errors import InvalidInput

S = 1_000_000_000
ALLOWED = {("inactive", "pending"), ("pending", "firing"), ("pending", "inactive"), ("firing", "resolved")}


@given(
    for_s=st.integers(0, 300),
    keep_s=st.integers(0, 300),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 200)), min_size=1, max_size=40),
)
def test_state_machine_matches_a_reference_model(
    for_s: int, keep_s: int, steps: list[tuple[bool, int]]
) -> None:
    rule = parse_rule(
        {"name": "r", "kind": "sql", "sql": "select 1 as value", "for": for_s, "keep_firing_for": keep_s}
    )
    instances: dict[str, Instance] = {}
    now = 0
    # the model: when the condition started holding, when it last held, and the state
    state, active_at, last_true = "inactive", 0, 0
    for cond, advance in steps:
        now += advance * S
        keep, trans, dropped = step_rule(rule, [Sample({}, 1.0)] if cond else [], instances, now)
        for iid in dropped:
            del instances[iid]
        instances.update({i.id: i for i in keep})
        if cond:
            if state in ("inactive", "resolved"):
                state, active_at = "pending", now
            last_true = now
            if state == "pending" and now - active_at >= for_s * S:
                state = "firing"
        elif state == "pending":
            state = "inactive"
        elif state == "firing" and now - last_true >= keep_s * S:
            state = "resolved"
        got = next(iter(instances.values())).state if instances else "inactive"
        assert got == state
        for t in trans:
            assert (t.from_state, t.event) in ALLOWED


def _inst(i: int, state: str, resolved_at: int | None = None) -> Instance:
    return Instance(
        id=f"id{i}", rule="r", labels={"n": str(i)}, annotations={}, value=float(i), state=state,
        active_at_ns=i, resolved_at_ns=resolved_at,
    )  # fmt: skip


def test_save_load_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    state = AlertState(tmp_path / "_alerting" / "state.json")
    state.instances = {"id1": _inst(1, "firing")}
    state.instances["id1"].acked_by = "alice"
    state.silences = {"s1": {"id": "s1", "matchers": ['a="b"'], "starts_at_ns": 0, "ends_at_ns": 9,
                             "created_at_ns": 0, "created_by": "", "comment": ""}}  # fmt: skip
    state.notify = {"groups": {"g|c": {"firing": ["id1"], "sent_ns": 5}}}
    state.rule_overrides = {"gone": None}
    state.save()
    again = AlertState(state.path)
    again.load()
    assert again.instances == state.instances and again.silences == state.silences
    assert again.notify == state.notify and again.rule_overrides == {"gone": None}
    state.path.write_bytes(b"{not json")
    broken = AlertState(state.path)
    broken.load()
    assert broken.instances == {} and (state.path.parent / "state.json.corrupt").exists()
    assert not list(state.path.parent.glob("*.tmp"))


def test_eviction_drops_resolved_oldest_first() -> None:
    state = AlertState(Path("/nonexistent/state.json"), max_alerts=4)
    state.instances = {
        f"id{i}": _inst(i, "resolved" if i % 2 else "firing", resolved_at=100 - i if i % 2 else None)
        for i in range(6)
    }
    gone = state.evict()
    # resolved: id1 (at 99), id3 (97), id5 (95); oldest first → id5 and id3 go, firing ones stay
    assert sorted(i.id for i in gone) == ["id3", "id5"]
    assert sorted(state.instances) == ["id0", "id1", "id2", "id4"]
    state.max_alerts = 2
    assert [i.id for i in state.evict()] == ["id1"]
    assert sorted(state.instances) == ["id0", "id2", "id4"]  # over the bound, but firing: kept


def test_room_for_new_instances_evicts_resolved_then_refuses() -> None:
    state = AlertState(Path("/nonexistent/state.json"), max_alerts=4)
    state.instances = {"id0": _inst(0, "firing"), "id1": _inst(1, "resolved", resolved_at=5)}
    assert state.room_for(0) == (0, [])
    fits, gone = state.room_for(2)
    assert fits == 2 and gone == []  # 2 + 2 = 4: nothing to evict
    fits, gone = state.room_for(3)
    assert fits == 3 and [i.id for i in gone] == ["id1"]  # the resolved one makes room
    state.instances.update({f"new{i}": _inst(10 + i, "pending") for i in range(3)})
    assert state.room_for(5) == (0, [])  # full of pending and firing: every new one is refused


def test_silence_documents() -> None:
    now = 1_700_000_000 * S
    s = parse_silence(
        {"matchers": {"service": "api", "route": "=~/admin.*"}, "starts_at": "2023-11-14T22:13:20Z",
         "ends_at": 1_700_003_600, "created_by": "ops"},
        now,
    )  # fmt: skip
    assert s["starts_at_ns"] == now and s["ends_at_ns"] == now + 3600 * S
    assert silence_state(s, now) == "active" and silence_state(s, now + 3600 * S) == "expired"
    sils = {s["id"]: s}
    assert silencing(sils, {"service": "api", "route": "/admin/users"}, now) == [s["id"]]
    assert silencing(sils, {"service": "api", "route": "/shop"}, now) == []
    assert silencing(sils, {"service": "api", "route": "/admin/users"}, now + 3600 * S) == []
    future = parse_silence({"matchers": ['a="b"'], "starts_at": 1_700_000_100, "duration": "1m"}, now)
    assert silence_state(future, now) == "pending"
    for bad, reason in [
        ({"matchers": []}, "must not be empty"),
        ({"matchers": ['a=~".*"'], "duration": "1h"}, "match every alert"),
        ({"matchers": ['a="b"'], "duration": "1h", "colour": 1}, "unknown keys"),
        ({"matchers": ['a="b"'], "ends_at": 1}, "in the past"),
        ({"matchers": ['a="b"'], "ends_at": "yesterday"}, "RFC 3339"),
        ({"matchers": ["a"], "duration": "1h"}, "is not name=value"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            parse_silence(bad, now)
