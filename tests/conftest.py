"""Shared fixtures: ``data_dir``, ``clock``, ``engine``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tsengine.clock import ManualClock


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(data_dir: Path, clock: ManualClock) -> Iterator[object]:
    from tsengine import Engine

    eng = Engine.open(data_dir, clock=clock)
    yield eng
    eng.close()
