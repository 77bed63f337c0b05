"""The boxed protocol: one square window per given box, mirror-padded where it leaves the image.

Oquab et al. classify VOC2012 actions from the given person box: one square window centred on
the box, the image mirrored at its borders where the square leaves it, for training and test.
The same protocol on an object set ("given the object box, name its class") is
:func:`boxed_windows`; :func:`action_windows` reads VOC2012 ``ImageSets/Action``.

The window's side is ``max(box width, box height)``: the smallest square centred on the box that
holds all of it (the paper says only "a square window centred on the box"). Nothing of the box
is cut off and the object keeps its aspect ratio once the square is resized to the trunk input;
the square may extend past the image.

Mirror padding (:func:`mirror_pad`) is ``np.pad(mode="symmetric")``: the row or column next to
the border is repeated first (``[a b c] -> [b a | a b c | c b]``). A window that leaves the
image is rounded to integer pixels in image coordinates the way
:func:`mlt.decode.plan.window_crops` rounds (origin and size separately), and its pixels are
those of the image mirrored at its borders; windows inside the image are cut as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlt.data.voc import (
    VOC_ACTIONS,
    VocAnnotation,
    parse_annotation,
    read_action_labels,
    read_split_ids,
)
from mlt.decode.plan import window_crops
from mlt.errors import InputError


def square_windows(boxes: np.ndarray) -> np.ndarray:
    """Returns the (N, 4) float32 squares of side max(w, h) centred on each box (may leave the image)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def boxed_windows(ann: VocAnnotation, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (windows (n, 4) float32, labels (n,) int32): one square per non-difficult object.

    The label is the object's class index in ``classes``. Difficult objects get no window (VOC
    evaluation ignores them), so an image with only difficult objects has none.
    """
    keep = ~ann.difficult()
    labels = ann.class_indices(tuple(classes))[keep].astype(np.int32)
    return square_windows(ann.boxes()[keep]), labels


def window_scales(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Returns each square window's λ = min(width, height) / side as (N,) float32 (the grid's λ)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    side = np.maximum(b[:, 2] - b[:, 0], 1e-9)
    return (min(width, height) / side).astype(np.float32)


def outside_image(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Returns a bool mask (N,): the boxes that reach past the ``width`` x ``height`` image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height)


def mirror_crops(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Returns (crops (N, 4) int64 as (y, x, h, w) in the padded image, pads (top, bottom, left, right)).

    Boxes inside the image are rounded by :func:`~mlt.decode.plan.window_crops` (so they give
    the very pixels they give without padding); boxes that leave it are rounded the same way
    without being shifted back inside, and the pads are what makes room for them.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(b).all():
        raise ValueError("window boxes must be finite")
    out = outside_image(b, height, width)
    crops = np.zeros((len(b), 4), dtype=np.int64)
    crops[~out] = window_crops(b[~out], height, width)
    o = b[out]
    crops[out] = np.stack(
        [
            np.round(o[:, 1]),
            np.round(o[:, 0]),
            np.maximum(np.round(o[:, 3] - o[:, 1]), 1),
            np.maximum(np.round(o[:, 2] - o[:, 0]), 1),
        ],
        axis=1,
    ).astype(np.int64)
    if not len(b):
        return crops, (0, 0, 0, 0)
    top = int(max(0, -crops[:, 0].min()))
    left = int(max(0, -crops[:, 1].min()))
    bottom = int(max(0, (crops[:, 0] + crops[:, 2]).max() - height))
    right = int(max(0, (crops[:, 1] + crops[:, 3]).max() - width))
    crops[:, 0] += top
    crops[:, 1] += left
    return crops, (top, bottom, left, right)


def mirror_pad(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image, boxes) with room for every box: the image mirror-padded, boxes moved onto it.

    ``image`` is H x W x C; when every box lies inside it, both come back unchanged. Otherwise
    the image is padded by ``np.pad(mode="symmetric")`` and the boxes are the integer crops of
    :func:`mirror_crops` as float32 ``(x0, y0, x1, y1)`` in the padded image.
    """
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not outside_image(boxes, height, width).any():
        return image, boxes
    crops, (top, bottom, left, right) = mirror_crops(boxes, height, width)
    pads = ((top, bottom), (left, right)) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, pads, mode="symmetric")
    y, x, h, w = crops.T
    moved = np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)
    return np.ascontiguousarray(padded), moved


@dataclass(frozen=True)
class ActionWindows:
    """Boxed windows of VOC2012 action persons: one row per (image, person) of the lists.

    ``person`` is the 1-based index of the person among the image's ``<object>`` elements (the
    index of ``ImageSets/Action/<action>_<split>.txt``); ``labels`` (n, A) int8 holds the
    lists' 1 / -1 / 0 for each action of ``actions``.
    """

    image_ids: tuple[str, ...]
    person: np.ndarray  # (n,) int64, 1-based
    person_boxes: np.ndarray  # (n, 4) float32
    boxes: np.ndarray  # (n, 4) float32 square windows
    labels: np.ndarray  # (n, A) int8
    actions: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_ids)


def action_windows(
    root: str | Path, split: str, actions: Sequence[str] = VOC_ACTIONS
) -> ActionWindows:
    """Returns the boxed windows and (n, A) action labels of ``ImageSets/Action/<split>``.

    Rows follow ``<split>.txt`` image order, then person index. Every action's list must name
    the same (image, person) pairs; the person index counts all ``<object>`` elements of the
    image's annotation from 1, as the VOC devkit does.
    """
    root = Path(root)
    actions = tuple(actions)
    if not actions:
        raise InputError(root, "actions", actions, "at least one action")
    per_action = {a: read_action_labels(root, a, split) for a in actions}
    keys = set(per_action[actions[0]])
    for a in actions[1:]:
        if set(per_action[a]) != keys:
            diff = sorted(set(per_action[a]) ^ keys)[:3]
            path = root / "ImageSets" / "Action" / f"{a}_{split}.txt"
            raise InputError(
                path, "image/person", diff, f"the same persons as {actions[0]}_{split}.txt"
            )
    order = {iid: i for i, iid in enumerate(read_split_ids(root, split, task="Action"))}
    missing = sorted({iid for iid, _ in keys} - set(order))[:3]
    if missing:
        path = root / "ImageSets" / "Action" / f"{split}.txt"
        raise InputError(path, "image id", missing, "every image of the action lists")
    rows = sorted(keys, key=lambda k: (order[k[0]], k[1]))
    anns: dict[str, VocAnnotation] = {}
    person_boxes = np.zeros((len(rows), 4), dtype=np.float32)
    for r, (iid, person) in enumerate(rows):
        if iid not in anns:
            anns[iid] = parse_annotation(root / "Annotations" / f"{iid}.xml", image_id=iid)
        objects = anns[iid].objects
        if not 1 <= person <= len(objects):
            raise InputError(
                root / "Annotations" / f"{iid}.xml", "object", person,
                f"a person index in 1..{len(objects)} (from ImageSets/Action/*_{split}.txt)",
            )  # fmt: skip
        person_boxes[r] = objects[person - 1].box
    labels = np.array([[per_action[a][k] for a in actions] for k in rows], dtype=np.int8)
    return ActionWindows(
        image_ids=tuple(iid for iid, _ in rows),
        person=np.array([p for _, p in rows], dtype=np.int64),
        person_boxes=person_boxes,
        boxes=square_windows(person_boxes),
        labels=labels.reshape(len(rows), len(actions)),
        actions=actions,
    )
