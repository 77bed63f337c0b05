"""The paper's multi-scale window grid, window labels, and the background sample for training.

Boxes are 0-based half-open float pixel coordinates ``(x0, y0, x1, y1)`` in arrays of shape
``(N, 4)``. Every function here is vectorised over windows and objects.

Grid: for each scale λ the windows are squares of side ``s = min(w, h) / λ`` on a regular grid
that spans the image edge to edge with a stride of at most ``stride_fraction * s``; with the
defaults a 500x375 image gets 512 windows.

Labels (Oquab et al., CVPR 2014): window P *qualifies* for object B when
``|P∩B| >= window_fraction * |P|`` and ``|P∩B| >= box_fraction * |B|``. A window that qualifies
for no object is background (label ``num_classes``), for exactly one object it takes that
object's class, for two or more it is dropped (:data:`IGNORE_MULTI`). VOC's ``difficult``
objects, which the paper does not mention, drop their windows instead (:data:`IGNORE_DIFFICULT`),
the way VOC evaluation ignores them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SCALES: tuple[float, ...] = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)
DEFAULT_STRIDE_FRACTION = 1 / 3
BACKGROUND = "background"
IGNORE_MULTI = -1
IGNORE_DIFFICULT = -2
DROPPED_MULTI = "dropped (multi-object)"
DROPPED_DIFFICULT = "dropped (difficult)"

# Guards the grid count against ratios like 125 / (375 / 3) = 1.0000000000000002.
_COUNT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class WindowGrid:
    """The windows of one image: boxes (N, 4) float32 and the index of each one's scale."""

    boxes: np.ndarray
    scale_index: np.ndarray
    scales: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.boxes)


def _positions(extent: int, side: float, stride_fraction: float) -> np.ndarray:
    """Returns the window starts along one axis: evenly spaced from 0 to extent - side."""
    span = extent - side
    count = max(math.ceil(span / (stride_fraction * side) - _COUNT_TOLERANCE), 0) + 1
    return np.linspace(0.0, span, count)


