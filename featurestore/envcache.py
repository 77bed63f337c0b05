"""One read-only LMDB environment per feature set and process, and the views pinned to it.

py-lmdb refuses to open an environment twice in a process, so every :class:`FeatureSet` of a
set shares one. After a fork the child closes the inherited environment and opens its own,
unless arrays made before the fork still view the inherited map: closing would unmap memory
they point into, so the child keeps reading through it (safe here: the environment is
read-only and lock-free, so it holds no per-process lock state).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
import numpy as np

from featurestore.layout import open_read_env


class _Pinned:
    """A byte range of an LMDB memory map, exposed to numpy; keeps the environment (the map) open."""

    def __init__(self, address: int, nbytes: int, env: lmdb.Environment) -> None:
        self.__array_interface__ = {
            "data": (address, True), "shape": (nbytes,), "typestr": "|u1", "version": 3,
        }  # fmt: skip
        self.env = env


@dataclass
class _Entry:
    pid: int
    env: weakref.ref
    pins: weakref.WeakSet = field(default_factory=weakref.WeakSet)


_entries: dict[tuple[int, int], _Entry] = {}
_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it when we forked


os.register_at_fork(after_in_child=_reset_after_fork)


def read_env(path: Path, readahead: bool = True) -> lmdb.Environment:
    """Returns this process's read-only environment for ``path``, opening it if needed.

    ``readahead`` applies when this call opens the environment.
    """
    try:
        st = (Path(path) / "data.mdb").stat()
    except FileNotFoundError:
        return open_read_env(Path(path), readahead)  # raises the store's error for a missing file
    # Keyed by file identity, not path: a set removed and written again at the same path is
    # a new environment (as py-lmdb's own already-open guard sees it).
    key = (st.st_dev, st.st_ino)
    with _lock:
        entry = _entries.get(key)
        env = entry.env() if entry is not None else None
        if env is not None and entry.pid != os.getpid():
            if len(entry.pins):
                entry.pid = os.getpid()  # pre-fork views still read from this map: keep it
            else:
                env.close()
                env = None
        if env is None:
            for dead in [k for k, e in _entries.items() if e.env() is None]:
                del _entries[dead]
            env = open_read_env(Path(path), readahead)
            _entries[key] = _Entry(os.getpid(), weakref.ref(env))
        return env


def pin(env: lmdb.Environment, address: int, nbytes: int) -> np.ndarray:
    """Returns a read-only uint8 array over ``nbytes`` of ``env``'s map at ``address``.

    The array (and every view of it) keeps ``env`` open while it lives.
    """
    holder = _Pinned(address, nbytes, env)
    for entry in _entries.values():
        if entry.env() is env:
            entry.pins.add(holder)
            break
    return np.asarray(holder)
