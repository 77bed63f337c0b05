"""FeatureSet: a complete feature set opened read-only, fork-safe, with batch reads by row."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import envcache, layout
from featurestore.errors import ChecksumError, FeatureStoreError, IncompatibleFeatureSet, NotFound
from featurestore.layout import DTYPE, VALUE_HEADER, checksum, decode_header
from featurestore.locations import Locations, address, read_locations, scan_values, value_size
from featurestore.manifest import ManifestColumns
from featurestore.verify import Problem, location_problems, verify_set

DEFAULT_LAYER = "fc7"
_CHUNK_ROWS = 1 << 16  # rows copied per step when materialising into a memmap


@dataclass(frozen=True)
class _Images:
    """The images of a set in manifest order, their window counts and first rows."""

    ids: list[str]
    counts: np.ndarray

    @cached_property
    def pos(self) -> dict[str, int]:
        """Returns each image's position in :attr:`ids`."""
        return {k: i for i, k in enumerate(self.ids)}

    @cached_property
    def row_image(self) -> np.ndarray:
        """Returns each manifest row's image position."""
        return np.repeat(np.arange(len(self.ids)), self.counts)

    @cached_property
    def row_window(self) -> np.ndarray:
        """Returns each manifest row's window index within its image."""
        starts = np.cumsum(self.counts) - self.counts
        return np.arange(int(self.counts.sum())) - np.repeat(starts, self.counts)


