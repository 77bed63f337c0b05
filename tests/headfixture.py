"""A small VOC devkit and a feature set over its real window grid with learnable features.

The windows and labels are the real ones (``mlt.extract.image_windows`` on the devkit's
annotations); the features stand in for a trunk that separates the classes: a per-label
prototype plus noise, so a head can learn them and AP / early stopping have something to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from vocfixture import Img, Obj, write_voc

from featurestore import FeatureStore
from mlt.config import WindowsConfig
from mlt.data.voc import VocDataset
from mlt.extract import image_windows

CLASSES = ["car", "cat", "dog"]  # VocDataset lists classes sorted
DIM = 32


def _images(prefix: int, n: int, rng: np.random.Generator) -> list[Img]:
    imgs = []
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        w, h = int(rng.integers(56, 80)), int(rng.integers(48, 64))
        x0, y0 = int(rng.integers(1, w // 3)), int(rng.integers(1, h // 3))
        x1, y1 = int(rng.integers(2 * w // 3, w)), int(rng.integers(2 * h // 3, h))
        imgs.append(Img(f"{prefix}{i:05d}", w, h, [Obj(cls, x0, y0, x1, y1)]))
    return imgs


def make_voc(root: Path, n_train: int = 18, n_val: int = 9, n_test: int = 9, seed: int = 0) -> Path:
    """Returns a 3-class devkit (one object per image) with train/val/trainval/test lists."""
    rng = np.random.default_rng(seed)
    splits = {
        "train": _images(1, n_train, rng),
        "val": _images(2, n_val, rng),
        "test": _images(3, n_test, rng),
    }
    return write_voc(root, CLASSES, splits, seed=seed)


def write_feature_set(store_root: Path, voc_root: Path, noise: float = 1.0, seed: int = 0) -> str:
    """Returns the id of a committed fc7 set over every image of ``voc_root`` (trainval + test)."""
    ds = VocDataset(voc_root)
    wc = WindowsConfig()
    protos = (
        np.random.default_rng(seed).standard_normal((len(CLASSES) + 3, DIM)).astype(np.float32) * 2
    )
    inputs = {
        "trunk_digest": "test-trunk", "layers": ["fc7"], "grid": wc.model_dump(mode="json"),
        "preprocessing": {"input_size": 64}, "mode": "crop", "dataset_digest": f"test-{seed}-{noise}",
        "extractor_version": "test",
    }  # fmt: skip
    meta = {"dataset": str(voc_root), "classes": list(ds.classes), "trunk_run": None}
    store = FeatureStore(store_root)
    with store.writer(inputs, {"fc7": DIM}, meta) as w:
        for split in ("trainval", "test"):
            for ann in ds.iter_annotations(split):
                boxes, scales, labels = image_windows(ann, ds.classes, wc)
                rng = np.random.default_rng([seed, int(ann.image_id)])
                feats = protos[labels.astype(np.int64)] + noise * rng.standard_normal(
                    (len(labels), DIM)
                )
                cols = {"boxes": boxes, "scale": scales, "label": labels, "split": split}
                w.put(ann.image_id, {"fc7": feats.astype(np.float32)}, cols)
        return w.commit(run_id=None).id
