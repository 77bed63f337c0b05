"""The windows a head trains and is scored on, read once from a feature set.

A :class:`WindowData` holds every window of a list of images: features (float16, in memory or a
read-only memmap of the store's materialise cache), labels and the image each row belongs to.
Training draws its rows from it with :func:`training_rows` (every positive, a random share of
background); scoring uses every row, grouped by image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featurestore import FeatureSet
from mlt.errors import InputError


@dataclass(frozen=True)
class WindowData:
    """Every window of some images: features (R, D), labels (R,), image index (R,), boxes (R, 4)."""

    features: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    image_ids: tuple[str, ...]
    boxes: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        """Returns the feature dimension."""
        return int(self.features.shape[1])

    @property
    def n_images(self) -> int:
        """Returns the number of images."""
        return len(self.image_ids)

    def subset(self, image_ids: Sequence[str]) -> WindowData:
        """Returns the windows of ``image_ids`` only (rows copied, in the order of the ids)."""
        pos = {iid: i for i, iid in enumerate(self.image_ids)}
        missing = [i for i in image_ids if i not in pos]
        if missing:
            raise KeyError(f"images not in this data: {missing[:5]}")
        order = np.array([pos[i] for i in image_ids], dtype=np.int64)
        remap = np.full(self.n_images, -1, dtype=np.int64)
        remap[order] = np.arange(len(order))
        rows = np.flatnonzero(remap[self.image_index] >= 0)
        rows = rows[np.argsort(remap[self.image_index[rows]], kind="stable")]
        return WindowData(
            np.ascontiguousarray(self.features[rows]), self.labels[rows],
            remap[self.image_index[rows]], tuple(image_ids), self.boxes[rows], self.num_classes,
        )  # fmt: skip


def split_image_ids(dataset_root: str | Path, split: str, limit: int | None = None) -> list[str]:
    """Returns the image ids of ``ImageSets/Main/<split>.txt`` under the VOC root (first ``limit``)."""
    from mlt.data.voc import VocDataset

    return VocDataset(Path(dataset_root), limit=limit).ids(split)


def load_windows(
    fs: FeatureSet,
    image_ids: Sequence[str],
    layer: str = "fc7",
    cache: str | Path | None = None,
    what: str = "split",
) -> WindowData:
    """Returns every window of ``image_ids`` from the feature set, features materialised once.

    ``cache`` (a folder) keeps the features as a memmap reused by later calls and processes.
    Images missing from the set are an error naming the set and the first ids.
    """
    have = set(fs.image_ids())
    missing = [i for i in image_ids if i not in have]
    if missing:
        raise InputError(
            fs.path, what, f"{len(missing)} images, e.g. {missing[:3]}",
            "images that the feature set holds (extract the split first)",
        )  # fmt: skip
    if layer not in fs.layers:
        raise InputError(
            fs.path / "meta.json", "layers", sorted(fs.layers), f"a set with {layer!r}"
        )
    sel = fs.select(image_ids=image_ids)
    features = fs.materialize(sel, layer=layer, cache=cache)
    labels = fs.labels(sel).astype(np.int64)
    ids = fs.column("image_id", sel)
    order = {iid: i for i, iid in enumerate(sel.image_ids)}
    image_index = np.array([order[i] for i in ids], dtype=np.int64)
    num_classes = len(set_classes(fs))
    return WindowData(
        features, labels, image_index, tuple(sel.image_ids),
        np.asarray(fs.column("box", sel), dtype=np.float32), num_classes,
    )  # fmt: skip


def set_classes(fs: FeatureSet) -> list[str]:
    """Returns the target class names recorded in the feature set's meta.json (``info.classes``)."""
    classes = fs.meta.get("info", {}).get("classes")
    if not classes:
        raise InputError(fs.path / "meta.json", "info.classes", classes, "the target class names")
    return list(classes)


def set_dataset(fs: FeatureSet) -> Path:
    """Returns the VOC root the feature set was extracted from (``info.dataset`` of meta.json)."""
    root = fs.meta.get("info", {}).get("dataset")
    if not root:
        raise InputError(fs.path / "meta.json", "info.dataset", root, "the target set's folder")
    return Path(root)


def training_rows(
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    background_fraction: float = 0.1,
) -> np.ndarray:
    """Returns the sorted rows to train on: every positive and a random share of background.

    Positives are labels 0..C-1, background is C; ignored windows (negative labels: several
    objects, difficult) are never drawn. The background share is ``round(fraction * n)``.
    """
    labels = np.asarray(labels)
    positives = np.flatnonzero((labels >= 0) & (labels < num_classes))
    background = np.flatnonzero(labels == num_classes)
    n_bg = int(round(background_fraction * len(background)))
    drawn = rng.choice(background, size=n_bg, replace=False) if n_bg else background[:0]
    return np.sort(np.concatenate([positives, drawn]))
