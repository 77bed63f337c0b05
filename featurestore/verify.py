"""Verification of a complete feature set: every checksum, every count, nothing missing or extra."""

from __future__ import annotations

from typing import Any

import lmdb
import numpy as np

from featurestore.errors import IncompatibleFeatureSet
from featurestore.layout import LOCATIONS_FILE, VALUE_HEADER, checksum, decode_header
from featurestore.locations import Locations, address
from featurestore.manifest import ManifestColumns, count_summary


class Problem(str):
    """One problem found by verification: its text, plus the image and layer it concerns."""

    image_id: str | None
    layer: str | None

    def __new__(cls, text: str, image_id: str | None = None, layer: str | None = None) -> Problem:
        self = super().__new__(cls, text)
        self.image_id, self.layer = image_id, layer
        return self


def _manifest_problems(meta: dict[str, Any], cols: ManifestColumns) -> list[Problem]:
    problems = []
    ids = cols.image_ids
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)) or np.any(
        np.diff(cols.row_image) < 0
    ):
        problems.append(
            Problem("manifest: rows are not sorted by image id (or an image's rows are split)")
        )
    expected_window = np.arange(len(cols.window)) - np.repeat(cols.image_starts, cols.image_counts)
    bad = np.flatnonzero(cols.window != expected_window)
    if len(bad):
        image_id = ids[cols.row_image[bad[0]]]
        problems.append(
            Problem(
                f"manifest: image {image_id!r}: window indices are not 0..n-1 in order", image_id
            )
        )
    stored = meta.get("counts", {})
    for key, value in count_summary(cols).items():
        if stored.get(key) != value:
            problems.append(
                Problem(
                    f"meta.json: counts.{key} = {stored.get(key)!r}; the manifest gives {value!r}"
                )
            )
    return problems


def location_problems(loc: Locations | None, txnid: int, cols: ManifestColumns) -> list[Problem]:
    """Returns why the saved value locations cannot be used (empty when they can)."""
    if loc is None:
        return [Problem(f"{LOCATIONS_FILE}: missing or damaged (readers fall back to a slow scan)")]
    if loc.txnid != txnid:
        return [
            Problem(
                f"lmdb: changed after commit (last txn {txnid}; {LOCATIONS_FILE} was made at {loc.txnid})"
            )
        ]
    if loc.image_ids != cols.image_ids or not np.array_equal(loc.counts, cols.image_counts):
        return [Problem(f"{LOCATIONS_FILE}: images or window counts differ from the manifest")]
    return []


def verify_set(
    layers: dict[str, int], meta: dict[str, Any], cols: ManifestColumns,
    env: lmdb.Environment, db: Any, saved: dict[str, dict[str, int]] | None = None,
) -> list[Problem]:  # fmt: skip
    """Returns the problems of one feature set, each naming the image and layer (empty when sound).

    ``saved`` maps layer -> image -> the address readers take from index.parquet; each is
    checked against where LMDB has the value.
    """
    problems = _manifest_problems(meta, cols)
    expected = dict(zip(cols.image_ids, cols.image_counts.tolist(), strict=True))
    seen: dict[str, set[str]] = {layer: set() for layer in layers}

    def add(image_id: str, layer: str, text: str) -> None:
        problems.append(Problem(f"image {image_id!r} layer {layer!r}: {text}", image_id, layer))

    with env.begin(db=db, buffers=True) as txn:
        for key, value in txn.cursor():
            layer, _, image_id = bytes(key).decode(errors="replace").partition("/")
            if layer not in layers:
                add(image_id, layer, f"extra value (the set has layers {', '.join(layers)})")
                continue
            if image_id not in expected:
                add(image_id, layer, "extra value (image not in the manifest)")
                continue
            seen[layer].add(image_id)
            if saved and saved.get(layer, {}).get(image_id, address(value)) != address(value):
                add(image_id, layer, "index.parquet locates the value elsewhere than LMDB does")
            try:
                head = decode_header(value, "value")
            except IncompatibleFeatureSet as e:
                add(image_id, layer, str(e))
                continue
            if head.dim != layers[layer]:
                add(image_id, layer, f"dim {head.dim}; meta.json says {layers[layer]}")
            if head.n_windows != expected[image_id]:
                add(
                    image_id,
                    layer,
                    f"{head.n_windows} windows stored; the manifest lists {expected[image_id]}",
                )
            actual = checksum(value[VALUE_HEADER.size :])
            if actual != head.crc:
                add(
                    image_id,
                    layer,
                    f"checksum mismatch (stored {head.crc:08x}, computed {actual:08x})",
                )
    for layer, found in seen.items():
        for image_id in cols.image_ids:
            if image_id not in found:
                add(image_id, layer, "missing value (listed in the manifest)")
    return problems
