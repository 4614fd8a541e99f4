"""Event tracker: enrichment, filtering, subscription, bounds and the audit contract."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

import pytest

from tsengine.instrument import (
    Event,
    EventCategory,
    EventSeverity,
    EventTracker,
    Telemetry,
    bind_context,
    current_context,
    set_trace_context_provider,
)

from .conftest import FakeClock


@pytest.fixture
def tracker(rt: Telemetry) -> EventTracker:
    return rt.events


def test_track_stamps_time_and_context(tracker: EventTracker, clock: FakeClock) -> None:
    with bind_context(user_id="u1", session_id="s1", correlation_id="c1"):
        ev = tracker.track("login", category="user_action", message="hello", attributes={"ip": "10.0.0.1"})
    assert ev is not None
    assert (ev.time_ns, ev.category, ev.severity) == (
        clock.time_ns(),
        EventCategory.USER_ACTION,
        EventSeverity.INFO,
    )
    assert (ev.user_id, ev.session_id, ev.correlation_id) == ("u1", "s1", "c1")
    assert ev.attributes == {"ip": "10.0.0.1"}
    assert ev.trace_id is None
    assert current_context().user_id is None  # unbound after the block
    d = ev.to_dict()
    assert d["severity"] == "info" and d["category"] == "user_action"
    json.dumps(d)


def test_explicit_ids_override_context(tracker: EventTracker) -> None:
    with bind_context(user_id="u1"):
        ev = tracker.track("x", user_id="u2")
    assert ev is not None and ev.user_id == "u2"


async def test_context_is_per_task(tracker: EventTracker) -> None:
    async def request(uid: str) -> Event | None:
        with bind_context(user_id=uid):
            await asyncio.sleep(0)
            return tracker.track("req")

    a, b = await asyncio.gather(request("a"), request("b"))
    assert a is not None and b is not None
    assert (a.user_id, b.user_id) == ("a", "b")


def test_trace_seam(tracker: EventTracker) -> None:
    set_trace_context_provider(lambda: ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
    try:
        ev = tracker.track("x")
    finally:
        set_trace_context_provider(None)
    assert ev is not None
    assert (ev.trace_id, ev.span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def test_unknown_category_or_severity_raises(tracker: EventTracker) -> None:
    with pytest.raises(ValueError, match="unknown category 'nonsense'"):
        tracker.track("x", category="nonsense")
    with pytest.raises(ValueError, match="unknown severity 'loud'"):
        tracker.track("x", severity="loud")
    assert tracker.track("x", severity=40, category=EventCategory.ERROR).severity is EventSeverity.ERROR  # type: ignore[union-attr]


def test_filters(tracker: EventTracker, clock: FakeClock) -> None:
    tracker.track("a", category="system", severity="debug")
    clock.advance(10)
    t1 = clock.time_ns()
    tracker.track("b", category="security", severity="warning")
    clock.advance(10)
    tracker.track("c", category="business", severity=EventSeverity.CRITICAL)
    tracker.track_audit_event("export", actor="bob")
    names = lambda evs: [e.name for e in evs]  # noqa: E731
    assert names(tracker.get_events()) == ["a", "b", "c", "export"]
    assert names(tracker.get_events(category="security")) == ["b"]
    assert names(tracker.get_events(category=["security", "audit"])) == ["b", "export"]
    assert names(tracker.get_events(category="audit")) == ["export"]
    assert names(tracker.get_events(min_severity="warning")) == ["b", "c"]
    assert names(tracker.get_events(name="c")) == ["c"]
    assert names(tracker.get_events(since_ns=t1)) == ["b", "c", "export"]
    assert names(tracker.get_events(until_ns=t1)) == ["a"]
    assert names(tracker.get_events(limit=2)) == ["c", "export"]


def test_counter_by_category_and_severity(tracker: EventTracker, rt: Telemetry) -> None:
    tracker.track("a", category="security", severity="error")
    tracker.track("b", category="security", severity="error")
    assert (
        rt.registry.get_sample_value("telemetry_events_total", {"category": "security", "severity": "error"})
        == 2.0
    )


def test_domain_helpers(tracker: EventTracker) -> None:
    tracker.track_billing_event("invoice_created", amount=10.0, currency="EUR", invoice_id="i1")
    tracker.track_payment_event("payment_failed", amount=5.0, payment_method="card", success=False)
    tracker.track_document_event("document_signed", document_id="d1", document_type="contract")
    tracker.track_license_event("license_activated", license_type="pro")
    tracker.track_user_action("export", format="csv")
    tracker.track_business_event("trial_converted")
    tracker.track_security_event("permission_denied", resource="/admin")
    tracker.track_error(ValueError("bad input"))
    by_name = {e.name: e for e in tracker.get_events()}
    assert by_name["invoice_created"].category is EventCategory.BILLING
    assert by_name["invoice_created"].attributes["invoice_id"] == "i1"
    assert by_name["payment_failed"].severity is EventSeverity.ERROR
    assert by_name["document_signed"].category is EventCategory.DOCUMENT
    assert by_name["license_activated"].category is EventCategory.LICENSE
    assert by_name["export"].category is EventCategory.USER_ACTION
    assert by_name["trial_converted"].category is EventCategory.BUSINESS
    assert by_name["permission_denied"].severity is EventSeverity.WARNING
    assert by_name["exception"].attributes["error_type"] == "ValueError"
    assert by_name["exception"].message == "bad input"


def test_bound_and_eviction_metric(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(events_max_events=3))
    for i in range(5):
        rt.events.track(f"e{i}", category="system")
    assert [e.name for e in rt.events.get_events()] == ["e2", "e3", "e4"]
    assert (
        rt.registry.get_sample_value("tsengine_instrument_events_evicted_total", {"category": "system"})
        == 2.0
    )


def test_retention(rt: Telemetry, clock: FakeClock) -> None:
    rt.apply(rt.config.replace(events_retention_hours=1.0))
    rt.events.track("old")
    clock.advance(3601)
    rt.events.track("new")
    assert [e.name for e in rt.events.get_events()] == ["new"]


def test_disabled_tracker_does_nothing(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(events_enabled=False))
    assert rt.events.track("x") is None
    assert len(rt.events) == 0


class TestAudit:
    def test_audit_events_are_not_pushed_out_by_noise(self, rt: Telemetry) -> None:
        rt.apply(rt.config.replace(events_max_events=3))
        rt.events.track_audit_event("role_changed", actor="admin")
        for i in range(10):
            rt.events.track(f"noise{i}", severity="debug")
        assert [e.name for e in rt.events.get_events(category="audit")] == ["role_changed"]

    def test_overflowing_audit_events_spill_to_disk(self, rt: Telemetry, tmp_path: Path) -> None:
        spill = tmp_path / "audit.jsonl"
        rt.apply(rt.config.replace(events_max_events=2, audit_spill_path=str(spill)))
        for i in range(5):
            rt.events.track_audit_event(f"a{i}", actor="bob")
        lines = [json.loads(line) for line in spill.read_text().splitlines()]
        assert [d["name"] for d in lines] == ["a0", "a1", "a2"]
        assert lines[0]["attributes"]["actor"] == "bob" and lines[0]["category"] == "audit"
        assert [e.name for e in rt.events.get_events(category="audit")] == ["a3", "a4"]
        assert rt.registry.get_sample_value("tsengine_instrument_audit_events_spilled_total") == 3.0
        assert rt.registry.get_sample_value("tsengine_instrument_audit_events_lost_total") in (None, 0.0)

    def test_expired_audit_events_spill_too(self, rt: Telemetry, tmp_path: Path, clock: FakeClock) -> None:
        spill = tmp_path / "audit.jsonl"
        rt.apply(rt.config.replace(events_retention_hours=1.0, audit_spill_path=str(spill)))
        rt.events.track_audit_event("old")
        clock.advance(3601)
        rt.events.track_audit_event("new")
        assert "old" in spill.read_text()

    def test_without_spill_file_loss_is_loud(self, rt: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
        rt.apply(rt.config.replace(events_max_events=1))
        with caplog.at_level(logging.ERROR, logger="tsengine.instrument"):
            rt.events.track_audit_event("first", actor="bob")
            rt.events.track_audit_event("second", actor="bob")
        assert rt.registry.get_sample_value("tsengine_instrument_audit_events_lost_total") == 1.0
        assert any('"name": "first"' in r.getMessage() for r in caplog.records)

    def test_unwritable_spill_file_counts_as_lost(
        self, rt: Telemetry, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        rt.apply(
            rt.config.replace(events_max_events=1, audit_spill_path=str(tmp_path / "no" / "such" / "dir"))
        )
        with caplog.at_level(logging.ERROR, logger="tsengine.instrument"):
            rt.events.track_audit_event("first")
            rt.events.track_audit_event("second")
        assert rt.registry.get_sample_value("tsengine_instrument_audit_events_lost_total") == 1.0

    def test_clear_spills_audit(self, rt: Telemetry, tmp_path: Path) -> None:
        spill = tmp_path / "audit.jsonl"
        rt.apply(rt.config.replace(audit_spill_path=str(spill)))
        rt.events.track_audit_event("kept")
        rt.events.clear()
        assert len(rt.events) == 0
        assert "kept" in spill.read_text()


class TestSubscription:
    def test_callback_with_filter_and_close(self, tracker: EventTracker) -> None:
        got: list[str] = []
        sub = tracker.subscribe(lambda e: got.append(e.name), categories="security", min_severity="warning")
        tracker.track("low", category="security", severity="info")
        tracker.track("hit", category="security", severity="error")
        tracker.track("other", category="system", severity="error")
        sub.close()
        tracker.track("after", category="security", severity="error")
        assert got == ["hit"]

    def test_failing_callback_never_breaks_track(self, tracker: EventTracker, rt: Telemetry) -> None:
        def boom(_: Event) -> None:
            raise RuntimeError("subscriber bug")

        got: list[str] = []
        with tracker.subscribe(boom), tracker.subscribe(lambda e: got.append(e.name)):
            assert tracker.track("x") is not None
        assert got == ["x"]
        assert (
            rt.registry.get_sample_value(
                "tsengine_instrument_errors_total", {"component": "event_subscriber"}
            )
            == 1.0
        )

    async def test_async_stream(self, tracker: EventTracker) -> None:
        async with tracker.stream(names=["wanted"]) as stream:
            tracker.track("ignored")
            tracker.track("wanted", attributes={"n": 1})
            ev = await asyncio.wait_for(anext(stream), timeout=5)
        assert ev.name == "wanted" and ev.attributes == {"n": 1}

    async def test_async_stream_from_another_thread(self, tracker: EventTracker) -> None:
        async with tracker.stream() as stream:
            t = threading.Thread(target=lambda: tracker.track("from_thread"))
            t.start()
            ev = await asyncio.wait_for(anext(stream), timeout=5)
            t.join()
        assert ev.name == "from_thread"

    async def test_slow_stream_drops_oldest_and_counts(self, tracker: EventTracker, rt: Telemetry) -> None:
        async with tracker.stream(maxsize=2) as stream:
            for i in range(5):
                tracker.track(f"e{i}")
            first = await asyncio.wait_for(anext(stream), timeout=5)
            second = await asyncio.wait_for(anext(stream), timeout=5)
        assert (first.name, second.name) == ("e3", "e4")
        assert stream.dropped == 3
        assert rt.registry.get_sample_value("tsengine_instrument_events_subscriber_dropped_total") == 3.0
