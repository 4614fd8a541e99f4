"""The public surface: ``__all__`` is guarded, and importing is cheap and side-effect free."""

from __future__ import annotations

import subprocess
import sys

import tsengine.instrument as ti

EXPECTED = {
    "Counter", "Gauge", "Histogram", "Timer", "MetricType", "CollectorRegistry", "Registry",
    "metrics_collector", "event_tracker", "performance_monitor", "configure",
    "setup_telemetry_for_app", "telemetry", "billing_telemetry", "payment_telemetry",
    "document_telemetry", "user_activity_telemetry", "TelemetryConfig", "ConfigError",
    "EventCategory", "EventSeverity", "Exporter", "RequestHook", "CallHook",
    "generate_latest", "to_json", "bind_context", "set_trace_context_provider",
}  # fmt: skip


def test_all_names_exist_and_are_sorted_and_unique() -> None:
    names = ti.__all__
    assert len(names) == len(set(names))
    assert sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n)) == names
    for name in names:
        assert hasattr(ti, name), name


def test_all_contains_the_issue_surface() -> None:
    assert set(ti.__all__) >= EXPECTED


def test_no_private_module_leaks_into_all() -> None:
    assert not [n for n in ti.__all__ if n.startswith("_")]


def test_public_objects_come_from_private_modules() -> None:
    for name in ti.__all__:
        obj = getattr(ti, name)
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith("tsengine.instrument"):
            assert module.split(".")[2].startswith("_"), f"{name} lives in public module {module}"


def test_import_pulls_no_heavy_dependency_and_starts_no_thread() -> None:
    code = (
        "import sys, threading\n"
        "before = threading.active_count()\n"
        "import tsengine.instrument\n"
        "heavy = [m for m in ('duckdb', 'pyarrow', 'aiohttp', 'numpy', 'starlette', 'fastapi', 'psutil')"
        " if m in sys.modules]\n"
        "print(heavy, threading.active_count() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={})
    assert out.stdout.strip() == "[] 0", out.stdout + out.stderr


def test_import_does_not_read_the_environment() -> None:
    # With a broken value in the environment, import still works: only configure() reads it.
    code = "import tsengine.instrument as ti; print(ti.get_telemetry().config.metrics_max_data_points)"
    env = {"METRICS_MAX_DATA_POINTS": "not a number"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "10000"


def test_asgi_module_imports_without_aiohttp_or_starlette() -> None:
    code = (
        "import sys; import tsengine.instrument.asgi\n"
        "print([m for m in ('aiohttp', 'starlette') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={})
    assert out.stdout.strip() == "[]"
