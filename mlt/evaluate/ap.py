"""VOC average precision of image classification, one class at a time, and the per-class table.

Ground truth follows the VOC devkit's classification lists: per image ``1`` (the class is
present), ``-1`` (absent) or ``0`` (only *difficult* objects of the class). Images marked ``0``
are removed before anything is computed, so they count neither for nor against a class.

Images are ranked by descending score with a stable sort: tied scores keep their input order
(as MATLAB's ``sort`` does in the devkit), so a tie between a positive and a negative is
resolved by which comes first in the input.

Two forms of AP:

- ``"voc07"``: VOC2007's 11-point interpolated AP, the mean over recall thresholds
  t = 0, 0.1, ..., 1 of the highest precision at recall >= t (0 where recall never reaches t).
  The comparison ``recall >= t`` is done exactly in integers (``10 * tp >= i * n_pos``); the
  devkit's ``0:0.1:1`` makes 0.3, 0.6 and 0.7 a hair larger than k/10, which only matters when
  recall lands exactly on one of them.
- ``"area"``: VOC2010+ AP (the devkit's ``VOCap``): the area under the precision/recall curve
  after making precision monotonically non-increasing in recall.

A class without positive images has no AP: it is ``nan``, and the mean AP skips such classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

APForm = Literal["voc07", "area"]
AP_FORMS: tuple[str, ...] = ("voc07", "area")


def _ranked(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns cumulative true and false positives (int64) down the ranking, and the positives."""
    scores = np.asarray(scores, dtype=np.float64)
    gt = np.asarray(gt)
    if scores.ndim != 1 or gt.shape != scores.shape:
        raise ValueError(
            f"scores and gt must be 1-D arrays of the same length, got {scores.shape} and {gt.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError(f"scores must not be NaN ({int(np.isnan(scores).sum())} are)")
    bad = ~np.isin(gt, (1, -1, 0))
    if bad.any():
        raise ValueError(f"gt must hold 1, -1 or 0, got {sorted(set(gt[bad].tolist()))}")
    keep = gt != 0
    scores, gt = scores[keep], gt[keep]
    order = np.argsort(-scores, kind="stable")
    positive = gt[order] == 1
    tp = np.cumsum(positive, dtype=np.int64)
    fp = np.cumsum(~positive, dtype=np.int64)
    return tp, fp, int(positive.sum())


def voc07_ap(scores: np.ndarray, gt: np.ndarray) -> float:
    """Returns VOC2007's 11-point interpolated AP of one class (nan when it has no positives)."""
    tp, fp, n_pos = _ranked(scores, gt)
    if n_pos == 0:
        return float("nan")
    precision = tp / (tp + fp)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # max precision from rank r on
    # First rank whose recall tp / n_pos reaches i / 10, compared exactly in integers.
    first = np.searchsorted(10 * tp, np.arange(11) * n_pos, side="left")
    return float(sum(best_after[r] for r in first if r < len(tp)) / 11)


def area_ap(scores: np.ndarray, gt: np.ndarray) -> float:
    """Returns VOC2010+'s AP of one class: area under the monotone PR curve (nan: no positives)."""
    tp, fp, n_pos = _ranked(scores, gt)
    if n_pos == 0:
        return float("nan")
    mrec = np.concatenate([[0.0], tp / n_pos, [1.0]])
    mpre = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[step] - mrec[step - 1]) * mpre[step]))


def average_precision(scores: np.ndarray, gt: np.ndarray, form: APForm = "area") -> float:
    """Returns the AP of one class in the given form ("voc07" or "area"); nan without positives."""
    if form == "voc07":
        return voc07_ap(scores, gt)
    if form == "area":
        return area_ap(scores, gt)
    raise ValueError(f"form must be one of {AP_FORMS}, got {form!r}")


@dataclass(frozen=True)
class APTable:
    """Per-class AP of one evaluation: class names, AP (nan: no positives), form, positives."""

    classes: tuple[str, ...]
    ap: np.ndarray
    form: str
    n_pos: np.ndarray

    @property
    def mean_ap(self) -> float:
        """Returns the mean AP over the classes that have an AP (nan when none has)."""
        valid = self.ap[~np.isnan(self.ap)]
        return float(valid.mean()) if valid.size else float("nan")

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Returns {prefix + "ap_<class>": AP, ..., prefix + "mAP": mAP}; nan classes are left out."""
        out = {
            f"{prefix}ap_{c}": float(a)
            for c, a in zip(self.classes, self.ap, strict=True)
            if not np.isnan(a)
        }
        out[f"{prefix}mAP"] = self.mean_ap
        return out

    def format(self) -> str:
        """Returns a printable table: one row per class (AP in %, positives) and the mAP row."""
        width = max([len(c) for c in self.classes] + [len("mAP"), len("class")])
        title = "VOC2007 11-point AP" if self.form == "voc07" else "VOC2010+ area AP"
        lines = [title, f"{'class':<{width}}  {'n_pos':>6}  {'AP %':>6}"]
        for c, a, n in zip(self.classes, self.ap, self.n_pos, strict=True):
            shown = "   n/a" if np.isnan(a) else f"{100 * a:6.1f}"
            lines.append(f"{c:<{width}}  {int(n):>6}  {shown}")
        valid = int((~np.isnan(self.ap)).sum())
        m = self.mean_ap
        shown = "   n/a" if np.isnan(m) else f"{100 * m:6.1f}"
        note = "" if valid == len(self.classes) else f"  (over {valid} classes with positives)"
        lines.append(f"{'mAP':<{width}}  {int(self.n_pos.sum()):>6}  {shown}{note}")
        return "\n".join(lines)


def ap_table(
    scores: np.ndarray, gt: np.ndarray, classes: Sequence[str], form: APForm = "area"
) -> APTable:
    """Returns the APTable of (N, C) image scores against (N, C) devkit labels in {1, -1, 0}."""
    scores, gt = np.asarray(scores), np.asarray(gt)
    classes = tuple(classes)
    if scores.ndim != 2 or gt.shape != scores.shape or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores and gt must both have shape (N, {len(classes)}) for {len(classes)} classes, "
            f"got {scores.shape} and {gt.shape}"
        )
    if form not in AP_FORMS:
        raise ValueError(f"form must be one of {AP_FORMS}, got {form!r}")
    ap = np.array([average_precision(scores[:, c], gt[:, c], form) for c in range(len(classes))])
    n_pos = (gt == 1).sum(axis=0).astype(np.int64)
    return APTable(classes=classes, ap=ap.astype(np.float64), form=form, n_pos=n_pos)
