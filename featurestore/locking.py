"""The writer lock: an fcntl lock file in a temporary folder, held while a writer lives."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StaleLock(Exception):
    """The lock file was replaced or removed while we waited: look again (internal)."""


def try_lock(path: Path) -> int | None:
    """Returns an fd holding an exclusive lock on ``path`` (created if missing), or None when held.

    The lock dies with its process, so a killed writer never blocks the next one. Raises
    :class:`StaleLock` when ``path`` no longer names the locked file (its folder was renamed
    or removed in between): the caller should look at the store again.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        raise StaleLock(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def holder(path: Path) -> str:
    """Returns the pid written in a lock file, or "?" when unreadable."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def release(fd: int) -> None:
    """Releases a lock taken by :func:`try_lock` (returns None)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
