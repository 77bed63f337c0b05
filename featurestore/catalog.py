"""FeatureStore: the folder of feature sets; open, write, list and garbage-collect them."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from featurestore import layout
from featurestore.errors import (
    AlreadyExists,
    FeatureStoreError,
    IncompatibleFeatureSet,
    NotFound,
    WriterBusy,
)
from featurestore.ids import canonical_inputs, feature_set_id, layer_names
from featurestore.locking import StaleLock, holder, release, try_lock
from featurestore.reader import FeatureSet
from featurestore.writer import DEFAULT_MAP_SIZE, FeatureSetWriter

log = logging.getLogger("featurestore")
_HEX = re.compile(r"[0-9a-f]{1,64}")


def lineage(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Returns where a set comes from: trunk digest and run, dataset digest, grid, mode, producing run."""
    inputs, info = meta.get("inputs", {}), meta.get("info", {})
    return {
        "trunk_digest": inputs.get("trunk_digest"),
        "trunk_run": info.get("trunk_run"),
        "dataset_digest": inputs.get("dataset_digest"),
        "grid": inputs.get("grid"),
        "preprocessing": inputs.get("preprocessing"),
        "mode": inputs.get("mode"),
        "extractor_version": inputs.get("extractor_version"),
        "run_id": meta.get("run_id"),
    }


