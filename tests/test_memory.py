"""Peak memory figures: a stage's peak, not the process's earlier work."""

from __future__ import annotations

import numpy as np
import pytest

from mlt.memory import peak_rss_bytes, reset_peak


def test_reset_peak_forgets_an_earlier_allocation() -> None:
    big = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    before = peak_rss_bytes()
    assert before >= 200 * 2**20
    del big
    if not reset_peak():
        pytest.skip("no /proc/self/clear_refs here: the peak is the process's lifetime peak")
    assert peak_rss_bytes() < before - 150 * 2**20
