"""Image scores from window probabilities: the paper's power-k aggregation over windows.

The paper scores class C of an image with M windows as ``(1/M) * sum_i p(C | P_i)^k``. Here
the score is its k-th root, the power mean ``((1/M) * sum_i p_i^k)^(1/k)``: for a fixed k the
two are related by a strictly increasing map, so they rank images identically and give the same
AP, but the power mean stays on the probability scale, equals the mean at k = 1 and tends to
the max as k grows (``k="max"`` gives that limit exactly). The paper's value is
``power_mean(p, k) ** k``.

It is computed as ``m * mean((p / m)^k)^(1/k)`` with m the max, which neither underflows nor
overflows for large k.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

PowerK = float | Literal["max"]


def k_name(k: PowerK) -> str:
    """Returns a k's display and metric-name form: ``1``, ``2.5``, ``max``."""
    return k if isinstance(k, str) else f"{k:g}"


def _check_k(k: PowerK) -> PowerK:
    if k == "max":
        return k
    if isinstance(k, bool) or not isinstance(k, int | float | np.number):
        raise ValueError(f"k must be a positive number or 'max', got {k!r}")
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"k must be a positive finite number or 'max', got {k!r}")
    return float(k)


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (windows, classes), got {probs.shape}")
    bad = ~np.isfinite(probs) | (probs < 0)
    if bad.any():
        raise ValueError(f"probs must be finite and non-negative ({int(bad.sum())} values are not)")
    return probs


def power_mean(probs: np.ndarray, k: PowerK = 5.0) -> np.ndarray:
    """Returns the (K,) float64 power mean over the M windows of (M, K) probs (k="max": max)."""
    probs, k = _check_probs(probs), _check_k(k)
    if len(probs) == 0:
        raise ValueError("probs must hold at least one window")
    return image_scores(probs, np.zeros(len(probs), dtype=np.int64), 1, k)[0]


def image_scores(
    probs: np.ndarray, image_index: np.ndarray, n_images: int, k: PowerK = 5.0
) -> np.ndarray:
    """Returns (N, K) float64 image scores: the power mean of each image's windows of (R, K) probs.

    ``image_index`` (R,) gives each window's image in 0..n_images-1; windows need not be
    grouped by image. Every image must have at least one window.
    """
    probs, k = _check_probs(probs), _check_k(k)
    image_index = np.asarray(image_index)
    if image_index.shape != (len(probs),):
        raise ValueError(
            f"image_index must have shape ({len(probs)},), one entry per window, "
            f"got {image_index.shape}"
        )
    if image_index.size and not np.issubdtype(image_index.dtype, np.integer):
        raise ValueError(f"image_index must hold integers, got dtype {image_index.dtype}")
    if isinstance(n_images, bool) or int(n_images) != n_images or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    n_images = int(n_images)
    if image_index.size and (image_index.min() < 0 or image_index.max() >= n_images):
        raise ValueError(
            f"image_index must lie in 0..{n_images - 1}, got values from "
            f"{image_index.min()} to {image_index.max()}"
        )
    counts = np.bincount(image_index.astype(np.int64), minlength=n_images)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"{empty.size} image(s) have no windows, e.g. image index {empty[:5].tolist()}"
        )

    order = np.argsort(image_index, kind="stable")
    grouped, rows = probs[order], image_index[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    peak = np.maximum.reduceat(grouped, starts, axis=0)
    if k == "max":
        return peak
    top = peak[rows]
    ratio = np.divide(grouped, top, out=np.zeros_like(grouped), where=top > 0)
    mean = np.add.reduceat(ratio**k, starts, axis=0) / counts[:, None]
    return peak * mean ** (1.0 / k)
