"""Where things live in a feature-set folder, and the byte formats of the LMDB values."""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from featurestore.errors import FeatureStoreError, IncompatibleFeatureSet

#: Version of the folder layout and value formats below; readers refuse other versions.
FORMAT_VERSION = 1

LMDB_DIR = "lmdb"  # the LMDB environment (subdir=True): data.mdb (+ lock.mdb while writing)
MANIFEST_FILE = "manifest.parquet"
META_FILE = "meta.json"
LOCATIONS_FILE = "index.parquet"  # each value's offset in the map, so readers need no B-tree scan
WRITER_LOCK = "writer.lock"  # fcntl lock of the live writer, in temporary folders only
TMP_PREFIX = ".tmp-"

# Named databases inside the environment.
FEATURES_DB = b"features"  # b"<layer>/<image_id>" -> feature value (header + float16 rows)
WINDOWS_DB = b"windows"  # b"<image_id>" -> window record (the image's manifest rows)
SPEC_DB = b"spec"  # b"spec" -> JSON {id, inputs, layers}: what a resumed writer must match
MAX_DBS = 4
MAX_KEY_BYTES = 511  # LMDB's default key size limit

DTYPE = np.dtype("<f2")
DTYPE_CODES = {1: DTYPE}

# Feature value: 48-byte header, then n_windows x dim little-endian float16, row-major.
# magic, format version, dtype code, reserved, n_windows, dim, crc32 of the float bytes, padding.
# 48 bytes: after LMDB's 16-byte overflow-page header the rows start 64-byte (cache-line) aligned.
VALUE_HEADER = struct.Struct("<4sBBHIII28x")
VALUE_MAGIC = b"MLTF"
# Window record: header, split (UTF-8), boxes float32 (n, 4), scale float32 (n,), label int32 (n,).
WINDOWS_HEADER = struct.Struct("<4sBxHI")
WINDOWS_MAGIC = b"MLTW"


def tmp_name(set_id: str) -> str:
    """Returns the temporary folder name of a set being written (deterministic, so writers resume)."""
    return f"{TMP_PREFIX}{set_id}"


def feature_key(layer: str, image_id: str) -> bytes:
    """Returns the LMDB key of one image's value for one layer: ``b"<layer>/<image_id>"``."""
    key = f"{layer}/{image_id}".encode()
    if len(key) > MAX_KEY_BYTES:
        raise FeatureStoreError(
            f"image id {image_id!r} with layer {layer!r} makes a {len(key)}-byte key; "
            f"expected at most {MAX_KEY_BYTES} bytes"
        )
    return key


def checksum(data: Any) -> int:
    """Returns the crc32 of a contiguous buffer (about 4 GB/s; a feature value's checksum)."""
    return zlib.crc32(data)


def encode_value(rows: np.ndarray) -> bytearray:
    """Returns the stored bytes of a (n_windows, dim) float16 array: header + raw rows."""
    data = memoryview(np.ascontiguousarray(rows, dtype=DTYPE)).cast("B")
    buf = bytearray(VALUE_HEADER.size + data.nbytes)
    n, dim = rows.shape
    VALUE_HEADER.pack_into(buf, 0, VALUE_MAGIC, FORMAT_VERSION, 1, 0, n, dim, checksum(data))
    buf[VALUE_HEADER.size :] = data
    return buf


@dataclass(frozen=True)
class ValueHeader:
    """The parsed header of a feature value."""

    n_windows: int
    dim: int
    crc: int

    @property
    def nbytes(self) -> int:
        """Returns the byte size of the float16 rows that follow the header."""
        return self.n_windows * self.dim * DTYPE.itemsize


