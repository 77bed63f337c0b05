"""Training one FCa/FCb head on cached window features, with early stopping on validation mAP.

The head learns from every positive window of the training images and a random share of their
background windows (redrawn each epoch, or drawn once); after each epoch every window of the
validation images is scored, image scores are the paper's power-k mean, and the head with the
best validation mAP is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlt.config import HeadConfig
from mlt.evaluate import APTable, ap_table, image_labels, image_scores
from mlt.heads.data import WindowData, training_rows
from mlt.heads.model import Head, window_probs

#: Called after each epoch with (epoch, metrics); returning True stops training.
EpochCallback = Callable[[int, dict], bool | None]


@dataclass
class HeadResult:
    """A trained head and its record: per-epoch history, best epoch and its validation mAP."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_map: float = float("nan")
    stopped_early: bool = False
    seconds: float = 0.0


def ground_truth(
    dataset_root: str | Path, image_ids: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """Returns the (N, C) int8 VOC image labels (1, -1, 0 = difficult only) of ``image_ids``."""
    from mlt.data.voc import VocDataset

    ds = VocDataset(Path(dataset_root))
    return image_labels([ds.annotation(i) for i in image_ids], list(classes))


def score_images(
    model: nn.Module, data: WindowData, k: float | str, batch_size: int = 8192
) -> np.ndarray:
    """Returns the (N, C) image scores of ``data``'s images: power-k mean of window probabilities."""
    probs = window_probs(model, data.features, batch_size).numpy()
    return image_scores(probs[:, : data.num_classes], data.image_index, data.n_images, k)


def item_scores(
    model: nn.Module, data: WindowData, k: float | str, protocol: str = "windows"
) -> np.ndarray:
    """Returns the scores AP ranks: (N, C) image scores (power-k mean over each image's windows),
    or with ``protocol="boxed"`` (R, C) window scores, every window its own item (``k`` unused)."""
    if protocol == "boxed":
        from mlt.heads.boxed import boxed_scores

        return boxed_scores(model, data)
    return score_images(model, data, k)


def evaluate_head(
    model: nn.Module, data: WindowData, gt: np.ndarray, classes: Sequence[str], k: float | str,
    form: str = "voc07", protocol: str = "windows",
) -> APTable:  # fmt: skip
    """Returns the per-class AP table of the head on ``data`` (``gt`` from ground_truth, or
    :func:`mlt.heads.boxed.boxed_gt` for the boxed protocol)."""
    return ap_table(item_scores(model, data, k, protocol), gt, list(classes), form)


def evaluate_head_forms(
    model: nn.Module, data: WindowData, gt: np.ndarray, classes: Sequence[str], k: float | str,
    protocol: str = "windows", forms: Sequence[str] = ("voc07", "area"),
) -> dict[str, APTable]:  # fmt: skip
    """Returns {form: AP table} of the head on ``data``, scoring its windows once for all forms."""
    scores = item_scores(model, data, k, protocol)
    return {form: ap_table(scores, gt, list(classes), form) for form in forms}


def build_head_optimizer(params, hc: HeadConfig) -> torch.optim.Optimizer:
    """Returns the head's optimiser: SGD with momentum or AdamW, with the config's lr and decay."""
    if hc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hc.lr, weight_decay=hc.weight_decay)
    return torch.optim.SGD(params, lr=hc.lr, momentum=hc.momentum, weight_decay=hc.weight_decay)


def epoch_rows(train: WindowData, hc: HeadConfig, epoch: int) -> np.ndarray:
    """Returns the shuffled training rows of ``epoch``: positives and the drawn background share."""
    draw_seed = epoch if hc.resample_background else 0
    rows = training_rows(
        train.labels, train.num_classes, np.random.default_rng([hc.seed, 1, draw_seed]),
        hc.background_fraction,
    )  # fmt: skip
    return np.random.default_rng([hc.seed, 2, epoch]).permutation(rows)


def train_head(
    train: WindowData,
    val: WindowData | None,
    hc: HeadConfig,
    classes: Sequence[str],
    val_gt: np.ndarray | None = None,
    k: float | str = 5.0,
    form: str = "voc07",
    model: nn.Module | None = None,
    callback: EpochCallback | None = None,
    progress: bool = False,
    protocol: str = "windows",
) -> HeadResult:
    """Trains a head (a new :class:`Head`, or ``model``) on ``train``; returns the best one.

    With ``val`` (and its ``val_gt``), each epoch ends with the validation mAP; the best epoch's
    weights are kept and training stops after ``hc.patience`` epochs without improvement.
    Without ``val`` the last epoch's head is returned. ``protocol`` is how validation is
    scored (:func:`evaluate_head`).
    """
    from tqdm import tqdm

    if val is not None and val_gt is None:
        raise ValueError("val_gt is needed with val data (see ground_truth)")
    torch.manual_seed(hc.seed)
    if model is None:
        model = Head(train.dim, train.num_classes, hc.fca_width, hc.dropout)
    opt = build_head_optimizer([p for p in model.parameters() if p.requires_grad], hc)
    loss_fn = nn.CrossEntropyLoss()
    result = HeadResult(model)
    best_state, since_best, start = None, 0, time.perf_counter()
    labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    for epoch in tqdm(range(1, hc.epochs + 1), desc="head", unit="epoch", disable=not progress):
        t0 = time.perf_counter()
        model.train()
        rows = epoch_rows(train, hc, epoch)
        total, seen = 0.0, 0
        for s in range(0, len(rows), hc.batch_size):
            batch = np.sort(rows[s : s + hc.batch_size])  # sorted: sequential reads of a memmap
            x = torch.from_numpy(np.asarray(train.features[batch], dtype=np.float32))
            loss = loss_fn(model(x), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        metrics = {"train_loss": total / max(seen, 1), "train_windows": seen}
        if not math.isfinite(metrics["train_loss"]):
            raise FloatingPointError(f"head training diverged at epoch {epoch} (lr={hc.lr})")
        if val is not None:
            table = evaluate_head(model, val, val_gt, classes, k, form, protocol)
            metrics["val_mAP"] = table.mean_ap
        metrics["epoch_seconds"] = time.perf_counter() - t0
        result.history.append({"epoch": epoch, **metrics})
        improved = val is None or best_state is None or metrics["val_mAP"] > result.best_val_map
        if improved:
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, since_best = epoch, 0
            result.best_val_map = metrics.get("val_mAP", float("nan"))
        else:
            since_best += 1
        if callback is not None and callback(epoch, metrics):
            result.stopped_early = epoch < hc.epochs
            break
        if val is not None and since_best >= hc.patience:
            result.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
