"""The paper's localisation maps: per-pixel averages of the scores of the windows covering it.

Boxes are 0-based half-open float pixel coordinates ``(x0, y0, x1, y1)``. Pixel (x, y) is
*covered* by a box when its centre lies inside it: ``x0 <= x + 0.5 < x1`` and
``y0 <= y + 0.5 < y1``; for integer boxes these are exactly the pixels x0..x1-1, y0..y1-1.
The same rule decides whether a map's peak lands in a ground-truth box (the pointing test).

The maps are built with 2-D difference arrays and cumulative sums, not per window or pixel.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mlt.data.voc import VocAnnotation
from mlt.evaluate.groundtruth import class_boxes

GT_RGB = (0, 255, 0)

# Anchors of a black-red-yellow-white heat scale (like matplotlib's "hot"/"inferno").
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_RGB = np.array(
    [[0, 0, 4], [120, 28, 109], [225, 65, 45], [252, 180, 30], [252, 255, 164]], dtype=np.float64
)


def _boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    if np.isnan(boxes).any():
        raise ValueError(f"{name} must not hold NaN")
    return boxes


def _size(width: int, height: int) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(width), int(height)


def _pixel_span(lo: np.ndarray, hi: np.ndarray, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns the half-open integer range [a, b) of pixel indices whose centres lie in [lo, hi)."""
    a = np.clip(np.ceil(lo - 0.5), 0, extent).astype(np.int64)
    b = np.clip(np.ceil(hi - 0.5), 0, extent).astype(np.int64)
    return a, np.maximum(a, b)


