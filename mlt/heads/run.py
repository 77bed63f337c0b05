"""The head stage: train a head from a feature set, score it on validation, record it in MLflow.

``prepare_inputs`` reads the training and validation windows of a feature set once (the memmap
cache under ``<store>/cache`` is shared by every later run and sweep trial); ``run_train_head``
trains one head, logs params, per-epoch metrics, the per-class validation table, lineage tags and
the ``head/head.pt`` artifact, and returns a summary.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featurestore import FeatureSet, FeatureStore
from mlt.config import HeadConfig, RunConfig
from mlt.errors import InputError
from mlt.evaluate import APTable
from mlt.heads.data import WindowData, load_windows, set_classes, set_dataset, split_image_ids


@dataclass
class HeadInputs:
    """What a head stage reads: the feature set, its classes and the train/val windows and labels."""

    fs: FeatureSet
    layer: str
    classes: list[str]
    dataset_root: Path
    train: WindowData
    val: WindowData
    val_gt: np.ndarray
    protocol: str = "windows"  # "boxed": a boxed set, every window scored on its own


def open_feature_set(config: RunConfig, ref: str) -> FeatureSet:
    """Returns the feature set named by ``ref``: an id (or unique prefix) in the store, or a folder."""
    path = Path(ref)
    if path.is_dir() and (path / "meta.json").is_file():
        return FeatureSet(path)
    store = FeatureStore(Path(config.extract.store))
    return store.open(store.resolve(ref))


def cache_dir(config: RunConfig) -> Path:
    """Returns the folder of materialised feature matrices shared by runs and sweep trials."""
    return Path(config.extract.store) / "cache"


def first_images(ids: list[str], hc: HeadConfig) -> list[str]:
    """Returns the first ``hc.train_images`` of a train split's ids (all when it is None).

    Asking for more images than the split has is an error naming the field and both counts.
    """
    if hc.train_images is None:
        return ids
    if hc.train_images > len(ids):
        raise InputError(None, "head.train_images", hc.train_images,
                         f"at most the {len(ids)} images of split {hc.train_split!r}")  # fmt: skip
    return ids[: hc.train_images]


def prepare_inputs(
    config: RunConfig, fs_ref: str, layer: str = "fc7", dataset_root: str | Path | None = None
) -> HeadInputs:
    """Returns the train (head.train_split, its first head.train_images) and val (head.val_split)
    windows of a feature set.

    On a boxed set (``windows.grid=boxed``) the protocol is ``"boxed"``: validation labels come
    from the windows' own labels (:func:`mlt.heads.boxed.boxed_gt`).
    """
    from mlt.heads.boxed import boxed_gt, boxed_image_ids, is_boxed
    from mlt.heads.train import ground_truth

    fs = open_feature_set(config, fs_ref)
    classes = set_classes(fs)
    root = Path(dataset_root) if dataset_root else set_dataset(fs)
    hc = config.head
    train_ids = first_images(split_image_ids(root, hc.train_split, config.data.target_limit), hc)
    val_ids = split_image_ids(root, hc.val_split, config.data.target_limit)
    boxed = is_boxed(fs.meta.get("inputs", {}))
    if boxed:
        train_ids = boxed_image_ids(fs, root, train_ids, classes)
        val_ids = boxed_image_ids(fs, root, val_ids, classes)
    cache = cache_dir(config)
    train = load_windows(fs, train_ids, layer, cache, what=f"head.train_split={hc.train_split}")
    val = load_windows(fs, val_ids, layer, cache, what=f"head.val_split={hc.val_split}")
    if boxed:
        gt = boxed_gt(val.labels, len(classes))
        return HeadInputs(fs, layer, classes, root, train, val, gt, "boxed")
    return HeadInputs(
        fs, layer, classes, root, train, val, ground_truth(root, val.image_ids, classes)
    )


def lineage_tags(fs: FeatureSet, layer: str) -> dict[str, Any]:
    """Returns the MLflow lineage tags of a run that reads ``fs``: set id, trunk, dataset, layer."""
    inputs, info = fs.meta.get("inputs", {}), fs.meta.get("info", {})
    return {
        "mlt.featureset.id": fs.id,
        "mlt.featureset.layer": layer,
        "mlt.featureset.mode": inputs.get("mode"),
        "mlt.trunk.digest": inputs.get("trunk_digest"),
        "mlt.trunk.run": info.get("trunk_run"),
        "mlt.dataset.digest": inputs.get("dataset_digest"),
    }


def head_meta(inputs: HeadInputs, config: RunConfig, best_epoch: int) -> dict[str, Any]:
    """Returns the metadata stored with a head: classes, k, layer, grid and lineage."""
    fs = inputs.fs
    return {
        "classes": inputs.classes,
        "k": config.eval.k,
        "layer": inputs.layer,
        "feature_set": fs.id,
        "feature_inputs": fs.meta.get("inputs", {}),
        "trunk_run": fs.meta.get("info", {}).get("trunk_run"),
        "dataset": str(inputs.dataset_root),
        "best_epoch": best_epoch,
        "target_limit": config.data.target_limit,
        "protocol": inputs.protocol,
        "head": config.head.model_dump(mode="json"),
    }


def log_table(table: APTable, prefix: str) -> None:
    """Logs an AP table's per-class APs and mAP as metrics and its text as an artifact.

    The VOC07 form takes the plain names (``val_mAP``, ``val_ap_<class>``); the area form gets
    ``area_`` after the prefix and ``val_mAP_area``, so the two never overwrite each other.
    """
    import mlflow

    from mlt import tracking

    if table.form == "voc07":
        tracking.log_metrics(table.to_metrics(prefix))
    else:
        metrics = table.to_metrics(f"{prefix}{table.form}_")
        metrics[f"{prefix}mAP_{table.form}"] = metrics.pop(
            f"{prefix}{table.form}_mAP", float("nan")
        )
        tracking.log_metrics(metrics)
    mlflow.log_text(table.format(), f"tables/{prefix}{table.form}.txt")


def run_train_head(
    config: RunConfig, fs_ref: str, layer: str = "fc7", dataset_root: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Trains a head on a feature set and records it; returns a summary (run id, val mAP, ...)."""
    import mlflow

    from mlt import tracking
    from mlt.heads.artifact import ARTIFACT_PATH, FILE_NAME, save_head
    from mlt.heads.train import evaluate_head_forms, train_head
    from mlt.heads.unfrozen import build_head

    inputs = prepare_inputs(config, fs_ref, layer, dataset_root)
    model = build_head(inputs.fs, layer, config.head, len(inputs.classes))
    k, classes = config.eval.k, inputs.classes
    with tracking.run(config, f"head-{inputs.fs.id[:8]}", "head") as active:
        tracking.log_config(config, sections=("head", "eval"))
        tracking.set_tags(lineage_tags(inputs.fs, layer))

        def report(epoch: int, metrics: dict) -> None:
            tracking.log_metrics({m: float(v) for m, v in metrics.items()}, step=epoch)

        result = train_head(
            inputs.train, inputs.val, config.head, classes, inputs.val_gt, k, config.eval.ap,
            model=model, callback=report, progress=progress, protocol=inputs.protocol,
        )  # fmt: skip
        tables = evaluate_head_forms(
            result.model, inputs.val, inputs.val_gt, classes, k, inputs.protocol
        )
        for table in tables.values():
            log_table(table, "val_")
        tracking.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        with tempfile.TemporaryDirectory(prefix="mlt-head-") as tmp:
            head_file = save_head(
                Path(tmp) / FILE_NAME, result.model, head_meta(inputs, config, result.best_epoch)
            )
            mlflow.log_artifact(str(head_file), ARTIFACT_PATH)
        return {
            "run_id": active.info.run_id,
            "feature_set": inputs.fs.id,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "val_mAP": tables["voc07"].mean_ap,
            "val_mAP_area": tables["area"].mean_ap,
            "protocol": inputs.protocol,
            "seconds": result.seconds,
            "table": tables[config.eval.ap].format(),
        }