def window_grid(
    width: int,
    height: int,
    scales: Sequence[float] = DEFAULT_SCALES,
    stride_fraction: float = DEFAULT_STRIDE_FRACTION,
) -> WindowGrid:
    """Returns the square multi-scale windows of a width x height image, by scale, row, column."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0 < stride_fraction <= 1:
        raise ValueError(f"stride_fraction must be in (0, 1], got {stride_fraction!r}")
    scales = tuple(float(s) for s in scales)
    if not scales or not all(math.isfinite(s) and s >= 1 for s in scales):
        raise ValueError(f"scales must be a non-empty list of finite values >= 1, got {scales!r}")

    boxes, scale_index = [], []
    for i, lam in enumerate(scales):
        side = min(width, height) / lam
        ys, xs = np.meshgrid(
            _positions(height, side, stride_fraction),
            _positions(width, side, stride_fraction),
            indexing="ij",
        )
        x0, y0 = xs.ravel(), ys.ravel()
        # (w - s) + s can round just past w: clip so the grid ends exactly at the image edge.
        x1, y1 = np.minimum(x0 + side, width), np.minimum(y0 + side, height)
        boxes.append(np.stack([x0, y0, x1, y1], axis=1))
        scale_index.append(np.full(len(x0), i, dtype=np.int16))
    return WindowGrid(
        boxes=np.concatenate(boxes).astype(np.float32),
        scale_index=np.concatenate(scale_index),
        scales=scales,
    )


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    return boxes


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Returns the area of each box (N,) as float64; an inverted box has area 0."""
    b = _as_boxes(boxes, "boxes")
    return np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns the (N, M) float64 areas of intersection of every box of a with every box of b."""
    a, b = _as_boxes(a, "a")[:, None, :], _as_boxes(b, "b")[None, :, :]
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    return iw * ih


def label_windows(
    windows: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    difficult: np.ndarray | None = None,
    window_fraction: float = 0.2,
    box_fraction: float = 0.6,
) -> np.ndarray:
    """Returns each window's label (N,) int32: a class 0..C-1, C for background, or IGNORE_*.

    Ties count as qualifying (``>=``). A zero-area object box qualifies for no window, and a
    zero-area window for no object, so such boxes only ever yield background.
    """
    windows, boxes = _as_boxes(windows, "windows"), _as_boxes(boxes, "boxes")
    classes = np.asarray(classes).reshape(-1)
    if classes.shape != (len(boxes),):
        raise ValueError(f"classes must have shape ({len(boxes)},) like boxes, got {classes.shape}")
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"classes must lie in 0..{num_classes - 1}, got {sorted(set(classes.tolist()))}"
        )
    difficult = (
        np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    )
    if difficult.shape != (len(boxes),):
        raise ValueError(
            f"difficult must have shape ({len(boxes)},) like boxes, got {difficult.shape}"
        )
    for name, value in (("window_fraction", window_fraction), ("box_fraction", box_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")

    inter = intersection_areas(windows, boxes)
    window_area, box_area = box_areas(windows)[:, None], box_areas(boxes)[None, :]
    qualifies = (
        (inter >= window_fraction * window_area)
        & (inter >= box_fraction * box_area)
        & (window_area > 0)
        & (box_area > 0)
    )
    if not len(boxes):
        return np.full(len(windows), num_classes, dtype=np.int32)
    count = qualifies.sum(axis=1)
    only = qualifies.argmax(axis=1)
    single = np.where(difficult[only], IGNORE_DIFFICULT, classes[only])
    labels = np.where(count == 0, num_classes, np.where(count >= 2, IGNORE_MULTI, single))
    return labels.astype(np.int32)


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    bad = (labels < IGNORE_DIFFICULT) | (labels > num_classes)
    if bad.any():
        raise ValueError(
            f"labels must lie in {IGNORE_DIFFICULT}..{num_classes} for {num_classes} classes, "
            f"got {sorted(set(labels[bad].tolist()))}"
        )
    return labels


def training_mask(
    labels: np.ndarray,
    num_classes: int,
    background_fraction: float = 0.1,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Returns a bool mask (N,) of the windows to train on: every positive, a sample of background.

    The sample holds exactly ``round(background_fraction * n_background)`` background windows
    (Python's round), at least one when the fraction is positive and there is any background,
    drawn without replacement from ``rng`` (a Generator, or a seed for one).
    """
    labels = _check_labels(labels, num_classes)
    if not 0 <= background_fraction <= 1:
        raise ValueError(f"background_fraction must be in [0, 1], got {background_fraction!r}")
    mask = (labels >= 0) & (labels < num_classes)
    background = np.flatnonzero(labels == num_classes)
    keep = round(background_fraction * len(background))
    if background_fraction > 0 and len(background):
        keep = max(keep, 1)
    chosen = np.random.default_rng(rng).choice(len(background), size=keep, replace=False)
    mask[background[chosen]] = True
    return mask


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """Returns a Generator seeded from (seed, image_id), the same in every process and run."""
    digest = hashlib.sha256(f"{int(seed)}\0{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def label_counts(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """Returns the number of windows per class name, background and each drop reason (all keys)."""
    num_classes = len(class_names)
    reserved = {BACKGROUND, DROPPED_MULTI, DROPPED_DIFFICULT}
    if len(set(class_names)) != num_classes or reserved & set(class_names):
        raise ValueError(
            f"class_names must be unique and not one of {sorted(reserved)}, got {list(class_names)}"
        )
    labels = _check_labels(labels, num_classes)
    counts = np.bincount(labels - IGNORE_DIFFICULT, minlength=num_classes + 1 - IGNORE_DIFFICULT)
    by_label = dict(zip(range(IGNORE_DIFFICULT, num_classes + 1), counts.tolist(), strict=True))
    result = {name: by_label[i] for i, name in enumerate(class_names)}
    result[BACKGROUND] = by_label[num_classes]
    result[DROPPED_MULTI] = by_label[IGNORE_MULTI]
    result[DROPPED_DIFFICULT] = by_label[IGNORE_DIFFICULT]
    return result