def score_map(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """Returns the (H, W) map, or (K, H, W) for (M, K) scores, float32: at each pixel the mean
    score of the windows covering it, 0 where none does."""
    width, height = _size(width, height)
    boxes = _boxes(boxes, "boxes")
    scores = np.asarray(scores, dtype=np.float64)
    single = scores.ndim == 1
    values = scores.reshape(-1, 1) if single else scores
    if values.ndim != 2 or len(values) != len(boxes):
        raise ValueError(
            f"scores must have shape ({len(boxes)},) or ({len(boxes)}, K), one row per box, "
            f"got {scores.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    k = values.shape[1]
    x0, x1 = _pixel_span(boxes[:, 0], boxes[:, 2], width)
    y0, y1 = _pixel_span(boxes[:, 1], boxes[:, 3], height)

    # Difference array over (H+1, W+1); the last channel counts the covering windows.
    weights = np.concatenate([values, np.ones((len(boxes), 1))], axis=1)
    diff = np.zeros(((height + 1) * (width + 1), k + 1))
    stride = width + 1
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(diff, ys * stride + xs, sign * weights)
    total = diff.reshape(height + 1, width + 1, k + 1).cumsum(0).cumsum(1)[:height, :width]
    count = np.rint(total[..., k])
    mean = np.divide(
        total[..., :k],
        count[..., None],
        out=np.zeros((height, width, k)),
        where=count[..., None] > 0,
    )
    out = np.ascontiguousarray(mean.transpose(2, 0, 1), dtype=np.float32)
    return out[0] if single else out


def pointing_hit(smap: np.ndarray, gt_boxes: np.ndarray, tolerance: float = 0.0) -> bool:
    """Returns whether the map's peak pixel (first in row-major order) has its centre inside a
    box of ``gt_boxes``, each grown by ``tolerance`` pixels on every side; False with no boxes."""
    smap = np.asarray(smap)
    if smap.ndim != 2 or smap.size == 0:
        raise ValueError(f"smap must be a non-empty (H, W) map, got shape {smap.shape}")
    gt = _boxes(gt_boxes, "gt_boxes")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    y, x = np.unravel_index(int(np.argmax(smap)), smap.shape)
    cx, cy = x + 0.5, y + 0.5
    t = tolerance
    inside = (gt[:, 0] - t <= cx) & (cx < gt[:, 2] + t) & (gt[:, 1] - t <= cy) & (cy < gt[:, 3] + t)
    return bool(inside.any())


@dataclass(frozen=True)
class PointingResult:
    """Pointing accuracy per class: hits and images that contain the class (non-difficult)."""

    classes: tuple[str, ...]
    hits: np.ndarray
    counts: np.ndarray

    @property
    def accuracy(self) -> np.ndarray:
        """Returns the (C,) float64 hit rate per class, nan for classes in no image."""
        return np.divide(
            self.hits,
            self.counts,
            out=np.full(len(self.classes), np.nan),
            where=self.counts > 0,
        )

    @property
    def mean_accuracy(self) -> float:
        """Returns the mean of the per-class accuracies over classes present in some image."""
        acc = self.accuracy[self.counts > 0]
        return float(acc.mean()) if acc.size else float("nan")

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Returns {prefix + "pointing_<class>": accuracy, ..., prefix + "pointing_mean": mean}."""
        out = {
            f"{prefix}pointing_{c}": float(a)
            for c, a, n in zip(self.classes, self.accuracy, self.counts, strict=True)
            if n > 0
        }
        out[f"{prefix}pointing_mean"] = self.mean_accuracy
        return out

    def format(self) -> str:
        """Returns a printable table: hits / images and accuracy (%) per class, and the mean."""
        width = max([len(c) for c in self.classes] + [len("class")])
        lines = [f"{'class':<{width}}  {'hits':>5}  {'images':>6}  {'acc %':>6}"]
        for c, h, n, a in zip(self.classes, self.hits, self.counts, self.accuracy, strict=True):
            shown = "   n/a" if n == 0 else f"{100 * a:6.1f}"
            lines.append(f"{c:<{width}}  {int(h):>5}  {int(n):>6}  {shown}")
        m = self.mean_accuracy
        shown = "   n/a" if np.isnan(m) else f"{100 * m:6.1f}"
        lines.append(
            f"{'mean':<{width}}  {int(self.hits.sum()):>5}  {int(self.counts.sum()):>6}  {shown}"
        )
        return "\n".join(lines)


def pointing_accuracy(
    boxes: Iterable[np.ndarray],
    probs: Iterable[np.ndarray],
    annotations: Iterable[VocAnnotation],
    classes: Sequence[str],
    tolerance: float = 0.0,
) -> PointingResult:
    """Returns the PointingResult of per-image window boxes (M_i, 4), class probabilities
    (M_i, C) and annotations (which give the image size and the objects).

    For each class, the images counted are those with a non-difficult object of it; an image
    is a hit when the peak of the class's score map lands in a box of that class (difficult
    boxes included: they are real instances). The three iterables are consumed together, so
    they may be generators.
    """
    classes = tuple(classes)
    hits = np.zeros(len(classes), np.int64)
    counts = np.zeros(len(classes), np.int64)
    for b, p, ann in zip(boxes, probs, annotations, strict=True):
        p = np.asarray(p)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise ValueError(
                f"image {ann.image_id}: probs must have shape (windows, {len(classes)}), "
                f"got {p.shape}"
            )
        present = [c for c, gt in enumerate(class_boxes(ann, classes, False)) if len(gt)]
        if not present:
            continue
        maps = score_map(b, p[:, present], ann.width, ann.height)
        every = class_boxes(ann, classes, include_difficult=True)
        for smap, c in zip(maps, present, strict=True):
            counts[c] += 1
            hits[c] += pointing_hit(smap, every[c], tolerance)
    return PointingResult(classes=classes, hits=hits, counts=counts)


def pointing_chance(annotations: Iterable[VocAnnotation], classes: Sequence[str]) -> np.ndarray:
    """Returns the (C,) pointing accuracy of a uniformly random pixel (nan for absent classes).

    The same images and hit rule as :func:`pointing_accuracy`: per image with a non-difficult
    object of the class, the share of pixel centres inside a box of that class; then the mean
    over those images. It is the level a score map must beat to point at all.
    """
    classes = tuple(classes)
    total = np.zeros(len(classes))
    counts = np.zeros(len(classes), np.int64)
    for ann in annotations:
        every = class_boxes(ann, classes, include_difficult=True)
        for c, gt in enumerate(class_boxes(ann, classes, False)):
            if not len(gt):
                continue
            mask = np.zeros((ann.height, ann.width), dtype=bool)
            for x0, y0, x1, y1 in np.asarray(every[c]):
                # pixel i's centre i + 0.5 lies in [a, b) for i in [ceil(a - 0.5), ceil(b - 0.5))
                xs, xe = (int(np.clip(math.ceil(v - 0.5), 0, ann.width)) for v in (x0, x1))
                ys, ye = (int(np.clip(math.ceil(v - 0.5), 0, ann.height)) for v in (y0, y1))
                mask[ys:ye, xs:xe] = True
            total[c] += mask.mean()
            counts[c] += 1
    return np.divide(total, counts, out=np.full(len(classes), np.nan), where=counts > 0)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Returns (..., 3) uint8 RGB heat colours of values in [0, 1] (clipped), black to pale yellow."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    rgb = [np.interp(v, _HEAT_STOPS, _HEAT_RGB[:, i]) for i in range(3)]
    return np.rint(np.stack(rgb, axis=-1)).astype(np.uint8)


def _load_rgb(image: str | PathLike | np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, str | PathLike):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {arr.dtype}")
    return arr[..., :3]


def overlay_png(
    image: str | PathLike | np.ndarray | Image.Image,
    smap: np.ndarray,
    path: str | PathLike,
    alpha: float = 0.5,
    boxes: np.ndarray | None = None,
    vmax: float | None = None,
) -> Path:
    """Returns ``path`` after writing there, atomically, a PNG of the (H, W) map in heat colours
    blended over the image (weight ``alpha``) with ``boxes`` outlined in green.

    The map is scaled so 0 is black and ``vmax`` (default: the map's max) is the hottest colour.
    """
    rgb = _load_rgb(image).astype(np.float64)
    smap = np.asarray(smap, dtype=np.float64)
    if smap.shape != rgb.shape[:2]:
        raise ValueError(
            f"smap must have the image's shape (H, W) = {rgb.shape[:2]}, got {smap.shape}"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    top = float(np.nanmax(smap)) if vmax is None else float(vmax)
    scaled = smap / top if top > 0 else np.zeros_like(smap)
    blended = (1 - alpha) * rgb + alpha * heat_colours(scaled)
    picture = Image.fromarray(np.rint(blended).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in _boxes(boxes if boxes is not None else np.zeros((0, 4)), "boxes"):
        rect = (round(x0), round(y0), max(round(x1) - 1, round(x0)), max(round(y1) - 1, round(y0)))
        draw.rectangle(rect, outline=GT_RGB, width=2)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            picture.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
