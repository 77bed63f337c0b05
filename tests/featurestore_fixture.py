"""Deterministic fake feature sets for the feature-store tests (importable by spawned workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featurestore import FeatureSet, FeatureStore

DIMS = {"fc7": 24, "c5": 8}


def make_inputs(**changes: Any) -> dict[str, Any]:
    """Returns feature-set inputs for the test layers, with ``changes`` applied."""
    inputs = {
        "trunk_digest": "sha256:trunk0",
        "layers": list(DIMS),
        "grid": {"scales": [1.0, 1.3, 1.6], "stride_fraction": 1 / 3},
        "preprocessing": {"size": 227, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "mode": "windows",
        "dataset_digest": "sha256:tinyvoc0",
        "extractor_version": "1",
    }
    inputs.update(changes)
    return inputs


def image_id(i: int) -> str:
    """Returns the id of test image ``i``."""
    return f"img{i:04d}"


def image_item(i: int, seed: int = 0) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Returns (image_id, float32 features per layer, window columns) of test image ``i``."""
    rng = np.random.default_rng([seed, i])
    n = 3 + (7 * i) % 11
    feats = {
        layer: rng.standard_normal((n, dim)).astype(np.float32) * 4 for layer, dim in DIMS.items()
    }
    x0 = rng.uniform(0, 100, n).astype(np.float32)
    windows = {
        "boxes": np.stack([x0, x0 / 2, x0 + 50, x0 / 2 + 50], axis=1),
        "scale": rng.choice([1.0, 1.3, 1.6], n),
        "label": rng.integers(0, 4, n).astype(np.int16),
        "split": "train" if i % 3 else "val",
    }
    return image_id(i), feats, windows


def expected(i: int, layer: str, seed: int = 0) -> np.ndarray:
    """Returns the float16 features of test image ``i`` as a set stores them."""
    return image_item(i, seed)[1][layer].astype(np.float16)


def write_set(store: FeatureStore, n_images: int, seed: int = 0, **changes: Any) -> FeatureSet:
    """Returns a committed set of ``n_images`` test images (inputs from :func:`make_inputs`)."""
    with store.writer(make_inputs(**changes), DIMS, meta={"trunk_run": "run-trunk"}) as w:
        for i in range(n_images):
            w.put(*image_item(i, seed))
        return w.commit(run_id="run-extract")


def corrupt_value(fs: FeatureSet, image: str, layer: str) -> int:
    """Flips one byte inside the stored value of ``image``/``layer`` in the set's data.mdb.

    Small values live in B-tree leaf pages, which LMDB copies on write, so stale copies may sit
    in free pages: every copy is flipped. Returns the number of copies found.
    """
    needle = np.ascontiguousarray(fs.get(image, layer)).tobytes()
    path = Path(fs.path) / "lmdb" / "data.mdb"
    blob = bytearray(path.read_bytes())
    found, at = 0, blob.find(needle)
    while at >= 0:
        blob[at + len(needle) // 2] ^= 0x5A
        found += 1
        at = blob.find(needle, at + 1)
    assert found, "value bytes not found"
    with open(path, "r+b") as f:
        f.write(blob)
    return found


def reader_worker(
    root: str, ready_id: str, pending_id: str, n_ready: int, n_pending: int, seconds: float
) -> None:
    """Reads a complete set until another appears, then checks every value of both; raises on any error.

    After its first read it drops a file named after its pid in ``<root>/.readers`` so the test
    can start writing only once every reader is busy.
    """
    import os
    import time

    store = FeatureStore(root)
    ready = store.open(ready_id)
    deadline = time.monotonic() + seconds
    rng = np.random.default_rng()
    announced = False
    while not store.exists(pending_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending_id} never appeared")
        i = int(rng.integers(n_ready))
        assert np.array_equal(ready.get(image_id(i), "fc7"), expected(i, "fc7"))
        rows = rng.integers(0, len(ready), 64)
        assert ready.read_rows(rows, "c5").shape == (64, DIMS["c5"])
        if not announced:
            (Path(root) / ".readers" / str(os.getpid())).touch()
            announced = True
    pending = store.open(pending_id)
    for i in range(n_pending):
        for layer in DIMS:
            assert np.array_equal(
                pending.get(image_id(i), layer, verify=True), expected(i, layer, seed=1)
            )
    assert pending.verify() == []
