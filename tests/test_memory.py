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


def test_sampler_tells_private_memory_from_a_mapped_file(tmp_path) -> None:
    import gc
    import time

    from mlt.memory import PeakSampler, memory_metrics, rss_parts

    if not rss_parts():
        pytest.skip("no RssAnon/RssFile in /proc/self/status here")
    path = tmp_path / "mapped.bin"
    np.ones(300 * 2**20 // 8).tofile(path)  # 300 MiB file
    sampler = PeakSampler(interval=0.05)
    start = sampler.peaks()
    mapped = np.memmap(path, dtype=np.float64, mode="r")
    assert float(mapped.sum()) == len(mapped)  # every page touched: resident, file-backed
    time.sleep(0.2)
    del mapped
    private = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    time.sleep(0.2)
    del private
    peaks = sampler.stop()
    assert peaks["file"] - start["file"] >= 250 * 2**20
    assert 150 * 2**20 <= peaks["anon"] - start["anon"] < 280 * 2**20  # the file is not private
    metrics = memory_metrics(
        {"rss": peak_rss_bytes(), **peaks}, [{"rss": 5, "anon": 3}, {"rss": 7}]
    )
    assert metrics["peak_anon_driver_bytes"] == peaks["anon"]
    assert metrics["peak_anon_total_bytes"] == peaks["anon"] + 3
    assert metrics["peak_rss_actor_max_bytes"] == 7 and metrics["peak_rss_total_bytes"] > 12
    # a sampler dropped without stop() ends its thread by itself
    thread = PeakSampler(interval=0.01)._thread
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()
