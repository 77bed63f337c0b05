"""Checkpoints of a model and its training state, after fvcore's ``Checkpointer``.

``Checkpointer(directory, model, optimizer, scheduler, **extra_stateful)`` saves everything
with a ``state_dict`` into ``<directory>/<name>.pth`` and records the latest name in
``<directory>/last_checkpoint``. ``resume_or_load`` continues a run from its last checkpoint,
or else starts from given weights::

    ckpt = Checkpointer(run_dir / "checkpoints", model, optimizer, scheduler, keep_last=2)
    extra = ckpt.resume_or_load(init_weights, resume=True)
    start_epoch = extra.get("epoch", -1) + 1
    ...
    ckpt.save(f"epoch_{epoch:04d}", epoch=epoch, metrics={"val_top1": top1})

Writes are atomic (a temporary file in the same folder, fsync, ``os.replace``), so a crash
mid-save leaves the previous checkpoint and ``last_checkpoint`` intact. Files are read with
``torch.load(weights_only=True)`` only: a checkpoint holds tensors, numbers, strings, ``None``
and dicts/lists/tuples of them, never pickled objects (``save`` refuses anything else up front).
Models wrapped in ``DistributedDataParallel`` / ``DataParallel`` are saved without the
``module.`` prefix, and prefixed state dicts load into plain models.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from os import PathLike
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from mlt.errors import InputError

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
SUFFIX = ".pth"

_LEAVES = (
    torch.Tensor,
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type(None),
    torch.Size,
    torch.dtype,
    torch.device,
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Returns the model inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or itself)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def state_dict_digest(model: nn.Module) -> str:
    """Returns a sha256 hex digest of the model's weights (names, shapes, dtypes and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(unwrap_model(model).state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_model_state(
    model: nn.Module, state: dict, source: str | PathLike = "<state dict>"
) -> nn.Module:
    """Returns ``model`` with ``state`` loaded (strict), stripping a ``module.`` prefix if present.

    Keys missing or left over, or a tensor of the wrong shape, raise :class:`InputError` naming
    ``source``, the key and both shapes.
    """
    target = unwrap_model(model)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(
            source, "model", {"missing": missing[:6], "unexpected": unexpected[:6]},
            f"the keys of this {type(target).__name__}", kind="checkpoint does not fit the model",
        )  # fmt: skip
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != own[key].shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InputError(
                source, f"model.{key}", got, f"shape {tuple(own[key].shape)} of this model",
                kind="checkpoint does not fit the model",
            )  # fmt: skip
    target.load_state_dict(state)
    return model


