"""Where each value lies in the LMDB map: found by a cursor pass, saved at commit in index.parquet.

A cursor pass makes LMDB read the first page of every value; on a cold set the kernel's
readahead turns that into reading most of the file. So the writer records, once, each value's
byte offset relative to an anchor value (the first key), and a reader finds every value from a
single ``get`` of the anchor. The offsets are used only while the file's page checksums hold
and the LMDB's last transaction id is the one recorded with them; otherwise readers fall back
to the cursor pass. The file is physical layout, so it lives beside meta.json, not in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import layout
from featurestore.errors import FeatureStoreError
from featurestore.layout import DTYPE, VALUE_HEADER


def address(value: Any) -> int:
    """Returns the memory address of a zero-copy LMDB value (a memoryview into the map)."""
    return np.frombuffer(value, np.uint8).__array_interface__["data"][0]


def scan_values(
    env: lmdb.Environment, db: Any, layer: str | None = None
) -> Iterator[tuple[str, str, int, int]]:
    """Yields (layer, image_id, address, size) of every value (of one layer when given), in key order."""
    prefix = b"" if layer is None else f"{layer}/".encode()
    with env.begin(db=db, buffers=True) as txn:
        cursor = txn.cursor()
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            key = bytes(key)
            if not key.startswith(prefix):
                break
            name, _, image_id = key.decode(errors="replace").partition("/")
            yield name, image_id, address(value), len(value)


def value_size(n_windows: np.ndarray, dim: int) -> np.ndarray:
    """Returns the stored size of values holding ``n_windows`` rows of ``dim`` float16."""
    return VALUE_HEADER.size + n_windows * (dim * DTYPE.itemsize)


def write_locations(
    lmdb_dir: Path,
    folder: Path,
    set_id: str,
    image_ids: list[str],
    counts: np.ndarray,
    layers: dict[str, int],
) -> None:
    """Writes ``folder/index.parquet``: image ids, window counts, and each layer's value offsets
    relative to the anchor, with the anchor key and LMDB transaction id in its metadata
    (returns None)."""
    env = layout.open_read_env(
        lmdb_dir, readahead=False
    )  # one page per value, not readahead-sized reads
    try:
        db = env.open_db(layout.FEATURES_DB, create=False)
        found = {(lay, img): (addr, size) for lay, img, addr, size in scan_values(env, db)}
        txnid = env.info()["last_txnid"]
    finally:
        env.close()
    columns: dict[str, Any] = {
        "image_id": pa.array(image_ids, pa.string()),
        "n_windows": pa.array(counts, pa.int32()),
    }
    anchor = min(found, default=None, key=lambda k: layout.feature_key(*k))
    for lay, dim in layers.items():
        loc = np.empty(len(image_ids), dtype=np.int64)
        want = value_size(np.asarray(counts, np.int64), dim)
        for i, img in enumerate(image_ids):
            addr, size = found.get((lay, img), (0, -1))
            if size != want[i]:
                raise FeatureStoreError(
                    f"image {img!r} layer {lay!r}: stored value of {size} bytes; expected {want[i]} "
                    f"({counts[i]} windows x {dim} dims): the partial set is inconsistent, re-extract it"
                )
            loc[i] = addr - found[anchor][0]
        columns[f"loc_{lay}"] = pa.array(loc, pa.int64())
    metadata = {"set_id": set_id, "lmdb_txnid": str(txnid), "anchor": "", "anchor_size": "0"}
    if anchor is not None:
        metadata.update(
            anchor=layout.feature_key(*anchor).decode(), anchor_size=str(found[anchor][1])
        )
    table = pa.table(columns).replace_schema_metadata(metadata)
    path = folder / layout.LOCATIONS_FILE
    pq.write_table(table, path, compression="zstd", write_page_checksum=True)
    layout.fsync_path(path)


@dataclass(frozen=True)
class Locations:
    """The saved offsets of a set's values, as a reader loads them."""

    image_ids: list[str]
    counts: np.ndarray  # windows per image, aligned with image_ids
    offsets: dict[str, np.ndarray]  # layer -> each image's value start minus the anchor's
    anchor: bytes | None
    anchor_size: int
    txnid: int


def read_locations(folder: Path, set_id: str) -> Locations | None:
    """Returns the saved locations of a set, or None when index.parquet is missing, damaged or
    another set's."""
    try:
        table = pq.read_table(folder / layout.LOCATIONS_FILE, page_checksum_verification=True)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if meta["set_id"] != set_id:
            return None
        offsets = {
            name[4:]: table.column(name).to_numpy()
            for name in table.column_names
            if name.startswith("loc_")
        }
        return Locations(
            table.column("image_id").to_pylist(),
            table.column("n_windows").to_numpy().astype(np.int64),
            offsets,
            meta["anchor"].encode() or None,
            int(meta["anchor_size"]),
            int(meta["lmdb_txnid"]),
        )
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
