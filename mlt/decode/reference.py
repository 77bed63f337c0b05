"""The reference backend: simplejpeg/Pillow decoding and plain torch crops and resizes.

Resizing is ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` in float32;
a resize to the size a crop already has is skipped. DALI's resize agrees except on the outermost
output pixels of a downscale, where torch renormalises the antialias filter over the taps inside
the crop and DALI repeats the edge pixel (see ``tests/test_decode.py`` for the figures). The pretraining loader is a torch
``DataLoader`` over a map-style dataset whose keys are ``(epoch, file index)``, so workers need no
shared state to reproduce an epoch's random crops. Geometry and order come from
:mod:`mlt.decode.plan`, shared with the DALI backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, get_worker_info

from mlt.decode.images import ImageSource, decode_image
from mlt.decode.plan import Normalization, SamplePlan, Schedule, TransformSpec, window_crops
from mlt.errors import InputError


def torch_device(device: str) -> torch.device:
    """Returns the torch device of a backend device name (``"gpu"`` is the current CUDA device)."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if device == "gpu"
        else torch.device("cpu")
    )


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Returns float ``x`` (N, C, h, w) resized to ``size`` (unchanged when it already has it)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)


def _normalize(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Returns float ``x`` (..., 3, H, W) on the 0..255 scale normalised by ``norm``."""
    mean = torch.tensor(norm.mean255, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(norm.std255, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def apply_plan(image: np.ndarray, plan: SamplePlan, norm: Normalization) -> torch.Tensor:
    """Returns the (3, h, w) float32 normalised sample that ``plan`` cuts from an HxWx3 uint8 image."""
    y, x, h, w = plan.crop1
    t = torch.from_numpy(image[y : y + h, x : x + w]).permute(2, 0, 1)
    t = _resize(t.unsqueeze(0).float(), plan.size)[0]
    y, x, h, w = plan.crop2
    t = t[:, y : y + h, x : x + w]
    if plan.flip:
        t = t.flip(-1)
    return _normalize(t, norm).contiguous()


class _PlannedImages(Dataset):
    """Map-style dataset keyed by ``(epoch, file index)``; items are (sample tensor, label)."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], spec: TransformSpec) -> None:
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.spec = spec

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        try:
            image = decode_image(self.files[index])
        except InputError as err:
            if get_worker_info() is None:
                raise
            raise _WorkerInputError.wrap(err) from None
        plan = self.spec.plan(image.shape[0], image.shape[1], epoch=epoch, index=index)
        return apply_plan(image, plan, self.spec.norm), self.labels[index]


class _WorkerInputError(Exception):
    """An InputError crossing the DataLoader worker boundary, which re-creates errors from text."""

    _MARK = "mlt-input-error:"

    @classmethod
    def wrap(cls, err: InputError) -> _WorkerInputError:
        fields = [err.file, err.field, str(err.value), err.expected, err.kind]
        return cls(cls._MARK + json.dumps(fields))

    def unwrap(self) -> InputError:
        """Returns the worker's InputError, rebuilt from the marked line of this message."""
        line = next(ln for ln in str(self).splitlines() if self._MARK in ln)
        file, field, value, expected, kind = json.loads(line.split(self._MARK, 1)[1])
        return InputError(file, field, value, expected, kind=kind)


class _EpochKeys:
    """Batch sampler: the current epoch's batches of ``(epoch, index)`` keys from the schedule."""

    def __init__(self, loader: ReferenceLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.loader.epoch
        for batch in self.loader.schedule.batches(epoch):
            yield [(epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.loader.schedule)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class ReferenceLoader:
    """Pretraining loader on a torch DataLoader; iterating yields (images NCHW float32, labels int64)."""

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        spec: TransformSpec,
        schedule: Schedule,
        *,
        device: str = "cpu",
        num_workers: int = 2,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self.epoch = 0
        self.device = torch_device(device)
        self._loader = DataLoader(
            _PlannedImages(files, labels, spec),
            batch_sampler=_EpochKeys(self),
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_one_thread if num_workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration uses (returns None)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            raise RuntimeError("this loader was closed")
        pinned = self.device.type == "cuda"
        try:
            for images, labels in self._loader:
                yield (
                    images.to(self.device, non_blocking=pinned),
                    labels.to(self.device, torch.int64),
                )
        except _WorkerInputError as err:
            raise err.unwrap() from None

    def close(self) -> None:
        """Releases the DataLoader; the loader cannot be iterated again. Returns None."""
        self._loader = None

    def __enter__(self) -> ReferenceLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def crop_windows(
    image: torch.Tensor, crops: np.ndarray, out_size: int, norm: Normalization
) -> torch.Tensor:
    """Returns the (N, 3, out, out) normalised windows ``crops`` (y, x, h, w) of a (3, H, W) uint8 image.

    Windows of equal integer size (every window of one grid scale) are gathered and resized as
    one batch.
    """
    out = torch.empty((len(crops), 3, out_size, out_size), dtype=torch.float32, device=image.device)
    if len(crops) == 0:
        return out
    sizes, group = np.unique(crops[:, 2:], axis=0, return_inverse=True)
    for g, (h, w) in enumerate(sizes):
        members = np.flatnonzero(group.reshape(-1) == g)
        # (3, H-h+1, W-w+1, h, w) view: every h x w patch, indexed by its top-left corner.
        patches = image.unfold(1, int(h), 1).unfold(2, int(w), 1)
        ys = torch.from_numpy(crops[members, 0]).to(image.device)
        xs = torch.from_numpy(crops[members, 1]).to(image.device)
        batch = patches[:, ys, xs].permute(1, 0, 2, 3).float()
        out[torch.from_numpy(members).to(image.device)] = _resize(batch, (out_size, out_size))
    return _normalize(out, norm)


class ReferenceWindowCropper:
    """Window cropper in torch; ``crop`` returns (N, 3, out, out) float32 normalised windows."""

    def __init__(self, out_size: int, norm: Normalization, *, device: str = "cpu") -> None:
        self.out_size = int(out_size)
        self.norm = norm
        self.device = torch_device(device)

    def crop(self, image: ImageSource, boxes: np.ndarray) -> torch.Tensor:
        """Returns the windows ``boxes`` (N, 4 float x0 y0 x1 y1) of one image as (N, 3, out, out)."""
        pixels = decode_image(image)
        crops = window_crops(boxes, pixels.shape[0], pixels.shape[1])
        t = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)
        return crop_windows(t, crops, self.out_size, self.norm)

    def crop_many(self, items: Sequence[tuple[ImageSource, np.ndarray]]) -> list[torch.Tensor]:
        """Returns one (N_i, 3, out, out) tensor per ``(image, boxes)`` item."""
        return [self.crop(image, boxes) for image, boxes in items]

    def close(self) -> None:
        """Nothing to release; returns None."""