@dataclass
class _LayerIndex:
    """Where each image's value of one layer lies in this process's map (images in manifest order)."""

    dim: int
    start: np.ndarray  # byte offset of each image's value (header first) within ``region``
    region: np.ndarray  # uint8 over all values of the layer, pinned to the environment

    def value(self, i: int, n_windows: int) -> np.ndarray:
        """Returns image ``i``'s whole value (header + rows) as raw bytes (a view)."""
        start = int(self.start[i])
        return self.region[start : start + int(value_size(np.int64(n_windows), self.dim))]

    def rows(self, i: int, n_windows: int) -> np.ndarray:
        """Returns image ``i``'s (n_windows, dim) float16 rows (a read-only view)."""
        offset = int(self.start[i]) + VALUE_HEADER.size
        return np.ndarray((n_windows, self.dim), DTYPE, buffer=self.region, offset=offset)

    @cached_property
    def unit(self) -> int:
        """Returns the gather's row spacing in bytes: the row size when every row starts at the
        same phase modulo it (usual: values start on pages and rows divide 4096 bytes), else the
        widest word (8, 4, 2 or 1 bytes) that aligns every row."""
        rowbytes = self.dim * DTYPE.itemsize
        first = self.start + VALUE_HEADER.size
        if len(first) and not np.any((first - first[0]) % rowbytes):
            return rowbytes
        addr = self.region.__array_interface__["data"][0]
        for unit in (8, 4, 2):
            if rowbytes % unit == 0 and not np.any((addr + first) % unit):
                return unit
        return 1

    @cached_property
    def phase(self) -> int:
        """Returns the byte offset in ``region`` of row position 0 of :attr:`row_view`."""
        rowbytes = self.dim * DTYPE.itemsize
        return int(self.start[0] + VALUE_HEADER.size) % rowbytes if self.unit == rowbytes else 0

    @cached_property
    def row_view(self) -> np.ndarray:
        """Returns a (positions, row) view of ``region`` where row position p starts at byte
        ``phase + p * unit``: a plain C-contiguous (n, row bytes) array when unit is the row
        size (gathers then run at memmap speed), else overlapping rows of words."""
        rowbytes = self.dim * DTYPE.itemsize
        unit, region = self.unit, self.region[self.phase :]
        if unit == rowbytes:
            return region[: len(region) // rowbytes * rowbytes].reshape(-1, rowbytes)
        words = region[: len(region) // unit * unit].view(f"u{unit}")
        count = max(len(words) - rowbytes // unit + 1, 0)
        return np.lib.stride_tricks.as_strided(
            words, shape=(count, rowbytes // unit), strides=(unit, unit), writeable=False
        )

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Returns the rows at ``positions`` of :attr:`row_view` as a new (k, dim) float16 array."""
        view = self.row_view
        if view.flags.c_contiguous:
            return np.take(view, positions, axis=0).view(DTYPE)
        return view[positions].view(DTYPE)  # np.take would first copy the overlapping view


class _ProcessState:
    """The LMDB environment and layer indexes of one process: rebuilt after a fork."""

    def __init__(self, lmdb_dir: Path, readahead: bool) -> None:
        self.pid = os.getpid()
        self.env = envcache.read_env(lmdb_dir, readahead)
        self.features = self.env.open_db(layout.FEATURES_DB, create=False)
        self.indexes: dict[str, _LayerIndex] = {}
        self.row_offsets: dict[str, np.ndarray] = {}


@dataclass(frozen=True, eq=False)
class Selection:
    """Rows of one feature set's manifest (sorted), grouped by image; from :meth:`FeatureSet.select`."""

    set_id: str
    rows: np.ndarray  # int64 manifest row indices, ascending
    image_ids: tuple[str, ...]  # images with at least one selected row, in manifest order
    counts: np.ndarray  # selected rows per image, aligned with image_ids

    def __len__(self) -> int:
        return len(self.rows)

    def digest(self) -> str:
        """Returns a 16-hex-digit digest of the set id and the rows (names memmap caches)."""
        h = hashlib.blake2b(self.set_id.encode(), digest_size=8)
        h.update(np.ascontiguousarray(self.rows, dtype="<i8").tobytes())
        return h.hexdigest()

    def groups(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yields (image_id, its selected manifest rows) in manifest order."""
        ends = np.cumsum(self.counts)
        for image_id, end, count in zip(self.image_ids, ends, self.counts, strict=True):
            yield image_id, self.rows[end - count : end]


class FeatureSet:
    """A complete feature set, read-only. Cheap to create; the LMDB environment opens lazily
    in each process that reads (lock-free, ``readonly=True, lock=False``), so an instance may be
    passed to forked or spawned workers.

    Arrays from :meth:`get` are read-only views into the memory map (no copy); they keep the
    map open while they live. :meth:`read_rows` and :meth:`materialize` return copies.
    """

    def __init__(self, path: str | os.PathLike, readahead: bool = True) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = layout.read_meta(self.path)
        self.id: str = self.meta["id"]
        if self.path.name != self.id:
            raise IncompatibleFeatureSet(
                f"{self.path}: meta.json has id {self.id}; the folder name must be the id"
            )
        self.layers: dict[str, int] = {k: int(v) for k, v in self.meta["layers"].items()}
        self._readahead = readahead
        self._proc: _ProcessState | None = None

    def __repr__(self) -> str:
        c = self.meta["counts"]
        return f"FeatureSet({self.id}, {c['images']} images, {c['windows']} windows, layers={self.layers})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proc"] = None  # a spawned process opens its own environment
        for cached in ("_cols", "_locations", "_images"):
            state.pop(cached, None)
        return state

    def _state(self) -> _ProcessState:
        if self._proc is None or self._proc.pid != os.getpid():
            # First use in this process, or after a fork: drop the inherited state first so
            # envcache sees whether views still use the inherited map, then reopen.
            self._proc = None
            self._proc = _ProcessState(self.path / layout.LMDB_DIR, self._readahead)
        return self._proc

    def close(self) -> None:
        """Drops this process's environment and indexes; views already handed out stay valid (returns None)."""
        self._proc = None

    # -- manifest --------------------------------------------------------------------------

    @property
    def manifest(self) -> pa.Table:
        """Returns the manifest table (one row per window, sorted by image id then window)."""
        return self._cols.table

    @cached_property
    def _cols(self) -> ManifestColumns:
        return ManifestColumns(pq.read_table(self.path / layout.MANIFEST_FILE, memory_map=True))

    @cached_property
    def _locations(self) -> Locations | None:
        return read_locations(self.path, self.id)

    @cached_property
    def _images(self) -> _Images:
        loc = self._locations
        if loc is not None:
            return _Images(loc.image_ids, loc.counts)
        return _Images(self._cols.image_ids, self._cols.image_counts)

    def image_ids(self) -> list[str]:
        """Returns the set's image ids in manifest (sorted) order."""
        return list(self._images.ids)

    def __len__(self) -> int:
        return int(self.meta["counts"]["windows"])

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            if DEFAULT_LAYER in self.layers or len(self.layers) != 1:
                layer = DEFAULT_LAYER
            else:
                layer = next(iter(self.layers))
        if layer not in self.layers:
            raise NotFound(
                f"feature set {self.id}: no layer {layer!r}; it has {', '.join(self.layers)}"
            )
        return layer

    def _index(self, layer: str) -> _LayerIndex:
        proc = self._state()
        idx = proc.indexes.get(layer)
        if idx is None:
            starts = self._saved_addresses(proc, layer)
            if starts is None:
                starts = self._scanned_addresses(proc, layer)
            idx = proc.indexes[layer] = self._pin(proc, layer, starts)
        return idx

    def _saved_addresses(self, proc: _ProcessState, layer: str) -> np.ndarray | None:
        """Returns value addresses from index.parquet and one anchor get; None when not usable."""
        loc = self._locations
        if loc is None or layer not in loc.offsets or proc.env.info()["last_txnid"] != loc.txnid:
            return None
        if loc.anchor is None:
            return np.zeros(0, np.int64)
        with proc.env.begin(db=proc.features, buffers=True) as txn:
            anchor = txn.get(loc.anchor)
            if anchor is None or len(anchor) != loc.anchor_size:
                return None
            return address(anchor) + loc.offsets[layer]

    def _scanned_addresses(self, proc: _ProcessState, layer: str) -> np.ndarray:
        """Returns value addresses found by a cursor pass (slow when cold), checked against the images."""
        images, dim = self._images, self.layers[layer]
        found = {
            img: (addr, size) for _, img, addr, size in scan_values(proc.env, proc.features, layer)
        }
        want = value_size(images.counts, dim)
        starts = np.empty(len(images.ids), np.int64)
        for i, img in enumerate(images.ids):
            addr, size = found.get(img, (0, None))
            if size != want[i]:
                what = "no value" if size is None else f"a {size}-byte value; expected {want[i]}"
                raise IncompatibleFeatureSet(
                    f"feature set {self.id}: image {img!r} layer {layer!r}: {what}; run `mlt features verify {self.id}`"
                )
            starts[i] = addr
        return starts

    def _pin(self, proc: _ProcessState, layer: str, starts: np.ndarray) -> _LayerIndex:
        dim = self.layers[layer]
        if not len(starts):
            return _LayerIndex(dim, starts, np.zeros(0, np.uint8))
        lo, hi = int(starts.min()), int((starts + value_size(self._images.counts, dim)).max())
        if hi - lo > (self.path / layout.LMDB_DIR / "data.mdb").stat().st_size:
            raise IncompatibleFeatureSet(
                f"feature set {self.id}: layer {layer!r}: value locations exceed data.mdb"
            )
        return _LayerIndex(dim, starts - lo, envcache.pin(proc.env, lo, hi - lo))

    # -- reads -----------------------------------------------------------------------------

    def get(self, image_id: str, layer: str | None = None, verify: bool = False) -> np.ndarray:
        """Returns one image's (n_windows, dim) float16 features: a read-only view, no copy.

        ``layer`` defaults to fc7 (or the set's only layer); ``verify`` checks the value's
        header and checksum and raises :class:`ChecksumError` naming the image and layer.
        """
        layer = self._layer(layer)
        images = self._images
        i = images.pos.get(image_id)
        if i is None:
            raise NotFound(f"feature set {self.id}: no image {image_id!r} in layer {layer!r}")
        idx, n = self._index(layer), int(images.counts[i])
        if verify:
            value = idx.value(i, n)
            head = decode_header(
                value, f"feature set {self.id}: image {image_id!r} layer {layer!r}"
            )
            actual = checksum(value[VALUE_HEADER.size :])
            if actual != head.crc:
                raise ChecksumError(self.id, image_id, layer, head.crc, actual)
        return idx.rows(i, n)

    def get_many(
        self, image_ids: Iterable[str], layer: str | None = None, verify: bool = False
    ) -> list[np.ndarray]:
        """Returns the features of several images (views, as :meth:`get`), in the order asked."""
        return [self.get(i, layer, verify) for i in image_ids]

    def _row_offsets(self, layer: str) -> np.ndarray:
        """Returns each manifest row's position in the layer's gather view."""
        proc = self._state()
        off = proc.row_offsets.get(layer)
        if off is None:
            idx, images = self._index(layer), self._images
            rowbytes = idx.dim * DTYPE.itemsize
            off = idx.start[images.row_image] + VALUE_HEADER.size + images.row_window * rowbytes
            off = (off - idx.phase) // idx.unit  # positions in the gather view
            proc.row_offsets[layer] = off
        return off

    def read_rows(
        self,
        rows: Sequence[int] | np.ndarray,
        layer: str | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Returns the features of manifest rows (any order, repeats allowed) as a new (k, dim) float16 array.

        Rows follow numpy indexing (negative rows count from the end). With ``out`` (a
        C-contiguous (k, dim) float16 array) the rows are copied there and ``out`` is returned.
        This is the batch read: one vectorised gather, no per-image calls.
        """
        layer = self._layer(layer)
        positions = self._row_offsets(layer)
        idx = self._state().indexes[layer]  # built by _row_offsets
        try:
            gathered = idx.gather(positions[np.asarray(rows, dtype=np.intp)])
        except IndexError:
            raise FeatureStoreError(
                f"feature set {self.id}: rows out of range 0..{len(self) - 1}"
            ) from None
        if out is None:
            return gathered
        if out.shape != gathered.shape or out.dtype != DTYPE or not out.flags.c_contiguous:
            raise FeatureStoreError(
                f"out: {out.shape} {out.dtype}; expected C-contiguous {gathered.shape} float16"
            )
        out[...] = gathered
        return out

    # -- selections ------------------------------------------------------------------------

    def select(
        self, split: str | Iterable[str] | None = None, labels: int | Iterable[int] | None = None,
        image_ids: Iterable[str] | None = None,
    ) -> Selection:  # fmt: skip
        """Returns the manifest rows matching every filter given (None = no filter on that column)."""
        cols = self._cols
        mask = np.ones(len(self), dtype=bool)
        if split is not None:
            wanted = {split} if isinstance(split, str) else set(split)
            codes = [i for i, s in enumerate(cols.split_names) if s in wanted]
            mask &= np.isin(cols.split_code, codes)
        if labels is not None:
            wanted_labels = [labels] if isinstance(labels, (int, np.integer)) else list(labels)
            mask &= np.isin(cols.label, np.asarray(wanted_labels, dtype=np.int64))
        if image_ids is not None:
            wanted = {image_ids} if isinstance(image_ids, str) else set(image_ids)
            codes = [i for i, s in enumerate(cols.image_ids) if s in wanted]
            mask &= np.isin(cols.row_image, codes)
        return self._selection(np.flatnonzero(mask))

    def _selection(self, rows: np.ndarray) -> Selection:
        cols = self._cols
        images, counts = np.unique(cols.row_image[rows], return_counts=True)
        return Selection(
            self.id, rows.astype(np.int64), tuple(cols.image_ids[i] for i in images), counts
        )

    def _check(self, selection: Selection | None) -> Selection:
        if selection is None:
            return self._selection(np.arange(len(self)))
        if selection.set_id != self.id:
            raise IncompatibleFeatureSet(
                f"selection of feature set {selection.set_id} used on {self.id}"
            )
        return selection

    def column(self, name: str, selection: Selection | None = None) -> np.ndarray:
        """Returns a manifest column for the selected rows (all rows when None); ``box`` is (n, 4)."""
        values = self._cols.column(name)
        return values if selection is None else values[self._check(selection).rows]

    def labels(self, selection: Selection | None = None) -> np.ndarray:
        """Returns the int32 labels of the selected rows (all rows when None), in row order."""
        return self.column("label", selection)

    def materialize(
        self, selection: Selection | None = None, layer: str | None = None, cache: str | os.PathLike | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Returns the selected rows' features as one contiguous (n_rows, dim) float16 array.

        Rows are in manifest order. With ``cache`` (a folder), the array is a read-only
        ``np.memmap`` of ``<cache>/<set id>-<layer>-<selection digest>.npy``: written once,
        atomically, and reused by later calls (any process) while its shape matches.
        """
        selection, layer = self._check(selection), self._layer(layer)
        dim = self.layers[layer]
        if cache is None:
            return self.read_rows(selection.rows, layer)
        cache = Path(cache)
        path = cache / f"{self.id}-{layer}-{selection.digest()}.npy"
        if path.exists():
            try:
                arr = np.load(path, mmap_mode="r")
                if arr.shape == (len(selection), dim) and arr.dtype == DTYPE:
                    return arr
            except (OSError, ValueError):
                pass  # a foreign or damaged file: rewrite it
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".tmp-{os.getpid()}-{path.name}"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(len(selection), dim))
        for start in range(0, len(selection), _CHUNK_ROWS):
            part = selection.rows[start : start + _CHUNK_ROWS]
            self.read_rows(part, layer, out=out[start : start + len(part)])
        out.flush()
        del out
        layout.fsync_path(tmp)
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r")

    # -- checks ----------------------------------------------------------------------------

    def verify(self) -> list[Problem]:
        """Returns every problem found (empty when sound): checksums of all values, window counts
        against the manifest, counts against meta.json, missing and extra values, and the saved
        value locations against LMDB. Each problem is a str naming the image and layer, with
        ``.image_id`` and ``.layer`` set."""
        proc, loc = self._state(), self._locations
        problems = location_problems(loc, proc.env.info()["last_txnid"], self._cols)
        saved = {}
        if not problems:
            for layer in self.layers:
                starts = self._saved_addresses(proc, layer)
                saved[layer] = (
                    {} if starts is None else dict(zip(loc.image_ids, starts.tolist(), strict=True))
                )
        problems += verify_set(self.layers, self.meta, self._cols, proc.env, proc.features, saved)
        return [Problem(f"feature set {self.id}: {p}", p.image_id, p.layer) for p in problems]

    def disk_bytes(self) -> int:
        """Returns the set's size on disk in bytes (all files of its folder)."""
        return layout.folder_bytes(self.path)
