"""tsengine: a time-series storage engine and telemetry backend.

``from tsengine import Engine`` gives the embedded storage engine (numpy ring buffers, WAL,
Parquet partitions, DuckDB queries). Importing :mod:`tsengine` itself is cheap and imports
neither duckdb nor pyarrow, so that :mod:`tsengine.instrument` can be used by applications
that only instrument themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Engine", "Settings"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from tsengine.engine import Engine
    from tsengine.settings import Settings


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from tsengine.engine import Engine

        return Engine
    if name == "Settings":
        from tsengine.settings import Settings

        return Settings
    raise AttributeError(f"module 'tsengine' has no attribute {name!r}")
