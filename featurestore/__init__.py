"""featurestore: content-addressed feature sets of CNN window activations, in LMDB.

Imports only the standard library, numpy, lmdb and pyarrow (never ``mlt``), so workers and
tools can read feature sets without the training stack.

Folder layout of a store (``FeatureStore(root)``)::

    <root>/
      <id>/                      a complete set, immutable once published
        lmdb/data.mdb            LMDB environment (subdir=True), named databases:
                                   features  b"<layer>/<image_id>" -> value (below)
                                   windows   b"<image_id>" -> the image's manifest rows
                                   spec      b"spec" -> {id, inputs, layers} (for resume)
        manifest.parquet         one row per window, sorted by image id then window:
                                   image_id, window, box (x0, y0, x1, y1), scale, label, split
        meta.json                format_version, id, inputs (the id's inputs), layers {name: dim},
                                   dtype, checksum, counts (images, windows, per label, per split),
                                   created, run_id (producing MLflow run), info (lineage extras)
        index.parquet            physical layout: per image its window count and each layer's
                                   value offset in the map (so readers never scan the B-tree),
                                   valid for the LMDB transaction id in its metadata
      .tmp-<id>/                 a set being written (same layout + writer.lock); renamed to
                                 <id>/ when complete, resumed image by image after a crash

Value format (one per image and layer, all its windows): a 48-byte little-endian header —
magic ``b"MLTF"``, format version (u8), dtype code (u8, 1 = float16), reserved (u16),
n_windows (u32), dim (u32), crc32 of the float bytes (u32), 28 padding bytes, so that rows
start cache-line aligned on LMDB's overflow pages — followed by n_windows x dim float16,
row-major. Readers view the rows in the memory map without copying.

The id (:func:`feature_set_id`) is a short hash of everything that determines the features:
trunk weights digest, layers, window grid, preprocessing, extraction mode, dataset manifest
digest and extractor version. Same inputs, same id: nothing is recomputed; different inputs
never share a folder.
"""

from featurestore.catalog import FeatureStore, SetInfo, lineage
from featurestore.errors import (
    AlreadyExists,
    ChecksumError,
    FeatureStoreError,
    IncompatibleFeatureSet,
    NotFound,
    WriteFailed,
    WriterBusy,
)
from featurestore.ids import REQUIRED_INPUTS, canonical_json, feature_set_id
from featurestore.layout import FORMAT_VERSION
from featurestore.reader import FeatureSet, Selection
from featurestore.verify import Problem
from featurestore.writer import FeatureSetWriter

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_INPUTS",
    "AlreadyExists",
    "ChecksumError",
    "FeatureSet",
    "FeatureSetWriter",
    "FeatureStore",
    "FeatureStoreError",
    "IncompatibleFeatureSet",
    "NotFound",
    "Problem",
    "Selection",
    "SetInfo",
    "WriteFailed",
    "WriterBusy",
    "canonical_json",
    "feature_set_id",
    "lineage",
]