@dataclass
class SetInfo:
    """One entry of :meth:`FeatureStore.list`: a complete set, or a partial one being written."""

    id: str
    path: Path
    complete: bool
    size_bytes: int
    created: str | None = None
    images: int | None = None
    windows: int | None = None
    layers: dict[str, int] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    writer_pid: str | None = None  # partial sets: the live writer's pid, None when abandoned
    problem: str | None = None  # a folder that cannot be read as a set

    def to_dict(self) -> dict[str, Any]:
        """Returns the entry as JSON-ready data."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


class FeatureStore:
    """The folder holding feature sets ``<root>/<id>/`` and partial ones ``<root>/.tmp-<id>/``.

    The usual extraction pattern::

        fid = feature_set_id(inputs)
        if store.exists(fid):
            fs = store.open(fid)            # same inputs: nothing to recompute
        else:
            with store.writer(inputs, {"fc7": 4096}, meta={"trunk_run": run}) as w:
                done = w.done()             # images of an interrupted run
                for image_id in ids:
                    if image_id not in done:
                        w.put(image_id, {"fc7": feats}, windows)
                fs = w.commit(run_id=mlflow_run_id)
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def path(self, set_id: str) -> Path:
        """Returns the folder a complete set with this id has (or would have)."""
        return self.root / set_id

    def exists(self, set_id: str) -> bool:
        """Returns True when the set is complete (published); partial sets do not count."""
        return (self.root / set_id / layout.META_FILE).is_file()

    def resolve(self, prefix: str) -> str:
        """Returns the id of the one complete set whose id starts with ``prefix``."""
        if not _HEX.fullmatch(prefix):
            raise NotFound(f"{prefix!r} is not a feature-set id (expected hex digits, e.g. 3f9a0c)")
        if self.exists(prefix):
            return prefix
        matches = [i for i in self._complete_ids() if i.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(
                f"{self.root}: no feature set {prefix!r} (`mlt features list` shows them)"
            )
        raise NotFound(
            f"{self.root}: {prefix!r} matches {len(matches)} sets: {', '.join(sorted(matches))}"
        )

    def open(self, set_id: str, readahead: bool = True) -> FeatureSet:
        """Returns the complete set ``set_id`` (or a unique prefix of it), opened read-only."""
        return FeatureSet(self.path(self.resolve(set_id)), readahead=readahead)

    def _complete_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.is_dir()
        )

    def _partial_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if p.name.startswith(layout.TMP_PREFIX) and p.is_dir()
        )

    # -- writing ---------------------------------------------------------------------------

    def writer(
        self, inputs: Mapping[str, Any], layers: Mapping[str, int], meta: Mapping[str, Any] | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> FeatureSetWriter:  # fmt: skip
        """Returns the writer of the set the inputs identify, resuming its partial folder if any.

        ``layers`` maps each layer to its feature dim and must name the layers of
        ``inputs["layers"]``; ``meta`` (e.g. ``{"trunk_run": ...}``) goes into meta.json.
        Raises :class:`AlreadyExists` when the set is complete (check :meth:`exists` first)
        and :class:`WriterBusy` when another live writer holds it.
        """
        canon = canonical_inputs(inputs)
        set_id = feature_set_id(canon)
        if sorted(layers) != sorted(layer_names(canon)) or any(
            int(d) <= 0 for d in layers.values()
        ):
            raise IncompatibleFeatureSet(
                f"feature set {set_id}: layers {dict(layers)}; expected a positive dim for each of "
                f"inputs['layers'] = {layer_names(canon)}"
            )
        for layer in layers:
            if "/" in layer or not layer:
                raise FeatureStoreError(
                    f"layer name {layer!r}: expected a non-empty name without '/'"
                )
        tmp = self.root / layout.tmp_name(set_id)
        for _ in range(10):
            if self.exists(set_id):
                raise AlreadyExists(
                    f"feature set {set_id} is already complete at {self.path(set_id)}: skip extraction"
                )
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                fd = try_lock(tmp / layout.WRITER_LOCK)
            except (StaleLock, FileNotFoundError):
                continue  # the folder was published or collected meanwhile: look again
            if fd is None:
                raise WriterBusy(
                    f"feature set {set_id} is being written by pid {holder(tmp / layout.WRITER_LOCK)} "
                    f"(lock {tmp / layout.WRITER_LOCK}); wait for it or stop it"
                )
            if self.exists(set_id):  # published between our two looks
                shutil.rmtree(tmp, ignore_errors=True)
                release(fd)
                continue
            return FeatureSetWriter(self.root, set_id, canon, layers, meta, fd, map_size)
        raise WriterBusy(
            f"feature set {set_id}: its folder kept changing under {self.root}; try again"
        )

    # -- catalog ---------------------------------------------------------------------------

    def list(self, include_partial: bool = True) -> list[SetInfo]:
        """Returns an entry per complete set (and per partial one), sorted by creation time."""
        out = []
        for set_id in self._complete_ids():
            path = self.path(set_id)
            try:
                meta = layout.read_meta(path)
            except FeatureStoreError as e:
                out.append(SetInfo(set_id, path, False, layout.folder_bytes(path), problem=str(e)))
                continue
            counts = meta.get("counts", {})
            out.append(
                SetInfo(
                    set_id, path, True, layout.folder_bytes(path), meta.get("created"), counts.get("images"),
                    counts.get("windows"), dict(meta.get("layers", {})), lineage(meta),
                )
            )  # fmt: skip
        out.sort(key=lambda s: (s.created or "", s.id))
        if include_partial:
            for tmp in self._partial_dirs():
                live = _live_writer(tmp)
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tmp.stat().st_mtime))
                info = SetInfo(
                    tmp.name[len(layout.TMP_PREFIX) :],
                    tmp,
                    False,
                    layout.folder_bytes(tmp),
                    created,
                )
                info.writer_pid = live
                out.append(info)
        return out

    def gc(self, keep: Iterable[str] | None = None, dry_run: bool = False) -> list[Path]:
        """Removes partial sets no live writer holds and, when ``keep`` is given, every complete set
        not in it. Returns the folders removed (or that would be, with ``dry_run``)."""
        removed = []
        for tmp in self._partial_dirs():
            if dry_run:
                if _live_writer(tmp) is None:
                    removed.append(tmp)
                continue
            try:
                fd = try_lock(tmp / layout.WRITER_LOCK)
            except (StaleLock, FileNotFoundError):
                continue
            if fd is None:
                continue
            try:
                shutil.rmtree(tmp)
            finally:
                release(fd)
            removed.append(tmp)
        if keep is not None:
            kept = set()
            for k in keep:  # ids or unique prefixes; ids this store lacks keep nothing
                try:
                    kept.add(self.resolve(k))
                except NotFound:
                    log.info("gc: keep %r names no set in %s", k, self.root)
            for set_id in self._complete_ids():
                if set_id not in kept:
                    path = self.path(set_id)
                    if not dry_run:
                        # Rename first so no reader opens a half-deleted set.
                        doomed = self.root / f"{layout.TMP_PREFIX}gc-{set_id}-{os.getpid()}"
                        os.rename(path, doomed)
                        shutil.rmtree(doomed)
                    removed.append(path)
        for path in removed:
            log.info("%s %s", "would remove" if dry_run else "removed", path)
        return removed


def _live_writer(tmp: Path) -> str | None:
    """Returns the pid of the live writer holding a partial folder, or None when abandoned."""
    lock = tmp / layout.WRITER_LOCK
    if not lock.exists():
        return None
    try:
        fd = try_lock(lock)
    except (StaleLock, FileNotFoundError):
        return None
    if fd is None:
        return holder(lock)
    release(fd)
    return None
