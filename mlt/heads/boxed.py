"""Scoring in the boxed protocol: each window is its own item ("given the box, name its class").

A boxed feature set (``windows.grid=boxed``) holds one window per object box. Each window is
scored on its own (no power-k aggregation over an image's windows): its class probabilities
are its scores, and per class the AP ranks all windows, positives being the windows of that
class. This is the VOC action protocol (one person box, one item) applied to object boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from mlt.evaluate import ap_table
from mlt.heads.data import WindowData
from mlt.heads.evaluation import Evaluation
from mlt.heads.model import window_probs

PROTOCOLS = ("windows", "boxed")


def is_boxed(inputs: dict[str, Any]) -> bool:
    """Returns True when feature-set inputs (meta.json ``inputs``) describe a boxed grid."""
    grid = inputs.get("grid") or {}
    return isinstance(grid, dict) and grid.get("kind") == "boxed"


def boxed_gt(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Returns the (R, C) int8 ground truth of windows: 1 for the window's class, -1 otherwise.

    A background window (label C) is -1 everywhere; an ignored one (negative label) is 0
    everywhere, so AP leaves it out.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and labels.max() > num_classes:
        raise ValueError(f"labels must be at most {num_classes}, got {int(labels.max())}")
    gt = np.full((len(labels), num_classes), -1, dtype=np.int8)
    positive = (labels >= 0) & (labels < num_classes)
    gt[np.flatnonzero(positive), labels[positive]] = 1
    gt[labels < 0] = 0
    return gt


def boxed_scores(model: nn.Module, data: WindowData, batch_size: int = 8192) -> np.ndarray:
    """Returns the (R, C) float64 class probabilities of every window of ``data`` (eval mode)."""
    probs = window_probs(model, data.features, batch_size).numpy()
    return probs[:, : data.num_classes].astype(np.float64)


def boxed_image_ids(
    fs, dataset_root, image_ids: Sequence[str], classes: Sequence[str]
) -> list[str]:
    """Returns ``image_ids`` less the images a boxed set has no window for (no non-difficult object).

    Any other image the set lacks stays in the list, so that reading it fails loudly.
    """
    from mlt.data.voc import VocDataset

    have = set(fs.image_ids())
    missing = [i for i in image_ids if i not in have]
    if not missing:
        return list(image_ids)
    ds = VocDataset(dataset_root, tuple(classes))
    empty = {i for i in missing if all(o.difficult for o in ds.annotation(i).objects)}
    return [i for i in image_ids if i not in empty]


@dataclass
class BoxedEvaluation(Evaluation):
    """An :class:`~mlt.heads.evaluation.Evaluation` in the boxed protocol (no k, no maps)."""

    n: int = 0  # windows scored

    def format(self) -> str:
        """Returns the printable report: both AP tables over the split's boxed windows."""
        head = f"{self.split}: boxed protocol, each window scored on its own ({self.n} windows)"
        return "\n\n".join([head] + [self.tables[f].format() for f in ("voc07", "area")])


def evaluate_boxed(
    probs: np.ndarray, data: WindowData, classes: Sequence[str], split: str = "test"
) -> BoxedEvaluation:
    """Returns the boxed-protocol evaluation of window probabilities (R, C+1) of ``data``."""
    gt = boxed_gt(data.labels, data.num_classes)
    scores = np.asarray(probs)[:, : data.num_classes].astype(np.float64)
    tables = {form: ap_table(scores, gt, list(classes), form) for form in ("voc07", "area")}
    return BoxedEvaluation(split, "boxed", tables, {}, n=len(data))
