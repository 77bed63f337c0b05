"""The Parquet manifest: one row per window (image id, window index, box, scale, label, split)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.layout import WindowRecord

SCHEMA = pa.schema(
    [
        ("image_id", pa.dictionary(pa.int32(), pa.string())),
        ("window", pa.int32()),
        ("box", pa.list_(pa.float32(), 4)),  # (x0, y0, x1, y1), 0-based half-open pixels
        ("scale", pa.float32()),
        ("label", pa.int32()),
        ("split", pa.dictionary(pa.int32(), pa.string())),
    ]
)


def build_manifest(records: Iterable[tuple[str, WindowRecord]]) -> pa.Table:
    """Returns the manifest table of ``(image_id, record)`` pairs given in image-id order."""
    ids, splits, counts, boxes, scales, labels = [], [], [], [], [], []
    for image_id, rec in records:
        ids.append(image_id)
        splits.append(rec.split)
        counts.append(len(rec))
        boxes.append(rec.boxes)
        scales.append(rec.scale)
        labels.append(rec.label)
    counts_np = np.asarray(counts, dtype=np.int64)
    image_index = np.repeat(np.arange(len(ids), dtype=np.int32), counts_np)
    split_names = sorted(set(splits))
    split_code = np.asarray([split_names.index(s) for s in splits], dtype=np.int32)
    flat_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    columns = [
        pa.DictionaryArray.from_arrays(image_index, pa.array(ids, pa.string())),
        pa.array(_window_index(counts_np), pa.int32()),
        pa.FixedSizeListArray.from_arrays(pa.array(flat_boxes.reshape(-1), pa.float32()), 4),
        pa.array(np.concatenate(scales) if scales else np.zeros(0, np.float32), pa.float32()),
        pa.array(np.concatenate(labels) if labels else np.zeros(0, np.int32), pa.int32()),
        pa.DictionaryArray.from_arrays(
            np.repeat(split_code, counts_np), pa.array(split_names, pa.string())
        ),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _window_index(counts: np.ndarray) -> np.ndarray:
    """Returns 0..n-1 for each image's n windows, concatenated."""
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum()), dtype=np.int64) - starts


def write_manifest(table: pa.Table, path: Path) -> None:
    """Writes the manifest as Parquet (zstd) to ``path`` (returns None)."""
    pq.write_table(table, path, compression="zstd")


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Returns (per-row codes, names in first-appearance order) of a string or dictionary column."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False).astype(
        np.int64
    ), encoded.dictionary.to_pylist()


@dataclass
class ManifestColumns:
    """The manifest's columns as numpy arrays, with the per-image grouping readers need."""

    table: pa.Table

    @cached_property
    def _image(self) -> tuple[np.ndarray, list[str]]:
        return _codes(self.table.column("image_id"))

    @property
    def row_image(self) -> np.ndarray:
        """Returns each row's image index into :attr:`image_ids` (int64)."""
        return self._image[0]

    @property
    def image_ids(self) -> list[str]:
        """Returns the image ids in manifest order (sorted)."""
        return self._image[1]

    @cached_property
    def image_counts(self) -> np.ndarray:
        """Returns the number of windows (rows) of each image, aligned with :attr:`image_ids`."""
        return np.bincount(self.row_image, minlength=len(self.image_ids))

    @cached_property
    def image_starts(self) -> np.ndarray:
        """Returns the first row of each image, aligned with :attr:`image_ids`."""
        return np.cumsum(self.image_counts) - self.image_counts

    @cached_property
    def window(self) -> np.ndarray:
        """Returns each row's window index within its image (int64)."""
        return self.table.column("window").to_numpy().astype(np.int64)

    @cached_property
    def label(self) -> np.ndarray:
        """Returns each row's label (int32)."""
        return self.table.column("label").to_numpy()

    @cached_property
    def _split(self) -> tuple[np.ndarray, list[str]]:
        return _codes(self.table.column("split"))

    @property
    def split_code(self) -> np.ndarray:
        """Returns each row's split index into :attr:`split_names`."""
        return self._split[0]

    @property
    def split_names(self) -> list[str]:
        """Returns the split names in order of first appearance."""
        return self._split[1]

    def column(self, name: str) -> np.ndarray:
        """Returns one column as numpy: ``box`` as (n, 4) float32, strings as object arrays."""
        if name == "box":
            return self.table.column("box").combine_chunks().flatten().to_numpy().reshape(-1, 4)
        if name == "image_id":
            return np.asarray(self.image_ids, dtype=object)[self.row_image]
        if name == "split":
            return np.asarray(self.split_names, dtype=object)[self.split_code]
        if name in ("window", "label"):
            return getattr(self, name)
        return self.table.column(name).to_numpy()


def count_summary(cols: ManifestColumns) -> dict[str, Any]:
    """Returns the counts meta.json records: images, windows, per label, per split."""
    per_split: dict[str, dict[str, int]] = {}
    image_split = cols.split_code[cols.image_starts] if len(cols.image_ids) else np.zeros(0, int)
    for code, name in enumerate(cols.split_names):
        per_split[name] = {
            "images": int((image_split == code).sum()),
            "windows": int((cols.split_code == code).sum()),
        }
    per_label = Counter(cols.label.tolist())
    return {
        "images": len(cols.image_ids),
        "windows": int(cols.table.num_rows),
        "per_label": {str(k): per_label[k] for k in sorted(per_label)},
        "per_split": dict(sorted(per_split.items())),
    }