def read_checkpoint(path: str | PathLike, mmap: bool = False) -> dict:
    """Returns the dict stored in a checkpoint file, read with ``weights_only=True`` on the CPU.

    ``mmap`` maps the tensors from the file instead of reading them all up front (files in
    torch's zip format; older files are read whole).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, None, str(path), "an existing checkpoint file", kind="missing checkpoint"
        )
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap" in str(err)):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            path, None, "pickled objects",
            "only tensors, numbers, strings and containers of them (loaded with weights_only=True)",
            kind="unsafe checkpoint",
        ) from err  # fmt: skip
    except Exception as err:  # truncated or not a torch file at all
        raise InputError(
            path,
            None,
            f"{type(err).__name__}: {err}",
            "a torch checkpoint",
            kind="corrupt checkpoint",
        ) from err
    if not isinstance(data, dict):
        raise InputError(
            path, None, type(data).__name__, "a checkpoint dict", kind="corrupt checkpoint"
        )
    return data


def _plain(value: Any, where: str) -> Any:
    """Returns ``value`` with numpy scalars made Python numbers; raises on anything unloadable."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, dict):
        items = ((k, _plain(v, f"{where}.{k}")) for k, v in value.items())
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, list | tuple | set):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(
        f"checkpoint value {where} is a {type(value).__name__}: only tensors, numbers, strings, None "
        "and dicts/lists/tuples of them load with weights_only=True"
    )


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes ``path`` through a temporary file in the same folder, fsynced, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Checkpointer:
    """Saves and restores a model, its optimizer, scheduler and any other ``state_dict`` holders."""

    def __init__(
        self,
        directory: str | PathLike,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        *,
        keep_last: int | None = None,
        **extra_stateful: Any,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise InputError(
                None, "keep_last", keep_last, "a positive number of checkpoints, or None for all"
            )
        self.directory = Path(directory)
        self.model = model
        self.keep_last = keep_last
        stateful = {"optimizer": optimizer, "scheduler": scheduler, **extra_stateful}
        self.checkpointables = {k: v for k, v in stateful.items() if v is not None}
        for name, obj in self.checkpointables.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(
                    f"checkpointable {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict"
                )
        self._saved = self._existing()

    def _existing(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            self.directory.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime_ns, p.name)
        )

    def save(self, name: str, **extra: Any) -> Path:
        """Returns the path of the checkpoint written as ``<directory>/<name>.pth``.

        Holds the model, every checkpointable's state and ``extra`` (epoch, metrics, ...).
        """
        if not name or Path(name).name != name or name.startswith("."):
            raise InputError(None, "name", name, "a plain file name (no folders, not hidden)")
        clash = sorted(set(extra) & ({"model"} | set(self.checkpointables)))
        if clash:
            raise InputError(
                None, "extra", clash, "extra names other than the model and checkpointables"
            )
        data = {"model": unwrap_model(self.model).state_dict()}
        data.update({k: obj.state_dict() for k, obj in self.checkpointables.items()})
        data.update(extra)
        data = _plain(data, "checkpoint")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}{SUFFIX}"
        _atomic_write(path, lambda f: torch.save(data, f))
        _atomic_write(self.directory / LAST_CHECKPOINT, lambda f: f.write(path.name.encode()))
        self._saved = [p for p in self._saved if p != path] + [path]
        self._prune()
        log.info("saved checkpoint %s", path)
        return path

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        old, self._saved = self._saved[: -self.keep_last], self._saved[-self.keep_last :]
        for path in old:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def get_checkpoint_file(self) -> Path | None:
        """Returns the latest checkpoint's path from ``last_checkpoint``, or None if there is none."""
        try:
            name = (self.directory / LAST_CHECKPOINT).read_text().strip()
        except FileNotFoundError:
            return None
        path = self.directory / name
        if not name or not path.is_file():
            log.warning("%s names %r, which is not there", self.directory / LAST_CHECKPOINT, name)
            return None
        return path

    def has_checkpoint(self) -> bool:
        """Returns whether the directory has a latest checkpoint to resume from."""
        return self.get_checkpoint_file() is not None

    def load(self, path: str | PathLike, checkpointables: Iterable[str] | None = None) -> dict:
        """Returns the checkpoint's extra data after loading the model and checkpointables from it.

        ``checkpointables`` names which of this checkpointer's objects to restore (default all;
        ``[]`` loads the model only). The returned dict holds everything else the file has
        (``epoch``, ``metrics``, ...).
        """
        path = Path(path)
        data = read_checkpoint(path)
        if "model" not in data:
            raise InputError(
                path, "model", sorted(data)[:8], "a checkpoint with a 'model' state dict"
            )
        load_model_state(self.model, data.pop("model"), path)
        names = list(self.checkpointables) if checkpointables is None else list(checkpointables)
        unknown = sorted(set(names) - set(self.checkpointables))
        if unknown:
            raise InputError(
                None, "checkpointables", unknown, f"names among {sorted(self.checkpointables)}"
            )
        for name in names:
            if name not in data:
                log.warning("%s has no %r state; it starts fresh", path, name)
                continue
            self.checkpointables[name].load_state_dict(data[name])
        log.info("loaded checkpoint %s", path)
        return {k: v for k, v in data.items() if k not in self.checkpointables}

    def resume_or_load(self, path: str | PathLike | None = None, resume: bool = True) -> dict:
        """Returns the extra data of what was loaded: the last checkpoint, else ``path``, else {}.

        With ``resume`` and a checkpoint in the directory, everything is restored from it.
        Otherwise ``path`` (if given) initialises the model only, and training starts fresh.
        """
        if resume:
            last = self.get_checkpoint_file()
            if last is not None:
                return self.load(last)
        if path is not None:
            return self.load(path, checkpointables=[])
        return {}
