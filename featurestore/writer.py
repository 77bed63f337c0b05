"""FeatureSetWriter: writes a feature set image by image into its temporary folder, then publishes it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np

from featurestore import layout
from featurestore.errors import FeatureStoreError, IncompatibleFeatureSet, WriteFailed
from featurestore.layout import DTYPE, WindowRecord, feature_key
from featurestore.locations import write_locations
from featurestore.locking import release
from featurestore.manifest import ManifestColumns, build_manifest, count_summary, write_manifest

if TYPE_CHECKING:
    from featurestore.reader import FeatureSet

log = logging.getLogger("featurestore")

DEFAULT_MAP_SIZE = 64 << 20

#: One image to write: (image_id, {layer: (n, dim) array}, window columns).
Item = tuple[str, Mapping[str, np.ndarray], Mapping[str, Any]]


class FeatureSetWriter:
    """Writes one feature set; get it from :meth:`FeatureStore.writer`, never directly.

    Each :meth:`put` (or :meth:`put_many`) is one LMDB transaction: an image is stored with all
    its layers and manifest rows, or not at all. A writer dropped without :meth:`commit` (or a
    killed process) leaves the temporary folder; the next writer of the same id resumes it and
    :meth:`done` tells which images to skip. Use as a context manager: leaving the block
    without committing keeps the temporary folder for resume.

    A full LMDB map is grown (doubled) and the write retried. A write the disk refuses (no
    space, a file-size limit, an I/O error), in :meth:`put` or :meth:`commit`, raises
    :class:`WriteFailed` naming the set, its folder and the free space; nothing is published and
    what earlier transactions committed stays for the resume.
    """

    def __init__(
        self, root: Path, set_id: str, inputs: dict[str, Any], layers: Mapping[str, int],
        meta: Mapping[str, Any] | None, lock_fd: int, map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:  # fmt: skip
        self.root = root
        self.id = set_id
        self.inputs = inputs
        self.layers = {str(k): int(v) for k, v in layers.items()}
        self.meta = dict(meta or {})
        self.tmp = root / layout.tmp_name(set_id)
        self._lock_fd: int | None = lock_fd
        try:
            self._open(map_size)
        except BaseException:
            self.abort()  # the writer owns the lock from here on
            raise

    def _open(self, map_size: int) -> None:
        env_dir = self.tmp / layout.LMDB_DIR
        # We hold the writer lock and readers never open partial sets: a killed writer's LMDB
        # lock file has no one to protect, and dropping it avoids inheriting its stale state.
        (env_dir / "lock.mdb").unlink(missing_ok=True)
        data = env_dir / "data.mdb"
        existing = data.stat().st_size if data.exists() else 0
        self._env = layout.open_write_env(env_dir, max(map_size, 2 * existing))
        self._features = self._env.open_db(layout.FEATURES_DB)
        self._windows = self._env.open_db(layout.WINDOWS_DB)
        self._spec = self._env.open_db(layout.SPEC_DB)
        self._check_spec()

    # -- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Returns True once the writer committed or aborted."""
        return self._lock_fd is None

    def _live(self) -> lmdb.Environment:
        if self._lock_fd is None:
            raise FeatureStoreError(
                f"feature set {self.id}: the writer is closed (committed or aborted)"
            )
        return self._env

    def _check_spec(self) -> None:
        spec = json.dumps(
            {"id": self.id, "inputs": self.inputs, "layers": self.layers}, sort_keys=True
        )
        with self._env.begin(db=self._spec) as txn:
            stored = txn.get(b"spec")
        if stored is None:
            self._write([(self._spec, b"spec", spec.encode())])
        elif json.loads(stored) != json.loads(spec):
            old = json.loads(stored)
            raise IncompatibleFeatureSet(
                f"{self.tmp}: partial set was started with layers {old['layers']}; this writer has "
                f"{self.layers}: use the same layers, or remove the partial set (`mlt features gc`)"
            )

    def done(self) -> set[str]:
        """Returns the ids of the images already written (skip them when resuming)."""
        with self._live().begin(db=self._windows) as txn:
            return {k.decode() for k in txn.cursor().iternext(keys=True, values=False)}

    # -- writing ---------------------------------------------------------------------------

    def put(
        self, image_id: str, features: Mapping[str, np.ndarray], windows: Mapping[str, Any]
    ) -> None:
        """Stores one image atomically: every layer's (n, dim) features and its window rows.

        ``windows`` holds ``boxes`` (n, 4), ``scale`` (n,), ``label`` (n,) integers and
        ``split`` (one string for the image). Features are stored as float16; writing an image
        again replaces it. Returns None.
        """
        self.put_many([(image_id, features, windows)])

    def put_many(self, items: Iterable[Item]) -> None:
        """Stores several images in one transaction (faster: one fsync); returns None."""
        pairs: list[tuple[Any, bytes, Any]] = []
        for image_id, features, windows in items:
            pairs.extend(self._encode(image_id, features, windows))
        self._write(pairs)

    def _encode(
        self, image_id: str, features: Mapping[str, np.ndarray], windows: Mapping[str, Any]
    ) -> list:
        if not isinstance(image_id, str) or not image_id:
            raise FeatureStoreError(f"image id {image_id!r}: expected a non-empty string")
        if set(features) != set(self.layers):
            raise IncompatibleFeatureSet(
                f"image {image_id!r}: features for layers {sorted(features)}; the set has {sorted(self.layers)}"
            )
        rec = _window_record(image_id, windows)
        out = []
        for layer, dim in self.layers.items():
            rows = np.asarray(features[layer])
            if rows.ndim != 2 or rows.shape != (len(rec), dim):
                raise IncompatibleFeatureSet(
                    f"image {image_id!r} layer {layer!r}: features of shape {rows.shape}; "
                    f"expected ({len(rec)}, {dim}) (windows x layer dim)"
                )
            with np.errstate(over="ignore"):
                rows16 = rows.astype(DTYPE, copy=False)
            if _has_nonfinite(rows16):
                raise FeatureStoreError(
                    f"image {image_id!r} layer {layer!r}: features hold NaN or values beyond "
                    f"float16's range (|x| > 65504)"
                )
            out.append((self._features, feature_key(layer, image_id), layout.encode_value(rows16)))
        out.append((self._windows, image_id.encode(), rec.encode()))
        return out

    def _write(self, pairs: list[tuple[Any, bytes, Any]]) -> None:
        env = self._live()
        while True:
            try:
                with env.begin(write=True) as txn:
                    for db, key, value in pairs:
                        txn.put(key, value, db=db)
                return
            except lmdb.MapFullError:
                size = env.info()["map_size"] * 2
                log.info("feature set %s: LMDB map full, growing it to %d MiB", self.id, size >> 20)
                env.set_mapsize(size)
            except lmdb.Error as e:
                raise self._write_failed(e) from e

    def _write_failed(self, err: BaseException) -> WriteFailed:
        """Returns the error for a write the disk refused: the set, its folder, the cause, the
        free space there and this process's file-size limit when it has one."""
        try:
            free = f"{shutil.disk_usage(self.tmp).free >> 20} MiB free there"
        except OSError:
            free = "free space unknown"
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            free += f"; this process may not write files over {limit} bytes (ulimit -f)"
        return WriteFailed(
            f"feature set {self.id}: writing {self.tmp} failed: {err} ({free}); nothing was "
            f"published: free space and run again to resume from the images written so far, "
            f"or remove the partial set (`mlt features gc`)"
        )

    # -- finishing -------------------------------------------------------------------------

    def commit(
        self, run_id: str | None = None, extra_meta: Mapping[str, Any] | None = None
    ) -> FeatureSet:
        """Publishes the set: writes the manifest and meta.json, then renames the folder into place.

        Returns the complete set, opened for reading. ``run_id`` is the producing MLflow run.
        """
        from featurestore.reader import FeatureSet

        env = self._live()
        table = build_manifest(self._records())
        cols = ManifestColumns(table)
        with env.begin() as txn:
            n_values = txn.stat(self._features)["entries"]
        if n_values != len(cols.image_ids) * len(self.layers):
            raise FeatureStoreError(
                f"{self.tmp}: {n_values} feature values for {len(cols.image_ids)} images x "
                f"{len(self.layers)} layers; the partial set is inconsistent: remove it and re-extract"
            )
        meta = {
            "format_version": layout.FORMAT_VERSION,
            "id": self.id,
            "inputs": self.inputs,
            "layers": self.layers,
            "dtype": "float16",
            "checksum": "crc32",
            "counts": count_summary(cols),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_id": run_id,
            "info": {**self.meta, **dict(extra_meta or {})},
        }
        try:
            write_manifest(table, self.tmp / layout.MANIFEST_FILE)
            layout.fsync_path(self.tmp / layout.MANIFEST_FILE)
            env.sync(True)
            env.close()
            (self.tmp / layout.LMDB_DIR / "lock.mdb").unlink(missing_ok=True)
            write_locations(
                self.tmp / layout.LMDB_DIR,
                self.tmp,
                self.id,
                cols.image_ids,
                cols.image_counts,
                self.layers,
            )
            layout.write_durable(
                self.tmp / layout.META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode()
            )
            layout.fsync_path(self.tmp)
        except (OSError, lmdb.Error) as e:
            for name in (layout.MANIFEST_FILE, layout.LOCATIONS_FILE, layout.META_FILE):
                with contextlib.suppress(OSError):  # half-written: the resumed commit rewrites them
                    (self.tmp / name).unlink(missing_ok=True)
            raise self._write_failed(e) from e
        final = self.root / self.id
        # The writer lock moves with the folder, so no second writer can start on it meanwhile.
        os.rename(self.tmp, final)
        layout.fsync_path(self.root)
        (final / layout.WRITER_LOCK).unlink(missing_ok=True)
        self._release()
        log.info("feature set %s: committed %d images", self.id, len(cols.image_ids))
        return FeatureSet(final)

    def _records(self) -> Iterable[tuple[str, WindowRecord]]:
        with self._env.begin(db=self._windows, buffers=True) as txn:
            for key, value in txn.cursor():
                image_id = bytes(key).decode()
                yield image_id, WindowRecord.decode(value, f"{self.tmp}: image {image_id!r}")

    def abort(self) -> None:
        """Closes the writer and keeps the temporary folder, so a later writer resumes (returns None)."""
        if self._lock_fd is not None:
            env = getattr(self, "_env", None)
            if env is not None:
                env.close()
            self._release()

    def discard(self) -> None:
        """Closes the writer and deletes the temporary folder with everything written (returns None)."""
        if self._lock_fd is not None:
            self._env.close()
            shutil.rmtree(self.tmp)
            self._release()

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            release(fd)

    def __enter__(self) -> FeatureSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def __del__(self) -> None:
        try:
            self.abort()
        except Exception:  # interpreter shutdown: nothing left to release
            pass


