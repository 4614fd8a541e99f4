"""Business decorators on sync and async functions: metrics, events, hooks, exceptions untouched."""

from __future__ import annotations

import traceback

import pytest

import tsengine.instrument as ti
from tsengine.instrument import (
    CallInfo,
    EventCategory,
    EventSeverity,
    Telemetry,
    billing_telemetry,
    document_telemetry,
    payment_telemetry,
    telemetry,
    user_activity_telemetry,
)

from .conftest import FakeClock


def calls(rt: Telemetry, domain: str, operation: str, status: str) -> float | None:
    return rt.registry.get_sample_value(
        "telemetry_operations_total", {"domain": domain, "operation": operation, "status": status}
    )


def test_sync_success_and_failure(rt: Telemetry, clock: FakeClock) -> None:
    @billing_telemetry("create_invoice", runtime=rt)
    def create_invoice(customer: str, amount: float) -> str:
        clock.advance(0.2)
        if amount < 0:
            raise ValueError("negative amount")
        return f"inv-{customer}"

    assert create_invoice("c1", 10.0) == "inv-c1"
    with pytest.raises(ValueError, match="negative amount"):
        create_invoice("c1", -1.0)
    assert calls(rt, "billing", "create_invoice", "success") == 1
    assert calls(rt, "billing", "create_invoice", "error") == 1
    assert rt.registry.get_sample_value(
        "telemetry_operation_duration_seconds_sum", {"domain": "billing", "operation": "create_invoice"}
    ) == pytest.approx(0.4)
    ok, failed = rt.events.get_events(category=EventCategory.BILLING)
    assert (ok.name, ok.severity) == ("create_invoice", EventSeverity.INFO)
    assert (failed.severity, failed.attributes["error_type"]) == (EventSeverity.ERROR, "ValueError")
    assert "args" not in ok.attributes  # no argument capture by default: that is where PII lives


async def test_async_function_is_timed_until_it_returns(rt: Telemetry, clock: FakeClock) -> None:
    @payment_telemetry("charge", runtime=rt)
    async def charge(amount: float) -> float:
        clock.advance(1.25)
        return amount

    assert await charge(5.0) == 5.0
    assert (
        rt.registry.get_sample_value(
            "telemetry_operation_duration_seconds_sum", {"domain": "payment", "operation": "charge"}
        )
        == 1.25
    )
    assert rt.events.get_events(category=EventCategory.PAYMENT)[0].name == "charge"


async def test_async_exception_propagates_unchanged_with_traceback(rt: Telemetry) -> None:
    class Declined(Exception):
        pass

    error = Declined("card declined")

    @payment_telemetry(runtime=rt)
    async def pay() -> None:
        raise error

    with pytest.raises(Declined) as info:
        await pay()
    assert info.value is error
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "pay"
    assert calls(rt, "payment", "pay", "error") == 1


@pytest.mark.parametrize("is_async", [False, True])
async def test_wrapper_drops_the_exception_it_recorded(rt: Telemetry, is_async: bool) -> None:
    # Left in the wrapper's frame, the exception would keep its own traceback alive (a cycle).
    def fail() -> None:
        raise KeyError("x")

    async def afail() -> None:
        fail()

    decorated = telemetry(runtime=rt)(afail if is_async else fail)
    with pytest.raises(KeyError) as info:
        await decorated() if is_async else decorated()
    frames = [frame for frame, _ in traceback.walk_tb(info.value.__traceback__)]
    (wrapper,) = [f for f in frames if f.f_code.co_name in ("wrapper", "async_wrapper")]
    assert wrapper.f_locals["error"] is None


def test_domain_decorator_used_bare_with_options_honours_them(rt: Telemetry) -> None:
    def refund() -> None:
        pass

    billing_telemetry(refund, track_event=False, runtime=rt)()
    assert calls(rt, "billing", "refund", "success") == 1
    assert rt.events.get_events() == []


def test_bare_decorators_use_the_function_name_and_the_default_runtime() -> None:
    @document_telemetry
    def upload_document() -> str:
        return "ok"

    @user_activity_telemetry
    async def export_report() -> str:
        return "ok"

    @telemetry
    def plain() -> int:
        return 1

    assert upload_document() == "ok" and plain() == 1
    assert upload_document.__name__ == "upload_document"
    rt = ti.get_telemetry()
    assert (calls(rt, "document", "upload_document", "success") or 0) >= 1
    assert (calls(rt, "function", "plain", "success") or 0) >= 1
    events = rt.events.get_events(name="upload_document")
    assert events and events[-1].category is EventCategory.DOCUMENT


def test_generic_decorator_options(rt: Telemetry) -> None:
    @telemetry("search", domain="catalog", category="business", capture_args=["query"], runtime=rt)
    def search(query: str, token: str) -> list[str]:
        return [query]

    @telemetry(domain="catalog", track_event=False, capture_args=True, runtime=rt)
    def quiet(x: int) -> int:
        return x

    search("shoes", token="secret")
    quiet(3)
    (ev,) = rt.events.get_events(category="business")
    assert ev.attributes["args"] == {"query": "shoes"}
    assert calls(rt, "catalog", "quiet", "success") == 1


def test_decorating_a_generator_is_refused() -> None:
    with pytest.raises(TypeError, match="generator"):

        @telemetry
        def gen():  # type: ignore[no-untyped-def]
            yield 1


def test_call_hooks_receive_start_and_end(rt: Telemetry) -> None:
    seen: list[tuple[str, object]] = []

    class Hook:
        def on_call_start(self, info: CallInfo) -> object:
            seen.append(("start", info.operation))
            return "span-1"

        def on_call_end(self, info: CallInfo, token: object) -> None:
            seen.append(("end", (token, type(info.error).__name__ if info.error else None)))

    rt.hooks.add_call_hook(Hook())

    @billing_telemetry("refund", runtime=rt)
    def refund() -> None:
        raise LookupError("no such charge")

    with pytest.raises(LookupError):
        refund()
    assert seen == [("start", "refund"), ("end", ("span-1", "LookupError"))]


def test_broken_telemetry_never_changes_the_result(rt: Telemetry) -> None:
    class BrokenHook:
        def on_call_start(self, info: CallInfo) -> object:
            raise RuntimeError("hook bug")

        def on_call_end(self, info: CallInfo, token: object) -> None:
            raise RuntimeError("hook bug")

    rt.hooks.add_call_hook(BrokenHook())

    def broken_track(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracker bug")

    rt.events._emit = broken_track  # type: ignore[method-assign,assignment]

    @telemetry(runtime=rt)
    def work() -> int:
        return 42

    assert work() == 42
    assert rt.registry.get_sample_value("tsengine_instrument_errors_total", {"component": "decorator"}) == 1
    assert rt.registry.get_sample_value("tsengine_instrument_errors_total", {"component": "hook"}) == 2


def test_disabled_runtime_only_calls_the_function(rt: Telemetry) -> None:
    rt.apply(rt.config.replace(enabled=False))

    @telemetry(runtime=rt)
    def work() -> int:
        return 1

    assert work() == 1
    assert rt.registry.collect() == []
