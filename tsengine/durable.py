"""Durable file-system steps: fsync a directory, create directories durably, replace a file
atomically. Every on-disk write of the engine that must survive a crash goes through these.

``atomic_write(path, write)`` calls ``write(file)`` on ``<path>.tmp``, fsyncs it, renames it over
``path`` and fsyncs the directory: after a crash there is either the old file or the whole new
one, never a torn one (a stray ``.tmp`` may remain; openers remove it).
Blocking I/O; thread-safe for distinct paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "fsync_dir", "makedirs_durable"]


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """``mkdir -p``, fsyncing each parent whose entries changed, so that a file later made
    durable inside the new directory cannot vanish with it on a power loss."""
    if path.is_dir():
        return
    makedirs_durable(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` whole or not at all (tmp file, fsync, rename, fsync the directory)."""
    makedirs_durable(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