def _has_nonfinite(rows16: np.ndarray) -> bool:
    """Returns True when a float16 array holds inf or NaN (all exponent bits set; integer test,
    much faster than np.isfinite on float16)."""
    return bool(np.any((rows16.view(np.uint16) & 0x7C00) == 0x7C00))


def _window_record(image_id: str, windows: Mapping[str, Any]) -> WindowRecord:
    """Returns the validated window record of one image."""
    missing = [k for k in ("boxes", "scale", "label", "split") if k not in windows]
    if missing:
        raise FeatureStoreError(
            f"image {image_id!r}: windows lack {', '.join(missing)}; expected boxes, scale, label, split"
        )
    boxes = np.asarray(windows["boxes"], dtype=np.float32)
    n = len(boxes)
    if boxes.shape != (n, 4) or n == 0:
        raise FeatureStoreError(
            f"image {image_id!r}: boxes of shape {boxes.shape}; expected (n, 4) with n >= 1 "
            f"(skip images without windows)"
        )
    try:
        scale = np.broadcast_to(np.asarray(windows["scale"], dtype=np.float32), (n,))
    except ValueError:
        raise FeatureStoreError(
            f"image {image_id!r}: scale of shape {np.shape(windows['scale'])}; expected ({n},) or one number"
        ) from None
    label = np.asarray(windows["label"])
    if label.shape != (n,) or not np.issubdtype(label.dtype, np.integer):
        raise FeatureStoreError(
            f"image {image_id!r}: label of shape {label.shape} dtype {label.dtype}; expected ({n},) integers"
        )
    split = windows["split"]
    if not isinstance(split, str):
        raise FeatureStoreError(
            f"image {image_id!r}: split {split!r}; expected one string for the image"
        )
    return WindowRecord(split, boxes, np.ascontiguousarray(scale), label.astype(np.int32))
