"""Decorators for business functions: ``@telemetry`` and the domain ones of the seed.

Each decorated call — sync or async — records:

* ``telemetry_operations_total{domain,operation,status}`` (status ``success`` / ``error``),
* ``telemetry_operation_duration_seconds{domain,operation}``,
* one event (category from the domain; ``<operation>`` with severity INFO, or ERROR with the
  exception type when it raised) unless ``track_event=False``,
* the call hooks (the tracing seam: a span per call).

Arguments are not captured unless asked (``capture_args=True`` or a list of parameter names):
they are where PII lives. Exceptions propagate unchanged, with their original traceback.
Telemetry failures inside the wrapper are swallowed and counted; the function's own result or
exception always wins. The runtime is looked up at call time, so ``configure()`` after
decoration still applies; when telemetry is disabled the wrapper only calls the function.

Usable bare or with arguments: ``@billing_telemetry`` / ``@billing_telemetry("create_invoice")``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from tsengine.instrument._event import EventCategory, EventSeverity
from tsengine.instrument._hooks import CallInfo
from tsengine.instrument._metrics import Counter, Histogram, get_or_create
from tsengine.instrument._runtime import Telemetry, get_telemetry

__all__ = [
    "billing_telemetry",
    "document_telemetry",
    "payment_telemetry",
    "telemetry",
    "user_activity_telemetry",
]

log = logging.getLogger("tsengine.instrument")

F = TypeVar("F", bound=Callable[..., Any])

#: A call's hook state: its CallInfo and the tokens the hooks returned.
_Call = tuple[CallInfo, list[object]]

#: Captured argument values are cut to this many characters.
MAX_ARG_CHARS = 200


class _CallRecorder:
    """Per-decorated-function state: names, label children cached per runtime."""

    __slots__ = (
        "_cache",
        "capture",
        "category",
        "domain",
        "operation",
        "runtime",
        "signature",
        "track_event",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        domain: str,
        operation: str,
        category: EventCategory,
        track_event: bool,
        capture: bool | Sequence[str],
        runtime: Telemetry | None,
    ) -> None:
        self.domain = domain
        self.operation = operation
        self.category = category
        self.track_event = track_event
        self.capture = capture
        self.runtime = runtime
        self.signature = inspect.signature(func) if capture else None
        self._cache: tuple[Telemetry, Any, Any, Any] | None = None

    def _children(self, rt: Telemetry) -> tuple[Any, Any, Any]:
        cache = self._cache
        if cache is None or cache[0] is not rt:
            reg = rt.registry
            calls = get_or_create(
                Counter,
                "telemetry_operations_total",
                "Decorated business calls by domain, operation and outcome.",
                ("domain", "operation", "status"),
                reg,
            )
            seconds = get_or_create(
                Histogram,
                "telemetry_operation_duration_seconds",
                "Duration of decorated business calls.",
                ("domain", "operation"),
                reg,
            )
            cache = self._cache = (
                rt,
                calls.labels(self.domain, self.operation, "success"),
                calls.labels(self.domain, self.operation, "error"),
                seconds.labels(self.domain, self.operation),
            )
        return cache[1], cache[2], cache[3]

    def start(self, rt: Telemetry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        """The call's hook state, or None when there are no hooks and no capture (the cheap path)."""
        if not (self.capture or rt.hooks.call):
            return None
        info = CallInfo(self.domain, self.operation)
        if self.capture:
            try:
                info.attributes["args"] = self._capture(args, kwargs)
            except Exception:  # telemetry boundary
                rt.record_error("decorator")
        tokens = rt.hooks.call_start(info) if rt.hooks.call else []
        return info, tokens

    def _capture(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        assert self.signature is not None
        bound = self.signature.bind_partial(*args, **kwargs).arguments
        names = bound if self.capture is True else [n for n in self.capture if n in bound]  # type: ignore[union-attr]
        return {n: str(bound[n])[:MAX_ARG_CHARS] for n in names}

    def finish(
        self, rt: Telemetry, call: _Call | None, error: BaseException | None, duration_s: float
    ) -> None:
        try:
            if rt.metrics_on:
                ok, failed, seconds = self._children(rt)
                (failed if error is not None else ok).inc()
                seconds.observe(duration_s)
            if self.track_event and rt.events.enabled:
                self._track(rt, call[0].attributes if call else None, error, duration_s)
        except Exception:  # telemetry boundary: the function's outcome always wins
            rt.record_error("decorator")
            log.exception("telemetry for %s.%s failed", self.domain, self.operation)
        if call is not None and call[1]:
            # Outside the block above: a span started must end even if metrics or events failed.
            info, tokens = call
            info.duration_s = duration_s
            info.error = error
            rt.hooks.call_end(info, tokens)

    def _track(
        self, rt: Telemetry, extra: dict[str, Any] | None, error: BaseException | None, duration_s: float
    ) -> None:
        attrs: dict[str, Any] = {"domain": self.domain, "duration_s": duration_s}
        if extra:
            attrs.update(extra)
        if error is not None:
            attrs["error_type"] = type(error).__name__
        rt.events._emit(
            self.operation,
            self.category,
            EventSeverity.INFO if error is None else EventSeverity.ERROR,
            "" if error is None else f"{self.operation} failed",
            attrs,
        )


def _decorate(
    func: F,
    *,
    domain: str,
    operation: str | None,
    category: EventCategory,
    track_event: bool,
    capture_args: bool | Sequence[str],
    runtime: Telemetry | None,
) -> F:
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise TypeError(f"cannot decorate generator function {func.__qualname__}: time its consumer instead")
    rec = _CallRecorder(
        func,
        domain=domain,
        operation=operation or func.__name__,
        category=category,
        track_event=track_event,
        capture=capture_args,
        runtime=runtime,
    )

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = rec.runtime or get_telemetry()
            if not rt.enabled:
                return await func(*args, **kwargs)
            call = rec.start(rt, args, kwargs)
            clock = rt.clock
            start = clock.monotonic()
            error = None
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                rec.finish(rt, call, error, clock.monotonic() - start)
                error = None  # break the exception -> traceback -> frame -> exception cycle

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rt = rec.runtime or get_telemetry()
        if not rt.enabled:
            return func(*args, **kwargs)
        call = rec.start(rt, args, kwargs)
        clock = rt.clock
        start = clock.monotonic()
        error = None
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            rec.finish(rt, call, error, clock.monotonic() - start)
            error = None  # break the exception -> traceback -> frame -> exception cycle

    return wrapper  # type: ignore[return-value]


def _factory(domain: str, category: EventCategory, doc: str) -> Any:
    @overload
    def decorator(operation: F) -> F: ...
    @overload
    def decorator(
        operation: str | None = None,
        *,
        track_event: bool = True,
        capture_args: bool | Sequence[str] = False,
        runtime: Telemetry | None = None,
    ) -> Callable[[F], F]: ...

    def decorator(
        operation: Any = None,
        *,
        track_event: bool = True,
        capture_args: bool | Sequence[str] = False,
        runtime: Telemetry | None = None,
    ) -> Any:
        return telemetry(
            operation,
            domain=domain,
            category=category,
            track_event=track_event,
            capture_args=capture_args,
            runtime=runtime,
        )

    decorator.__name__ = decorator.__qualname__ = f"{domain}_telemetry"
    decorator.__doc__ = doc
    return decorator


def telemetry(
    operation: Any = None,
    *,
    domain: str = "function",
    category: EventCategory | str = EventCategory.BUSINESS,
    track_event: bool = True,
    capture_args: bool | Sequence[str] = False,
    runtime: Telemetry | None = None,
) -> Any:
    """Generic decorator: count, time and (optionally) track an event for each call.

    Args:
        operation: the operation label (default: the function's name). May be the function
            itself when used bare (``@telemetry``).
        domain: the ``domain`` label and event attribute (``billing``, ``search``…).
        category: the event category.
        track_event: emit one event per call.
        capture_args: False (default), True for all arguments, or the names to capture.
        runtime: a specific :class:`Telemetry` (default: the process default, at call time).
    """
    cat = EventCategory(category)
    if callable(operation):
        return _decorate(
            operation,
            domain=domain,
            operation=None,
            category=cat,
            track_event=track_event,
            capture_args=capture_args,
            runtime=runtime,
        )
    return functools.partial(
        _decorate,
        domain=domain,
        operation=operation,
        category=cat,
        track_event=track_event,
        capture_args=capture_args,
        runtime=runtime,
    )


billing_telemetry = _factory(
    "billing", EventCategory.BILLING, "Decorate a billing operation (invoice, charge, renewal)."
)
payment_telemetry = _factory("payment", EventCategory.PAYMENT, "Decorate a payment operation.")
document_telemetry = _factory("document", EventCategory.DOCUMENT, "Decorate a document operation.")
user_activity_telemetry = _factory(
    "user_activity", EventCategory.USER_ACTION, "Decorate a user-facing action (login, export…)."
)
