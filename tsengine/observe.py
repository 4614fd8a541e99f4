"""The engine's self-measurements: a narrow observer the engine calls on its hot spots.

The engine does not own a metrics registry; whoever runs it (the server, a benchmark) sets
``Engine.observer`` to an object with these methods and turns the calls into metrics. The
default observer does nothing. Calls happen on the thread doing the work (a writer, the
persister), must be cheap, and must not raise.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["EngineObserver", "NullObserver"]


class EngineObserver(Protocol):
    def wal_append(self, seconds: float, nbytes: int) -> None:
        """One WAL record written (the ``write()`` only, no fsync)."""

    def wal_fsync(self, seconds: float) -> None:
        """One fsync of the WAL (group commit, interval thread, rotation or close)."""

    def persisted(self, seconds: float, rows: int, files: int) -> None:
        """One buffer chunk written to Parquet."""


class NullObserver:
    """Measures nothing."""

    def wal_append(self, seconds: float, nbytes: int) -> None:
        pass

    def wal_fsync(self, seconds: float) -> None:
        pass

    def persisted(self, seconds: float, rows: int, files: int) -> None:
        pass
