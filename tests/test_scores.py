"""Image scores: the power-k mean of window probabilities, per image."""

from __future__ import annotations

import numpy as np
import pytest

from mlt.evaluate import image_scores, power_mean


def test_power_mean_k1_is_the_mean_and_k2_the_root_mean_square():
    p = np.random.default_rng(0).random((17, 4))
    np.testing.assert_allclose(power_mean(p, 1), p.mean(0), rtol=1e-12)
    np.testing.assert_allclose(power_mean(p, 2), np.sqrt((p**2).mean(0)), rtol=1e-12)


def test_power_mean_is_a_monotone_transform_of_the_papers_score():
    # The paper's score (1/M) sum p^k is power_mean ** k: same ranking, same AP.
    p = np.random.default_rng(1).random((30, 5))
    np.testing.assert_allclose(power_mean(p, 5) ** 5, (p**5).mean(0), rtol=1e-12)


def test_power_mean_grows_with_k_towards_the_max():
    p = np.random.default_rng(2).random((10, 6))
    values = [power_mean(p, k) for k in (1, 2, 5, 20, 100, 1e4)]
    for low, high in zip(values, values[1:], strict=False):
        assert np.all(low <= high + 1e-15)
    np.testing.assert_allclose(values[-1], p.max(0), rtol=1e-3)
    assert np.array_equal(power_mean(p, "max"), p.max(0))


def test_power_mean_neither_underflows_nor_turns_zeros_into_nan():
    p = np.array([[1e-30, 0.0], [2e-30, 0.0]])
    out = power_mean(p, 50)
    assert (p**50).mean() == 0.0  # the direct form underflows
    assert 1e-30 < out[0] < 2e-30
    assert out[1] == 0.0


def per_image_loop(probs, index, n, k):
    return np.stack([power_mean(probs[index == i], k) for i in range(n)])


@pytest.mark.parametrize("k", [1, 5, 2.5, "max"])
def test_image_scores_match_a_per_image_loop(k):
    rng = np.random.default_rng(3)
    n, kk = 7, 4
    index = np.concatenate([np.arange(n), rng.integers(0, n, 60)])
    rng.shuffle(index)  # windows need not be grouped by image
    probs = rng.random((len(index), kk)).astype(np.float32)
    out = image_scores(probs, index, n, k)
    assert out.shape == (n, kk) and out.dtype == np.float64
    np.testing.assert_allclose(out, per_image_loop(probs, index, n, k), rtol=1e-12)


def test_image_scores_grouped_input_and_one_window_images():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.0]])
    out = image_scores(probs, np.array([0, 0, 1]), 2, 1)
    np.testing.assert_allclose(out, [[0.4, 0.6], [0.1, 0.0]])


@pytest.mark.parametrize(
    "probs, index, n, k, match",
    [
        (np.ones((3, 2)), np.array([0, 0, 2]), 3, 5, "no windows"),
        (np.ones((3, 2)), np.array([0, 1, 3]), 3, 5, "lie in 0..2"),
        (np.ones((3, 2)), np.array([0, 1]), 2, 5, "shape"),
        (np.ones((2, 2)), np.array([0.0, 1.0]), 2, 5, "integers"),
        (np.ones(3), np.array([0, 1, 2]), 3, 5, "windows, classes"),
        (-np.ones((2, 2)), np.array([0, 1]), 2, 5, "non-negative"),
        (np.full((2, 2), np.nan), np.array([0, 1]), 2, 5, "finite"),
        (np.ones((2, 2)), np.array([0, 1]), 0, 5, "n_images"),
        (np.ones((2, 2)), np.array([0, 1]), 2, 0, "positive"),
        (np.ones((2, 2)), np.array([0, 1]), 2, float("inf"), "finite"),
        (np.ones((2, 2)), np.array([0, 1]), 2, "min", "'max'"),
        (np.ones((2, 2)), np.array([0, 1]), 2, True, "'max'"),
    ],
)
def test_image_scores_refuse_bad_input(probs, index, n, k, match):
    with pytest.raises(ValueError, match=match):
        image_scores(probs, index, n, k)


def test_power_mean_refuses_no_windows():
    with pytest.raises(ValueError, match="at least one window"):
        power_mean(np.zeros((0, 3)), 5)