def decode_header(buf: Any, what: str) -> ValueHeader:
    """Returns the header of a stored feature value; raises when it is not one this code wrote."""
    if len(buf) < VALUE_HEADER.size:
        raise IncompatibleFeatureSet(f"{what}: {len(buf)}-byte value is shorter than its header")
    magic, version, code, _, n, dim, crc = VALUE_HEADER.unpack_from(buf, 0)
    if magic != VALUE_MAGIC or version != FORMAT_VERSION or code not in DTYPE_CODES:
        raise IncompatibleFeatureSet(
            f"{what}: value header magic={magic!r} version={version} dtype={code}; "
            f"expected {VALUE_MAGIC!r} version {FORMAT_VERSION} dtype 1 (float16)"
        )
    header = ValueHeader(n, dim, crc)
    if len(buf) != VALUE_HEADER.size + header.nbytes:
        raise IncompatibleFeatureSet(
            f"{what}: value holds {len(buf) - VALUE_HEADER.size} bytes; its header says "
            f"{n} windows x {dim} dims = {header.nbytes}"
        )
    return header


@dataclass(frozen=True)
class WindowRecord:
    """One image's manifest rows as stored in the windows database."""

    split: str
    boxes: np.ndarray  # (n, 4) float32, (x0, y0, x1, y1) 0-based half-open pixels
    scale: np.ndarray  # (n,) float32
    label: np.ndarray  # (n,) int32

    def __len__(self) -> int:
        return len(self.label)

    def encode(self) -> bytes:
        """Returns the record's stored bytes."""
        split = self.split.encode()
        head = WINDOWS_HEADER.pack(WINDOWS_MAGIC, FORMAT_VERSION, len(split), len(self))
        return b"".join(
            (head, split, self.boxes.astype("<f4").tobytes(), self.scale.astype("<f4").tobytes(),
             self.label.astype("<i4").tobytes())
        )  # fmt: skip

    @classmethod
    def decode(cls, buf: Any, what: str) -> WindowRecord:
        """Returns the record stored in ``buf``; raises when the bytes are not one."""
        magic, version, split_len, n = WINDOWS_HEADER.unpack_from(buf, 0)
        if magic != WINDOWS_MAGIC or version != FORMAT_VERSION:
            raise IncompatibleFeatureSet(f"{what}: not a window record of format {FORMAT_VERSION}")
        at = WINDOWS_HEADER.size
        split = bytes(buf[at : at + split_len]).decode()
        at += split_len
        boxes = np.frombuffer(buf, "<f4", 4 * n, at).reshape(n, 4).copy()
        scale = np.frombuffer(buf, "<f4", n, at + 16 * n).copy()
        label = np.frombuffer(buf, "<i4", n, at + 20 * n).copy()
        return cls(split, boxes, scale, label)


def open_write_env(path: Path, map_size: int) -> lmdb.Environment:
    """Returns the writer's LMDB environment at ``path`` (created if missing).

    One fsync per transaction (``metasync=False``): a system crash may lose the last
    transaction but never corrupts the database; a killed process loses nothing committed.
    """
    path.mkdir(parents=True, exist_ok=True)
    return lmdb.open(
        str(path), map_size=map_size, subdir=True, max_dbs=MAX_DBS, writemap=False,
        sync=True, metasync=False, meminit=False, readahead=True, lock=True,
    )  # fmt: skip


def open_read_env(path: Path, readahead: bool = True) -> lmdb.Environment:
    """Returns a read-only, lock-free LMDB environment (safe only on complete, immutable sets)."""
    if not (path / "data.mdb").is_file():
        raise IncompatibleFeatureSet(f"{path}: no data.mdb; expected an LMDB environment folder")
    return lmdb.open(
        str(path), readonly=True, lock=False, subdir=True, max_dbs=MAX_DBS,
        readahead=readahead, max_readers=1024,
    )  # fmt: skip


def read_meta(folder: Path) -> dict[str, Any]:
    """Returns the parsed meta.json of a feature-set folder; raises when missing or another format."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FeatureStoreError(
            f"{path}: missing; the folder is not a complete feature set"
        ) from None
    except (OSError, ValueError) as e:
        raise IncompatibleFeatureSet(f"{path}: unreadable meta.json: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise IncompatibleFeatureSet(
            f"{path}: format_version {meta.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    return meta


def fsync_path(path: Path) -> None:
    """Flushes a file or a folder entry to disk (returns None)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` and fsyncs it (returns None)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def folder_bytes(folder: Path) -> int:
    """Returns the total size in bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
