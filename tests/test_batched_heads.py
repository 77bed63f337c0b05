"""Heads trained in one vectorised pass match heads trained one by one (dropout 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlt.config import HeadConfig
from mlt.heads.batched import group_configs, train_heads_batched
from mlt.heads.data import WindowData
from mlt.heads.model import Head
from mlt.heads.train import train_head

CLASSES = ["a", "b", "c"]


def _windows(n_images: int, rng: np.random.Generator, dim: int = 16, per: int = 12):
    """Returns (WindowData, (N, C) image labels): features that carry a noisy class signal."""
    c = len(CLASSES)
    feats, labels, index = [], [], []
    gt = -np.ones((n_images, c), np.int8)
    for i in range(n_images):
        lab = rng.integers(0, c + 1, per)
        lab[rng.random(per) < 0.6] = c  # mostly background, as in real sets
        gt[i, lab[lab < c]] = 1
        f = rng.standard_normal((per, dim))
        f[np.arange(per), lab % dim] += 2.5
        feats.append(f)
        labels.append(lab)
        index.append(np.full(per, i))
    data = WindowData(
        np.concatenate(feats).astype(np.float16), np.concatenate(labels), np.concatenate(index),
        tuple(f"img{i}" for i in range(n_images)), np.zeros((n_images * per, 4), np.float32), c,
    )  # fmt: skip
    return data, gt


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train, _ = _windows(30, rng)
    val, gt = _windows(16, rng)
    return train, val, gt


BASE = {"fca_width": 8, "dropout": 0.0, "epochs": 5, "batch_size": 32, "background_fraction": 0.5}


def _configs(optimizer: str, **extra) -> list[HeadConfig]:
    grid = [(0.05, 1e-4, 0.9), (0.01, 1e-2, 0.5), (0.2, 0.0, 0.0)]
    return [
        HeadConfig(**{**BASE, **extra}, optimizer=optimizer, lr=lr, weight_decay=wd, momentum=m)
        for lr, wd, m in grid
    ]


def _assert_same(one, batched) -> None:
    assert len(batched.history) == len(one.history)
    assert batched.best_epoch == one.best_epoch
    assert batched.stopped_early == one.stopped_early
    assert batched.best_val_map == pytest.approx(one.best_val_map, abs=1e-9)
    for a, b in zip(one.history, batched.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_windows"] == a["train_windows"]
        assert b["val_mAP"] == pytest.approx(a["val_mAP"], abs=1e-9)
    assert isinstance(batched.model, Head) and batched.model.spec() == one.model.spec()
    for name, p in one.model.state_dict().items():
        torch.testing.assert_close(batched.model.state_dict()[name], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_batched_equals_one_by_one_without_dropout(data, optimizer: str) -> None:
    train, val, gt = data
    configs = _configs(optimizer)
    batched = train_heads_batched(train, val, configs, CLASSES, gt, k=5.0, form="voc07")
    for hc, b in zip(configs, batched, strict=True):
        _assert_same(train_head(train, val, hc, CLASSES, gt, k=5.0, form="voc07"), b)


def test_each_head_stops_on_its_own(data) -> None:
    """Patience 1 stops some heads early; the callback stops one at epoch 2; the rest run on."""
    train, val, gt = data
    configs = _configs("sgd", patience=1, epochs=8)
    configs.append(HeadConfig(**{**BASE, "epochs": 3}, lr=0.02))  # fewer epochs, same group
    calls: list[tuple[int, int]] = []

    def stop_second_at_2(i: int, epoch: int, metrics: dict) -> bool:
        calls.append((i, epoch))
        return i == 1 and epoch == 2

    batched = train_heads_batched(train, val, configs, CLASSES, gt, callback=stop_second_at_2)
    for i, (hc, b) in enumerate(zip(configs, batched, strict=True)):
        cb = (lambda epoch, m: epoch == 2) if i == 1 else None
        _assert_same(train_head(train, val, hc, CLASSES, gt, callback=cb), b)
        assert [e for j, e in calls if j == i] == list(range(1, len(b.history) + 1))
    runs = [len(b.history) for b in batched]
    assert runs[1] == 2 and batched[1].stopped_early
    assert runs[3] == 3 and not batched[3].stopped_early
    assert runs[0] < 8 and batched[0].stopped_early  # patience 1 ran out
    assert runs[2] < 8 and batched[2].stopped_early


def test_groups_follow_the_row_order_and_width(data) -> None:
    configs = [
        HeadConfig(**BASE, lr=0.1),
        HeadConfig(**{**BASE, "dropout": 0.5}, lr=0.01),
        HeadConfig(**{**BASE, "fca_width": 4}),
        HeadConfig(**BASE, seed=1),
        HeadConfig(**BASE, optimizer="adamw"),
    ]
    assert group_configs(configs) == [[0, 1], [2], [3], [4]]
    train, val, gt = data
    results = train_heads_batched(train, val, configs, CLASSES, gt)
    assert [r.model.fca_width for r in results] == [8, 8, 4, 8, 8]
    assert results[1].model.dropout_p == 0.5
    assert all(np.isfinite(r.best_val_map) for r in results)


def test_a_diverging_head_stops_alone(data) -> None:
    train, val, gt = data
    configs = [HeadConfig(**BASE, lr=0.05), HeadConfig(**BASE, lr=1e30, momentum=0.0)]
    good, bad = train_heads_batched(train, val, configs, CLASSES, gt)
    assert bad.history[-1].get("diverged") and bad.stopped_early
    assert all(torch.isfinite(p).all() for p in bad.model.state_dict().values())
    _assert_same(train_head(train, val, configs[0], CLASSES, gt), good)
