"""Unfrozen fine-tuning from cached C5: the trunk's FC6/FC7 + FCa/FCb, trained by train_head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlt.config import HeadConfig
from mlt.errors import InputError
from mlt.heads.artifact import load_head, save_head
from mlt.heads.boxed import boxed_gt, boxed_scores
from mlt.heads.data import WindowData
from mlt.heads.model import Head
from mlt.heads.train import evaluate_head, train_head
from mlt.heads.unfrozen import UnfrozenHead, build_head, head_from_spec
from mlt.models import create_model

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    return create_model("alexnet-small", num_classes=5).eval()


@pytest.fixture(scope="module")
def acts(trunk):
    """Returns (c5, fc7) of 48 random images, from one trunk forward pass."""
    torch.manual_seed(1)
    x = torch.randn(48, 3, 64, 64)
    with torch.no_grad():
        out = trunk.forward_features(x, ("c5", "fc7"))
    return out["c5"], out["fc7"]


def _data(c5: torch.Tensor, labels: np.ndarray) -> WindowData:
    n = len(labels)
    return WindowData(
        c5.numpy().astype(np.float16), labels.astype(np.int64), np.arange(n), tuple(map(str, range(n))),
        np.zeros((n, 4), np.float32), NUM_CLASSES,
    )  # fmt: skip


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % NUM_CLASSES


def test_c5_layout_is_the_flattened_pooled_map(trunk) -> None:
    assert trunk.feature_dims["c5"] == 256 * 4 * 4  # alexnet-small: C5 256 x 4 x 4, grid 4
    head = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32)
    assert head.c5_dim == 4096 and head.fc_width == trunk.spec.fc_width


@pytest.mark.parametrize("unfreeze", ["none", "fc6", "fc6+fc7"])
def test_at_init_it_equals_the_frozen_head_on_trunk_fc7(trunk, acts, unfreeze) -> None:
    c5, fc7 = acts
    uh = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32, unfreeze=unfreeze).eval()
    frozen = Head(fc7.shape[1], NUM_CLASSES, fca_width=32)
    frozen.load_state_dict(uh.head.state_dict())
    frozen.eval()
    with torch.no_grad():
        torch.testing.assert_close(uh.trunk_features(c5), fc7, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(uh(c5), frozen(fc7), rtol=1e-5, atol=1e-5)


def test_frozen_blocks_run_without_dropout_in_training_mode(trunk, acts) -> None:
    c5, fc7 = acts
    uh = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32, unfreeze="none").train()
    assert uh.training and not uh.fc6.training and not uh.fc7.training
    with torch.no_grad():
        torch.testing.assert_close(uh.trunk_features(c5), fc7, rtol=1e-5, atol=1e-5)
    uh6 = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32, unfreeze="fc6").train()
    assert uh6.fc6.training and not uh6.fc7.training


@pytest.mark.parametrize(
    ("unfreeze", "fc6_moves", "fc7_moves"),
    [("none", False, False), ("fc6", True, False), ("fc6+fc7", True, True)],
)
def test_training_moves_only_the_unfrozen_blocks(trunk, acts, unfreeze, fc6_moves, fc7_moves):
    c5, _ = acts
    uh = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32, unfreeze=unfreeze)
    before = {k: v.clone() for k, v in uh.state_dict().items()}
    hc = HeadConfig(epochs=2, batch_size=16, fca_width=32, lr=0.01)
    train_head(_data(c5, _labels(len(c5))), None, hc, ["a", "b", "c"], model=uh)
    after = uh.state_dict()

    def moved(prefix: str) -> bool:
        return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))

    assert moved("fc6.") == fc6_moves
    assert moved("fc7.") == fc7_moves
    assert moved("head.fca.") and moved("head.fcb.")


def test_it_learns_a_tiny_boxed_set_with_early_stopping(trunk, acts) -> None:
    c5, _ = acts
    labels = _labels(len(c5))
    # Make the classes separable in C5: shift each class's features along its own direction.
    shift = torch.zeros(NUM_CLASSES, c5.shape[1])
    for c in range(NUM_CLASSES):
        shift[c, c * 100 : (c + 1) * 100] = 3.0
    c5 = c5 + shift[torch.from_numpy(labels)]
    train, val = _data(c5[:36], labels[:36]), _data(c5[36:], labels[36:])
    gt = boxed_gt(val.labels, NUM_CLASSES)
    hc = HeadConfig(epochs=8, batch_size=12, fca_width=64, lr=0.01, patience=8, unfreeze="fc6")
    uh = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=64, unfreeze="fc6")
    result = train_head(train, val, hc, ["a", "b", "c"], gt, model=uh, protocol="boxed")
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_map > 0.9
    table = evaluate_head(result.model, val, gt, ["a", "b", "c"], 5.0, "voc07", "boxed")
    assert table.mean_ap == pytest.approx(result.best_val_map)
    assert boxed_scores(result.model, val).shape == (len(val), NUM_CLASSES)


def test_saved_unfrozen_head_round_trips(tmp_path, trunk, acts) -> None:
    c5, _ = acts
    uh = UnfrozenHead.from_trunk(trunk, NUM_CLASSES, fca_width=32, unfreeze="fc6+fc7").eval()
    with torch.no_grad():
        uh.fc6.linear.bias.add_(0.1)  # differ from the trunk: weights must come from the file
    path = save_head(tmp_path / "head.pt", uh, {"classes": ["a", "b", "c"], "feature_set": "x"})
    loaded = load_head(path)
    assert isinstance(loaded.model, UnfrozenHead) and loaded.model.unfreeze == "fc6+fc7"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(c5), uh(c5))
    plain = Head(16, 2, 8)
    assert isinstance(head_from_spec(plain.spec()), Head)


def test_build_head_needs_c5_when_unfrozen() -> None:
    assert build_head(None, "fc7", HeadConfig(), NUM_CLASSES) is None
    with pytest.raises(InputError, match="--layer"):
        build_head(None, "fc7", HeadConfig(unfreeze="fc6"), NUM_CLASSES)
    with pytest.raises(InputError, match="head.unfreeze"):
        UnfrozenHead(16, 8, 2, unfreeze="fc7")


def test_boxed_gt_marks_the_window_class() -> None:
    gt = boxed_gt(np.array([0, 2, 1, -1, 3]), 3)
    expected = [[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [0, 0, 0], [-1, -1, -1]]
    np.testing.assert_array_equal(gt, np.array(expected, dtype=np.int8))
