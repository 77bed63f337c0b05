"""What both decode backends share: the sample order, the per-sample geometry, the rounding rules.

Every image goes through the same three steps in both backends::

    crop1 (integer box of the decoded image) -> resize to ``size`` -> crop2 (integer box) -> flip

and a :class:`SamplePlan` says how. Plans are computed here, in Python, from the image's header
size and uniforms that are a pure function of ``(seed, epoch, file index)`` (:func:`uniforms`),
so the reference and the DALI backend cut exactly the same crops and flip exactly the same
images; only their resampling kernels differ, on the outermost pixels of a downscale (see
``tests/test_decode.py``).

- training: crop1 is a random resized crop (area fraction ``area``, aspect ``ratio``, the
  Inception / torchvision sampling with ten attempts and a centre-crop fallback), resized to
  ``input_size`` squared; flip with p = 0.5; crop2 is the whole resized image.
- evaluation: the shorter side is resized to ``round(input_size / crop_fraction)`` and crop2 is
  the centred ``input_size`` square. An image whose shorter side already lies between
  ``input_size`` and that target is not resampled at all (a 64x64 Tiny-ImageNet image at input 64
  comes out exactly as decoded); smaller or larger ones are.
- windows: crop1 is the window rounded by :func:`window_crops`, resized to ``out_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_AREA = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_CROP_FRACTION = 0.875
_ATTEMPTS = 10
TRAIN_DRAWS = 2 * _ATTEMPTS + 3


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the 0..1 scale; ``mean255``/``std255`` on the 0..255 scale."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got mean={mean!r} std={std!r}")
        if not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"std values must be finite and > 0, got {std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def mean255(self) -> tuple[float, float, float]:
        """Returns the mean on the 0..255 pixel scale."""
        return tuple(255.0 * v for v in self.mean)

    @property
    def std255(self) -> tuple[float, float, float]:
        """Returns the std on the 0..255 pixel scale."""
        return tuple(255.0 * v for v in self.std)


class SamplePlan(NamedTuple):
    """The geometry of one output: boxes are ``(y, x, h, w)`` integers, ``size`` is ``(h, w)``."""

    crop1: tuple[int, int, int, int]
    size: tuple[int, int]
    crop2: tuple[int, int, int, int]
    flip: bool


@dataclass(frozen=True)
class TransformSpec:
    """Everything that decides an output sample besides the image: sizes, augmentation, seed."""

    input_size: int
    training: bool
    norm: Normalization = Normalization()
    area: tuple[float, float] = DEFAULT_AREA
    ratio: tuple[float, float] = DEFAULT_RATIO
    crop_fraction: float = DEFAULT_CROP_FRACTION
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.input_size) != self.input_size or self.input_size < 1:
            raise ValueError(f"input_size must be an integer >= 1, got {self.input_size!r}")
        lo, hi = self.area
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"area must satisfy 0 < min <= max <= 1, got {self.area!r}")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def plan(self, height: int, width: int, *, epoch: int, index: int) -> SamplePlan:
        """Returns the plan of file ``index`` (of ``height`` x ``width``) in ``epoch``."""
        return self.plans([(height, width)], epoch=epoch, indices=[index])[0]

    def plans(
        self, sizes: Sequence[tuple[int, int]], *, epoch: int, indices: Sequence[int]
    ) -> list[SamplePlan]:
        """Returns the plans of files ``indices``, of header sizes ``sizes`` (h, w), in ``epoch``."""
        if not self.training:
            return [
                plan_eval(h, w, self.input_size, crop_fraction=self.crop_fraction) for h, w in sizes
            ]
        draws = uniforms(self.seed, epoch, indices, TRAIN_DRAWS)
        return [
            plan_train(h, w, self.input_size, u, area=self.area, ratio=self.ratio)
            for (h, w), u in zip(sizes, draws, strict=True)
        ]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """Returns splitmix64's finaliser of uint64 ``x`` (wrapping arithmetic), a strong bit mixer."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, epoch: int, indices: Sequence[int], count: int) -> np.ndarray:
    """Returns ``(len(indices), count)`` uniforms in [0, 1), a pure function of (seed, epoch, index).

    A counter-based generator (splitmix64 of the key and the draw number): any process can
    recompute any sample's draws on its own, and a whole batch costs a few numpy calls.
    """
    with np.errstate(over="ignore"):
        key = _splitmix(
            np.asarray([seed], dtype=np.uint64) * _GOLDEN + np.uint64(0x632BE59BD9B4E019)
        )
        key = _splitmix(key ^ (np.uint64(epoch) * _GOLDEN))
        keys = _splitmix(key ^ (np.asarray(indices, dtype=np.uint64) * _GOLDEN))
        counters = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
        bits = _splitmix(keys[:, None] ^ counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def plan_train(
    height: int,
    width: int,
    input_size: int,
    u: Sequence[float],
    *,
    area: tuple[float, float] = DEFAULT_AREA,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> SamplePlan:
    """Returns a random-resized-crop plan (to ``input_size`` squared) with a random flip.

    ``u`` holds :data:`TRAIN_DRAWS` uniforms in [0, 1): an area and an aspect per attempt, then
    the crop's y and x, then the flip.
    """
    full = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    box = None
    for attempt in range(_ATTEMPTS):
        target = full * (area[0] + (area[1] - area[0]) * u[2 * attempt])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[2 * attempt + 1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y = int(u[2 * _ATTEMPTS] * (height - h + 1))
            x = int(u[2 * _ATTEMPTS + 1] * (width - w + 1))
            box = (y, x, h, w)
            break
    if box is None:  # centre crop at the nearest allowed aspect ratio
        aspect = width / height
        if aspect < ratio[0]:
            w, h = width, round(width / ratio[0])
        elif aspect > ratio[1]:
            w, h = round(height * ratio[1]), height
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(u[2 * _ATTEMPTS + 2] < 0.5)
    return SamplePlan(box, (input_size, input_size), (0, 0, input_size, input_size), flip)


def eval_resize(height: int, width: int, input_size: int, crop_fraction: float) -> tuple[int, int]:
    """Returns the ``(h, w)`` an image is resized to before the evaluation centre crop."""
    target = round(input_size / crop_fraction)
    short = min(height, width)
    if input_size <= short <= target:
        return height, width
    scale = target / short
    if height <= width:
        return target, max(input_size, round(width * scale))
    return max(input_size, round(height * scale)), target


def plan_eval(
    height: int, width: int, input_size: int, *, crop_fraction: float = DEFAULT_CROP_FRACTION
) -> SamplePlan:
    """Returns the deterministic evaluation plan: shorter side resize, then a centred square crop."""
    rh, rw = eval_resize(height, width, input_size, crop_fraction)
    crop2 = ((rh - input_size) // 2, (rw - input_size) // 2, input_size, input_size)
    return SamplePlan((0, 0, height, width), (rh, rw), crop2, False)


def window_crops(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns the integer crops ``(N, 4)`` as ``(y, x, h, w)`` of float boxes ``(x0, y0, x1, y1)``.

    Rounding rule (both backends): the size and the origin are rounded separately
    (``w = round(x1 - x0)``, ``x = round(x0)``, at least 1 pixel, at most the image), then the crop
    is shifted back inside the image. A square window stays square, and all windows of one scale
    get the same integer size, which lets the reference crop them as one batch.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("window boxes must be finite")
    w = np.clip(np.round(boxes[:, 2] - boxes[:, 0]), 1, width)
    h = np.clip(np.round(boxes[:, 3] - boxes[:, 1]), 1, height)
    x = np.clip(np.round(boxes[:, 0]), 0, width - w)
    y = np.clip(np.round(boxes[:, 1]), 0, height - h)
    return np.stack([y, x, h, w], axis=1).astype(np.int64)


def shard_indices(
    n: int, *, epoch: int, seed: int, shuffle: bool, shard_id: int = 0, num_shards: int = 1
) -> np.ndarray:
    """Returns this shard's file indices for ``epoch``: a disjoint, equal-size share of all shards.

    Like ``DistributedSampler(drop_last=True)``: shuffle with ``(seed, epoch)``, cut the order to a
    multiple of ``num_shards``, and give shard ``k`` every ``num_shards``-th index from ``k``.
    """
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(
            f"need 0 <= shard_id < num_shards, got shard_id={shard_id} num_shards={num_shards}"
        )
    order = np.random.default_rng((seed, epoch)).permutation(n) if shuffle else np.arange(n)
    usable = n - n % num_shards
    return order[:usable][shard_id::num_shards]


def batch_slices(indices: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    """Returns ``indices`` cut into batches of ``batch_size`` (the short last one kept unless drop_last)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop = len(indices) - len(indices) % batch_size if drop_last else len(indices)
    return [indices[i : i + batch_size] for i in range(0, stop, batch_size)]


def num_batches(n_items: int, batch_size: int, drop_last: bool) -> int:
    """Returns how many batches ``n_items`` make."""
    return n_items // batch_size if drop_last else -(-n_items // batch_size)


@dataclass(frozen=True)
class Schedule:
    """Which files each batch of an epoch holds, for one shard; ``len()`` is batches per epoch."""

    n: int
    batch_size: int
    drop_last: bool
    shuffle: bool
    seed: int = 0
    shard_id: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        shard_indices(
            0,
            epoch=0,
            seed=self.seed,
            shuffle=False,
            shard_id=self.shard_id,
            num_shards=self.num_shards,
        )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def batches(self, epoch: int) -> list[np.ndarray]:
        """Returns the file indices of each batch of ``epoch`` for this shard."""
        mine = shard_indices(self.n, epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                             shard_id=self.shard_id, num_shards=self.num_shards)  # fmt: skip
        return batch_slices(mine, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return num_batches(self.n // self.num_shards, self.batch_size, self.drop_last)


def check_files_labels(files: Sequence[str], labels: Sequence[int]) -> None:
    """Raises ValueError unless there is one label per file (returns None)."""
    if len(files) != len(labels):
        raise ValueError(
            f"{len(files)} files but {len(labels)} labels; expected one label per file"
        )


def resolve_device(device: str) -> str:
    """Returns ``"cpu"`` or ``"gpu"`` for a device name (``"cuda"`` and ``"cuda:N"`` mean gpu)."""
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        return "gpu"
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
