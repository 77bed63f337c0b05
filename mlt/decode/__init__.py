"""Decode/crop backends behind one interface: DALI, and a plain reference that tests hold DALI against.

Two entry points, each taking ``backend="dali" | "reference"``:

- :func:`make_train_loader` — pretraining input: an iterable per epoch of
  ``(images float32 NCHW normalised, labels int64)`` with ``len()``, ``set_epoch()`` and ``close()``.
- :func:`make_window_cropper` — window cropping for feature extraction: ``crop(image, boxes)`` and
  ``crop_many(items)`` return ``(N, 3, out, out)`` float32 normalised windows.

Both backends follow the same plans (:mod:`mlt.decode.plan`): the same epoch order and shards,
the same random crops and flips, the same window rounding. ``device="cpu"`` runs DALI without
CUDA; ``device="gpu"`` decodes with nvJPEG (``mixed``) and crops on the current CUDA device.
DALI is imported only when the DALI backend is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import numpy as np
import torch

from mlt.decode.images import ImageSource, decode_image
from mlt.decode.plan import (
    DEFAULT_AREA,
    DEFAULT_CROP_FRACTION,
    DEFAULT_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    Schedule,
    TransformSpec,
    check_files_labels,
    resolve_device,
)

Backend = Literal["dali", "reference"]
BACKENDS: tuple[str, ...] = ("dali", "reference")

__all__ = ["BACKENDS", "Backend", "Loader", "WindowCropper", "decode_image", "make_train_loader",
           "make_window_cropper"]  # fmt: skip


class Loader(Protocol):
    """A pretraining loader: iterating yields one epoch of (images NCHW float32, labels int64)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def close(self) -> None: ...


class WindowCropper(Protocol):
    """Cuts windows out of images; each call returns (N, 3, out, out) float32 normalised tensors."""

    def crop(self, image: ImageSource, boxes: np.ndarray) -> torch.Tensor: ...

    def crop_many(self, items: Sequence[tuple[ImageSource, np.ndarray]]) -> list[torch.Tensor]: ...

    def close(self) -> None: ...


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def make_train_loader(
    files: Sequence[str],
    labels: Sequence[int],
    *,
    backend: Backend = "dali",
    batch_size: int,
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    training: bool,
    shard_id: int = 0,
    num_shards: int = 1,
    seed: int = 0,
    device: str = "cpu",
    num_threads: int = 2,
    drop_last: bool | None = None,
    shuffle: bool | None = None,
    area: tuple[float, float] = DEFAULT_AREA,
    ratio: tuple[float, float] = DEFAULT_RATIO,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> Loader:
    """Returns a pretraining :class:`Loader` over ``files`` for shard ``shard_id`` of ``num_shards``.

    Training: random resized crop (area fraction ``area``, aspect ``ratio``) to ``input_size`` and a
    horizontal flip with p = 0.5. Otherwise: shorter side to ``round(input_size / crop_fraction)``
    (left alone when it already lies between ``input_size`` and that), centred ``input_size`` crop.
    ``mean``/``std`` are on the 0..1 scale. Each epoch (``set_epoch``) shuffles with a generator keyed by ``(seed, epoch)``
    (``shuffle`` defaults to ``training``), keeps a multiple of ``num_shards`` files and gives each
    shard every ``num_shards``-th one, so all shards have the same number of batches; ``drop_last``
    (default: ``training``) drops a short last batch. ``num_threads`` is DALI's thread count or the
    reference's DataLoader workers (0: load in the calling process).
    """
    _check_backend(backend)
    check_files_labels(files, labels)
    device = resolve_device(device)
    training = bool(training)
    spec = TransformSpec(input_size=input_size, training=training, norm=Normalization(tuple(mean), tuple(std)),
                         area=tuple(area), ratio=tuple(ratio), crop_fraction=crop_fraction, seed=seed)  # fmt: skip
    schedule = Schedule(n=len(files), batch_size=batch_size, drop_last=training if drop_last is None else drop_last,
                        shuffle=training if shuffle is None else shuffle, seed=seed, shard_id=shard_id,
                        num_shards=num_shards)  # fmt: skip
    if backend == "reference":
        from mlt.decode.reference import ReferenceLoader

        return ReferenceLoader(
            files, labels, spec, schedule, device=device, num_workers=num_threads
        )
    from mlt.decode.dali import DaliLoader

    return DaliLoader(files, labels, spec, schedule, device=device, num_threads=num_threads)


def make_window_cropper(
    backend: Backend = "dali",
    *,
    out_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: str = "cpu",
    num_threads: int = 2,
    max_batch: int = 256,
) -> WindowCropper:
    """Returns a :class:`WindowCropper` that cuts square windows and resizes them to ``out_size``.

    Boxes are 0-based half-open float ``(x0, y0, x1, y1)``; both backends round them with
    :func:`mlt.decode.plan.window_crops`. ``num_threads`` and ``max_batch`` (windows per DALI
    run) matter to DALI only; the reference computes on the calling thread's torch threads.
    """
    _check_backend(backend)
    if int(out_size) != out_size or out_size < 1:
        raise ValueError(f"out_size must be an integer >= 1, got {out_size!r}")
    device = resolve_device(device)
    norm = Normalization(tuple(mean), tuple(std))
    if backend == "reference":
        from mlt.decode.reference import ReferenceWindowCropper

        return ReferenceWindowCropper(out_size, norm, device=device)
    from mlt.decode.dali import DaliWindowCropper

    return DaliWindowCropper(
        out_size, norm, device=device, num_threads=num_threads, max_batch=max_batch
    )
